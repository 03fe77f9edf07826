//! Latency recording for the load generator: an HDR-like log-linear histogram with bounded
//! memory and a relative error under 0.4 %, plus the quantile summary the report prints.
//!
//! Values are nanoseconds. Below 128 ns each value has its own bucket (exact); above, every
//! power of two is split into 128 equal sub-buckets, so a bucket is at most 1/128 of its lower
//! bound wide and the reported midpoint is within 1/256 of any value in it. Quantiles are
//! clamped to the exact recorded minimum and maximum.
//! Must not: allocate per recorded value, or read a clock (callers pass durations).

use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two (2^7): the resolution that keeps the error under 1 %.
const SUB_BITS: u32 = 7;
const SUB_COUNT: usize = 1 << SUB_BITS;
/// Enough buckets for every `u64`: one exact group, then one group per power of two above it.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB_COUNT;

/// A log-linear latency histogram (nanosecond values). Merging two is adding their counts.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram (about 60 KB of counters, allocated once).
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value in nanoseconds.
    pub fn record_nanos(&mut self, nanos: u64) {
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
        self.sum += u128::from(nanos);
    }

    /// Records one duration (saturating at `u64::MAX` nanoseconds, about 584 years).
    pub fn record(&mut self, elapsed: Duration) {
        self.record_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The value at quantile `q` (0..=1, clamped) in nanoseconds: the smallest recorded value
    /// with at least `ceil(q·n)` values at or below it, within the bucket error. `None` when
    /// empty.
    pub fn quantile_nanos(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // Rank of the wanted value, 1-based; q = 0 asks for the minimum.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(midpoint(index).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// The summary the report prints, in milliseconds; `None` when empty.
    pub fn summary(&self) -> Option<Quantiles> {
        let ms = |q: f64| self.quantile_nanos(q).map_or(0.0, nanos_to_ms);
        (!self.is_empty()).then(|| Quantiles {
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: nanos_to_ms(self.max),
            mean_ms: self.sum as f64 / self.total as f64 / 1e6,
        })
    }
}

/// Latency quantiles of one verb, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest recorded latency (exact).
    pub max_ms: f64,
    /// Arithmetic mean (exact).
    pub mean_ms: f64,
}

fn nanos_to_ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// The bucket of a value: exact below `SUB_COUNT`, then `SUB_COUNT` buckets per power of two.
fn bucket_of(value: u64) -> usize {
    if value < SUB_COUNT as u64 {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= SUB_BITS
    let shift = exponent - SUB_BITS;
    let mantissa = (value >> shift) as usize; // in SUB_COUNT..2·SUB_COUNT
    (shift as usize + 1) * SUB_COUNT + (mantissa - SUB_COUNT)
}

/// Lowest value of a bucket and its width.
fn bounds(index: usize) -> (u64, u64) {
    if index < SUB_COUNT {
        return (index as u64, 1);
    }
    let shift = (index / SUB_COUNT - 1) as u32;
    let mantissa = (index % SUB_COUNT + SUB_COUNT) as u64;
    (mantissa << shift, 1u64 << shift)
}

/// The middle of a bucket (its exact value below `SUB_COUNT`).
fn midpoint(index: usize) -> u64 {
    let (low, width) = bounds(index);
    low.saturating_add((width - 1) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact quantile of sorted samples, with the same rank rule as the histogram.
    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn buckets_cover_their_values_and_stay_in_range() {
        for value in [0, 1, 127, 128, 129, 255, 256, 1_000, 123_456_789, u64::MAX] {
            let index = bucket_of(value);
            assert!(index < BUCKETS, "{value} -> {index}");
            let (low, width) = bounds(index);
            assert!(
                low <= value && value - low < width,
                "{value} not in [{low}, +{width})"
            );
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [5, 7, 9, 100, 3] {
            h.record_nanos(v);
        }
        assert_eq!(h.len(), 5);
        assert_eq!(h.quantile_nanos(0.0), Some(3));
        assert_eq!(h.quantile_nanos(0.5), Some(7));
        assert_eq!(h.quantile_nanos(0.8), Some(9));
        assert_eq!(h.quantile_nanos(1.0), Some(100));
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        let h = Histogram::new();
        assert!(h.is_empty());
        assert_eq!(h.quantile_nanos(0.5), None);
        assert!(h.summary().is_none());
    }

    #[test]
    fn summary_is_ordered_and_in_milliseconds() {
        let mut h = Histogram::new();
        for i in 1..=1_000u64 {
            h.record(Duration::from_micros(i * 10));
        }
        let s = h.summary().unwrap();
        assert!(s.p50_ms <= s.p90_ms && s.p90_ms <= s.p99_ms && s.p99_ms <= s.p999_ms);
        assert!(s.p999_ms <= s.max_ms);
        assert_eq!(s.max_ms, 10.0);
        assert!((s.p50_ms - 5.0).abs() / 5.0 < 0.01, "{s:?}");
        assert!((s.mean_ms - 5.005).abs() < 1e-9, "{s:?}");
    }

    proptest! {
        #[test]
        fn quantiles_are_within_one_percent_of_exact(
            mut samples in proptest::collection::vec(1u64..10_000_000_000, 1..400),
            q in 0.0f64..=1.0,
        ) {
            let mut h = Histogram::new();
            for &s in &samples {
                h.record_nanos(s);
            }
            samples.sort_unstable();
            let want = exact(&samples, q) as f64;
            let got = h.quantile_nanos(q).unwrap() as f64;
            prop_assert!((got - want).abs() / want < 0.01, "q={} got {} want {}", q, got, want);
        }

        #[test]
        fn merging_equals_recording_everything_in_one(
            a in proptest::collection::vec(0u64..1_000_000_000, 0..200),
            b in proptest::collection::vec(0u64..1_000_000_000, 0..200),
        ) {
            let (mut ha, mut hb, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
            for &v in &a { ha.record_nanos(v); all.record_nanos(v); }
            for &v in &b { hb.record_nanos(v); all.record_nanos(v); }
            ha.merge(&hb);
            prop_assert_eq!(ha.len(), all.len());
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                prop_assert_eq!(ha.quantile_nanos(q), all.quantile_nanos(q));
            }
        }
    }
}
