//! YAML inputs of the simulator: a workload (tenants with weights, Jobs and VMs) and a cluster
//! (node groups), plus the Tiresias cluster-spec CSV.
//!
//! ```yaml
//! tenants:                      # optional; unlisted tenants weigh 1
//!   - { name: research, weight: 2 }
//! workloads:
//!   - tenant: research
//!     kind: job                 # job (default) or vm
//!     gpus: 8
//!     durationSeconds: 3600
//!     arrivalSeconds: 0         # default 0
//!     priority: 0               # default 0; higher goes first under fifo
//!     count: 10                 # default 1: copies of this entry
//!     everySeconds: 60          # default 0: spacing of the copies' arrivals
//! ```
//!
//! Syntax and type errors carry the file, line and column from the YAML parser; semantic errors
//! name the file and the entry path (`workloads[3].gpus`). Nothing here panics on bad input.

use std::path::Path;

use serde::Deserialize;

use super::cluster::{ClusterSpec, NodeGroup};
use super::trace::{JobSpec, LoadError, Result, TenantSpec, Trace};
use crate::core::WorkloadKind;

/// Most copies one entry may ask for (guards against a typo that would exhaust memory).
pub const MAX_COPIES: u32 = 10_000_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadFile {
    #[serde(default)]
    tenants: Vec<TenantEntry>,
    workloads: Vec<WorkloadEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantEntry {
    name: String,
    #[serde(default = "one")]
    weight: f64,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Job,
    Vm,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadEntry {
    #[serde(default)]
    name: Option<String>,
    tenant: String,
    #[serde(default)]
    kind: Kind,
    gpus: u32,
    duration_seconds: f64,
    #[serde(default)]
    arrival_seconds: f64,
    #[serde(default)]
    priority: i32,
    #[serde(default = "one_u32")]
    count: u32,
    #[serde(default)]
    every_seconds: f64,
}

fn one() -> f64 {
    1.0
}

fn one_u32() -> u32 {
    1
}

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|source| LoadError::Io {
        file: file.to_path_buf(),
        source,
    })
}

fn yaml<T: for<'de> Deserialize<'de>>(text: &str, file: &Path) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|err| {
        let reason = crate::messages::plain_serde_message(&err.without_snippet().to_string());
        match err.location() {
            Some(loc) => LoadError::Format {
                file: file.to_path_buf(),
                line: loc.line(),
                column: loc.column(),
                reason,
            },
            None => LoadError::Invalid {
                file: file.to_path_buf(),
                reason,
            },
        }
    })
}

fn invalid(file: &Path, reason: String) -> LoadError {
    LoadError::Invalid {
        file: file.to_path_buf(),
        reason,
    }
}

/// Reads a workload YAML file. See [`parse_workload`].
pub fn load_workload(file: &Path) -> Result<Trace> {
    parse_workload(&read(file)?, file)
}

/// Parses a workload YAML document (format in the module docs).
pub fn parse_workload(text: &str, file: &Path) -> Result<Trace> {
    let doc: WorkloadFile = yaml(text, file)?;
    let mut tenants: Vec<TenantSpec> = Vec::new();
    for (i, t) in doc.tenants.iter().enumerate() {
        if !(t.weight.is_finite() && t.weight > 0.0) {
            return Err(invalid(file, format!("tenants[{i}].weight: must be > 0")));
        }
        if tenants.iter().any(|x| x.name == t.name) {
            return Err(invalid(
                file,
                format!("tenants[{i}].name: `{}` listed twice", t.name),
            ));
        }
        tenants.push(TenantSpec {
            name: t.name.clone(),
            weight: t.weight,
        });
    }
    let mut jobs = Vec::new();
    for (i, w) in doc.workloads.iter().enumerate() {
        check_entry(w, i, file)?;
        let tenant = match tenants.iter().position(|t| t.name == w.tenant) {
            Some(t) => t,
            None => {
                tenants.push(TenantSpec {
                    name: w.tenant.clone(),
                    weight: 1.0,
                });
                tenants.len() - 1
            }
        };
        for k in 0..w.count {
            let base = w.name.clone().unwrap_or_else(|| format!("w{i}"));
            jobs.push(JobSpec {
                name: if w.count == 1 {
                    base
                } else {
                    format!("{base}-{k}")
                },
                tenant,
                gpus: w.gpus,
                duration: w.duration_seconds,
                arrival: w.arrival_seconds + k as f64 * w.every_seconds,
                priority: w.priority,
                kind: match w.kind {
                    Kind::Job => WorkloadKind::Job,
                    Kind::Vm => WorkloadKind::VirtualMachine,
                },
            });
        }
    }
    let mut trace = Trace::from_unsorted(tenants, jobs, None);
    trace.checks.rows = doc.workloads.len();
    Ok(trace)
}

fn check_entry(w: &WorkloadEntry, i: usize, file: &Path) -> Result<()> {
    let at = |field: &str, why: &str| Err(invalid(file, format!("workloads[{i}].{field}: {why}")));
    if w.gpus == 0 {
        return at("gpus", "must be ≥ 1");
    }
    if !(w.duration_seconds.is_finite() && w.duration_seconds >= 0.0) {
        return at("durationSeconds", "must be a finite number ≥ 0");
    }
    if !(w.arrival_seconds.is_finite() && w.arrival_seconds >= 0.0) {
        return at("arrivalSeconds", "must be a finite number ≥ 0");
    }
    if !(w.every_seconds.is_finite() && w.every_seconds >= 0.0) {
        return at("everySeconds", "must be a finite number ≥ 0");
    }
    if w.count == 0 || w.count > MAX_COPIES {
        return at("count", "must be between 1 and 10,000,000");
    }
    Ok(())
}

