//! The closing verdict of `rota simulate`: who was fairest, who was fastest, and what rota's
//! choices cost (rotations, lost GPU time), in plain words, with the reason when rota is not
//! the best on a measure. Reads only the summaries; must not compute new figures.

use super::report::PolicySummary;

const HOUR: f64 = 3600.0;

/// What each policy serves first, to say why it is faster.
fn serves(policy: &str) -> &'static str {
    match policy {
        "fifo" => "jobs in arrival order with backfill, whatever their tenant",
        "quota" => "each tenant within a static quota",
        "fair" => "the instantaneous fair share, with no memory of past usage",
        "las" => "the job with the least service so far, which favours short jobs",
        _ => "its own order",
    }
}

/// The verdict, one paragraph per element (the caller wraps them); empty without summaries.
pub fn verdict(summaries: &[PolicySummary]) -> Vec<String> {
    let Some(fairest) = summaries.iter().min_by(|a, b| {
        (a.share_deviation.total_cmp(&b.share_deviation))
            .then(b.jain_index.total_cmp(&a.jain_index))
    }) else {
        return Vec::new();
    };
    let fastest = (summaries.iter().filter(|s| s.jct.count > 0))
        .min_by(|a, b| a.jct.mean.total_cmp(&b.jct.mean))
        .unwrap_or(fairest);
    let mut lines = vec![headline(fairest, fastest)];
    if let Some(rota) = summaries.iter().find(|s| s.policy == "rota") {
        lines.push(rota_cost(rota, fastest));
        lines.extend(rota_reasons(rota, fairest, fastest));
    }
    for s in summaries.iter().filter(|s| s.jobs_unfinished > 0) {
        lines.push(format!(
            "{} left {} jobs unfinished (for example a gang larger than its tenant's quota), \
             so its JCT covers fewer jobs.",
            s.policy, s.jobs_unfinished
        ));
    }
    lines
}

fn fairness(s: &PolicySummary) -> String {
    format!(
        "{:.1} % of the cluster off fair share on average, Jain {:.3}",
        s.share_deviation * 100.0,
        s.jain_index
    )
}

fn headline(fairest: &PolicySummary, fastest: &PolicySummary) -> String {
    let speed = format!("mean JCT {:.2} h", fastest.jct.mean / HOUR);
    if fairest.policy == fastest.policy {
        return format!(
            "Verdict: {} was both the fairest ({}) and the fastest ({speed}).",
            fairest.policy,
            fairness(fairest)
        );
    }
    format!(
        "Verdict: fairest was {} ({}); fastest was {} ({speed}).",
        fairest.policy,
        fairness(fairest),
        fastest.policy
    )
}

fn rota_cost(rota: &PolicySummary, fastest: &PolicySummary) -> String {
    let slower = match fastest.jct.mean > 0.0 && rota.policy != fastest.policy {
        true => format!(
            " ({:+.0} % against {})",
            (rota.jct.mean / fastest.jct.mean - 1.0) * 100.0,
            fastest.policy
        ),
        false => String::new(),
    };
    let cost = match rota.preemptions {
        0 => "with no rotation and no lost work".to_string(),
        n => format!(
            "at the cost of {n} rotations and {:.1} GPU-hours of lost work",
            rota.lost_gpu_seconds / HOUR
        ),
    };
    format!(
        "rota: mean JCT {:.2} h{slower}, {}, {cost}.",
        rota.jct.mean / HOUR,
        fairness(rota)
    )
}

/// Why rota is not the best on a measure: what it trades, said once per measure.
fn rota_reasons(
    rota: &PolicySummary,
    fairest: &PolicySummary,
    fastest: &PolicySummary,
) -> Vec<String> {
    let mut out = Vec::new();
    if fastest.policy != rota.policy {
        out.push(format!(
            "Why rota is slower here: {} serves {}; rota orders work by each tenant's share and \
             past usage, not by job size, and keeps GPUs free for the first gang that must wait, \
             so large jobs never starve behind small ones.",
            fastest.policy,
            serves(&fastest.policy)
        ));
    }
    if fairest.policy != rota.policy {
        out.push(
            "Why rota is not the fairest by dev_%: dev_% measures against the instantaneous \
             fair share; rota also charges decayed past usage, so a tenant that has just run a \
             lot gets less for a while, by design (fairness over time, not at each instant)."
                .to_string(),
        );
    }
    out
}

/// `text` broken into lines of at most `width` characters at spaces (a longer word stays
/// whole on its own line).
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            let len = line.chars().count() + word.chars().count();
            if !line.is_empty() && len + 1 > width {
                out.push_str(line.trim_end());
                out.push('\n');
                line = String::from("  ");
            }
            if !line.trim().is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_lines_within_the_width() {
        let text = "word ".repeat(60);
        let wrapped = wrap(&text, 30);
        assert!(
            wrapped.lines().all(|l| l.chars().count() <= 30),
            "{wrapped}"
        );
        assert_eq!(wrapped.split_whitespace().count(), 60);
    }
}
