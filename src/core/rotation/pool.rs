//! One resource's planning state for one tick: tenants' projected holdings, free GPUs per node,
//! and the victim indexes the search reads.
//!
//! ```text
//!   victims (eligible at the start of the tick) ─┬─▶ by_gpus[tenant]: (GPUs, rank, victim)
//!                                                ├─▶ by_room[tenant]: (free + GPUs on node, rank, victim, node)
//!                                                └─▶ on_node[node]:  victims there
//!   free[node] ─▶ by_free: (free, node)
//! ```
//!
//! Invariants: `by_room` keys use the node's current free count (changing a node's free count
//! re-keys the victims on it, of which there are few); a taken victim is in no index; `rank`
//! sorts the most attained service first. Must not be used across ticks.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use super::super::fairshare::Standing;
use super::{
    Action, Claim, Gpus, ResourceState, RotatedOutWorkload, RunningWorkload, Spread, Tick,
    WaitingWorkload, EPS, MAX_NODE_PROBES, MAX_SCAN_PER_TENANT, OVER_SHARE,
};

/// Attained service as a sort key, most first (the bits of a non-negative finite f64 sort like
/// the number).
type Rank = Reverse<u64>;

/// The smallest rank (sorts before every other).
const FIRST: Rank = Reverse(u64::MAX);

fn rank_of(attained: f64) -> Rank {
    let x = if attained.is_finite() && attained > 0.0 {
        attained
    } else {
        0.0
    };
    Reverse(x.to_bits())
}

fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

struct Victim<'a> {
    w: &'a RunningWorkload,
    tenant: usize,
    gpus: u64,
    rank: Rank,
    nodes: Vec<(usize, u64)>,
    taken: bool,
}

impl Victim<'_> {
    fn on(&self, node: usize) -> u64 {
        self.nodes
            .iter()
            .filter(|&&(n, _)| n == node)
            .map(|&(_, g)| g)
            .sum()
    }
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
                e.1 += gpus;
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
    /// Held once the plan so far is carried out.
    planned: Vec<f64>,
    /// `planned` plus the claims the gate will admit on free GPUs.
    expected: Vec<f64>,
    node_ix: FxHashMap<&'a str, usize>,
    free: Vec<u64>,
    total_free: u64,
    by_free: BTreeSet<(u64, usize)>,
    victims: Vec<Victim<'a>>,
    by_gpus: Vec<BTreeSet<(u64, Rank, u32)>>,
    by_room: Vec<BTreeSet<(u64, Rank, u32, usize)>>,
    on_node: FxHashMap<usize, Vec<u32>>,
    /// `(static reclaimable GPUs, node)` of nodes with victims, most first.
    probe: Vec<(u64, usize)>,
    victim_tenants: Vec<usize>,
}

impl<'a> Pool<'a> {
    /// Indexes `state` and the eligible victims among `running` (all of this resource).
    pub(super) fn new(
        state: &'a ResourceState,
        running: impl Iterator<Item = &'a RunningWorkload>,
        tick: &Tick<'a>,
    ) -> Self {
        let mut p = Pool {
            resource: &state.resource,
            names: Vec::new(),
            tenant_ix: FxHashMap::default(),
            entitled: Vec::new(),
            planned: Vec::new(),
            expected: Vec::new(),
            node_ix: FxHashMap::default(),
            free: Vec::new(),
            total_free: 0,
            by_free: BTreeSet::new(),
            victims: Vec::new(),
            by_gpus: Vec::new(),
            by_room: Vec::new(),
            on_node: FxHashMap::default(),
            probe: Vec::new(),
            victim_tenants: Vec::new(),
        };
        for t in &state.tenants {
            if p.tenant_ix.contains_key(t.tenant.as_str()) {
                continue;
            }
            p.tenant_ix.insert(&t.tenant, p.names.len());
            p.names.push(&t.tenant);
            p.entitled.push(sane(t.entitled));
            p.planned.push(sane(t.held));
        }
        p.expected = p.planned.clone();
        for (name, free) in &state.free {
            if !p.node_ix.contains_key(name.as_str()) {
                let n = p.node(name);
                p.free[n] = *free;
                p.total_free += *free;
                if *free > 0 {
                    p.by_free.insert((*free, n));
                }
            }
        }
        for w in running {
            p.add_victim(w, tick);
        }
        p.index();
        p
    }

    fn node(&mut self, name: &'a str) -> usize {
        if let Some(&n) = self.node_ix.get(name) {
            return n;
        }
        self.node_ix.insert(name, self.free.len());
        self.free.push(0);
        self.free.len() - 1
    }

    fn excess(&self, t: usize) -> f64 {
        self.planned[t] - self.entitled[t]
    }

    fn add_victim(&mut self, w: &'a RunningWorkload, tick: &Tick<'a>) {
        let Some(&t) = self.tenant_ix.get(w.tenant.as_str()) else {
            return;
        };
        let gpus = w.gpus();
        let excess = self.excess(t);
        let eligible = w.preemptible
            && !w.protected
            && gpus > 0
            && excess > tick.limits.margin_gpus
            && gpus as f64 <= excess + EPS
            && tick.past_quantum(w);
        if !eligible {
            return;
        }
        let nodes = w
            .nodes
            .iter()
            .filter(|&&(_, g)| g > 0)
            .map(|(name, g)| (self.node(name), *g))
            .collect();
        self.victims.push(Victim {
            w,
            tenant: t,
            gpus,
            rank: rank_of(w.attained_gpu_seconds),
            nodes,
            taken: false,
        });
    }

