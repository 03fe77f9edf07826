//! SVG charts of a simulation (`rota simulate --out DIR`): per policy, each tenant's GPUs held
//! against its entitlement over time (`<policy>-shares.svg`, one x range for all policies),
//! every policy's share deviation over time (`share-deviation.svg`), and the JCT CDF of every
//! policy on one log-x chart (`jct-cdf.svg`). Every axis carries a title with its unit.
//!
//! Invariants: memory is bounded whatever the trace length: [`ShareSeries`] keeps at most
//! [`MAX_BUCKETS`] time buckets per tenant (it doubles the bucket width and merges pairs when
//! time runs past the last one), and a CDF is drawn from at most [`MAX_CDF_POINTS`] quantiles.
//! Output is a pure function of the inputs (same run, same bytes): no wall clock, no fonts read
//! from the system (plotters' SVG backend writes `<text>` elements; sizes come from its naive
//! font metrics). Must not read or write files: the CLI does.

use plotters::prelude::*;
/// Colour type of [`COLORS`] (re-exported so callers need not depend on plotters).
pub use plotters::style::RGBColor;

use super::engine::{RunOutcome, TenantState};
use super::trace::Trace;

/// Most time buckets a [`ShareSeries`] keeps (per tenant): a panel is about 250 pixels wide,
/// so 500 points is already two per pixel, and a 12-tenant chart stays near 100 kB.
pub const MAX_BUCKETS: usize = 500;

/// Most points drawn per CDF curve.
pub const MAX_CDF_POINTS: usize = 2_000;

/// First bucket width in seconds (one minute); doubled as the run grows.
const FIRST_BUCKET_SECONDS: f64 = 60.0;

/// Line colours, in policy or tenant order (cycled; public so tests can find the series).
pub const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Colour of the entitlement lines (every tenant's).
pub const ENTITLED_COLOR: RGBColor = RGBColor(128, 128, 128);

/// Drawing failed (plotters reports backend errors as text).
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The plotting backend refused a drawing operation.
    #[error("cannot draw chart: {0}")]
    Draw(String),
}

fn draw_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Each tenant's time-integrated GPUs held and entitled, in fixed-width time buckets over the
/// whole run (warm-up included), fed by the engine's recorder at every clock advance.
#[derive(Clone, Debug)]
pub struct ShareSeries {
    tenants: usize,
    width: f64,
    end: f64,
    /// `held[b * tenants + t]`: GPU-seconds held by tenant `t` in bucket `b`.
    held: Vec<f64>,
    /// Same layout: entitled GPU-seconds.
    entitled: Vec<f64>,
}

impl ShareSeries {
    /// An empty series for `tenants` tenants.
    pub fn new(tenants: usize) -> Self {
        Self {
            tenants,
            width: FIRST_BUCKET_SECONDS,
            end: 0.0,
            held: Vec::new(),
            entitled: Vec::new(),
        }
    }

    /// Adds the state `tenants` (constant over `[from, to]`).
    pub fn add(&mut self, from: f64, to: f64, tenants: &[TenantState]) {
        if !(to.is_finite() && from.is_finite()) || to <= from || from < 0.0 {
            return;
        }
        self.end = self.end.max(to);
        let mut a = from;
        while a < to {
            let mut bucket = (a / self.width).floor() as usize;
            while bucket >= MAX_BUCKETS {
                self.merge();
                bucket = (a / self.width).floor() as usize;
            }
            let seg_end = to.min((bucket + 1) as f64 * self.width);
            if seg_end <= a {
                break;
            }
            self.grow(bucket + 1);
            let dt = seg_end - a;
            let row = bucket * self.tenants;
            for (i, t) in tenants.iter().enumerate().take(self.tenants) {
                self.held[row + i] += t.held as f64 * dt;
                self.entitled[row + i] += t.entitled * dt;
            }
            a = seg_end;
        }
    }

    fn grow(&mut self, buckets: usize) {
        let len = buckets * self.tenants;
        if self.held.len() < len {
            self.held.resize(len, 0.0);
            self.entitled.resize(len, 0.0);
        }
    }

    /// Doubles the bucket width, summing pairs of buckets.
    fn merge(&mut self) {
        let n = self.tenants;
        for v in [&mut self.held, &mut self.entitled] {
            let buckets = v.len() / n.max(1);
            let mut merged = vec![0.0; buckets.div_ceil(2) * n];
            for (b, row) in v.chunks(n.max(1)).enumerate() {
                for (t, x) in row.iter().enumerate() {
                    merged[(b / 2) * n + t] += x;
                }
            }
            *v = merged;
        }
        self.width *= 2.0;
    }

