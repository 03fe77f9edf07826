//! The fair-share core: water-filling closed forms and invariants, the usage correction's
//! guarantees, the decayed ledger and its record, the queue order and the gate.

mod common;

use proptest::prelude::*;
use proptest::test_runner::Config;

use common::generators::{self, tenant_name, tenant_rows, workloads, TenantRow};

use rota::config::{GroupConfig, RotaConfig, TenantConfig};
use rota::core::fairshare::{
    entitlements, jain_index, share_deviation, water_fill, Entitlement, SharePolicy, Standing,
    TenantLoad, DEFAULT_USAGE_EXPONENT_CAP,
};
use rota::core::ledger::{parse_record, Ledger, LedgerRecord, TenantRecord};
use std::ops::ControlFlow;

use rota::core::feasibility::{Demand, Fit, Pool};
use rota::core::gate::{self, Step, Supply};
use rota::core::queue::{FairQueue, QueueEntry, WithinTenant};

const EPS: f64 = 1e-9;

fn seeded(cases: u32) -> Config {
    generators::seeded(cases, 0x5eed_f00d)
}

fn backlog(tenant: &str, pending: f64) -> TenantLoad<'_> {
    TenantLoad {
        tenant,
        held: 0.0,
        pending,
        usage: 0.0,
    }
}

fn entitled(e: &[Entitlement]) -> Vec<f64> {
    e.iter().map(|x| x.entitled).collect()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "got {got:?}, want {want:?}");
    }
}

// === water-filling ===

#[test]
fn closed_form_5_40_40_on_60() {
    let loads = [backlog("a", 5.0), backlog("b", 40.0), backlog("c", 40.0)];
    let e = entitlements(&SharePolicy::default(), 60.0, &loads);
    assert_close(&entitled(&e), &[5.0, 27.5, 27.5]);
}

#[test]
fn weights_2_to_1_endless_backlog_on_30() {
    let policy = SharePolicy::flat(1.0).with_tenant("a", 2.0, None);
    let loads = [backlog("a", 1e6), backlog("b", 1e6)];
    let e = entitlements(&policy, 30.0, &loads);
    assert_close(&entitled(&e), &[20.0, 10.0]);
}

#[test]
fn hierarchy_splits_groups_then_tenants() {
    let policy = SharePolicy::flat(1.0)
        .with_group("g1", 1.0)
        .with_group("g2", 1.0)
        .with_tenant("a", 1.0, Some("g1"))
        .with_tenant("b", 1.0, Some("g1"))
        .with_tenant("c", 1.0, Some("g2"));
    let loads = [
        backlog("a", 100.0),
        backlog("b", 100.0),
        backlog("c", 100.0),
    ];
    assert_close(
        &entitled(&entitlements(&policy, 40.0, &loads)),
        &[10.0, 10.0, 20.0],
    );
    // A group demanding less than its share hands the rest to the other group.
    let loads = [backlog("a", 100.0), backlog("b", 100.0), backlog("c", 4.0)];
    assert_close(
        &entitled(&entitlements(&policy, 40.0, &loads)),
        &[18.0, 18.0, 4.0],
    );
    // An ungrouped tenant competes at the root with its own weight.
    let loads = [
        backlog("a", 100.0),
        backlog("b", 100.0),
        backlog("c", 100.0),
        backlog("d", 100.0),
    ];
    assert_close(
        &entitled(&entitlements(&policy, 60.0, &loads)),
        &[10.0, 10.0, 20.0, 20.0],
    );
}

#[test]
fn policy_from_config_reads_weights_groups_and_default() {
    let config = RotaConfig {
        default_tenant_weight: 0.5,
        groups: vec![GroupConfig {
            name: "g".into(),
            weight: 3.0,
        }],
        tenants: vec![TenantConfig {
            name: "a".into(),
            weight: 2.0,
            group: Some("g".into()),
        }],
        ..RotaConfig::default()
    };
    let policy = SharePolicy::from_config(&config);
    assert_eq!(policy.weight("a"), 2.0);
    assert_eq!(policy.group_of("a"), Some("g"));
    assert_eq!(policy.weight("other"), 0.5);
    // Group weight 3 vs the ungrouped tenant's 0.5 at the root.
    let loads = [backlog("a", 100.0), backlog("other", 100.0)];
    assert_close(
        &entitled(&entitlements(&policy, 35.0, &loads)),
        &[30.0, 5.0],
    );
}

