//! Cross-module properties over the shared generators (`tests/common/generators.rs`): random
//! heterogeneous clusters, tenants and workloads go through the extender's placement decisions
//! and the fair-share policy built from a config, as in production.

mod common;

use proptest::prelude::*;
use proptest::test_runner::Config;

use rota::config::{RotaConfig, TelemetryConfig};
use rota::core::fairshare::{entitlements, SharePolicy, TenantLoad};
use rota::core::health::TelemetryRules;
use rota::core::{placement, GpuPod, PlacementRules};
use rota::read::view::{ClusterView, ViewSettings};

use common::generators::{self, cluster, tenant_name, tenants, workload, workloads, GPU, MODELS};

const NOW: f64 = 1_800_000_000.0;

fn seeded(cases: u32) -> Config {
    generators::seeded(cases, 0x9a0f_e7e5)
}

proptest! {
    #![proptest_config(seeded(128))]

    /// Filter judges every candidate exactly once and prioritize scores each in 0..=10, the
    /// same way twice, whatever the hardware mix and the model the pod asks for.
    #[test]
    fn placement_is_total_bounded_and_deterministic(
        nodes in cluster(1..12),
        w in workload(3),
        model in prop::option::of(prop::sample::select(MODELS.to_vec())),
    ) {
        let config = rota::config::ValidConfig::default();
        let view = ClusterView::new(ViewSettings::from_config(&config));
        view.replace_nodes(nodes.iter().cloned());
        let pod = GpuPod {
            uid: "u0".into(),
            namespace: "ns".into(),
            name: "w0-0".into(),
            tenant: tenant_name(w.tenant),
            workload: w.id(0),
            requests: [(GPU.to_string(), w.gpus)].into(),
            active: true,
            placement: PlacementRules {
                gpu_models: model.iter().map(|m| m.product.to_string()).collect(),
                ..PlacementRules::default()
            },
            ..GpuPod::default()
        };
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let telemetry = TelemetryConfig::default();
        let rules = TelemetryRules { config: &telemetry, now_unix_seconds: NOW };
        let snapshot = view.read();

        let out = placement::filter(&snapshot, &pod, &names, &rules);
        let mut judged: Vec<&str> = out.passed.clone();
        judged.extend(out.failed.iter().map(|(n, _)| *n));
        judged.extend(out.unresolvable.iter().map(|(n, _)| *n));
        judged.sort_unstable();
        let mut want = names.clone();
        want.sort_unstable();
        prop_assert_eq!(judged, want);
        // A passed node's product names the model asked for as whole words, case-insensitively
        // (the documented `rota.io/gpu-models` rule: "NVIDIA-A10" does not admit A100 nodes).
        if let Some(m) = model {
            for name in &out.passed {
                let node = snapshot.node(name).expect("candidate is in the view");
                let product = node.product.as_deref().unwrap_or("");
                prop_assert!(names_model(product, m.product), "{} on {}", m.product, product);
            }
        }

        let scores = placement::prioritize(&snapshot, &pod, &names, &config.scoring, &rules);
        prop_assert_eq!(scores.len(), names.len());
        prop_assert!(scores.iter().all(|s| (0..=10).contains(s)), "{:?}", scores);
        let again = placement::prioritize(&snapshot, &pod, &names, &config.scoring, &rules);
        prop_assert_eq!(scores, again);
    }

    /// Generated tenants form a valid config, and the policy it yields splits the cluster's
    /// GPUs over the tenants' workloads without handing out more than there is or than anyone
    /// asked for.
    #[test]
    fn config_tenants_share_the_cluster(
        tenant_list in tenants(1..6),
        nodes in cluster(1..10),
        jobs in workloads(6, 0..30),
    ) {
        let config = RotaConfig { tenants: tenant_list.clone(), ..RotaConfig::default() };
        let config = config.validate();
        prop_assert!(config.is_ok(), "{:?}", config.err());
        let policy = config.map(|c| SharePolicy::from_config(&c)).unwrap_or_else(|_| SharePolicy::flat(1.0));
        let capacity: u64 = nodes.iter().filter(|n| n.ready && !n.unschedulable).map(|n| n.free(GPU)).sum();
        let names: Vec<String> = (0..6).map(tenant_name).collect();
        let loads: Vec<TenantLoad<'_>> = names
            .iter()
            .enumerate()
            .map(|(t, name)| TenantLoad {
                tenant: name,
                held: 0.0,
                pending: jobs.iter().filter(|w| w.tenant == t).map(|w| w.gpus as f64).sum(),
                usage: 0.0,
            })
            .collect();
        let shares = entitlements(&policy, capacity as f64, &loads);
        let demand: f64 = loads.iter().map(|l| l.pending).sum();
        let total: f64 = shares.iter().map(|s| s.entitled).sum();
        prop_assert!((total - demand.min(capacity as f64)).abs() < 1e-6, "{} of {} for {}", total, capacity, demand);
        for (s, l) in shares.iter().zip(&loads) {
            prop_assert!(s.entitled >= 0.0 && s.entitled <= l.pending + 1e-9, "{:?} {:?}", s, l);
        }
    }
}

/// The model rule restated on words: the model's words appear, in order and adjacent, among the
/// product's words (words: runs of letters and digits, compared case-insensitively).
fn names_model(product: &str, model: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let (p, m) = (words(product), words(model));
    m.is_empty() || p.windows(m.len()).any(|w| w == m.as_slice())
}