    /// Bucket width in seconds now.
    pub fn bucket_seconds(&self) -> f64 {
        self.width
    }

    /// Tenant `t`'s points `(hours at the bucket start, mean GPUs held, mean GPUs entitled)`;
    /// the last bucket is averaged over the part the run covered.
    pub fn points(&self, t: usize) -> Vec<(f64, f64, f64)> {
        if t >= self.tenants {
            return Vec::new();
        }
        let buckets = self.held.len() / self.tenants.max(1);
        (0..buckets)
            .map(|b| {
                let start = b as f64 * self.width;
                let span = (self.end.min(start + self.width) - start).max(1e-9);
                let i = b * self.tenants + t;
                (start / 3600.0, self.held[i] / span, self.entitled[i] / span)
            })
            .collect()
    }
}

/// JCTs in seconds of the completed jobs that arrived at or after `warmup_seconds`, sorted.
pub fn jct_values(trace: &Trace, outcome: &RunOutcome, warmup_seconds: f64) -> Vec<f64> {
    let mut v: Vec<f64> = trace
        .jobs
        .iter()
        .zip(&outcome.jobs)
        .filter(|(spec, _)| spec.arrival >= warmup_seconds)
        .filter_map(|(spec, state)| state.completion.map(|c| c - spec.arrival))
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

// === impl ShareSeries: the views the charts share ===

impl ShareSeries {
    /// The end of the run, in hours.
    pub fn hours(&self) -> f64 {
        self.end / 3600.0
    }

    /// Σ over tenants of |mean held − mean entitled| / (2 × `capacity`) per bucket, in percent:
    /// `(hours at the bucket start, deviation %)`. Bucket means, so a little below the
    /// time-integrated figure of the table when holdings cross the entitlement in a bucket.
    pub fn deviation_points(&self, capacity: u64) -> Vec<(f64, f64)> {
        let c = capacity.max(1) as f64;
        let per_tenant: Vec<Vec<(f64, f64, f64)>> =
            (0..self.tenants).map(|t| self.points(t)).collect();
        let buckets = per_tenant.first().map_or(0, Vec::len);
        (0..buckets)
            .map(|b| {
                let gap: f64 = per_tenant.iter().map(|p| (p[b].1 - p[b].2).abs()).sum();
                (per_tenant[0][b].0, gap / (2.0 * c) * 100.0)
            })
            .collect()
    }
}

/// The shares chart of one policy: one panel per tenant, GPUs held (coloured) against
/// entitled (grey) over time, as bucket means, on `0..hours` (the same for every policy).
pub fn shares_svg(
    policy: &str,
    tenants: &[String],
    series: &ShareSeries,
    hours: f64,
) -> Result<String, ChartError> {
    let cols = tenants.len().clamp(1, 4);
    let rows = tenants.len().div_ceil(cols).max(1);
    let (width, height) = (300 * cols as u32, 40 + 200 * rows as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let title = format!(
            "{policy}: GPUs held (colour) vs entitled (grey), {:.0}-minute means",
            series.bucket_seconds() / 60.0
        );
        let root = root.titled(&title, ("sans-serif", 18)).map_err(draw_err)?;
        let hours = hours.max(series.hours()).max(1e-3);
        for (t, (name, panel)) in tenants
            .iter()
            .zip(root.split_evenly((rows, cols)))
            .enumerate()
        {
            let points = series.points(t);
            let top = points.iter().map(|p| p.1.max(p.2)).fold(1.0_f64, f64::max) * 1.05;
            let mut chart = ChartBuilder::on(&panel)
                .caption(name, ("sans-serif", 14))
                .margin(6)
                .x_label_area_size(34)
                .y_label_area_size(44)
                .build_cartesian_2d(0.0..hours, 0.0..top)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_labels(4)
                .y_labels(4)
                .x_desc("hours since first arrival")
                .y_desc("GPUs")
                .disable_mesh()
                .draw()
                .map_err(draw_err)?;
            let color = COLORS[t % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.0, p.2)),
                    &ENTITLED_COLOR,
                ))
                .map_err(draw_err)?;
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), &color))
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Every policy's share deviation over time on one chart (`curves` are `(policy, points of
/// [`ShareSeries::deviation_points`])`), on `0..hours`.
pub fn deviation_svg(
    curves: &[(String, Vec<(f64, f64)>)],
    hours: f64,
) -> Result<String, ChartError> {
    let top =
        (curves.iter().flat_map(|(_, p)| p.iter().map(|q| q.1))).fold(1.0_f64, f64::max) * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Distance from fair share over time (lower is fairer)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..hours.max(1e-3), 0.0..top)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("hours since first arrival")
            .y_desc("share deviation (% of the cluster)")
            .draw()
            .map_err(draw_err)?;
        let lines = curves
            .iter()
            .map(|(p, points)| (p.as_str(), points.clone()));
        draw_policy_lines(&mut chart, lines, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// One line per policy, in [`COLORS`] order, and their legend at `position`.
fn draw_policy_lines<'a, 'b, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    lines: impl Iterator<Item = (&'b str, Vec<(f64, f64)>)>,
    position: SeriesLabelPosition,
) -> Result<(), ChartError>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (policy, points)) in lines.enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, &color))
            .map_err(draw_err)?
            .label(policy)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// At most [`MAX_CDF_POINTS`] `(jct, fraction ≤ jct)` points of sorted `values`, JCTs clamped