    fn index(&mut self) {
        let tenants = self.names.len();
        self.by_gpus = vec![BTreeSet::new(); tenants];
        self.by_room = vec![BTreeSet::new(); tenants];
        let mut reclaimable: FxHashMap<usize, u64> = FxHashMap::default();
        for (i, v) in self.victims.iter().enumerate() {
            let id = i as u32;
            self.by_gpus[v.tenant].insert((v.gpus, v.rank, id));
            for &(n, g) in &v.nodes {
                self.by_room[v.tenant].insert((self.free[n] + g, v.rank, id, n));
                self.on_node.entry(n).or_default().push(id);
                *reclaimable.entry(n).or_insert(self.free[n]) += g;
            }
        }
        self.probe = reclaimable.into_iter().map(|(n, g)| (g, n)).collect();
        self.probe
            .sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        self.victim_tenants = (0..tenants)
            .filter(|&t| !self.by_gpus[t].is_empty())
            .collect();
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
        let waiting: Vec<Claim<'a>> = waiting.filter_map(|w| claim(w, false)).collect();
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
        let Some(ids) = self.on_node.get(&n) else {
            return;
        };
        for &id in ids {
            let v = &self.victims[id as usize];
            if v.taken {
                continue;
            }
            let g = v.on(n);
            let index = &mut self.by_room[v.tenant];
            index.remove(&(old + g, v.rank, id, n));
            index.insert((new + g, v.rank, id, n));
        }
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
            && tick.rotated(self.names[t]) + count < limits.max_per_tenant_per_tick
            && self.excess(t) - given as f64 > limits.margin_gpus
            && !tick
                .banned
                .contains(&(self.names[t], claim.workload.tenant.as_str()))
    }

    fn allows(&self, id: u32, claim: &Claim<'a>, picks: &Picks, tick: &Tick<'a>) -> bool {
        let v = &self.victims[id as usize];
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
        for &t in &self.victim_tenants {
            if !self.tenant_allows(t, claim, &none, tick) {
                continue;
            }
            let found = self.by_room[t]
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
        for &(reclaimable, n) in self.probe.iter().take(MAX_NODE_PROBES) {
            if reclaimable < g {
                break;
            }
            let need = g.saturating_sub(self.free[n]);
            let Some(ids) = self.on_node.get(&n) else {
                continue;
            };
            let cands: Vec<(u64, Rank, u32)> = ids
                .iter()
                .map(|&id| {
                    (
                        self.victims[id as usize].on(n),
                        self.victims[id as usize].rank,
                        id,
                    )
                })
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
            let v = &self.victims[pick.2 as usize];
            picks.add(pick.2, v.tenant, v.gpus);
            got += pick.0;
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
            let v = &self.victims[pick as usize];
            picks.add(pick, v.tenant, v.gpus);
            got += v.gpus;
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
        for &t in &self.victim_tenants {
            if !self.tenant_allows(t, claim, picks, tick) {
                continue;
            }
            let found = self.by_gpus[t]
                .range((left, FIRST, 0)..)
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
        for &t in &self.victim_tenants {
            if !self.tenant_allows(t, claim, picks, tick) {
                continue;
            }
            let index = &self.by_gpus[t];
            let ok = |e: &&(u64, Rank, u32)| self.allows(e.2, claim, picks, tick);
            let Some(&(g, _, _)) = index
                .range(..(left, FIRST, 0))
                .rev()
                .take(MAX_SCAN_PER_TENANT)
                .find(ok)
            else {
                continue;
            };
            // The most attained among the victims of that size.
            if let Some(&(g, rank, id)) = index
                .range((g, FIRST, 0)..(g + 1, FIRST, 0))
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
            let v = &self.victims[id as usize];
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
    /// the claim's GPUs taken. Returns the victims' tenants, in order.
    pub(super) fn commit(
        &mut self,
        choice: &Choice,
        claim: &Claim<'a>,
        tick: &mut Tick<'a>,
    ) -> Vec<String> {
        let mut from = Vec::with_capacity(choice.victims.len());
        let mut freed_on = Vec::new();
        for &id in &choice.victims {
            let action = self.rotation_action(id, claim, tick.now);
            let v = &mut self.victims[id as usize];
            v.taken = true;
            let (t, gpus, rank) = (v.tenant, v.gpus, v.rank);
            let nodes = std::mem::take(&mut v.nodes);
            self.by_gpus[t].remove(&(gpus, rank, id));
            for &(n, g) in &nodes {
                self.by_room[t].remove(&(self.free[n] + g, rank, id, n));
            }
            for &(n, g) in &nodes {
                self.set_free(n, self.free[n] + g);
                freed_on.push(n);
            }
            self.planned[t] -= gpus as f64;
            self.expected[t] -= gpus as f64;
            tick.rotations += 1;
            *tick.per_tenant.entry(self.names[t]).or_default() += 1;
            from.push(action.tenant.clone());
            tick.plan.rotate_out.push(action);
        }
        self.take_free(choice.site, claim.workload.gpus, &freed_on);
        from
    }

    fn rotation_action(&self, id: u32, claim: &Claim<'a>, now: f64) -> Action {
        let v = &self.victims[id as usize];
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
