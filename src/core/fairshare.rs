//! Entitlements: how many GPUs each tenant deserves now, from weights, demand and past usage.
//!
//! **Water-filling.** Capacity C is split weighted max-min over tenants with demand
//! `d_t = held + pending`: with level λ chosen so that `Σ min(d_t, w_t·λ) = C`, tenant t is
//! entitled to `min(d_t, w_t·λ)`. A tenant demanding less than its weighted share gets its demand
//! and the rest is re-split by weight; when `Σ d_t ≤ C` everyone gets its demand. O(T log T).
//!
//! **Hierarchy.** A two-level tree: C is first water-filled over the root's children, then each
//! group's share over its tenants. The root's children are the configured groups that have
//! demand (demand and usage summed over their tenants, weight from the config) *and every tenant
//! without a group*, which competes at the root with its own weight (as Slurm places users and
//! accounts side by side). With no groups configured this is flat water-filling over tenants. A
//! tenant naming an unknown group is treated as ungrouped; unknown tenants get
//! `defaultTenantWeight`.
//!
//! **Usage correction** (applied at each level among the siblings that have demand). With `u_i`
//! a sibling's decayed usage, `U_i = u_i / Σu` its usage share and `S_i = w_i / Σw` its weight
//! share, the effective weight is
//!
//! ```text
//!   w'_i = w_i · 2^(−min(U_i / S_i, R))          (Slurm's fair-share factor, capped at R)
//! ```
//!
//! where R is [`SharePolicy::usage_exponent_cap`] (default [`DEFAULT_USAGE_EXPONENT_CAP`]).
//! Guarantees, per level (proved by the level λ' of the corrected fill being ≥ the plain λ):
//! - usage proportional to weight (all `U_i/S_i` equal, including all zero) gives exactly the
//!   plain weighted water-filling, because a common factor cancels;
//! - a sibling that has used nothing keeps `w' = w` and gets *at least* its plain share;
//! - every sibling gets at least `2^−R` times its plain share (1/16 by default), so a heavy user
//!   keeps progressing and is never starved; a tenant with demand > 0 under C > 0 always gets > 0.
//!
//! **Standing**, used to order the queue, is `held / entitled` (0 = holds nothing of what it is
//! owed, 1 = exactly its entitlement, +∞ when entitled to nothing).
//!
//! Must not: read the ledger or the clock itself (callers pass decayed usage), allocate per
//! tenant beyond a few scratch vectors, or panic on odd numbers (NaN, negative and infinite inputs
//! are sanitised as documented on each item).

use std::cmp::Ordering;

use rustc_hash::FxHashMap;

use crate::config::RotaConfig;

/// Default cap R on the usage exponent: a heavy user keeps at least 2^−4 = 1/16 of its plain
/// share, enough to progress while its usage decays.
pub const DEFAULT_USAGE_EXPONENT_CAP: f64 = 4.0;

/// Weights below this (zero, negative, NaN) are raised to it: such a tenant is best-effort and
/// gets GPUs that no positively weighted tenant demands.
pub const MIN_WEIGHT: f64 = 1e-9;

/// A tenant's fair-share standing, `held / entitled`: lower means further below entitlement.
/// Totally ordered (NaN is mapped to +∞ on construction).
#[derive(Clone, Copy, Debug, Default)]
pub struct Standing(f64);

impl Standing {
    /// Wraps a ratio; NaN becomes +∞ (owed nothing).
    pub fn new(value: f64) -> Self {
        Standing(if value.is_nan() { f64::INFINITY } else { value })
    }

    /// `held / entitled`, +∞ when nothing is entitled.
    pub fn of(held: f64, entitled: f64) -> Self {
        if entitled > 0.0 {
            Self::new(held / entitled)
        } else {
            Standing(f64::INFINITY)
        }
    }

    /// The ratio.
    pub fn value(self) -> f64 {
        self.0
    }
}

