//! Usage accounting: charges each tenant's GPU time to the shared ledger and persists it.
//!
//! Every tick the leader advances the ledger by what tenants held since the last tick (GPUs ×
//! the device weight of the node's GPU model) and by what they measurably used (GPU utilisation
//! from telemetry, split over the tenants holding GPUs on that node in proportion to what they
//! hold), then saves it through a [`LedgerStore`]. Followers only reload what the leader wrote,
//! so every replica's gate sees the same usage. A restart loses at most one tick: after a gap
//! longer than two ticks the ledger only decays over the gap (nobody knows what was held then).
//! What a load finds is logged once per change ([`LoadOutcome`]): a first start without a ledger
//! is one INFO line, however many followers' reloads follow; a forbidden ConfigMap or an
//! unreachable API server goes to [`Readiness`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock;
use crate::config::ValidConfig;
use crate::core::ledger::{self, Ledger};
use crate::core::quantity::saturating_sum;
use crate::core::ClusterSnapshot;
use crate::read::view::fairshare::SharedLedger;
use crate::read::view::ClusterView;
use crate::readiness::Readiness;

use super::ledger_store::LedgerStore;

/// What one tenant held and used during a tick: `(weighted GPUs, measured busy GPUs)`.
pub type TenantCharge = (f64, Option<f64>);

/// Per-tenant charges for the GPUs held in `snapshot` right now. Pure: the tick multiplies by
/// time.
pub fn charges(snapshot: &ClusterSnapshot, config: &ValidConfig) -> BTreeMap<String, TenantCharge> {
    // Per node: GPUs held by each tenant, to split the node's measured use.
    let mut per_node: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for pod in snapshot.pods().filter(|p| p.holds_gpus()) {
        let Some(node) = pod.node_name.as_deref() else {
            continue;
        };
        let gpus: u64 = saturating_sum(pod.requests.values().copied());
        let slot = per_node
            .entry(node)
            .or_default()
            .entry(pod.tenant.as_str())
            .or_insert(0);
        *slot = slot.saturating_add(gpus);
    }
    let mut out: BTreeMap<String, TenantCharge> = BTreeMap::new();
    for (node_name, tenants) in per_node {
        let node = snapshot.node(node_name);
        let weight = ledger::device_weight(&config.usage, node.and_then(|n| n.product.as_deref()));
        let held_on_node: u64 = saturating_sum(tenants.values().copied());
        let busy = node.and_then(measured_busy_gpus);
        for (tenant, gpus) in tenants {
            let entry = out.entry(tenant.to_string()).or_insert((0.0, None));
            entry.0 += gpus as f64 * weight;
            if let Some(busy) = busy {
                let share = busy * gpus as f64 / held_on_node.max(1) as f64;
                entry.1 = Some(entry.1.unwrap_or(0.0) + share);
            }
        }
    }
    out
}

/// Sum of GPU utilisation ratios reported for a node (e.g. 2 GPUs at 50 % = 1 busy GPU), when
/// telemetry reports any.
fn measured_busy_gpus(node: &crate::core::GpuNode) -> Option<f64> {
    let telemetry = node.telemetry.as_ref()?;
    let ratios: Vec<f64> = telemetry
        .gpus()
        .iter()
        .filter_map(|g| g.utilization_gpu_ratio)
        .collect();
    (!ratios.is_empty()).then(|| ratios.iter().map(|r| r.clamp(0.0, 1.0)).sum())
}

/// The accounting task's inputs.
#[derive(Clone)]
pub struct UsageAccounting {
    /// The ledger the fair-share refresher reads.
    pub ledger: SharedLedger,
    /// Where the ledger is persisted.
    pub store: Arc<dyn LedgerStore>,
    /// The cluster view to charge from.
    pub view: Arc<ClusterView>,
    /// The config (device weights).
    pub config: Arc<ValidConfig>,
    /// Whether this replica is the leader.
    pub leader: watch::Receiver<bool>,
    /// Time between ticks.
    pub interval: Duration,
    /// Where a forbidden ledger or an unreachable API server is reported (component
    /// [`COMPONENT`]); `None` logs them as plain errors.
    pub readiness: Option<Arc<Readiness>>,
}

/// The component name of the usage ledger in [`Readiness`].
pub const COMPONENT: &str = "ledger";

/// What one load found, compared from one load to the next so that each change is logged once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadOutcome {
    /// A stored ledger was loaded (perhaps partly recovered; problems were logged).
    Loaded,
    /// Nothing is stored yet: a first start (or someone deleted it).
    Missing(String),
    /// The store could not be read; the live ledger was kept.
    Failed(String),
}

