//! One resource's planning state for one tick: tenants' projected holdings, free GPUs per node,
//! and the victims the search reads (indexed on first use, see `victims`).
//!
//! ```text
//!   tenants ─▶ held (start of tick) · planned · expected · rotations out this tick
//!   free[node] ─▶ by_free: (free, node)
//!   running ──(first claim that searches)──▶ largest candidate per tenant (`may_cover`)
//!   running ──(first search that may succeed)──▶ Victims (and their indexes)
//! ```
//!
//! Invariants: victim eligibility reads the holdings at the start of the tick (`held`), never
//! the plan so far, so building the victims at the first search finds the same set as building
//! them up front; a taken victim is never chosen again. Must not be used across ticks.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use super::super::fairshare::Standing;
use super::victims::{Rank, Victims, FIRST};
use super::{
    Action, Claim, Gpus, ResourceState, RotatedOutWorkload, RunningWorkload, Spread, Tick,
    WaitingWorkload, Warning, EPS, MAX_NODE_PROBES, MAX_SCAN_PER_TENANT, OVER_SHARE,
};

fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// An integer at least as large as any whole number of GPUs `k` that passes the planner's
/// no-overshoot test `excess - k >= -EPS` (one more than the floor, which absorbs the slack and
/// any rounding; no limit for values too large to count in GPUs).
fn at_most(excess: f64) -> u64 {
    if excess < 0.0 {
        1
    } else if excess < 1e12 {
        excess as u64 + 1
    } else {
        u64::MAX
    }
}

/// The index of node `name`, registered with no free GPUs when new.
fn register<'a>(
    node_ix: &mut FxHashMap<&'a str, usize>,
    free: &mut Vec<u64>,
    name: &'a str,
) -> usize {
    if let Some(&n) = node_ix.get(name) {
        return n;
    }
    node_ix.insert(name, free.len());
    free.push(0);
    free.len() - 1
}

/// Where a claim's GPUs are taken.
#[derive(Clone, Copy, Debug)]
pub(super) enum Site {
    /// On this node.
    Node(usize),
    /// Anywhere in the pool.
    Pool,
}

/// The victims chosen for a claim, and where the claim runs.
pub(super) struct Choice {
    victims: Vec<u32>,
    site: Site,
}

/// Victims picked so far for one claim, with what each tenant gives up.
#[derive(Default)]
struct Picks {
    victims: Vec<u32>,
    tenants: Vec<(usize, u64, u32)>,
}

impl Picks {
    fn of(&self, tenant: usize) -> (u64, u32) {
        self.tenants
            .iter()
            .find(|e| e.0 == tenant)
            .map_or((0, 0), |e| (e.1, e.2))
    }

    fn add(&mut self, victim: u32, tenant: usize, gpus: u64) {
        self.victims.push(victim);
        match self.tenants.iter_mut().find(|e| e.0 == tenant) {
            Some(e) => {
                e.1 = e.1.saturating_add(gpus);
                e.2 += 1;
            }
            None => self.tenants.push((tenant, gpus, 1)),
        }
    }
}

/// One resource's state for one tick (module docs).
pub(super) struct Pool<'a> {
    resource: &'a str,
    names: Vec<&'a str>,
    tenant_ix: FxHashMap<&'a str, usize>,
    entitled: Vec<f64>,
    /// Held at the start of the tick (victim eligibility reads only this).
    held: Vec<f64>,
    /// Held once the plan so far is carried out.
    planned: Vec<f64>,
    /// `planned` plus the claims the gate will admit on free GPUs.
    expected: Vec<f64>,
    /// Rotations out per tenant this tick, over every resource (`Tick::per_tenant` by index).
    rotated: Vec<u32>,
    /// `(victim tenant, claim tenant)` pairs forbidden this tick (`Tick::banned` by index).
    banned: FxHashSet<(usize, usize)>,
    node_ix: FxHashMap<&'a str, usize>,
    free: Vec<u64>,
    /// Free GPUs per listed node at the start of the tick.
    initial_free: Vec<u64>,
    total_free: u64,
    by_free: BTreeSet<(u64, usize)>,
    /// Per tenant, the most GPUs one candidate victim holds (0: none), once `scouted`.
    largest: Vec<u64>,
    scouted: bool,
    /// The node the last victim was on (a cache of `node_ix`).
    last_node: Option<(&'a str, usize)>,
    /// All running workloads of the tick (those of this resource are the candidates).
    running: &'a [RunningWorkload],
    victims: Victims<'a>,
}