#[test]
fn standing_and_gap_follow_held() {
    let loads = [
        TenantLoad {
            tenant: "a",
            held: 15.0,
            pending: 10.0,
            usage: 0.0,
        },
        TenantLoad {
            tenant: "b",
            held: 5.0,
            pending: 10.0,
            usage: 0.0,
        },
    ];
    let e = entitlements(&SharePolicy::default(), 20.0, &loads);
    assert_close(&entitled(&e), &[10.0, 10.0]);
    assert_eq!(e[0].demand, 25.0);
    assert!((e[0].gap() + 5.0).abs() < EPS && (e[1].gap() - 5.0).abs() < EPS);
    assert!(e[1].standing < e[0].standing);
    assert!((e[1].standing.value() - 0.5).abs() < EPS);
}

// === usage correction ===

fn with_usage<'a>(tenant: &'a str, pending: f64, usage: f64) -> TenantLoad<'a> {
    TenantLoad {
        tenant,
        held: 0.0,
        pending,
        usage,
    }
}

#[test]
fn usage_proportional_to_weight_gives_the_plain_result() {
    let policy = SharePolicy::flat(1.0).with_tenant("a", 3.0, None);
    let plain = entitlements(&policy, 30.0, &[backlog("a", 100.0), backlog("b", 100.0)]);
    let used = [with_usage("a", 100.0, 300.0), with_usage("b", 100.0, 100.0)];
    let corrected = entitlements(&policy, 30.0, &used);
    assert_close(&entitled(&corrected), &entitled(&plain));
    // Equal weights and equal usage: also plain.
    let used = [with_usage("a", 100.0, 7.0), with_usage("c", 100.0, 7.0)];
    assert_close(
        &entitled(&entitlements(&SharePolicy::default(), 30.0, &used)),
        &[15.0, 15.0],
    );
}

#[test]
fn over_user_gets_less_but_never_below_the_floor() {
    let policy = SharePolicy::default();
    let used = [
        with_usage("heavy", 100.0, 900.0),
        with_usage("light", 100.0, 100.0),
    ];
    let e = entitlements(&policy, 30.0, &used);
    let floor = 15.0 * (-DEFAULT_USAGE_EXPONENT_CAP).exp2();
    assert!(
        e[0].entitled < 15.0 && e[0].entitled >= floor - EPS,
        "{e:?}"
    );
    assert!(e[1].entitled > 15.0);
    assert!(e[0].effective_weight < e[1].effective_weight);
    // All usage on one tenant of many: capped at the floor, still > 0.
    let mut loads: Vec<TenantLoad> = (0..50).map(|_| with_usage("x", 100.0, 0.0)).collect();
    let names: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    for (l, n) in loads.iter_mut().zip(&names) {
        l.tenant = n;
    }
    loads[0].usage = 1e9;
    let e = entitlements(&policy, 100.0, &loads);
    let plain = 2.0;
    assert!(
        e[0].entitled >= plain * (-DEFAULT_USAGE_EXPONENT_CAP).exp2() - EPS && e[0].entitled > 0.0
    );
    assert!(e[1].entitled >= plain - EPS);
}

#[test]
fn correction_applies_between_groups_then_within() {
    let policy = SharePolicy::flat(1.0)
        .with_group("g1", 1.0)
        .with_group("g2", 1.0)
        .with_tenant("a", 1.0, Some("g1"))
        .with_tenant("b", 1.0, Some("g1"))
        .with_tenant("c", 1.0, Some("g2"));
    // g1 used everything, all of it by a: g1 gets less than half, and b more than a inside it.
    let used = [
        with_usage("a", 100.0, 50.0),
        with_usage("b", 100.0, 0.0),
        with_usage("c", 100.0, 0.0),
    ];
    let e = entitlements(&policy, 40.0, &used);
    let g1 = e[0].entitled + e[1].entitled;
    assert!(g1 < 20.0 && e[2].entitled > 20.0, "{e:?}");
    assert!(e[0].entitled < e[1].entitled);
    assert!((g1 + e[2].entitled - 40.0).abs() < 1e-9);
}

