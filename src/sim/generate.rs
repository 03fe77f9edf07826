//! The deterministic synthetic workload generator, so `rota simulate` runs with no files.
//!
//! Shape (Philly-like): gang sizes mostly 1 GPU with some 2/4/8/16; log-normal durations
//! (heavy-tailed: median 20 min, σ = 1.8, capped at 14 days); a share of long-running VMs
//! (median 8 h); several tenants with different weights and different submission rates; Poisson
//! arrivals whose total rate is set so the offered load (Σ g·d over the span, divided by C × span)
//! is `load`. Invariant: the same [`GeneratorConfig`] gives the same trace, bit for bit.

use super::rng::SplitMix64;
use super::trace::{JobSpec, TenantSpec, Trace};
use crate::core::WorkloadKind;

/// Gang sizes and their probabilities (Philly has 95 % single-GPU jobs; this is a bit heavier
/// so that gangs matter on small clusters).
pub const GANG_SIZES: [(u32, f64); 5] = [(1, 0.80), (2, 0.08), (4, 0.06), (8, 0.05), (16, 0.01)];

/// One generated tenant: its weight and its share of submissions.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedTenant {
    /// Name.
    pub name: String,
    /// Fair-share weight.
    pub weight: f64,
    /// Relative submission rate.
    pub rate: f64,
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    /// Seed. Default 1.
    pub seed: u64,
    /// Number of jobs and VMs. Default 5,000.
    pub jobs: usize,
    /// GPUs of the cluster the load is sized for. Default 64.
    pub capacity_gpus: u64,
    /// Offered load (1 = the cluster is exactly busy on average). Default 1.1: contended.
    pub load: f64,
    /// Share of submissions that are VMs. Default 0.05.
    pub vm_share: f64,
    /// Tenants. Default four: weights 4/2/1/1, rates 2/1/3/1 (so the heaviest submitter is not
    /// the heaviest weight).
    pub tenants: Vec<GeneratedTenant>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        let t = |name: &str, weight: f64, rate: f64| GeneratedTenant {
            name: name.into(),
            weight,
            rate,
        };
        Self {
            seed: 1,
            jobs: 5_000,
            capacity_gpus: 64,
            load: 1.1,
            vm_share: 0.05,
            tenants: vec![
                t("research", 4.0, 2.0),
                t("course", 2.0, 1.0),
                t("students", 1.0, 3.0),
                t("notebooks", 1.0, 1.0),
            ],
        }
    }
}

const MAX_DURATION: f64 = 14.0 * 86_400.0;

/// Generates a trace from `config`.
pub fn generate(config: &GeneratorConfig) -> Trace {
    let mut rng = SplitMix64::new(config.seed);
    let rates: Vec<f64> = config.tenants.iter().map(|t| t.rate).collect();
    let sizes: Vec<f64> = GANG_SIZES.iter().map(|&(_, p)| p).collect();
    let mut jobs = Vec::with_capacity(config.jobs);
    for i in 0..config.jobs {
        let vm = rng.uniform() < config.vm_share;
        let gpus = if vm {
            1
        } else {
            GANG_SIZES[rng.categorical(&sizes)].0
        };
        let (median, sigma) = if vm {
            (8.0 * 3600.0, 1.0)
        } else {
            (1200.0, 1.8)
        };
        let duration = rng
            .log_normal(median, sigma)
            .clamp(1.0, MAX_DURATION)
            .round();
        jobs.push(JobSpec {
            name: format!("{}-{i}", if vm { "vm" } else { "job" }),
            tenant: rng.categorical(&rates),
            gpus,
            duration,
            arrival: 0.0,
            priority: 0,
            kind: if vm {
                WorkloadKind::VirtualMachine
            } else {
                WorkloadKind::Job
            },
        });
    }
    // Rate such that the offered GPU-seconds per second equal load × C.
    let work: f64 = jobs.iter().map(|j| j.gpus as f64 * j.duration).sum();
    let per_second = config.load.max(1e-6) * config.capacity_gpus.max(1) as f64;
    let mean_gap = work / per_second / config.jobs.max(1) as f64;
    let mut t: f64 = 0.0;
    for j in &mut jobs {
        j.arrival = t.round();
        t += rng.exponential(mean_gap);
    }
    let tenants = config
        .tenants
        .iter()
        .map(|t| TenantSpec {
            name: t.name.clone(),
            weight: t.weight,
        })
        .collect();
    Trace::from_unsorted(tenants, jobs, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_load_is_close_to_the_target() {
        let cfg = GeneratorConfig::default();
        let trace = generate(&cfg);
        let span = trace.jobs.last().unwrap().arrival;
        let load = trace.gpu_seconds() / (cfg.capacity_gpus as f64 * span);
        assert!((load - cfg.load).abs() < 0.15, "{load}");
        let singles = trace.jobs.iter().filter(|j| j.gpus == 1).count();
        assert!(singles as f64 > 0.7 * trace.jobs.len() as f64);
        assert!(trace
            .jobs
            .iter()
            .any(|j| j.kind == WorkloadKind::VirtualMachine));
        assert!(trace.jobs.iter().any(|j| j.gpus == 16));
    }
}