impl<'a> Pool<'a> {
    /// Indexes `state`; the eligible victims among `running` (of this resource) are found
    /// and indexed by the first search ([`Pool::search`] needs [`Pool::prepare`] first).
    pub(super) fn new(
        state: &'a ResourceState,
        running: &'a [RunningWorkload],
        tick: &Tick<'a>,
    ) -> Self {
        let tenants = state.tenants.len();
        let mut p = Pool {
            resource: &state.resource,
            names: Vec::with_capacity(tenants),
            tenant_ix: FxHashMap::with_capacity_and_hasher(tenants, Default::default()),
            entitled: Vec::with_capacity(tenants),
            held: Vec::with_capacity(tenants),
            planned: Vec::new(),
            expected: Vec::new(),
            rotated: Vec::new(),
            banned: FxHashSet::default(),
            node_ix: FxHashMap::default(),
            free: Vec::new(),
            initial_free: Vec::new(),
            total_free: 0,
            by_free: BTreeSet::new(),
            largest: Vec::new(),
            scouted: false,
            last_node: None,
            running,
            victims: Victims::default(),
        };
        for t in &state.tenants {
            if p.tenant_ix.contains_key(t.tenant.as_str()) {
                continue;
            }
            p.tenant_ix.insert(&t.tenant, p.names.len());
            p.names.push(&t.tenant);
            p.entitled.push(sane(t.entitled));
            p.held.push(sane(t.held));
        }
        p.rotated = if tick.per_tenant.is_empty() {
            vec![0; p.names.len()]
        } else {
            p.names.iter().map(|n| tick.rotated(n)).collect()
        };
        p.planned = p.held.clone();
        p.expected = p.held.clone();
        p.banned = (tick.banned.iter())
            .filter_map(|&(v, c)| Some((*p.tenant_ix.get(v)?, *p.tenant_ix.get(c)?)))
            .collect();
        for (name, free) in &state.free {
            if !p.node_ix.contains_key(name.as_str()) {
                let n = p.node(name);
                p.free[n] = *free;
                p.total_free = p.total_free.saturating_add(*free);
                if *free > 0 {
                    p.by_free.insert((*free, n));
                }
            }
        }
        p.initial_free = p.free.clone();
        p
    }

    fn node(&mut self, name: &'a str) -> usize {
        register(&mut self.node_ix, &mut self.free, name)
    }

    fn excess(&self, t: usize) -> f64 {
        self.planned[t] - self.entitled[t]
    }

    /// Whether a rotation could happen here at all: some tenant is owed more than the margin
    /// (only such a tenant's claim searches) and another holds more than the margin above its
    /// entitlement (only its workloads are victims). Both read the start of the tick, and
    /// neither can become true later in it: `expected` only grows until a search succeeds.
    pub(super) fn may_rotate(&self, margin: f64) -> bool {
        let tenants = || self.held.iter().zip(&self.entitled);
        tenants().any(|(h, e)| e - h > margin) && tenants().any(|(h, e)| h - e > margin)
    }

    /// Finds and indexes the eligible victims (once), and the one-node indexes when `claim`
    /// needs them (once): call before [`Pool::search`].
    pub(super) fn prepare(&mut self, claim: &Claim<'a>, tick: &Tick<'a>) {
        if !self.victims.listed {
            let running = self.running;
            let resource = self.resource;
            self.victims.reserve(running.len());
            let mut memo = None;
            for w in running.iter().filter(|w| w.resource == resource) {
                self.add_victim(w, &mut memo, tick);
            }
            self.victims.index(self.names.len());
        }
        if claim.workload.spread == Spread::OneNode && !self.victims.placed() {
            self.victims.place(&self.free, &self.initial_free);
        }
    }