/// Reads a cluster file: Tiresias cluster-spec CSV when the name ends in `.csv`, else YAML with
/// `nodeGroups: [{count, gpusPerNode, model}]`.
pub fn load_cluster(file: &Path) -> Result<ClusterSpec> {
    let text = read(file)?;
    if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        parse_tiresias_cluster(&text, file)
    } else {
        parse_cluster(&text, file)
    }
}

/// Parses a cluster YAML document.
pub fn parse_cluster(text: &str, file: &Path) -> Result<ClusterSpec> {
    let spec: ClusterSpec = yaml(text, file)?;
    if spec.capacity() == 0 {
        return Err(invalid(file, "nodeGroups: the cluster has no GPUs".into()));
    }
    Ok(spec)
}

/// Parses a Tiresias cluster spec (`num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,
/// mem_p_node`): switches × nodes per switch nodes of `num_gpu_p_node` GPUs each (CPU and memory
/// are ignored: jobs in these traces ask only for GPUs).
pub fn parse_tiresias_cluster(text: &str, file: &Path) -> Result<ClusterSpec> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = [
        "num_switch",
        "num_node_p_switch",
        "num_gpu_p_node",
        "num_cpu_p_node",
        "mem_p_node",
    ];
    match lines.next() {
        Some((_, h)) if h.split(',').map(str::trim).eq(header) => {}
        _ => {
            return Err(LoadError::Format {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
                reason: format!("expected header `{}`", header.join(",")),
            })
        }
    }
    let mut groups = Vec::new();
    for (i, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |k: usize| -> Result<u32> {
            fields
                .get(k)
                .and_then(|f| f.parse::<u32>().ok())
                .ok_or_else(|| LoadError::Format {
                    file: file.to_path_buf(),
                    line: i as u64 + 1,
                    column: fields[..k.min(fields.len())]
                        .iter()
                        .map(|f| f.len() as u64 + 1)
                        .sum::<u64>()
                        + 1,
                    reason: format!("`{}`: expected a whole number", header[k]),
                })
        };
        let (switches, nodes, gpus) = (field(0)?, field(1)?, field(2)?);
        groups.push(NodeGroup {
            count: switches.saturating_mul(nodes),
            gpus_per_node: gpus,
            model: "gpu".into(),
        });
    }
    let spec = ClusterSpec {
        node_groups: groups,
    };
    if spec.capacity() == 0 {
        return Err(invalid(file, "the cluster has no GPUs".into()));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("w.yaml")
    }

    #[test]
    fn workload_entries_expand_and_tenants_default() {
        let text = "tenants:\n  - {name: a, weight: 2}\nworkloads:\n  - {tenant: a, gpus: 2, durationSeconds: 10, count: 3, everySeconds: 5}\n  - {tenant: b, kind: vm, gpus: 1, durationSeconds: 100, arrivalSeconds: 1}\n";
        let t = parse_workload(text, p()).unwrap();
        assert_eq!(t.jobs.len(), 4);
        assert_eq!(
            t.tenants[1],
            TenantSpec {
                name: "b".into(),
                weight: 1.0
            }
        );
        let arrivals: Vec<f64> = t.jobs.iter().map(|j| j.arrival).collect();
        assert_eq!(arrivals, [0.0, 1.0, 5.0, 10.0]);
        assert_eq!(t.jobs[1].kind, WorkloadKind::VirtualMachine);
    }

    #[test]
    fn errors_carry_position_or_path() {
        let err = parse_workload(
            "workloads:\n  - {tenant: a, gpus: x, durationSeconds: 1}\n",
            p(),
        )
        .unwrap_err();
        assert!(matches!(err, LoadError::Format { line: 2, .. }), "{err}");
        let err = parse_workload(
            "workloads:\n  - {tenant: a, gpus: 0, durationSeconds: 1}\n",
            p(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("workloads[0].gpus"), "{err}");
        assert!(parse_workload("workloads: [", p()).is_err());
        assert!(parse_workload("bogus: 1\nworkloads: []\n", p()).is_err());
    }

    #[test]
    fn clusters_from_yaml_and_tiresias_csv() {
        let c = parse_cluster("nodeGroups:\n  - {count: 2, gpusPerNode: 8, model: H100}\n  - {count: 3, gpusPerNode: 4}\n", p()).unwrap();
        assert_eq!(c.capacity(), 28);
        assert_eq!(c.node_groups[1].model, "gpu");
        let t = parse_tiresias_cluster(
            "num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,16,4,128,254",
            p(),
        )
        .unwrap();
        assert_eq!(t.capacity(), 64);
        let err = parse_tiresias_cluster(
            "num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,x,4,1,1\n",
            p(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::Format {
                    line: 2,
                    column: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(parse_cluster("nodeGroups: []\n", p()).is_err());
    }
}