impl UsageAccounting {
    /// Loads the stored ledger into the shared one (problems were logged by the store); on
    /// error the live ledger is kept. Returns what it found, for [`report`](Self::report).
    pub async fn load(&self) -> LoadOutcome {
        match self.store.load().await {
            Ok(loaded) => {
                *self.ledger.lock() = loaded.ledger;
                if let Some(readiness) = &self.readiness {
                    readiness.kube_ok(COMPONENT);
                }
                match loaded
                    .problems
                    .into_iter()
                    .next()
                    .filter(|_| loaded.missing)
                {
                    Some(problem) => LoadOutcome::Missing(problem),
                    None => LoadOutcome::Loaded,
                }
            }
            Err(err) => {
                let loud = self.report_error(&err);
                let text = format!("{}: {err}", err.code());
                if loud {
                    LoadOutcome::Failed(format!("reported: {}", err.code()))
                } else {
                    LoadOutcome::Failed(text)
                }
            }
        }
    }

    /// Hands a store error to the readiness registry; `true` when it took it (logged there).
    fn report_error(&self, err: &super::ledger_store::Error) -> bool {
        let (Some(readiness), Some((verb, namespace, object, source))) =
            (&self.readiness, err.kube())
        else {
            return false;
        };
        readiness.kube_error(
            COMPONENT,
            &object,
            Some(namespace),
            source,
            verb == "create",
        )
    }

    /// Logs `outcome` if it differs from `last`: one INFO line for a first start without a
    /// ledger, one ERROR line per new load failure, one INFO line on recovery.
    pub fn report(last: &mut Option<LoadOutcome>, outcome: LoadOutcome) {
        if last.as_ref() == Some(&outcome) {
            return;
        }
        match &outcome {
            LoadOutcome::Missing(problem) => tracing::info!(
                problem = %problem,
                "No usage ledger stored yet (expected on a first start): usage starts from zero; the leader creates it on its first tick."
            ),
            LoadOutcome::Failed(why) if why.starts_with("reported: ") => {}
            LoadOutcome::Failed(why) => tracing::error!(
                error = %why,
                "Cannot load the usage ledger; keeping the one in memory and retrying every tick."
            ),
            LoadOutcome::Loaded => {
                if matches!(last, Some(LoadOutcome::Failed(_))) {
                    tracing::info!("Usage ledger loads again.");
                }
            }
        }
        *last = Some(outcome);
    }