    /// `(tenant, GPUs)` of `w` when it passes the victim tests that need no history
    /// (rule 3; eligibility at the start of the tick): a superset of the victims.
    fn candidate(
        &self,
        w: &'a RunningWorkload,
        memo: &mut Option<(&'a str, usize)>,
        tick: &Tick<'a>,
    ) -> Option<(usize, u64)> {
        let t = self.tenant_of(&w.tenant, memo)?;
        let gpus = w.gpus();
        let excess = self.held[t] - self.entitled[t];
        // One with a stop announced is promised already: never a victim twice.
        let eligible = w.preemptible
            && !w.protected
            && w.stop.is_none()
            && gpus > 0
            && excess > tick.limits.margin_gpus
            && gpus as f64 <= excess + EPS;
        eligible.then_some((t, gpus))
    }

    /// Whether some set of victims could cover `claim`: the free GPUs it can use (on one node
    /// when it needs one) plus what each tenant it may take from could give, at most its
    /// excess and at most its rotations left times its largest candidate. Every search
    /// picks within those limits, so when this is false every search fails; it needs only a
    /// cheap pass over the running workloads (once), not the victim indexes.
    pub(super) fn may_cover(&mut self, claim: &Claim<'a>, tick: &Tick<'a>) -> bool {
        if !self.scouted {
            self.scout(tick);
        }
        let free = match claim.workload.spread {
            Spread::OneNode => self.by_free.last().map_or(0, |&(f, _)| f),
            Spread::AnyNodes => self.total_free,
        };
        let none = Picks::default();
        let mut reach = free;
        for (t, &largest) in self.largest.iter().enumerate() {
            if largest == 0 || !self.tenant_allows(t, claim, &none, tick) {
                continue;
            }
            let left = tick
                .limits
                .max_per_tenant_per_tick
                .saturating_sub(self.rotated[t]);
            let by_count = u64::from(left).saturating_mul(largest);
            reach = reach.saturating_add(by_count.min(at_most(self.excess(t))));
            if reach >= claim.workload.gpus {
                return true;
            }
        }
        false
    }

    /// Each tenant's largest candidate (`largest`), for [`Pool::may_cover`].
    fn scout(&mut self, tick: &Tick<'a>) {
        self.largest = vec![0; self.names.len()];
        let (resource, mut memo) = (self.resource, None);
        for w in self.running.iter().filter(|w| w.resource == resource) {
            if let Some((t, gpus)) = self.candidate(w, &mut memo, tick) {
                if tick.may_be_past_quantum(w) {
                    self.largest[t] = self.largest[t].max(gpus);
                }
            }
        }
        self.scouted = true;
    }

    fn add_victim(
        &mut self,
        w: &'a RunningWorkload,
        memo: &mut Option<(&'a str, usize)>,
        tick: &Tick<'a>,
    ) {
        let Some((t, gpus)) = self.candidate(w, memo, tick) else {
            return;
        };
        if !tick.past_quantum(w) {
            return;
        }
        let (node_ix, free, last) = (&mut self.node_ix, &mut self.free, &mut self.last_node);
        let nodes = (w.nodes.iter()).filter(|&&(_, g)| g > 0).map(|(name, g)| {
            // Victims come grouped by node (or all on one): skip the hash for a repeat.
            let n = match *last {
                Some((l, n)) if l == name => n,
                _ => register(node_ix, free, name),
            };
            *last = Some((name, n));
            (n, *g)
        });
        self.victims.push(w, t, gpus, nodes);
    }

    /// The claims of this resource in fair-share order (module docs of `rotation`, rule 1).
    pub(super) fn claims(
        &self,
        waiting: impl Iterator<Item = &'a WaitingWorkload>,
        rotated: impl Iterator<Item = &'a RotatedOutWorkload>,
    ) -> Vec<Claim<'a>> {
        let claim = |w: &'a WaitingWorkload, resume| {
            let tenant = *self.tenant_ix.get(w.tenant.as_str())?;
            Some(Claim {
                workload: w,
                tenant,
                resume,
            })
        };
        let mut memo = None;
        let mut out = Vec::with_capacity(waiting.size_hint().1.unwrap_or(0));
        out.extend(waiting.filter_map(|w| {
            Some(Claim {
                workload: w,
                tenant: self.tenant_of(&w.tenant, &mut memo)?,
                resume: false,
            })
        }));
        let waiting = out;
        let mut rotated: Vec<(f64, &'a RotatedOutWorkload)> =
            rotated.map(|r| (r.rotated_out_at, r)).collect();
        rotated.sort_by(|a, b| {
            let key = |r: &RotatedOutWorkload| self.standing_of(&r.workload.tenant);
            key(a.1)
                .cmp(&key(b.1))
                .then(a.0.total_cmp(&b.0))
                .then_with(|| a.1.workload.id.cmp(&b.1.workload.id))
        });
        let rotated: Vec<Claim<'a>> = rotated
            .into_iter()
            .filter_map(|(_, r)| claim(&r.workload, true))
            .collect();
        if rotated.is_empty() {
            return waiting;
        }
        let mut out = Vec::with_capacity(waiting.len() + rotated.len());
        let (mut i, mut j) = (0, 0);
        while i < waiting.len() || j < rotated.len() {
            let take_rotated = j < rotated.len()
                && (i >= waiting.len()
                    || self.standing(rotated[j].tenant) <= self.standing(waiting[i].tenant));
            let (list, k) = if take_rotated {
                (&rotated, &mut j)
            } else {
                (&waiting, &mut i)
            };
            out.push(list[*k]);
            *k += 1;
        }
        out
    }

    /// The index of tenant `name`, remembering the last answer in `memo`: inputs come in
    /// runs of one tenant, and comparing with the last name is cheaper than hashing it.
    fn tenant_of(&self, name: &'a str, memo: &mut Option<(&'a str, usize)>) -> Option<usize> {
        if let Some((last, t)) = *memo {
            if last == name {
                return Some(t);
            }
        }
        let t = *self.tenant_ix.get(name)?;
        *memo = Some((name, t));
        Some(t)
    }

