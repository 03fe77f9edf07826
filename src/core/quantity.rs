//! Kubernetes resource quantities (`24Gi`, `500m`, `1.5G`, `1e3`), parsed to plain numbers.
//!
//! Follows the grammar of `k8s.io/apimachinery/pkg/api/resource`: a signed decimal number, then
//! an optional binary suffix (Ki … Ei), decimal suffix (n, u, m, k, M, G, T, P, E) or exponent.

/// Sums resource counts, saturating at `u64::MAX` instead of wrapping: counts come from API
/// server input (two nodes reporting 1e20 GPUs each must not add up to a handful).
pub fn saturating_sum<I: IntoIterator<Item = u64>>(counts: I) -> u64 {
    counts.into_iter().fold(0, u64::saturating_add)
}

/// Parses a quantity into its value as `f64`. Errors say what was wrong, for user messages.
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty quantity".into());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier = suffix_multiplier(suffix)
        .ok_or_else(|| format!("{text:?} has an unknown unit suffix {suffix:?}"))?;
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a number followed by a unit"))?;
    let result = value * multiplier;
    if !result.is_finite() {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(result)
}

/// Parses a quantity that must be a non-negative whole number of bytes (rounded up).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let value = parse_quantity(text)?;
    if value < 0.0 {
        return Err(format!("{text:?} is negative"));
    }
    if value > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(value.ceil() as u64)
}

fn suffix_multiplier(suffix: &str) -> Option<f64> {
    const KI: f64 = 1024.0;
    Some(match suffix {
        "" => 1.0,
        "Ki" => KI,
        "Mi" => KI.powi(2),
        "Gi" => KI.powi(3),
        "Ti" => KI.powi(4),
        "Pi" => KI.powi(5),
        "Ei" => KI.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return exponent(suffix),
    })
}

/// `e3` / `E-2` style exponents.
fn exponent(suffix: &str) -> Option<f64> {
    let digits = suffix.strip_prefix(['e', 'E'])?;
    let exp: i32 = digits.parse().ok()?;
    Some(10f64.powi(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_suffixes_kubernetes_uses() {
        assert_eq!(parse_bytes("24Gi").unwrap(), 24 * 1024 * 1024 * 1024);
        assert_eq!(parse_bytes("80G").unwrap(), 80_000_000_000);
        assert_eq!(parse_bytes("1.5Ki").unwrap(), 1536);
        assert_eq!(parse_bytes("1e3").unwrap(), 1000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!((parse_quantity("500m").unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("lots").unwrap_err().contains("unit"));
        assert!(parse_bytes("1.2.3Gi").unwrap_err().contains("number"));
        assert!(parse_bytes("12XB").unwrap_err().contains("unit"));
        assert!(parse_bytes("-1Gi").unwrap_err().contains("negative"));
        assert!(parse_bytes("1e999").is_err());
    }
}
