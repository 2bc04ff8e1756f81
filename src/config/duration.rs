//! Durations written as "250ms", "5s" (stub).

use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    s.strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .map(Duration::from_millis)
        .ok_or_else(|| format!("bad duration {s}"))
}
