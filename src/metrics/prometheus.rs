//! The Prometheus text exposition (format 0.0.4) of the shared counters.
//!
//! Written by hand rather than through a registry crate: the values already live in
//! shared memory (summed across workers by construction), so rendering is a walk over
//! the current snapshot's backends. Every per-backend series is labelled
//! `backend="host:port"`, and also `name="..."` when the backend has a `name:` (an
//! unnamed backend's series carry no `name` label, which Prometheus reads the same as
//! an empty one). Label values are escaped per the format.

use std::fmt::Write;

use super::BUCKETS;
use crate::health::HealthTable;

/// `text/plain; version=0.0.4`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends `switchyard_discovery_errors_total{source}` for each discovery source.
pub fn render_discovery(
    out: &mut String,
    health: &HealthTable,
    sources: &[crate::discovery::Source],
) {
    if sources.is_empty() {
        return;
    }
    let g = health.global();
    let _ = writeln!(
        out,
        "# HELP switchyard_discovery_errors_total Failed lookups or lost watches of each discovery source (the last known backends stay in service)."
    );
    let _ = writeln!(out, "# TYPE switchyard_discovery_errors_total counter");
    for s in sources {
        let label = s.label();
        let n = g.discovery_errors(crate::limit::name_hash(&label));
        let _ = writeln!(
            out,
            "switchyard_discovery_errors_total{{source=\"{}\"}} {n}",
            escape(&label)
        );
    }
}

