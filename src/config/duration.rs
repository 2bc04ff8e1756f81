//! Durations as the config file writes them: a number and a unit, like `250ms`,
//! `5s`, `1.5s`, `1m` or `1h` (also `us` for microseconds).
//!
//! Parsing is exact (decimal arithmetic in nanoseconds, no floats), surrounding
//! whitespace is ignored, and a value that does not fit a [`Duration`] is an error,
//! never a panic. Zero is accepted here; each key decides whether it may be zero.

use std::time::Duration;

/// What every error message offers as the way to write it.
const EXPECTED: &str = "expected a duration like 250ms, 5s or 1m; units are us, ms, s, m and h";

/// Units in nanoseconds, longest suffix first so `ms` is not read as `s`.
const UNITS: [(&str, u128); 6] = [
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses `250ms`, `5s`, `1.5s`, `0.5s`, `1m`, `1h`, `100us`.
/// Longest duration accepted anywhere (30 days): far beyond any sane timeout, and far
/// from overflowing `Instant + Duration`.
pub const MAX_SECS: u64 = 30 * 24 * 3600;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty duration: {EXPECTED}"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim_start());
    if number.is_empty() {
        return Err(format!("'{s}' does not start with a number: {EXPECTED}"));
    }
    if unit.is_empty() {
        return Err(format!("'{s}' has no unit: {EXPECTED}"));
    }
    let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("'{s}' has an unknown unit '{unit}': {EXPECTED}"));
    };
    let nanos =
        scaled(number, scale).ok_or_else(|| format!("'{s}' is not a duration: {EXPECTED}"))?;
    let secs = u64::try_from(nanos / 1_000_000_000)
        .ok()
        .filter(|&secs| secs <= MAX_SECS)
        .ok_or_else(|| format!("'{s}' is too long: at most 30 days (e.g. 720h)"))?;
    // The remainder is below 1e9, so it always fits a u32.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

/// `number * scale` in whole nanoseconds for a decimal `number` (`12`, `1.5`, `.5`);
/// `None` if it is not a decimal number or overflows. Fraction digits beyond the
/// 18th are dropped.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    // 30 digits are far more than any u64 of seconds needs; reject rather than overflow.
    if int.len() > 30 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int.checked_mul(scale)?;
    // The fraction as an integer over 10^digits, so the result is truncated once.
    let frac = &frac[..frac.len().min(18)];
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.is_empty() {
        let value: u128 = frac.parse().ok()?;
        let div = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        total = total.checked_add(value.checked_mul(scale)? / div)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn whole_units() {
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("5s"), Ok(ms(5_000)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("0.5s"), Ok(ms(500)));
        assert_eq!(parse_duration(".25s"), Ok(ms(250)));
        assert_eq!(parse_duration("1.5m"), Ok(ms(90_000)));
        assert_eq!(parse_duration("0.001ms"), Ok(Duration::from_nanos(1_000)));
        assert_eq!(parse_duration("2.s"), Ok(ms(2_000)));
    }

    #[test]
    fn whitespace_is_trimmed() {
        assert_eq!(parse_duration("  5s \n"), Ok(ms(5_000)));
        assert_eq!(parse_duration("5 s"), Ok(ms(5_000)));
    }

    #[test]
    fn errors_say_what_is_allowed() {
        for bad in [
            "", "5", "s", "ms", "5x", "five s", "1.2.3s", "-1s", "5sec", "1d", ".s", "5s5",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("250ms, 5s or 1m"), "{bad}: {e}");
        }
        assert!(parse_duration("5").unwrap_err().contains("has no unit"));
    }

    #[test]
    fn huge_values_are_errors_not_panics() {
        assert!(parse_duration("99999999999999999999999999h").is_err());
        assert!(parse_duration("999999999999999999999999999999999999999s").is_err());
        assert!(parse_duration("5124095576030432h").is_err());
        assert!(parse_duration("1.99999999999999999999999999999s").is_ok());
        // Values that would overflow a deadline are refused with the limit.
        assert!(
            parse_duration("4000000000000000h")
                .unwrap_err()
                .contains("30 days")
        );
        assert!(parse_duration("721h").is_err());
        assert!(parse_duration("720h").is_ok());
    }
}