    fn standing(&self, t: usize) -> Standing {
        Standing::of(self.expected[t], self.entitled[t])
    }

    fn standing_of(&self, tenant: &str) -> Standing {
        self.tenant_ix
            .get(tenant)
            .map_or(Standing::new(f64::INFINITY), |&t| self.standing(t))
    }

    /// Where free GPUs cover `w` now, if anywhere (the fullest node that fits, for one node).
    pub(super) fn free_fit(&self, w: &WaitingWorkload) -> Option<Site> {
        match w.spread {
            Spread::OneNode => self
                .by_free
                .range((w.gpus, 0)..)
                .next()
                .map(|&(_, n)| Site::Node(n)),
            Spread::AnyNodes => (self.total_free >= w.gpus).then_some(Site::Pool),
        }
    }

    /// Takes `gpus` free GPUs at `site` (for the pool: on `prefer` first, then fullest first).
    pub(super) fn take_free(&mut self, site: Site, gpus: u64, prefer: &[usize]) {
        match site {
            Site::Node(n) => self.set_free(n, self.free[n].saturating_sub(gpus)),
            Site::Pool => {
                let mut left = gpus;
                for &n in prefer {
                    let take = left.min(self.free[n]);
                    self.set_free(n, self.free[n] - take);
                    left -= take;
                }
                while left > 0 {
                    let Some(&(f, n)) = self.by_free.iter().next() else {
                        break;
                    };
                    let take = left.min(f);
                    self.set_free(n, f - take);
                    left -= take;
                }
            }
        }
    }

    /// Sets a node's free count, keeping `by_free`, the total and `by_room` in step.
    fn set_free(&mut self, n: usize, new: u64) {
        let old = self.free[n];
        if old == new {
            return;
        }
        if old > 0 {
            self.by_free.remove(&(old, n));
        }
        if new > 0 {
            self.by_free.insert((new, n));
        }
        self.total_free = self.total_free - old + new;
        self.free[n] = new;
        self.victims.rekey(n, old, new);
    }

    /// A claim the gate will admit on free GPUs.
    pub(super) fn expect(&mut self, t: usize, gpus: u64) {
        self.expected[t] += gpus as f64;
    }

    /// A claim the plan starts (a resume, or a waiting workload GPUs were freed for).
    pub(super) fn start(&mut self, t: usize, gpus: u64) {
        self.planned[t] += gpus as f64;
        self.expected[t] += gpus as f64;
    }