impl PartialEq for Standing {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Standing {}
impl PartialOrd for Standing {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Standing {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Clone, Debug)]
struct TenantSpec {
    weight: f64,
    group: Option<usize>,
}

#[derive(Clone, Debug)]
struct GroupSpec {
    name: String,
    weight: f64,
}

/// Weights and groups from the config, resolved once for fast lookups.
#[derive(Clone, Debug)]
pub struct SharePolicy {
    tenants: FxHashMap<String, TenantSpec>,
    groups: Vec<GroupSpec>,
    group_index: FxHashMap<String, usize>,
    default_tenant_weight: f64,
    usage_exponent_cap: f64,
}

impl Default for SharePolicy {
    /// No tenants or groups listed, every tenant weighs 1, default usage cap.
    fn default() -> Self {
        Self::flat(1.0)
    }
}

impl SharePolicy {
    /// A policy with no listed tenants or groups: every tenant weighs `default_tenant_weight`.
    pub fn flat(default_tenant_weight: f64) -> Self {
        Self {
            tenants: FxHashMap::default(),
            groups: Vec::new(),
            group_index: FxHashMap::default(),
            default_tenant_weight: sane_weight(default_tenant_weight),
            usage_exponent_cap: DEFAULT_USAGE_EXPONENT_CAP,
        }
    }

    /// Tenants, groups and the default weight from the config.
    pub fn from_config(config: &RotaConfig) -> Self {
        let mut policy = Self::flat(config.default_tenant_weight);
        for g in &config.groups {
            policy = policy.with_group(&g.name, g.weight);
        }
        for t in &config.tenants {
            policy = policy.with_tenant(&t.name, t.weight, t.group.as_deref());
        }
        policy
    }

    /// Adds or replaces a group.
    pub fn with_group(mut self, name: &str, weight: f64) -> Self {
        let spec = GroupSpec {
            name: name.to_owned(),
            weight: sane_weight(weight),
        };
        match self.group_index.get(name) {
            Some(&i) => self.groups[i] = spec,
            None => {
                self.group_index.insert(name.to_owned(), self.groups.len());
                self.groups.push(spec);
            }
        }
        self
    }

    /// Adds or replaces a tenant. A `group` not added before is ignored (the tenant is ungrouped).
    pub fn with_tenant(mut self, name: &str, weight: f64, group: Option<&str>) -> Self {
        let group = group.and_then(|g| self.group_index.get(g).copied());
        let spec = TenantSpec {
            weight: sane_weight(weight),
            group,
        };
        self.tenants.insert(name.to_owned(), spec);
        self
    }

    /// Sets the usage exponent cap R (0 disables the usage correction). Negative or NaN means 0.
    pub fn with_usage_exponent_cap(mut self, cap: f64) -> Self {
        self.usage_exponent_cap = if cap > 0.0 { cap } else { 0.0 };
        self
    }

    /// The cap R on the usage exponent (default [`DEFAULT_USAGE_EXPONENT_CAP`]).
    pub fn usage_exponent_cap(&self) -> f64 {
        self.usage_exponent_cap
    }

    /// Configured weight of `tenant` among its siblings, else the default weight.
    pub fn weight(&self, tenant: &str) -> f64 {
        self.tenants
            .get(tenant)
            .map_or(self.default_tenant_weight, |t| t.weight)
    }

    /// The group `tenant` belongs to, if any.
    pub fn group_of(&self, tenant: &str) -> Option<&str> {
        let i = self.tenants.get(tenant)?.group?;
        Some(&self.groups[i].name)
    }

    fn group_index_of(&self, tenant: &str) -> Option<usize> {
        self.tenants.get(tenant).and_then(|t| t.group)
    }
}

fn sane_weight(w: f64) -> f64 {
    if w.is_finite() && w > MIN_WEIGHT {
        w
    } else if w == f64::INFINITY {
        f64::MAX / 1e6
    } else {
        MIN_WEIGHT
    }
}

fn sane_amount(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// What one tenant holds and wants now. Each tenant appears at most once per call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TenantLoad<'a> {
    /// Tenant name.
    pub tenant: &'a str,
    /// GPUs held now.
    pub held: f64,
    /// GPUs requested by its pending workloads.
    pub pending: f64,
    /// Decayed usage from the ledger (any unit, the same for every tenant); 0 if unknown.
    pub usage: f64,
}

/// One tenant's entitlement. Negative or non-finite inputs were read as 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entitlement {
    /// GPUs the tenant is entitled to now (≤ `demand`).
    pub entitled: f64,
    /// `held + pending`.
    pub demand: f64,
    /// GPUs held now.
    pub held: f64,
    /// Configured weight among its siblings.
    pub weight: f64,
    /// Weight after the usage correction, among its siblings.
    pub effective_weight: f64,
    /// `held / entitled`, for queue ordering.
    pub standing: Standing,
}

