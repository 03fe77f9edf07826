//! The usage ledger: per tenant, decayed GPU-seconds charged for GPUs held (and, apart, GPUs
//! measured busy), forgotten with an exponential half-life H.
//!
//! Charging is exact for piecewise-constant allocations: over an interval of length Δ where a
//! tenant holds g weighted GPUs,
//!
//! ```text
//!   usage(t + Δ) = usage(t) · 2^(−Δ/H) + g · H/ln 2 · (1 − 2^(−Δ/H))
//! ```
//!
//! which is the integral of `g · 2^(−(t+Δ−s)/H) ds` over the interval (no rectangle rule), so the
//! result does not depend on how often [`Ledger::advance`] is called.
//!
//! Invariants: every stored value is finite and ≥ 0; time never moves backwards (an earlier or
//! non-finite `now` charges nothing). To keep `advance` O(k log T) for k allocations instead of
//! O(T) for T tenants, values are stored scaled by `2^((t_last − epoch)/H)`; the epoch is moved
//! forward (an O(T) rescale) only when that scale would exceed 2^64, i.e. every 64 half-lives.
//!
//! Must not: read a clock, touch files or ConfigMaps ([`LedgerRecord`] is the pure persisted
//! form; the adapter that stores it lives elsewhere), or panic on a corrupt record.

use std::collections::BTreeMap;
use std::f64::consts::LN_2;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::UsageConfig;

/// `apiVersion` of a persisted ledger.
pub const RECORD_API_VERSION: &str = "rota.io/v1alpha1";
/// `kind` of a persisted ledger.
pub const RECORD_KIND: &str = "UsageLedger";

/// Rescale when the stored scale exponent (in half-lives) passes this; 2^64 keeps values far
/// from f64 overflow while rescaling at most once per 64 half-lives.
const MAX_SCALE_HALF_LIVES: f64 = 64.0;

/// Errors building a ledger.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The half-life must be finite and > 0.
    #[error("usage half-life must be a finite number of seconds > 0, got {0}")]
    InvalidHalfLife(f64),
}

impl Error {
    /// Stable label for metrics and API responses.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidHalfLife(_) => "invalid_half_life",
        }
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Device weight of a GPU product: `usage.deviceWeights[product]`, else
/// `usage.defaultDeviceWeight` (an H100-hour is not a T4-hour). Non-finite or negative weights
/// count as 0 so a bad config never produces a negative charge.
pub fn device_weight(usage: &UsageConfig, product: Option<&str>) -> f64 {
    let w = product
        .and_then(|p| usage.device_weights.get(p))
        .copied()
        .unwrap_or(usage.default_device_weight);
    if w.is_finite() && w > 0.0 {
        w
    } else {
        0.0
    }
}

/// One tenant's decayed usage at a point in time, in GPU-seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TenantUsage {
    /// Decayed GPU-seconds held, weighted by device.
    pub allocated: f64,
    /// Decayed GPU-seconds measured busy by telemetry.
    pub measured: f64,
}

/// Per-tenant decayed GPU usage. See the module docs for the formula.
#[derive(Clone, Debug)]
pub struct Ledger {
    half_life: f64,
    /// Time of the last `advance` (seconds), `None` before the first.
    updated_at: Option<f64>,
    /// Reference time of the stored scale.
    epoch: f64,
    /// Values scaled by `2^((updated_at − epoch)/H)`.
    tenants: BTreeMap<String, TenantUsage>,
}

impl Ledger {
    /// An empty ledger forgetting usage with `half_life_seconds` (config default 1 hour).
    pub fn new(half_life_seconds: f64) -> Result<Self> {
        if !(half_life_seconds.is_finite() && half_life_seconds > 0.0) {
            return Err(Error::InvalidHalfLife(half_life_seconds));
        }
        Ok(Self {
            half_life: half_life_seconds,
            updated_at: None,
            epoch: 0.0,
            tenants: BTreeMap::new(),
        })
    }

    /// The half-life in seconds.
    pub fn half_life(&self) -> f64 {
        self.half_life
    }