    /// The tenant is below its entitlement and `gpus` more bring it closer.
    pub(super) fn may_resume(&self, t: usize, gpus: u64) -> bool {
        let (p, e) = (self.planned[t], self.entitled[t]);
        self.expected[t] < e - EPS && (p + gpus as f64 - e).abs() < (p - e).abs() - EPS
    }

    /// The index of tenant `name`, if it has a known entitlement.
    pub(super) fn tenant(&self, name: &str) -> Option<usize> {
        self.tenant_ix.get(name).copied()
    }

    /// The tenant is below its entitlement (by any amount).
    pub(super) fn below_share(&self, t: usize) -> bool {
        self.entitled[t] - self.expected[t] > EPS
    }

    /// Giving up `gpus` more leaves tenant `name` no further below its entitlement than the
    /// margin (an unknown tenant never keeps it: its entitlement is unknown).
    pub(super) fn keeps_share(&self, name: &str, gpus: u64, margin: f64) -> bool {
        self.tenant(name)
            .is_some_and(|t| self.excess(t) - gpus as f64 >= -margin - EPS)
    }

    /// A workload of tenant `name` leaves (its announced stop is kept).
    pub(super) fn leave(&mut self, name: &str, gpus: u64) {
        if let Some(t) = self.tenant(name) {
            self.planned[t] -= gpus as f64;
            self.expected[t] -= gpus as f64;
        }
    }

    /// The tenant is owed more than the margin.
    pub(super) fn owed_beyond_margin(&self, t: usize, margin: f64) -> bool {
        self.entitled[t] - self.expected[t] > margin
    }

    /// `(held as planned, entitled)` of a tenant, for messages.
    pub(super) fn standing_numbers(&self, t: usize) -> (f64, f64) {
        (self.planned[t], self.entitled[t])
    }

    fn tenant_allows(&self, t: usize, claim: &Claim<'a>, picks: &Picks, tick: &Tick<'a>) -> bool {
        let (given, count) = picks.of(t);
        let limits = tick.limits;
        t != claim.tenant
            && tick.rotations + (picks.victims.len() as u32) < limits.max_per_tick
            && self.rotated[t] + count < limits.max_per_tenant_per_tick
            && self.excess(t) - given as f64 > limits.margin_gpus
            && (self.banned.is_empty() || !self.banned.contains(&(t, claim.tenant)))
    }

    fn allows(&self, id: u32, claim: &Claim<'a>, picks: &Picks, tick: &Tick<'a>) -> bool {
        let v = self.victims.get(id);
        let (given, _) = picks.of(v.tenant);
        !v.taken
            && v.w.priority <= claim.workload.priority
            && !picks.victims.contains(&id)
            && self.excess(v.tenant) - (given + v.gpus) as f64 >= -EPS
            && self.tenant_allows(v.tenant, claim, picks, tick)
    }

    /// Victims for a claim the free GPUs do not cover (rules 3 to 5), if any set qualifies.
    pub(super) fn search(&self, claim: &Claim<'a>, tick: &Tick<'a>) -> Option<Choice> {
        let choice = match claim.workload.spread {
            Spread::OneNode => self
                .single_on_node(claim, tick)
                .or_else(|| self.several_on_node(claim, tick)),
            Spread::AnyNodes => self.cover_pool(claim, tick),
        }?;
        self.reduces_gap(&choice, claim).then_some(choice)
    }