/// to at least one second for the log axis.
fn cdf_points(values: &[f64]) -> Vec<(f64, f64)> {
    let n = values.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(MAX_CDF_POINTS).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (values[i].max(1.0), (i + 1) as f64 / n as f64))
        .collect();
    if (n - 1) % step != 0 {
        out.push((values[n - 1].max(1.0), 1.0));
    }
    out
}

/// The JCT CDF of every policy on one chart, log-x in hours; `curves` are `(policy, sorted
/// JCTs in seconds)`.
pub fn jct_cdf_svg(curves: &[(String, Vec<f64>)]) -> Result<String, ChartError> {
    let max = curves
        .iter()
        .filter_map(|(_, v)| v.last().copied())
        .fold(3600.0_f64, f64::max)
        / 3600.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "JCT CDF (measured jobs; further left is faster)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((1.0 / 3600.0..max * 1.2).log_scale(), 0.0..1.0)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("JCT (hours, log)")
            .y_desc("fraction of jobs")
            .draw()
            .map_err(draw_err)?;
        let lines = curves.iter().map(|(policy, values)| {
            let points = cdf_points(values).into_iter();
            (
                policy.as_str(),
                points.map(|(x, y)| (x / 3600.0, y)).collect(),
            )
        });
        draw_policy_lines(&mut chart, lines, SeriesLabelPosition::LowerRight)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(held: u64, entitled: f64) -> TenantState {
        TenantState {
            held,
            entitled,
            ..TenantState::default()
        }
    }

    #[test]
    fn series_means_match_the_integrated_state() {
        let mut s = ShareSeries::new(2);
        s.add(0.0, 30.0, &[state(4, 2.0), state(0, 2.0)]);
        s.add(30.0, 60.0, &[state(2, 2.0), state(2, 2.0)]);
        let p = s.points(0);
        assert_eq!(p.len(), 1);
        assert!((p[0].1 - 3.0).abs() < 1e-9, "{p:?}");
        assert!((p[0].2 - 2.0).abs() < 1e-9);
        assert!((s.points(1)[0].1 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn series_stays_bounded_and_keeps_the_means() {
        let mut s = ShareSeries::new(1);
        // Not a multiple of any bucket width, so the last bucket is partial.
        let horizon = 60.0 * MAX_BUCKETS as f64 * 5.0 + 17.0;
        for k in 0..1000 {
            let (a, b) = (
                horizon * k as f64 / 1000.0,
                horizon * (k + 1) as f64 / 1000.0,
            );
            s.add(a, b, &[state(3, 1.5)]);
        }
        let p = s.points(0);
        assert!(p.len() <= MAX_BUCKETS, "{} buckets", p.len());
        assert!(p.len() as f64 * s.bucket_seconds() >= horizon);
        for (_, held, entitled) in &p {
            assert!(
                (held - 3.0).abs() < 1e-9 && (entitled - 1.5).abs() < 1e-9,
                "{p:?}"
            );
        }
    }

    #[test]
    fn cdf_points_are_bounded_monotone_and_end_at_one() {
        let values: Vec<f64> = (0..10_001).map(|i| i as f64).collect();
        let p = cdf_points(&values);
        assert!(p.len() <= MAX_CDF_POINTS + 1);
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(p.last().map(|x| x.1), Some(1.0));
    }
}