/// Renders every metric for the backends of `health`, and for the rate limits named
/// (name, hash of the name).
pub fn render(health: &HealthTable, limits: &[(&str, u64)]) -> String {
    let mut out = String::with_capacity(4096);
    let n = health.len();
    // Each backend's labels: `backend="host:port"`, then `,name="..."` if it has one.
    let labels: Vec<String> = (0..n)
        .map(|i| {
            let mut l = format!("backend=\"{}\"", escape(health.address(i)));
            if let Some(name) = health.name(i) {
                let _ = write!(l, ",name=\"{}\"", escape(name));
            }
            l
        })
        .collect();

    let _ = writeln!(
        out,
        "# HELP switchyard_requests_total Responses a backend gave a client, by backend and status code."
    );
    let _ = writeln!(out, "# TYPE switchyard_requests_total counter");
    for (i, labels) in labels.iter().enumerate() {
        let mut codes = health.stats(i).responses();
        codes.sort();
        for (code, count) in codes {
            let _ = writeln!(
                out,
                "switchyard_requests_total{{{labels},code=\"{code}\"}} {count}"
            );
        }
    }

    let _ = writeln!(
        out,
        "# HELP switchyard_local_responses_total Responses the balancer made itself, by status code and reason."
    );
    let _ = writeln!(out, "# TYPE switchyard_local_responses_total counter");
    for (code, reason, count) in health.global().local_responses() {
        let _ = writeln!(
            out,
            "switchyard_local_responses_total{{code=\"{code}\",reason=\"{reason}\"}} {count}"
        );
    }

    let _ = writeln!(
        out,
        "# HELP switchyard_request_duration_seconds Time from a request's head to the end of its response, by backend."
    );
    let _ = writeln!(out, "# TYPE switchyard_request_duration_seconds histogram");
    for (i, labels) in labels.iter().enumerate() {
        let (buckets, sum) = health.stats(i).histogram();
        let mut cumulative = 0u64;
        for (j, le) in BUCKETS.iter().enumerate() {
            cumulative += buckets[j];
            let _ = writeln!(
                out,
                "switchyard_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += buckets[BUCKETS.len()];
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_sum{{{labels}}} {sum}"
        );
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_count{{{labels}}} {cumulative}"
        );
    }

    let _ = writeln!(
        out,
        "# HELP switchyard_backend_up Whether the backend is up (1) or marked down (0)."
    );
    let _ = writeln!(out, "# TYPE switchyard_backend_up gauge");
    for (i, labels) in labels.iter().enumerate() {
        let _ = writeln!(
            out,
            "switchyard_backend_up{{{labels}}} {}",
            u8::from(health.is_up(i))
        );
    }

    let _ = writeln!(
        out,
        "# HELP switchyard_backend_drained Whether the backend is drained through the admin API (1: no new requests) or not (0)."
    );
    let _ = writeln!(out, "# TYPE switchyard_backend_drained gauge");
    for (i, labels) in labels.iter().enumerate() {
        let _ = writeln!(
            out,
            "switchyard_backend_drained{{{labels}}} {}",
            u8::from(health.is_drained(i))
        );
    }

    let _ = writeln!(
        out,
        "# HELP switchyard_backend_in_flight Requests in flight to the backend."
    );
    let _ = writeln!(out, "# TYPE switchyard_backend_in_flight gauge");
    for (i, labels) in labels.iter().enumerate() {
        let _ = writeln!(
            out,
            "switchyard_backend_in_flight{{{labels}}} {}",
            health.in_flight(i)
        );
    }

    let _ = writeln!(
        out,
        "# HELP switchyard_health_transitions_total Breaker transitions, by backend and new state."
    );
    let _ = writeln!(out, "# TYPE switchyard_health_transitions_total counter");
    for (i, labels) in labels.iter().enumerate() {
        let (up, down) = health.stats(i).transitions();
        let _ = writeln!(
            out,
            "switchyard_health_transitions_total{{{labels},to=\"up\"}} {up}"
        );
        let _ = writeln!(
            out,
            "switchyard_health_transitions_total{{{labels},to=\"down\"}} {down}"
        );
    }

    let g = health.global();
    let _ = writeln!(
        out,
        "# HELP switchyard_retries_total Requests sent again to another backend after a failed attempt."
    );
    let _ = writeln!(out, "# TYPE switchyard_retries_total counter");
    let _ = writeln!(
        out,
        "switchyard_retries_total {}",
        g.retries.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP switchyard_queue_length Requests waiting for a backend under max_connections."
    );
    let _ = writeln!(out, "# TYPE switchyard_queue_length gauge");
    let _ = writeln!(
        out,
        "switchyard_queue_length {}",
        g.queued.load(std::sync::atomic::Ordering::Relaxed).max(0)
    );
    let _ = writeln!(
        out,
        "# HELP switchyard_queue_wait_seconds Time requests waited in the queue (sum and count)."
    );
    let _ = writeln!(out, "# TYPE switchyard_queue_wait_seconds summary");
    let _ = writeln!(
        out,
        "switchyard_queue_wait_seconds_sum {}",
        g.queue_wait_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "switchyard_queue_wait_seconds_count {}",
        g.queue_waits.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP switchyard_connections_refused_total Connections closed at accept (reason=\"per_client\": limits.connections_per_client; reason=\"proxy_protocol\": a PROXY header missing, broken or from an untrusted peer)."
    );
    let _ = writeln!(out, "# TYPE switchyard_connections_refused_total counter");
    let _ = writeln!(
        out,
        "switchyard_connections_refused_total{{reason=\"per_client\"}} {}",
        g.connections_refused_per_client
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "switchyard_connections_refused_total{{reason=\"proxy_protocol\"}} {}",
        g.connections_refused_proxy_protocol
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP switchyard_rate_limited_total Requests a rate limit refused (429), by limit."
    );
    let _ = writeln!(out, "# TYPE switchyard_rate_limited_total counter");
    for (name, hash) in limits {
        let _ = writeln!(
            out,
            "switchyard_rate_limited_total{{limit=\"{}\"}} {}",
            escape(name),
            g.rate_limited(*hash)
        );
    }
    let _ = writeln!(
        out,
        "# HELP switchyard_retries_skipped_total Retries that were allowed but not made (reason=\"budget\": over retry_budget)."
    );
    let _ = writeln!(out, "# TYPE switchyard_retries_skipped_total counter");
    let _ = writeln!(
        out,
        "switchyard_retries_skipped_total{{reason=\"budget\"}} {}",
        g.retries_skipped_budget
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP switchyard_client_connections_open Client connections open now."
    );
    let _ = writeln!(out, "# TYPE switchyard_client_connections_open gauge");
    let _ = writeln!(
        out,
        "switchyard_client_connections_open {}",
        g.connections_open
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP switchyard_connections_parked Idle HTTP/1 client connections parked now (holding no HTTP state)."
    );
    let _ = writeln!(out, "# TYPE switchyard_connections_parked gauge");
    let _ = writeln!(
        out,
        "switchyard_connections_parked {}",
        g.connections_parked
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendSet;
    use crate::health::{Region, Thresholds};

    #[test]
    fn a_named_backend_gets_a_name_label_and_an_unnamed_one_none() {
        let mut named = crate::demo::backend_at("127.0.0.1:9001".parse().unwrap(), 1);
        named.name = Some("api-1".into());
        let plain = crate::demo::backend_at("127.0.0.1:9002".parse().unwrap(), 1);
        let region = Region::new().unwrap();
        let thresholds = Thresholds {
            unhealthy: 3,
            healthy: 2,
        };
        let health = HealthTable::new(region, &BackendSet::new(vec![named, plain]), thresholds);
        health.stats(0).count_response(200);
        let text = render(&health, &[]);
        for line in [
            "switchyard_requests_total{backend=\"127.0.0.1:9001\",name=\"api-1\",code=\"200\"} 1",
            "switchyard_backend_up{backend=\"127.0.0.1:9001\",name=\"api-1\"} 1",
            "switchyard_backend_up{backend=\"127.0.0.1:9002\"} 1",
            "switchyard_backend_drained{backend=\"127.0.0.1:9002\"} 0",
            "switchyard_request_duration_seconds_count{backend=\"127.0.0.1:9002\"} 0",
            "switchyard_health_transitions_total{backend=\"127.0.0.1:9001\",name=\"api-1\",to=\"down\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // requests, 15 buckets + sum + count, up, drained, in flight, two transitions.
        assert_eq!(
            text.matches("name=").count(),
            1 + 17 + 1 + 1 + 1 + 2,
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