    /// Time of the last [`advance`](Self::advance), `None` if it was never advanced.
    pub fn updated_at(&self) -> Option<f64> {
        self.updated_at
    }

    /// Charges the interval since the last call and moves the ledger to `now` (seconds).
    ///
    /// `allocations` are what each tenant held during the whole interval: `(tenant, weighted
    /// GPUs, measured busy GPUs)`. A tenant listed twice is charged twice; tenants not listed
    /// only decay. The first call only sets the clock. A `now` earlier than the last call or
    /// non-finite charges nothing and leaves the clock alone; negative or non-finite amounts
    /// are ignored. Cost: O(k log T) for k allocations (plus an O(T) rescale every 64 half-lives).
    pub fn advance<'a, I>(&mut self, now: f64, allocations: I)
    where
        I: IntoIterator<Item = (&'a str, f64, Option<f64>)>,
    {
        if !now.is_finite() {
            return;
        }
        let Some(last) = self.updated_at else {
            self.updated_at = Some(now);
            self.epoch = now;
            return;
        };
        if now <= last {
            return;
        }
        if (now - self.epoch) / self.half_life > MAX_SCALE_HALF_LIVES {
            // Rebase at `now`, not `last`: a long gap must not overflow the scale.
            self.rebase(now);
        }
        self.updated_at = Some(now);
        // Charge in today's units, then scale to the stored units.
        let per_gpu = self.integral(now - last) * self.scale(now);
        for (tenant, weighted, measured) in allocations {
            let alloc = non_negative(weighted) * per_gpu;
            let busy = measured.map_or(0.0, non_negative) * per_gpu;
            if alloc == 0.0 && busy == 0.0 {
                continue;
            }
            // Look up by &str first so the common case allocates no String.
            if let Some(entry) = self.tenants.get_mut(tenant) {
                entry.allocated += alloc;
                entry.measured += busy;
            } else {
                let fresh = TenantUsage {
                    allocated: alloc,
                    measured: busy,
                };
                self.tenants.insert(tenant.to_owned(), fresh);
            }
        }
    }

    /// Decayed allocated GPU-seconds of `tenant` at `now`: the value at the last
    /// [`advance`](Self::advance), decayed to `now` (charges after the last advance arrive with
    /// the next one). 0 for unknown tenants; a `now` before the last advance reads the last value.
    pub fn usage(&self, tenant: &str, now: f64) -> f64 {
        self.tenant_usage(tenant, now).allocated
    }

    /// Both decayed values of `tenant` at `now` (see [`usage`](Self::usage)).
    pub fn tenant_usage(&self, tenant: &str, now: f64) -> TenantUsage {
        let Some(stored) = self.tenants.get(tenant) else {
            return TenantUsage::default();
        };
        let at = match self.updated_at {
            Some(last) if now.is_finite() && now > last => now,
            Some(last) => last,
            None => self.epoch,
        };
        let unscale = 1.0 / self.scale(at);
        TenantUsage {
            allocated: stored.allocated * unscale,
            measured: stored.measured * unscale,
        }
    }

    /// Takes the values as of the last advance to be current at `now`, for a clock that ran
    /// ahead (a ledger stamped in the future would otherwise refuse every charge until the
    /// wall clock caught up). No effect when `now` is not finite.
    pub fn reset_clock(&mut self, now: f64) {
        if !now.is_finite() {
            return;
        }
        let mut record = self.to_record();
        record.updated_at = Some(now);
        if let Ok((ledger, _)) = Self::from_record(&record, self.half_life) {
            *self = ledger;
        }
    }

    /// Known tenants, in name order.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// The persisted form, with values as of the last advance.
    pub fn to_record(&self) -> LedgerRecord {
        let at = self.updated_at.unwrap_or(self.epoch);
        let tenants = self
            .tenants
            .keys()
            .map(|name| {
                let u = self.tenant_usage(name, at);
                let rec = TenantRecord {
                    allocated_gpu_seconds: u.allocated,
                    measured_gpu_seconds: u.measured,
                };
                (name.clone(), rec)
            })
            .collect();
        LedgerRecord {
            api_version: RECORD_API_VERSION.into(),
            kind: RECORD_KIND.into(),
            updated_at: self.updated_at,
            tenants,
        }
    }

    /// Rebuilds a ledger from a record, tenant by tenant: an entry with a non-finite or
    /// negative number is dropped (that tenant starts from zero) and reported in the returned
    /// problems. A record without `updatedAt` keeps its values, taken as current at the next
    /// `advance`.
    pub fn from_record(
        record: &LedgerRecord,
        half_life_seconds: f64,
    ) -> Result<(Self, Vec<String>)> {
        let mut ledger = Self::new(half_life_seconds)?;
        let mut problems = header_problems(&record.api_version, &record.kind);
        match record.updated_at {
            Some(t) if t.is_finite() => {
                ledger.updated_at = Some(t);
                ledger.epoch = t;
            }
            Some(t) => problems.push(format!("updatedAt {t} is not finite; ignored")),
            None => {}
        }
        for (name, rec) in &record.tenants {
            let (a, m) = (rec.allocated_gpu_seconds, rec.measured_gpu_seconds);
            if valid_amount(a) && valid_amount(m) {
                ledger.tenants.insert(
                    name.clone(),
                    TenantUsage {
                        allocated: a,
                        measured: m,
                    },
                );
            } else {
                problems.push(format!(
                    "tenant {name:?}: allocatedGpuSeconds {a} / measuredGpuSeconds {m} must be finite and >= 0; starting from zero"
                ));
            }
        }
        Ok((ledger, problems))
    }

    /// GPU-seconds one GPU held over `dt` contributes at the end of the interval.
    fn integral(&self, dt: f64) -> f64 {
        // -expm1(-x) = 1 - e^-x, accurate for short intervals.
        self.half_life / LN_2 * -(-dt * LN_2 / self.half_life).exp_m1()
    }

    /// Factor between stored and real values at time `t`.
    fn scale(&self, t: f64) -> f64 {
        ((t - self.epoch) / self.half_life).exp2()
    }

    /// Rewrites stored values in real units at `at` and moves the epoch there.
    fn rebase(&mut self, at: f64) {
        let unscale = 1.0 / self.scale(at);
        for u in self.tenants.values_mut() {
            u.allocated *= unscale;
            u.measured *= unscale;
        }
        self.epoch = at;
    }
}

fn non_negative(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

fn valid_amount(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

fn header_problems(api_version: &str, kind: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if api_version != RECORD_API_VERSION {
        problems.push(format!(
            "apiVersion {api_version:?}, expected {RECORD_API_VERSION:?}; read anyway"
        ));
    }
    if kind != RECORD_KIND {
        problems.push(format!(
            "kind {kind:?}, expected {RECORD_KIND:?}; read anyway"
        ));
    }
    problems
}

/// The persisted ledger (JSON):
/// `{"apiVersion":"rota.io/v1alpha1","kind":"UsageLedger","updatedAt":1.7e9,"tenants":{"a":{"allocatedGpuSeconds":..,"measuredGpuSeconds":..}}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRecord {
    /// [`RECORD_API_VERSION`].
    pub api_version: String,
    /// [`RECORD_KIND`].
    pub kind: String,
    /// Seconds (Unix time live, virtual time in the simulator) the values are valid at;
    /// absent if the ledger was never advanced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<f64>,
    /// Values per tenant, by name.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantRecord>,
}

/// One tenant in a [`LedgerRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantRecord {
    /// Decayed GPU-seconds held, weighted by device.
    pub allocated_gpu_seconds: f64,
    /// Decayed GPU-seconds measured busy.
    pub measured_gpu_seconds: f64,
}

/// Parses a persisted ledger, recovering what it can: a document that is not JSON or not an
/// object (corrupt, truncated) gives an empty ledger and one problem; a tenant entry that is
/// malformed, non-finite or negative is dropped with a problem and the rest are kept.
pub fn parse_record(text: &str, half_life_seconds: f64) -> Result<(Ledger, Vec<String>)> {
    let empty = Ledger::new(half_life_seconds)?;
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(err) => {
            return Ok((
                empty,
                vec![format!(
                    "usage ledger is not valid JSON ({err}); starting empty"
                )],
            ))
        }
    };
    let Value::Object(map) = doc else {
        return Ok((
            empty,
            vec!["usage ledger is not a JSON object; starting empty".into()],
        ));
    };
    let text_field = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut problems = Vec::new();
    let updated_at = match map.get("updatedAt") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(t) => Some(t),
            None => {
                problems.push(format!("updatedAt {v} is not a number; ignored"));
                None
            }
        },
    };
    let tenants = parse_tenants(map.get("tenants"), &mut problems);
    let record = LedgerRecord {
        api_version: text_field("apiVersion"),
        kind: text_field("kind"),
        updated_at,
        tenants,
    };
    let (ledger, more) = Ledger::from_record(&record, half_life_seconds)?;
    problems.extend(more);
    Ok((ledger, problems))
}

