//! Randomised checks of the planner's shortcuts: skipping a resource, stopping once the cap is
//! spent, and the per-claim cover bound (`Pool::may_cover`) never change a plan; they only
//! skip work whose result is provably empty.

use super::*;
use crate::core::{WorkloadId, WorkloadKind};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn id(i: usize) -> WorkloadId {
    WorkloadId {
        kind: WorkloadKind::Job,
        namespace: format!("ns{}", i % 3),
        name: format!("w{i}"),
    }
}

fn random_case(rng: &mut Rng) -> (PlanInput, RotationHistory) {
    let tenants = 2 + rng.below(5) as usize;
    let nodes = 1 + rng.below(6) as usize;
    let per_node = [1u64, 2, 4, 8][rng.below(4) as usize];
    let resources = ["gpu-a", "gpu-b"];
    let nres = 1 + rng.below(2) as usize;
    let now = 100_000.0;
    let mut input = PlanInput {
        now,
        limits: Limits {
            margin_gpus: [0.0, 0.5, 1.0, 2.0][rng.below(4) as usize],
            max_per_tick: rng.below(7) as u32,
            max_per_tenant_per_tick: 1 + rng.below(3) as u32,
        },
        ..PlanInput::default()
    };
    let mut history = RotationHistory::new();
    let mut n_id = 0;
    for r in resources.iter().take(nres) {
        let mut free = vec![per_node; nodes];
        let mut held = vec![0.0; tenants];
        let count = rng.below(4 * nodes as u64 + 1);
        for _ in 0..count {
            let t = rng.below(tenants as u64) as usize;
            let want = 1 + rng.below(per_node.min(4));
            let mut placed = Vec::new();
            let mut left = want;
            let start = rng.below(nodes as u64) as usize;
            for k in 0..nodes {
                let n = (start + k) % nodes;
                let take = left.min(free[n]);
                if take > 0 {
                    free[n] -= take;
                    left -= take;
                    placed.push((format!("n{n}"), take));
                }
                if left == 0 || rng.below(3) == 0 {
                    break;
                }
            }
            if placed.is_empty() {
                continue;
            }
            let g: u64 = placed.iter().map(|p| p.1).sum();
            held[t] += g as f64;
            let i = n_id;
            n_id += 1;
            let started = now - 60.0 * rng.below(40) as f64;
            input.running.push(RunningWorkload {
                id: id(i),
                tenant: format!("t{t}"),
                resource: (*r).into(),
                nodes: placed,
                started_at: started,
                attained_gpu_seconds: (60 * rng.below(5)) as f64,
                quantum_seconds: [0.0, 600.0, 1200.0][rng.below(3) as usize],
                preemptible: rng.below(10) != 0,
                protected: rng.below(10) == 0,
                priority: rng.below(3) as i32 - 1,
                warning_seconds: 0.0,
                stop: None,
            });
            match rng.below(6) {
                0 => history.record(
                    &Plan {
                        rotate_out: vec![Action {
                            workload: id(i),
                            tenant: String::new(),
                            gpus: 1,
                            reason: String::new(),
                            reason_code: OVER_SHARE,
                        }],
                        ..Plan::default()
                    },
                    now - 60.0 * rng.below(30) as f64,
                ),
                1 => history.record(
                    &Plan {
                        resume: vec![Action {
                            workload: id(i),
                            tenant: String::new(),
                            gpus: 1,
                            reason: String::new(),
                            reason_code: RESUME_TURN,
                        }],
                        ..Plan::default()
                    },
                    now - 60.0 * rng.below(30) as f64,
                ),
                _ => {}
            }
        }
        let capacity = (per_node * nodes as u64) as f64;
        let mut shares = Vec::new();
        for (t, &h) in held.iter().enumerate() {
            if rng.below(8) == 0 {
                continue;
            }
            shares.push(TenantShare {
                tenant: format!("t{t}"),
                held: h,
                entitled: capacity * rng.below(100) as f64 / 100.0 / tenants as f64 * 1.5,
            });
        }
        let waits = rng.below(8);
        for _ in 0..waits {
            let t = rng.below(tenants as u64) as usize;
            let w = WaitingWorkload {
                id: id(n_id),
                tenant: format!("t{t}"),
                resource: (*r).into(),
                gpus: rng.below(per_node * 2 + 1),
                spread: if rng.below(2) == 0 {
                    Spread::OneNode
                } else {
                    Spread::AnyNodes
                },
                priority: rng.below(3) as i32 - 1,
            };
            n_id += 1;
            if rng.below(3) == 0 {
                input.rotated_out.push(RotatedOutWorkload {
                    workload: w,
                    rotated_out_at: now - 60.0 * rng.below(30) as f64,
                });
            } else {
                input.waiting.push(w);
            }
        }
        input.resources.push(ResourceState {
            resource: (*r).into(),
            tenants: shares,
            free: (0..nodes)
                .filter(|_| rng.below(6) != 0)
                .map(|n| (format!("n{n}"), free[n]))
                .collect(),
        });
    }
    // Last tick's pairs.
    if rng.below(2) == 0 {
        let a = rng.below(tenants as u64);
        let b = rng.below(tenants as u64);
        let mut h2 = history.clone();
        h2.record(
            &Plan {
                transfers: vec![Transfer {
                    to: id(0),
                    to_tenant: format!("t{b}"),
                    resource: "gpu-a".into(),
                    gpus: 1,
                    from_tenants: vec![format!("t{a}")],
                }],
                ..Plan::default()
            },
            now - 1e9,
        );
        history = h2;
    }
    (input, history)
}

#[test]
fn shortcuts_never_change_a_plan() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut nonempty, mut total, mut multi, mut resumes, mut capped) = (0, 0, 0, 0, 0);
    for _ in 0..20_000 {
        let (input, history) = random_case(&mut rng);
        let shortcut = plan(&input, &history);
        let exhaustive = plan_with(&input, &history, false);
        assert_eq!(shortcut, exhaustive, "input {input:#?}");
        let new = shortcut;
        total += 1;
        nonempty += usize::from(!new.is_empty());
        multi += usize::from(new.transfers.iter().any(|t| t.from_tenants.len() > 1));
        resumes += usize::from(!new.resume.is_empty());
        capped += usize::from(
            new.rotate_out.len() as u32 == input.limits.max_per_tick && !new.rotate_out.is_empty(),
        );
    }
    // The cases reach every rule: rotations, several victims for one claim, resumes, and the
    // cap per tick.
    assert!(nonempty > total / 20, "{nonempty} of {total}");
    assert!(multi > 0 && resumes > 0 && capped > 0);
}