    /// The read half, on every replica, until dropped: loads the stored ledger at start and
    /// every interval while following, so every replica's gate sees the leader's usage. Never
    /// writes. `last` is shared with [`lead`](Self::lead) so each change is logged once.
    pub async fn follow(mut self, last: Arc<parking_lot::Mutex<Option<LoadOutcome>>>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if *self.leader.borrow_and_update() {
                continue;
            }
            let outcome = self.load().await;
            Self::report(&mut last.lock(), outcome);
        }
    }

    /// The write half, for one leadership term, until dropped or the leader flag turns
    /// `false`: loads the former leader's last word (it kept writing until it stepped down),
    /// then charges and saves every interval.
    pub async fn lead(self, last: Arc<parking_lot::Mutex<Option<LoadOutcome>>>) {
        let outcome = self.load().await;
        Self::report(&mut last.lock(), outcome);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if !*self.leader.borrow() {
                return;
            }
            self.tick(clock::now_seconds()).await;
        }
    }

    /// Both halves in one loop, until dropped: charge and save while leader, reload while
    /// follower (one process that leads and follows in turn, as tests run it).
    pub async fn run(mut self) {
        let mut last = None;
        let outcome = self.load().await;
        Self::report(&mut last, outcome);
        let mut was_leader = *self.leader.borrow_and_update();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let leader = *self.leader.borrow_and_update();
            if leader && !was_leader {
                // A former leader kept writing until it stepped down: start from its last word.
                let outcome = self.load().await;
                Self::report(&mut last, outcome);
            }
            was_leader = leader;
            if leader {
                self.tick(clock::now_seconds()).await;
            } else {
                let outcome = self.load().await;
                Self::report(&mut last, outcome);
            }
        }
    }

    /// One leader tick at `now` (unix seconds): advance, then save a copy (no lock held across
    /// the write).
    pub async fn tick(&self, now: f64) {
        let charges = self.view.with_snapshot(|s| charges(s, &self.config));
        let copy: Ledger = {
            let mut ledger = self.ledger.lock();
            let gap_limit = 2.0 * self.interval.as_secs_f64();
            if let Some(ahead) = ledger
                .updated_at()
                .map(|t| t - now)
                .filter(|&a| a > gap_limit)
            {
                tracing::warn!(
                    ahead_seconds = ahead,
                    "Usage ledger is stamped in the future (corrupt file or a clock jump); restarting its clock at now, values kept."
                );
                ledger.reset_clock(now);
            }
            if ledger.updated_at().is_some_and(|t| now - t > gap_limit) {
                tracing::warn!(
                    gap_seconds = now - ledger.updated_at().unwrap_or(now),
                    "Usage ledger was not advanced for a while (restart or lost leadership); decaying over the gap without charging it."
                );
                ledger.advance(now, std::iter::empty());
            }
            ledger.advance(
                now,
                charges
                    .iter()
                    .map(|(tenant, &(weighted, measured))| (tenant.as_str(), weighted, measured)),
            );
            ledger.clone()
        };
        match self.store.save(&copy).await {
            Ok(()) => {
                if let Some(readiness) = &self.readiness {
                    readiness.kube_ok(COMPONENT);
                }
            }
            Err(err) if self.report_error(&err) => {}
            Err(err) => tracing::error!(
                code = err.code(),
                retryable = err.is_retryable(),
                error = %err,
                "Cannot save the usage ledger; keeping it in memory and retrying next tick."
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RotaConfig;
    use crate::core::{GpuNode, GpuPod, WorkloadId};
    use crate::read::view::ViewSettings;
    use crate::write::ledger_store::FileLedgerStore;

    fn config() -> ValidConfig {
        let mut c = RotaConfig::default();
        c.usage.device_weights.insert("H100".into(), 4.0);
        // A week: the charges below are compared without decay over their 30 s.
        c.usage.half_life_seconds = 7.0 * 24.0 * 3600.0;
        c.validate().expect("valid")
    }

    fn view_with_pods(config: &ValidConfig) -> Arc<ClusterView> {
        let view = Arc::new(ClusterView::new(ViewSettings::from_config(config)));
        for (name, product) in [("h", "H100"), ("t", "T4")] {
            view.apply_gpu_node(GpuNode {
                name: name.into(),
                ready: true,
                allocatable: [("nvidia.com/gpu".to_string(), 8)].into(),
                product: Some(product.into()),
                ..GpuNode::default()
            });
        }
        for (uid, tenant, node, gpus) in [
            ("a", "physics", "h", 2),
            ("b", "bio", "h", 2),
            ("c", "bio", "t", 3),
        ] {
            view.apply_gpu_pod(GpuPod {
                uid: uid.into(),
                name: uid.into(),
                namespace: tenant.into(),
                tenant: tenant.into(),
                workload: WorkloadId::default(),
                requests: [("nvidia.com/gpu".to_string(), gpus)].into(),
                node_name: Some(node.into()),
                active: true,
                ..GpuPod::default()
            });
        }
        view
    }

    #[test]
    fn charges_weight_gpus_by_device_model() {
        let config = config();
        let view = view_with_pods(&config);
        let charges = view.with_snapshot(|s| charges(s, &config));
        assert_eq!(charges["physics"], (8.0, None)); // 2 H100 × 4
        assert_eq!(charges["bio"], (11.0, None)); // 2 H100 × 4 + 3 T4 × 1
    }

    #[tokio::test]
    async fn leader_ticks_charge_and_persist_and_a_restart_resumes_from_the_file() {
        let dir = std::env::temp_dir().join(format!("rota-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.json");
        let _ = std::fs::remove_file(&path);
        let config = Arc::new(config());
        let view = view_with_pods(&config);
        let half_life = config.usage.half_life_seconds;
        let make = || UsageAccounting {
            ledger: Arc::new(parking_lot::Mutex::new(Ledger::new(half_life).unwrap())),
            store: Arc::new(FileLedgerStore::new(&path, half_life)),
            view: view.clone(),
            config: config.clone(),
            leader: watch::channel(true).1,
            interval: Duration::from_secs(30),
            readiness: None,
        };
        let first = make();
        first.tick(1_000.0).await; // starts the clock
        first.tick(1_030.0).await;
        let charged = first.ledger.lock().usage("physics", 1_030.0);
        assert!((charged - 8.0 * 30.0).abs() < 0.01, "{charged}");

        // A new process loads what the first wrote, then a long gap is only decayed.
        let second = make();
        second.load().await;
        assert!((second.ledger.lock().usage("physics", 1_030.0) - charged).abs() < 1e-6);
        second.tick(1_000_000.0).await;
        let after_gap = second.ledger.lock().usage("physics", 1_000_000.0);
        assert!(
            after_gap < charged,
            "a gap is never charged: {after_gap} vs {charged}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_ledger_stamped_in_the_future_restarts_its_clock_and_charges_again() {
        let config = Arc::new(config());
        let half_life = config.usage.half_life_seconds;
        let path = std::env::temp_dir().join(format!("rota-usage-future-{}", std::process::id()));
        let mut ledger = Ledger::new(half_life).unwrap();
        ledger.advance(1_000.0, std::iter::empty());
        ledger.advance(1_000_000_000.0, [("physics", 1.0, None)]); // a corrupt, far-future stamp
        let before = ledger.usage("physics", 1_000_000_000.0);
        let accounting = UsageAccounting {
            ledger: Arc::new(parking_lot::Mutex::new(ledger)),
            store: Arc::new(FileLedgerStore::new(&path, half_life)),
            view: view_with_pods(&config),
            config: config.clone(),
            leader: watch::channel(true).1,
            interval: Duration::from_secs(30),
            readiness: None,
        };
        accounting.tick(2_000.0).await; // resets the clock, keeps the values
        let kept = accounting.ledger.lock().usage("physics", 2_000.0);
        assert!((kept - before).abs() < 1e-6, "{kept} vs {before}");
        accounting.tick(2_030.0).await; // and charges from there on
        let charged = accounting.ledger.lock().usage("physics", 2_030.0) - kept;
        assert!(
            charged > 200.0,
            "30 s of 8 weighted GPUs charged: {charged}"
        );
        std::fs::remove_file(&path).ok();
    }
}