    fn single_on_node(&self, claim: &Claim<'a>, tick: &Tick<'a>) -> Option<Choice> {
        let g = claim.workload.gpus;
        let none = Picks::default();
        let mut best: Option<(u64, Rank, u32, usize)> = None;
        for &t in &self.victims.tenants {
            if !self.tenant_allows(t, claim, &none, tick) {
                continue;
            }
            let found = (self.victims.by_room(t))
                .range((g, FIRST, 0, 0)..)
                .take(MAX_SCAN_PER_TENANT)
                .find(|e| self.allows(e.2, claim, &none, tick));
            if let Some(&(room, rank, id, n)) = found {
                let key = (room - g, rank, id, n);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
        best.map(|(_, _, id, n)| Choice {
            victims: vec![id],
            site: Site::Node(n),
        })
    }

    fn several_on_node(&self, claim: &Claim<'a>, tick: &Tick<'a>) -> Option<Choice> {
        let g = claim.workload.gpus;
        let mut best: Option<((usize, u64), Choice)> = None;
        for &(reclaimable, n) in self.victims.probe().iter().take(MAX_NODE_PROBES) {
            if reclaimable < g {
                break;
            }
            let need = g.saturating_sub(self.free[n]);
            let Some(ids) = self.victims.on_node(n) else {
                continue;
            };
            let cands: Vec<(u64, Rank, u32)> = (ids.iter())
                .map(|&id| (self.victims.on(id, n), self.victims.get(id).rank, id))
                .collect();
            let Some((picks, got)) = self.greedy(need, &cands, claim, tick) else {
                continue;
            };
            let key = (picks.victims.len(), got - need);
            if best.as_ref().is_none_or(|(b, _)| key < *b) {
                let choice = Choice {
                    victims: picks.victims,
                    site: Site::Node(n),
                };
                best = Some((key, choice));
            }
        }
        best.map(|(_, c)| c)
    }

    /// Largest first, ending with the best single fit; `(picks, GPUs got)`.
    fn greedy(
        &self,
        need: u64,
        cands: &[(u64, Rank, u32)],
        claim: &Claim<'a>,
        tick: &Tick<'a>,
    ) -> Option<(Picks, u64)> {
        let mut picks = Picks::default();
        let mut got = 0u64;
        while got < need {
            let left = need - got;
            let ok = |c: &&(u64, Rank, u32)| c.0 > 0 && self.allows(c.2, claim, &picks, tick);
            let fit = cands
                .iter()
                .filter(|c| c.0 >= left)
                .filter(ok)
                .min_by_key(|c| (c.0 - left, c.1, c.2));
            let pick = fit.or_else(|| {
                cands
                    .iter()
                    .filter(ok)
                    .min_by_key(|c| (Reverse(c.0), c.1, c.2))
            })?;
            let v = self.victims.get(pick.2);
            picks.add(pick.2, v.tenant, v.gpus);
            got = got.saturating_add(pick.0);
        }
        Some((picks, got))
    }

    fn cover_pool(&self, claim: &Claim<'a>, tick: &Tick<'a>) -> Option<Choice> {
        let need = claim.workload.gpus.saturating_sub(self.total_free);
        let mut picks = Picks::default();
        let mut got = 0u64;
        while got < need {
            let left = need - got;
            let pick = self
                .best_in_pool(left, claim, &picks, tick)
                .or_else(|| self.largest_in_pool(left, claim, &picks, tick))?;
            let v = self.victims.get(pick);
            picks.add(pick, v.tenant, v.gpus);
            got = got.saturating_add(v.gpus);
        }
        Some(Choice {
            victims: picks.victims,
            site: Site::Pool,
        })
    }

    /// The single victim covering `left` with the least excess, then the most attained.
    fn best_in_pool(
        &self,
        left: u64,
        claim: &Claim<'a>,
        picks: &Picks,
        tick: &Tick<'a>,
    ) -> Option<u32> {
        let mut best: Option<(u64, Rank, u32)> = None;
        for &t in &self.victims.tenants {
            if !self.tenant_allows(t, claim, picks, tick) {
                continue;
            }
            let found = (self.victims.at_least(t, left))
                .take(MAX_SCAN_PER_TENANT)
                .find(|e| self.allows(e.2, claim, picks, tick));
            if let Some(&(g, rank, id)) = found {
                let key = (g - left, rank, id);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
        best.map(|b| b.2)
    }

    /// The largest victim below `left`, then the most attained.
    fn largest_in_pool(
        &self,
        left: u64,
        claim: &Claim<'a>,
        picks: &Picks,
        tick: &Tick<'a>,
    ) -> Option<u32> {
        let mut best: Option<(Reverse<u64>, Rank, u32)> = None;
        for &t in &self.victims.tenants {
            if !self.tenant_allows(t, claim, picks, tick) {
                continue;
            }
            let ok = |e: &&(u64, Rank, u32)| self.allows(e.2, claim, picks, tick);
            let Some(&(g, _, _)) = (self.victims.below(t, left))
                .rev()
                .take(MAX_SCAN_PER_TENANT)
                .find(ok)
            else {
                continue;
            };
            // The most attained among the victims of that size.
            if let Some(&(g, rank, id)) = (self.victims.exactly(t, g))
                .take(MAX_SCAN_PER_TENANT)
                .find(ok)
            {
                let key = (Reverse(g), rank, id);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
        best.map(|b| b.2)
    }

    /// Rule 5: the victims leaving and the claim starting lower `Σ |held − entitled|`.
    fn reduces_gap(&self, choice: &Choice, claim: &Claim<'a>) -> bool {
        let mut given: Vec<(usize, f64)> = Vec::new();
        for &id in &choice.victims {
            let v = self.victims.get(id);
            match given.iter_mut().find(|e| e.0 == v.tenant) {
                Some(e) => e.1 += v.gpus as f64,
                None => given.push((v.tenant, v.gpus as f64)),
            }
        }
        let change = |t: usize, by: f64| {
            let (p, e) = (self.planned[t], self.entitled[t]);
            (p + by - e).abs() - (p - e).abs()
        };
        let victims: f64 = given.iter().map(|&(t, g)| change(t, -g)).sum();
        victims + change(claim.tenant, claim.workload.gpus as f64) < -EPS
    }

    /// Carries out a choice in the pool and the plan: victims rotated out, their GPUs freed,
    /// the claim's GPUs taken; returns the victims' tenants, in order. When a victim has a
    /// warning period the stops are announced instead (all at the end of the longest
    /// warning, so the claim gets its GPUs at once), nothing is freed, and `None` returns.
    pub(super) fn commit(
        &mut self,
        choice: &Choice,
        claim: &Claim<'a>,
        tick: &mut Tick<'a>,
    ) -> Option<Vec<String>> {
        let warning = (choice.victims.iter())
            .map(|&id| self.victims.get(id).w.warning_seconds)
            .filter(|s| s.is_finite() && *s > 0.0)
            .fold(0.0, f64::max);
        let mut from = Vec::with_capacity(choice.victims.len());
        let mut freed_on = Vec::new();
        for &id in &choice.victims {
            let action = self.rotation_action(id, claim, tick.now);
            self.victims.take(id, &self.free);
            let (t, gpus) = (self.victims.get(id).tenant, self.victims.get(id).gpus);
            if warning == 0.0 {
                for i in 0..self.victims.nodes_of(id).len() {
                    let (n, g) = self.victims.nodes_of(id)[i];
                    self.set_free(n, self.free[n] + g);
                    freed_on.push(n);
                }
            }
            self.planned[t] -= gpus as f64;
            self.expected[t] -= gpus as f64;
            tick.rotations += 1;
            self.rotated[t] += 1;
            *tick.per_tenant.entry(self.names[t]).or_default() += 1;
            from.push(action.tenant.clone());
            if warning > 0.0 {
                tick.plan.warnings.push(Warning {
                    action,
                    stop_at: tick.now + warning,
                    claim: claim.workload.id.clone(),
                    claim_tenant: claim.workload.tenant.clone(),
                });
            } else {
                tick.plan.rotate_out.push(action);
            }
        }
        if warning > 0.0 {
            return None;
        }
        self.take_free(choice.site, claim.workload.gpus, &freed_on);
        Some(from)
    }

    fn rotation_action(&self, id: u32, claim: &Claim<'a>, now: f64) -> Action {
        let v = self.victims.get(id);
        let (t, c, w) = (v.tenant, claim.tenant, claim.workload);
        let reason = format!(
            "tenant {} holds {} {} GPUs, entitled to {:.1}; tenant {} waits below its share \
             ({} of {:.1}); ran {:.0} s, past its {:.0} s quantum",
            self.names[t],
            Gpus(self.planned[t]),
            self.resource,
            self.entitled[t],
            w.tenant,
            Gpus(self.expected[c]),
            self.entitled[c],
            now - v.w.started_at,
            v.w.quantum_seconds,
        );
        Action {
            workload: v.w.id.clone(),
            tenant: v.w.tenant.clone(),
            gpus: v.gpus,
            reason,
            reason_code: OVER_SHARE,
        }
    }
}