impl Entitlement {
    /// `entitled − held`: positive when owed GPUs, negative when above its share.
    pub fn gap(&self) -> f64 {
        self.entitled - self.held
    }
}

/// Plain weighted max-min water-filling of `capacity` over `demands` with `weights`
/// (same length; extra entries of the longer slice are ignored). Returns one share per demand.
/// Inputs are sanitised (see [`MIN_WEIGHT`]; bad demands and capacity count as 0). O(T log T).
pub fn water_fill(capacity: f64, demands: &[f64], weights: &[f64]) -> Vec<f64> {
    let n = demands.len().min(weights.len());
    let d: Vec<f64> = demands[..n].iter().map(|&x| sane_amount(x)).collect();
    let w: Vec<f64> = weights[..n].iter().map(|&x| sane_weight(x)).collect();
    let mut out = vec![0.0; n];
    FillBuf::default().fill(sane_amount(capacity), &d, &w, &mut out);
    out
}

/// Buffers of one water-fill, reused across the fills of one call.
#[derive(Default)]
struct FillBuf {
    /// `(d/w, index)` of tenants with demand, sorted; the ratio is precomputed so sorting
    /// does no division.
    order: Vec<(f64, usize)>,
    suffix: Vec<f64>,
}

impl FillBuf {
    /// Water-fills `capacity` over sanitised `d`/`w` into `out` (all the same length).
    fn fill(&mut self, capacity: f64, d: &[f64], w: &[f64], out: &mut [f64]) {
        let total: f64 = d.iter().sum();
        if total <= capacity {
            out.copy_from_slice(d);
            return;
        }
        let order = &mut self.order;
        order.clear();
        order.extend(
            (0..d.len())
                .filter(|&i| d[i] > 0.0)
                .map(|i| (d[i] / w[i], i)),
        );
        order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        // Suffix sums of weights avoid cancellation when weights differ by orders of magnitude.
        let suffix = &mut self.suffix;
        suffix.clear();
        suffix.resize(order.len() + 1, 0.0);
        for k in (0..order.len()).rev() {
            suffix[k] = suffix[k + 1] + w[order[k].1];
        }
        out.iter_mut().for_each(|x| *x = 0.0);
        let mut left = capacity;
        for (k, &(_, i)) in order.iter().enumerate() {
            let level = left / suffix[k];
            if d[i] <= w[i] * level {
                out[i] = d[i];
                left -= d[i];
            } else {
                for &(_, j) in &order[k..] {
                    out[j] = w[j] * level;
                }
                return;
            }
        }
    }
}

/// Buffers for splitting a group's share over its members, reused across groups.
#[derive(Default)]
struct GroupBuf {
    fill: FillBuf,
    d: Vec<f64>,
    w: Vec<f64>,
    u: Vec<f64>,
    eff: Vec<f64>,
    out: Vec<f64>,
}

impl GroupBuf {
    /// Water-fills `share` over the tenants `m` (indices into the per-tenant columns), with the
    /// usage correction among them, writing `entitled` and `effective` for each.
    fn split(&mut self, m: &[usize], share: f64, cap: f64, t: &mut PerTenant) {
        let gather = |buf: &mut Vec<f64>, src: &[f64]| {
            buf.clear();
            buf.extend(m.iter().map(|&i| src[i]));
        };
        gather(&mut self.d, &t.demand);
        gather(&mut self.w, &t.weight);
        gather(&mut self.u, &t.usage);
        self.eff.resize(m.len(), 0.0);
        self.out.resize(m.len(), 0.0);
        correct(&self.w, &self.d, &self.u, cap, &mut self.eff);
        self.fill.fill(share, &self.d, &self.eff, &mut self.out);
        for (k, &i) in m.iter().enumerate() {
            t.entitled[i] = self.out[k];
            t.effective[i] = self.eff[k];
        }
    }
}