fn parse_tenants(v: Option<&Value>, problems: &mut Vec<String>) -> BTreeMap<String, TenantRecord> {
    let mut out = BTreeMap::new();
    let Some(Value::Object(map)) = v else {
        if v.is_some_and(|v| !v.is_null()) {
            problems.push("tenants is not an object; starting empty".into());
        }
        return out;
    };
    for (name, entry) in map {
        match serde_json::from_value::<TenantRecord>(entry.clone()) {
            Ok(rec) => {
                out.insert(name.clone(), rec);
            }
            // serde_json writes NaN and infinities as null, so a null lands here too.
            Err(err) => problems.push(format!("tenant {name:?}: {err}; starting from zero")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: f64 = 3600.0;

    #[test]
    fn rejects_bad_half_life() {
        for h in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Ledger::new(h).is_err(), "{h}");
        }
    }

    #[test]
    fn first_advance_only_sets_the_clock() {
        let mut l = Ledger::new(H).unwrap();
        l.advance(100.0, [("a", 4.0, None)]);
        assert_eq!(l.usage("a", 100.0), 0.0);
        assert_eq!(l.updated_at(), Some(100.0));
    }

    #[test]
    fn time_going_backwards_charges_nothing() {
        let mut l = Ledger::new(H).unwrap();
        l.advance(100.0, []);
        l.advance(200.0, [("a", 1.0, None)]);
        let before = l.usage("a", 200.0);
        l.advance(150.0, [("a", 1.0, None)]);
        l.advance(f64::NAN, [("a", 1.0, None)]);
        assert_eq!(l.usage("a", 200.0), before);
        assert_eq!(l.updated_at(), Some(200.0));
    }

    #[test]
    fn rebase_keeps_values() {
        // Tiny half-life forces several rebases; a constant allocation converges to g·H/ln2.
        let mut l = Ledger::new(1.0).unwrap();
        l.advance(0.0, []);
        for i in 1..=1000 {
            l.advance(f64::from(i), [("a", 2.0, Some(1.0))]);
        }
        let u = l.tenant_usage("a", 1000.0);
        assert!((u.allocated - 2.0 / LN_2).abs() < 1e-9, "{u:?}");
        assert!((u.measured - 1.0 / LN_2).abs() < 1e-9, "{u:?}");
    }

    #[test]
    fn device_weight_falls_back_and_rejects_negative() {
        let mut cfg = UsageConfig::default();
        cfg.device_weights.insert("H100".into(), 4.0);
        cfg.device_weights.insert("bad".into(), -1.0);
        assert_eq!(device_weight(&cfg, Some("H100")), 4.0);
        assert_eq!(device_weight(&cfg, Some("T4")), 1.0);
        assert_eq!(device_weight(&cfg, None), 1.0);
        assert_eq!(device_weight(&cfg, Some("bad")), 0.0);
    }
}