#[test]
fn zero_cap_disables_the_correction() {
    let policy = SharePolicy::default().with_usage_exponent_cap(0.0);
    let used = [with_usage("a", 100.0, 900.0), with_usage("b", 100.0, 0.0)];
    assert_close(
        &entitled(&entitlements(&policy, 30.0, &used)),
        &[15.0, 15.0],
    );
}

// === invariants ===

fn names(n: usize) -> Vec<String> {
    (0..n).map(tenant_name).collect()
}

fn run(cap: f64, rows: &[TenantRow], with_usage: bool) -> Vec<Entitlement> {
    let names = names(rows.len());
    let mut policy = SharePolicy::flat(1.0);
    for (n, r) in names.iter().zip(rows) {
        policy = policy.with_tenant(n, r.weight, None);
    }
    let loads: Vec<TenantLoad> = names
        .iter()
        .zip(rows)
        .map(|(n, r)| TenantLoad {
            tenant: n,
            held: 0.0,
            pending: r.demand,
            usage: if with_usage { r.usage } else { 0.0 },
        })
        .collect();
    entitlements(&policy, cap, &loads)
}

proptest! {
    #![proptest_config(seeded(256))]

    #[test]
    fn fill_sums_to_min_of_capacity_and_demand(rows in tenant_rows(1..12), cap in 0.0..200.0f64, usage: bool) {
        let e = run(cap, &rows, usage);
        let total_demand: f64 = rows.iter().map(|r| r.demand).sum();
        let sum: f64 = e.iter().map(|x| x.entitled).sum();
        prop_assert!((sum - cap.min(total_demand)).abs() < 1e-6, "sum {sum} cap {cap} demand {total_demand}");
        for (x, r) in e.iter().zip(&rows) {
            prop_assert!(x.entitled >= 0.0 && x.entitled <= r.demand + 1e-9);
            if total_demand <= cap {
                prop_assert!((x.entitled - r.demand).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn backlogged_tenants_split_by_weight(rows in tenant_rows(1..12), cap in 0.0..200.0f64) {
        let e = run(cap, &rows, false);
        let levels: Vec<f64> = e.iter().zip(&rows)
            .filter(|(x, r)| x.entitled < r.demand - 1e-6)
            .map(|(x, r)| x.entitled / r.weight)
            .collect();
        for l in &levels {
            prop_assert!((l - levels[0]).abs() < 1e-6, "{levels:?}");
        }
        // Capped tenants are at or below the common level.
        for (x, r) in e.iter().zip(&rows) {
            if let Some(level) = levels.first() {
                prop_assert!(x.entitled / r.weight <= level + 1e-6);
            }
        }
    }

    #[test]
    fn raising_a_weight_never_lowers_an_entitlement(rows in tenant_rows(1..12), cap in 0.0..200.0f64, pick in any::<prop::sample::Index>(), factor in 1.0..10.0f64) {
        let i = pick.index(rows.len());
        let before = run(cap, &rows, false)[i].entitled;
        let mut raised = rows.clone();
        raised[i].weight *= factor;
        let after = run(cap, &raised, false)[i].entitled;
        prop_assert!(after >= before - 1e-9, "{before} -> {after}");
    }

    #[test]
    fn correction_keeps_its_documented_bounds(rows in tenant_rows(1..12), cap in 0.0..200.0f64) {
        let plain = run(cap, &rows, false);
        let corrected = run(cap, &rows, true);
        let floor = (-DEFAULT_USAGE_EXPONENT_CAP).exp2();
        for ((p, c), r) in plain.iter().zip(&corrected).zip(&rows) {
            prop_assert!(c.entitled >= floor * p.entitled - 1e-9, "{p:?} {c:?}");
            if r.usage == 0.0 {
                prop_assert!(c.entitled >= p.entitled - 1e-9);
            }
            if r.demand > 0.0 && cap > 0.0 {
                prop_assert!(c.entitled > 0.0);
            }
        }
    }

    #[test]
    fn usage_proportional_to_weight_is_neutral(rows in tenant_rows(1..12), cap in 0.0..200.0f64, k in 0.01..100.0f64) {
        let plain = run(cap, &rows, false);
        let prop_rows: Vec<_> = rows.iter().map(|r| TenantRow { usage: r.weight * k, ..r.clone() }).collect();
        let corrected = run(cap, &prop_rows, true);
        for (p, c) in plain.iter().zip(&corrected) {
            prop_assert!((p.entitled - c.entitled).abs() < 1e-6);
        }
    }

    #[test]
    fn water_fill_matches_entitlements_without_usage(rows in tenant_rows(1..12), cap in 0.0..200.0f64) {
        let d: Vec<f64> = rows.iter().map(|r| r.demand).collect();
        let w: Vec<f64> = rows.iter().map(|r| r.weight).collect();
        let plain = water_fill(cap, &d, &w);
        let e = run(cap, &rows, false);
        for (a, b) in plain.iter().zip(&e) {
            prop_assert!((a - b.entitled).abs() < 1e-9);
        }
    }

    #[test]
    fn jain_index_is_between_one_over_n_and_one(xs in prop::collection::vec(0.0..100.0f64, 1..20)) {
        let j = jain_index(&xs);
        let n = xs.len() as f64;
        prop_assert!(j <= 1.0 + 1e-12 && j >= 1.0 / n - 1e-12, "{j}");
        let same = vec![xs[0] + 1.0; xs.len()];
        prop_assert!((jain_index(&same) - 1.0).abs() < 1e-12);
    }
}

#[test]
fn share_deviation_matches_definition() {
    // Held (10, 0, 20) against entitled (5, 5, 20) on 30 GPUs: (5 + 5) / 60.
    let d = share_deviation(&[10.0, 0.0, 20.0], &[5.0, 5.0, 20.0], 30.0);
    assert!((d - 10.0 / 60.0).abs() < 1e-12);
    assert_eq!(share_deviation(&[1.0, 2.0], &[1.0, 2.0], 3.0), 0.0);
}

// === ledger ===

const H: f64 = 7.0 * 24.0 * 3600.0;

#[test]
fn usage_halves_after_one_half_life() {
    let mut l = Ledger::new(H).unwrap();
    l.advance(0.0, []);
    l.advance(100.0, [("a", 3.0, None)]);
    let before = l.usage("a", 100.0);
    assert!(before > 0.0);
    l.advance(100.0 + H, []);
    assert!((l.usage("a", 100.0 + H) - before / 2.0).abs() < 1e-9 * before);
    // Reading ahead without advancing decays the same way.
    assert!((l.usage("a", 100.0 + 2.0 * H) - before / 4.0).abs() < 1e-9 * before);
}

#[test]
fn constant_allocation_matches_the_integral_whatever_the_steps() {
    let (g, t) = (4.0, 2.5 * H);
    let closed = g * H / std::f64::consts::LN_2 * (1.0 - (-t / H).exp2());
    let mut once = Ledger::new(H).unwrap();
    once.advance(0.0, []);
    once.advance(t, [("a", g, Some(g / 2.0))]);
    let mut steps = Ledger::new(H).unwrap();
    steps.advance(0.0, []);
    for i in 1..=1000 {
        steps.advance(t * f64::from(i) / 1000.0, [("a", g, Some(g / 2.0))]);
    }
    for l in [&once, &steps] {
        let u = l.tenant_usage("a", t);
        assert!(
            (u.allocated - closed).abs() < 1e-9 * closed,
            "{} vs {closed}",
            u.allocated
        );
        assert!((u.measured - closed / 2.0).abs() < 1e-9 * closed);
    }
    // A rectangle rule would have charged g·t, noticeably more.
    assert!(g * t > closed * 1.1);
}

#[test]
fn record_round_trips() {
    let mut l = Ledger::new(H).unwrap();
    l.advance(1000.0, []);
    l.advance(5000.0, [("a", 2.0, Some(1.5)), ("b", 1.0, None)]);
    let json = serde_json::to_string(&l.to_record()).unwrap();
    assert!(
        json.contains("\"apiVersion\":\"rota.io/v1alpha1\"")
            && json.contains("\"kind\":\"UsageLedger\"")
    );
    assert!(json.contains("allocatedGpuSeconds") && json.contains("updatedAt"));
    let (back, problems) = parse_record(&json, H).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(back.tenants().collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(back.updated_at(), Some(5000.0));
    // serde_json parses floats to within one ulp (exact only with its `float_roundtrip` feature).
    let (got, want) = (back.to_record(), l.to_record());
    assert_eq!(got.tenants.len(), want.tenants.len());
    for (g, w) in got.tenants.values().zip(want.tenants.values()) {
        assert!(
            (g.allocated_gpu_seconds - w.allocated_gpu_seconds).abs()
                <= 1e-12 * w.allocated_gpu_seconds
        );
        assert!(
            (g.measured_gpu_seconds - w.measured_gpu_seconds).abs()
                <= 1e-12 * w.measured_gpu_seconds
        );
    }
    for t in ["a", "b"] {
        let (got, want) = (back.usage(t, 9000.0), l.usage(t, 9000.0));
        assert!(
            want > 0.0 && (got - want).abs() < 1e-12 * want,
            "{got} vs {want}"
        );
    }
}

#[test]
fn corrupt_or_truncated_record_gives_an_empty_ledger_and_a_problem() {
    let mut l = Ledger::new(H).unwrap();
    l.advance(0.0, []);
    l.advance(10.0, [("a", 1.0, None)]);
    let json = serde_json::to_string(&l.to_record()).unwrap();
    for text in [&json[..json.len() / 2], "", "[1,2]", "not json"] {
        let (back, problems) = parse_record(text, H).unwrap();
        assert_eq!(back.tenants().count(), 0, "{text}");
        assert_eq!(problems.len(), 1, "{text}: {problems:?}");
    }
}

#[test]
fn bad_tenant_entries_are_dropped_one_by_one() {
    let text = r#"{"apiVersion":"rota.io/v1alpha1","kind":"UsageLedger","updatedAt":50,
        "tenants":{"good":{"allocatedGpuSeconds":10,"measuredGpuSeconds":5},
                   "negative":{"allocatedGpuSeconds":-1,"measuredGpuSeconds":0},
                   "nan":{"allocatedGpuSeconds":null,"measuredGpuSeconds":0},
                   "garbage":"x"}}"#;
    let (l, problems) = parse_record(text, H).unwrap();
    assert_eq!(l.tenants().collect::<Vec<_>>(), vec!["good"]);
    assert_eq!(l.usage("good", 50.0), 10.0);
    assert_eq!(problems.len(), 3, "{problems:?}");
    for name in ["negative", "nan", "garbage"] {
        assert!(
            problems.iter().any(|p| p.contains(name)),
            "{name}: {problems:?}"
        );
    }
    // A typed record holding non-finite numbers recovers the same way.
    let mut record = LedgerRecord {
        updated_at: Some(0.0),
        ..l.to_record()
    };
    let bad = TenantRecord {
        allocated_gpu_seconds: f64::INFINITY,
        measured_gpu_seconds: 0.0,
    };
    record.tenants.insert("inf".into(), bad);
    let (back, problems) = Ledger::from_record(&record, H).unwrap();
    assert_eq!(back.tenants().collect::<Vec<_>>(), vec!["good"]);
    assert_eq!(problems.len(), 1);
}

// === queue ===

fn item(key: u32, tenant: &str, gpus: u64, class: i32, arrival: f64) -> QueueEntry<u32> {
    QueueEntry {
        key,
        tenant: tenant.into(),
        resource: "gpu".into(),
        gpus,
        priority_class: class,
        arrival,
        attained: 0.0,
    }
}

fn keys(q: &FairQueue<u32>) -> Vec<u32> {
    q.in_order("gpu").map(|e| e.key).collect()
}

#[test]
fn order_is_priority_then_standing_then_arrival_then_key() {
    let mut q = FairQueue::with_order(WithinTenant::Fifo);
    q.set_standing("over", Standing::new(1.5));
    q.set_standing("under", Standing::new(0.2));
    q.push(item(1, "over", 1, 0, 0.0));
    q.push(item(2, "under", 1, 0, 5.0));
    q.push(item(3, "under", 1, 0, 1.0));
    q.push(item(4, "over", 1, 100, 9.0));
    q.push(item(6, "under", 1, 0, 1.0));
    q.push(item(5, "under", 1, 0, 1.0));
    assert_eq!(keys(&q), vec![4, 3, 5, 6, 2, 1]);
    assert_eq!(q.head("gpu").map(|e| e.key), Some(4));
    assert_eq!(q.position(&2), Some((5, 6)));
    let ahead: Vec<u32> = q.ahead_of(&2).map(|e| e.key).collect();
    assert_eq!(ahead, vec![4, 3, 5, 6]);
    // The over-share tenant drops below: its entries move ahead within their class.
    q.set_standing("over", Standing::new(0.0));
    assert_eq!(keys(&q), vec![4, 1, 3, 5, 6, 2]);
}

#[derive(Clone, Debug)]
enum Op {
    Push(u32, u8, i32, u8, u8),
    Remove(u32),
    Stand(u8, u8),
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..40u32, 0..4u8, -1..2i32, 0..10u8, 0..4u8)
            .prop_map(|(k, t, c, a, s)| Op::Push(k, t, c, a, s)),
        1 => (0..40u32).prop_map(Op::Remove),
        2 => (0..4u8, 0..6u8).prop_map(|(t, s)| Op::Stand(t, s)),
        1 => Just(Op::Pop),
    ]
}

/// The model: a Vec sorted by the documented order (module docs of `core::queue`).
fn model_order(model: &[QueueEntry<u32>], standing: &[f64; 4], within: WithinTenant) -> Vec<u32> {
    let tenant = |e: &QueueEntry<u32>| usize::from(e.tenant.as_bytes()[1] - b'0');
    let rank = |e: &QueueEntry<u32>| match within {
        WithinTenant::Las => e.attained,
        WithinTenant::Fifo => e.arrival,
    };
    let mut v: Vec<&QueueEntry<u32>> = model.iter().collect();
    v.sort_by(|a, b| {
        b.priority_class
            .cmp(&a.priority_class)
            .then(standing[tenant(a)].total_cmp(&standing[tenant(b)]))
            .then(rank(a).total_cmp(&rank(b)))
            .then(a.arrival.total_cmp(&b.arrival))
            .then(a.key.cmp(&b.key))
    });
    v.iter().map(|e| e.key).collect()
}

proptest! {
    #![proptest_config(seeded(128))]

    #[test]
    fn queue_matches_a_sorted_model(
        ops in prop::collection::vec(op(), 1..80),
        las in any::<bool>(),
    ) {
        let within = if las { WithinTenant::Las } else { WithinTenant::Fifo };
        let mut q = FairQueue::with_order(within);
        let mut model: Vec<QueueEntry<u32>> = Vec::new();
        let mut standing = [0.0f64; 4];
        for op in ops {
            match op {
                Op::Push(k, t, c, a, s) => {
                    let mut e = item(k, &format!("t{t}"), 1, c, f64::from(a));
                    e.attained = f64::from(s) * 600.0;
                    model.retain(|m| m.key != k);
                    model.push(e.clone());
                    q.push(e);
                }
                Op::Remove(k) => {
                    let had = model.iter().any(|m| m.key == k);
                    model.retain(|m| m.key != k);
                    prop_assert_eq!(q.remove(&k).is_some(), had);
                }
                Op::Stand(t, s) => {
                    standing[usize::from(t)] = f64::from(s) / 2.0;
                    q.set_standing(&format!("t{t}"), Standing::new(f64::from(s) / 2.0));
                }
                Op::Pop => {
                    let want = model_order(&model, &standing, within).first().copied();
                    prop_assert_eq!(q.pop("gpu").map(|e| e.key), want);
                    model.retain(|m| Some(m.key) != want);
                }
            }
            let want = model_order(&model, &standing, within);
            prop_assert_eq!(keys(&q), want.clone());
            prop_assert_eq!(q.head("gpu").map(|e| e.key), want.first().copied());
            prop_assert_eq!(q.len(), model.len());
            if let Some(&last) = want.last() {
                prop_assert_eq!(q.position(&last), Some((want.len(), want.len())));
            }
        }
    }
}

// === the gate's walk ===

/// A supply over real [`Pool`]s: every workload's pods are `per_pod` GPUs (0: one pod per
/// workload); the holder keeps the nodes with the most free GPUs until they hold it or one
/// node per pod is kept (as the extender's supply does).
struct Nodes {
    free: Pool,
    capacity: Pool,
    per_pod: u64,
}

impl Nodes {
    fn new(nodes: &[u64], used: &[u64], per_pod: u64) -> Self {
        let free = nodes.iter().zip(used.iter().chain(std::iter::repeat(&0)));
        Self {
            free: Pool::of(free.map(|(&n, &u)| n.saturating_sub(u))),
            capacity: Pool::of(nodes.iter().copied()),
            per_pod,
        }
    }

    fn demand(&self, e: &QueueEntry<u32>) -> Demand {
        match self.per_pod {
            0 => Demand::new(e.gpus, e.gpus),
            g => Demand::new(e.gpus, g),
        }
    }
}

impl Supply<u32> for Nodes {
    fn fit(&self, e: &QueueEntry<u32>) -> Fit {
        match self.capacity.check(self.demand(e)) {
            Err(why) => Fit::Never(why),
            Ok(()) if self.free.fits(self.demand(e)) => Fit::Now,
            Ok(()) => Fit::Later,
        }
    }
    fn take(&mut self, e: &QueueEntry<u32>) {
        assert!(self.free.take(self.demand(e)), "took what does not fit");
    }
    fn reserve(&mut self, e: &QueueEntry<u32>) {
        let d = self.demand(e);
        let (mut kept, mut nodes) = (0, 0);
        while kept < d.gpus && nodes < d.gpus.div_ceil(d.per_pod) && !self.free.is_empty() {
            let largest = self.free.largest();
            self.free.remove(largest);
            kept += largest;
            nodes += 1;
        }
    }
}

/// Every step of a full walk, by key.
fn steps(q: &FairQueue<u32>, supply: &mut Nodes) -> Vec<(u32, Step)> {
    let mut out = Vec::new();
    gate::walk(q, "gpu", supply, |e, step, _| {
        out.push((e.key, step));
        ControlFlow::Continue(())
    });
    out
}

fn queue_of(jobs: &[generators::WorkloadSpec]) -> FairQueue<u32> {
    let mut q = FairQueue::new();
    for (i, w) in jobs.iter().enumerate() {
        let tenant = tenant_name(w.tenant);
        q.set_standing(&tenant, Standing::new(w.tenant as f64));
        q.push(item(
            i as u32,
            &tenant,
            w.gpus,
            w.priority,
            w.arrival_tick as f64,
        ));
    }
    q
}

proptest! {
    #![proptest_config(seeded(256))]

    /// The walk admits in order only what fits, the first workload that fits only later holds
    /// the reservation, and workloads that can never fit change nothing for anyone else.
    #[test]
    fn never_fit_never_blocks_and_the_walk_admits_in_order(
        jobs in workloads(3, 1..25),
        nodes in prop::collection::vec(prop::sample::select(vec![1u64, 2, 4, 8]), 1..6),
        used in prop::collection::vec(0..8u64, 0..6),
        per_pod in prop::sample::select(vec![1u64, 2, 4]),
        giants in prop::collection::vec((0..3usize, 0..12usize), 0..4),
    ) {
        let q = queue_of(&jobs);
        let fresh = || Nodes::new(&nodes, &used, per_pod);
        let walked = steps(&q, &mut fresh());
        // Exactly one step per entry, in queue order.
        let order = keys(&q);
        prop_assert_eq!(walked.iter().map(|(k, _)| *k).collect::<Vec<_>>(), order);
        let mut free = fresh();
        let mut holder = None;
        for (k, step) in &walked {
            let e = q.get(k).expect("queued");
            let fit = free.fit(e);
            match step {
                Step::Admit { backfill } => {
                    prop_assert_eq!(&fit, &Fit::Now);
                    prop_assert_eq!(*backfill, holder.is_some());
                    free.take(e);
                }
                Step::Reserve => {
                    prop_assert_eq!(&fit, &Fit::Later);
                    prop_assert!(holder.is_none());
                    holder = Some(*k);
                    free.reserve(e);
                }
                Step::Wait => {
                    prop_assert_eq!(&fit, &Fit::Later);
                    prop_assert!(holder.is_some());
                }
                Step::Never(why) => prop_assert_eq!(fit, Fit::Never(why.clone())),
            }
        }
        // Add workloads that can never fit (larger than every node, one pod): each is
        // classified Never and every other workload's step is unchanged.
        let mut with = q.clone();
        let largest = nodes.iter().copied().max().unwrap_or(0) as u32;
        let mut giant_keys = Vec::new();
        for (n, &(t, tick)) in giants.iter().enumerate() {
            let key = 1000 + n as u32;
            let mut e = item(key, &tenant_name(t), 0, 1, tick as f64);
            // One pod larger than any node: pods of `per_pod` cannot be made larger, so use
            // a gang larger than all nodes together instead.
            e.gpus = nodes.iter().sum::<u64>() + 1 + u64::from(largest);
            giant_keys.push(key);
            with.push(e);
        }
        let again = steps(&with, &mut fresh());
        let others: Vec<_> = again.iter().filter(|(k, _)| !giant_keys.contains(k)).cloned().collect();
        prop_assert_eq!(others, walked);
        for (k, step) in &again {
            if giant_keys.contains(k) {
                prop_assert!(matches!(step, Step::Never(_)), "{k}: {step:?}");
            }
        }
    }
}

#[test]
fn a_pod_larger_than_every_node_blocks_no_one() {
    // The real-cluster case: two nodes of 4 GPUs, all held; C asks for one pod of 5 GPUs
    // (ahead in the queue), B for four pods of 1. Four GPUs are released.
    let mut q = FairQueue::new();
    q.set_standing("c", Standing::new(0.0));
    q.set_standing("b", Standing::new(0.1));
    q.push(item(1, "c", 5, 0, 0.0));
    for k in 2..6 {
        q.push(item(k, "b", 1, 0, k as f64));
    }
    let mut supply = Nodes::new(&[4, 4], &[0, 4], 0);
    let walked = steps(&q, &mut supply);
    assert!(matches!(walked[0], (1, Step::Never(_))), "{walked:?}");
    // Pods of one GPU fit the released node: all four of B's are admitted, none waits.
    let admitted: Vec<u32> = walked
        .iter()
        .filter(|(_, s)| matches!(s, Step::Admit { .. }))
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(admitted, vec![2, 3, 4, 5]);
}

#[test]
fn a_reservation_keeps_its_nodes_from_backfill() {
    // A gang of 8 (pods of 4) waits behind nothing: it reserves two nodes, and a one-pod
    // workload behind it backfills only what is left on the third.
    let mut q = FairQueue::new();
    q.push(item(1, "a", 8, 0, 0.0));
    q.push(item(2, "b", 4, 0, 1.0));
    q.push(item(3, "b", 2, 0, 2.0));
    let mut supply = Nodes::new(&[4, 4, 4], &[2, 2, 2], 4);
    let walked = steps(&q, &mut supply);
    assert_eq!(walked[0], (1, Step::Reserve));
    // Six GPUs are free (2 per node); the holder keeps two nodes, one per pod, so only the
    // third node's two GPUs remain: the pod of 4 waits, the pod of 2 backfills.
    assert_eq!(walked[1], (2, Step::Wait));
    assert_eq!(walked[2], (3, Step::Admit { backfill: true }));
    assert!(supply.free.is_empty());
}

#[test]
fn gangs_are_admitted_whole_or_not_at_all() {
    let mut q = FairQueue::new();
    q.push(item(1, "a", 8, 0, 0.0));
    let mut supply = Nodes::new(&[8], &[2], 1);
    // Six free GPUs would hold six of the gang's eight pods: it waits, whole.
    let walked = steps(&q, &mut supply);
    assert_eq!(walked, vec![(1, Step::Reserve)]);
    let mut supply = Nodes::new(&[8], &[0], 1);
    assert_eq!(
        steps(&q, &mut supply),
        vec![(1, Step::Admit { backfill: false })]
    );
    assert!(q.mark_admitted(&1));
    assert!(q.is_admitted(&1));
    assert_eq!(q.head("gpu"), None);
    assert_eq!(q.admitted().map(|e| e.gpus).sum::<u64>(), 8);
    assert!(q.remove(&1).is_some());
    assert!(!q.is_admitted(&1));
}