/// Writes into `out` the usage-corrected weights (module docs) of siblings `w` with demand `d`
/// and usage `u`.
fn correct(w: &[f64], d: &[f64], u: &[f64], cap: f64, out: &mut [f64]) {
    out.copy_from_slice(w);
    let active = || (0..w.len()).filter(|&i| d[i] > 0.0);
    let total_w: f64 = active().map(|i| w[i]).sum();
    let total_u: f64 = active().map(|i| u[i]).sum();
    if cap <= 0.0 || total_u <= 0.0 || !total_u.is_finite() {
        return;
    }
    for i in active() {
        let ratio = (u[i] / total_u) / (w[i] / total_w);
        out[i] = w[i] * (-ratio.min(cap)).exp2();
    }
}

/// Per-tenant columns of one [`entitlements`] call.
struct PerTenant {
    held: Vec<f64>,
    demand: Vec<f64>,
    usage: Vec<f64>,
    weight: Vec<f64>,
    entitled: Vec<f64>,
    effective: Vec<f64>,
}

impl PerTenant {
    fn new(policy: &SharePolicy, loads: &[TenantLoad<'_>]) -> Self {
        let held: Vec<f64> = loads.iter().map(|l| sane_amount(l.held)).collect();
        let demand = loads
            .iter()
            .zip(&held)
            .map(|(l, &h)| h + sane_amount(l.pending))
            .collect();
        Self {
            demand,
            held,
            usage: loads.iter().map(|l| sane_amount(l.usage)).collect(),
            weight: loads.iter().map(|l| policy.weight(l.tenant)).collect(),
            entitled: vec![0.0; loads.len()],
            effective: vec![0.0; loads.len()],
        }
    }
}

/// The root level: one node per group with members in this call, one per ungrouped tenant.
struct RootLevel {
    /// Node of each tenant.
    node_of: Vec<usize>,
    /// Whether a node is a configured group (else a single ungrouped tenant).
    is_group: Vec<bool>,
    demand: Vec<f64>,
    weight: Vec<f64>,
    usage: Vec<f64>,
}

impl RootLevel {
    fn new(policy: &SharePolicy, loads: &[TenantLoad<'_>], t: &PerTenant) -> Self {
        let mut root = RootLevel {
            node_of: Vec::with_capacity(loads.len()),
            is_group: Vec::new(),
            demand: Vec::new(),
            weight: Vec::new(),
            usage: Vec::new(),
        };
        let mut group_node = vec![None; policy.groups.len()];
        for (i, l) in loads.iter().enumerate() {
            let slot = match policy.group_index_of(l.tenant) {
                Some(g) => {
                    *group_node[g].get_or_insert_with(|| root.push(policy.groups[g].weight, true))
                }
                None => root.push(t.weight[i], false),
            };
            root.node_of.push(slot);
            root.demand[slot] += t.demand[i];
            root.usage[slot] += t.usage[i];
        }
        root
    }

    fn push(&mut self, weight: f64, is_group: bool) -> usize {
        self.is_group.push(is_group);
        self.demand.push(0.0);
        self.weight.push(weight);
        self.usage.push(0.0);
        self.demand.len() - 1
    }
}

/// Entitlements of `loads` (one per tenant) on `capacity` GPUs under `policy`, in input order.
/// See the module docs for the formula and its guarantees. O(T log T), O(1) allocations per
/// tenant column.
pub fn entitlements(
    policy: &SharePolicy,
    capacity: f64,
    loads: &[TenantLoad<'_>],
) -> Vec<Entitlement> {
    let cap = policy.usage_exponent_cap;
    let mut t = PerTenant::new(policy, loads);
    let root = RootLevel::new(policy, loads, &t);
    let mut groups = GroupBuf::default();
    let mut node_eff = vec![0.0; root.demand.len()];
    correct(&root.weight, &root.demand, &root.usage, cap, &mut node_eff);
    let mut node_share = vec![0.0; root.demand.len()];
    groups.fill.fill(
        sane_amount(capacity),
        &root.demand,
        &node_eff,
        &mut node_share,
    );

    // Ungrouped tenants take their node's result; group members are split group by group.
    let mut grouped: Vec<usize> = Vec::new();
    for (i, &slot) in root.node_of.iter().enumerate() {
        if root.is_group[slot] {
            grouped.push(i);
        } else {
            t.entitled[i] = node_share[slot];
            t.effective[i] = node_eff[slot];
        }
    }
    grouped.sort_by_key(|&i| root.node_of[i]);
    for m in grouped.chunk_by(|&a, &b| root.node_of[a] == root.node_of[b]) {
        let slot = root.node_of[m[0]];
        groups.split(m, node_share[slot], cap, &mut t);
    }
    (0..loads.len())
        .map(|i| Entitlement {
            entitled: t.entitled[i],
            demand: t.demand[i],
            held: t.held[i],
            weight: t.weight[i],
            effective_weight: t.effective[i],
            standing: Standing::of(t.held[i], t.entitled[i]),
        })
        .collect()
}

/// Jain's fairness index `(Σx)² / (n·Σx²)`: 1 is perfectly fair, 1/n the worst. Non-finite
/// values are skipped and negatives count as 0; an empty or all-zero input gives 1 (everyone got
/// the same, nothing).
pub fn jain_index(values: &[f64]) -> f64 {
    let (mut n, mut sum, mut sq) = (0usize, 0.0, 0.0);
    for &x in values.iter().filter(|x| x.is_finite()) {
        let x = x.max(0.0);
        n += 1;
        sum += x;
        sq += x * x;
    }
    if sq <= 0.0 {
        return 1.0;
    }
    sum * sum / (n as f64 * sq)
}

/// Share deviation `Σ|held_t − entitled_t| / (2C)`: 0 is perfect, 1 the worst. Compared
/// pairwise (extra entries of the longer slice are ignored); a capacity ≤ 0 or NaN gives 0.
pub fn share_deviation(held: &[f64], entitled: &[f64], capacity: f64) -> f64 {
    if capacity.is_nan() || capacity <= 0.0 {
        return 0.0;
    }
    let gap: f64 = held.iter().zip(entitled).map(|(h, e)| (h - e).abs()).sum();
    gap / (2.0 * capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(tenant: &str, held: f64, pending: f64, usage: f64) -> TenantLoad<'_> {
        TenantLoad {
            tenant,
            held,
            pending,
            usage,
        }
    }

    #[test]
    fn standing_orders_nan_last() {
        assert!(Standing::new(0.5) < Standing::new(1.0));
        assert!(Standing::new(f64::NAN) == Standing::of(1.0, 0.0));
        assert!(Standing::of(0.0, 2.0) < Standing::of(1.0, 2.0));
    }

    #[test]
    fn bad_inputs_are_sanitised() {
        let out = water_fill(f64::NAN, &[1.0, 2.0], &[1.0, 1.0]);
        assert_eq!(out, vec![0.0, 0.0]);
        let out = water_fill(10.0, &[f64::NAN, -1.0, 20.0], &[1.0, 1.0, f64::NAN]);
        assert_eq!(out, vec![0.0, 0.0, 10.0]);
    }

    #[test]
    fn zero_weight_tenant_is_best_effort() {
        let out = water_fill(10.0, &[4.0, 20.0], &[1.0, 0.0]);
        assert!(
            (out[0] - 4.0).abs() < 1e-9 && (out[1] - 6.0).abs() < 1e-9,
            "{out:?}"
        );
    }

    #[test]
    fn unknown_group_means_ungrouped() {
        let p = SharePolicy::flat(1.0).with_tenant("a", 2.0, Some("nope"));
        assert_eq!(p.group_of("a"), None);
        assert_eq!(p.weight("a"), 2.0);
        assert_eq!(p.weight("zzz"), 1.0);
    }

    #[test]
    fn effective_weight_reported_for_ungrouped() {
        let p = SharePolicy::flat(1.0);
        let e = entitlements(
            &p,
            10.0,
            &[load("a", 0.0, 20.0, 10.0), load("b", 0.0, 20.0, 0.0)],
        );
        assert!(e[0].effective_weight < e[0].weight);
        assert_eq!(e[1].effective_weight, e[1].weight);
    }

    #[test]
    fn metrics_edge_cases() {
        assert_eq!(jain_index(&[]), 1.0);
        assert_eq!(jain_index(&[0.0, 0.0]), 1.0);
        assert!((jain_index(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        assert_eq!(share_deviation(&[1.0], &[0.0], 0.0), 0.0);
        assert!((share_deviation(&[10.0, 0.0], &[0.0, 10.0], 10.0) - 1.0).abs() < 1e-12);
    }
}
