//! Counters for `/metrics`, kept in the shared region so every worker adds to the same
//! numbers, in thread and process mode alike, and a killed worker's counts stay.
//!
//! Per backend ([`BackendStats`], one per health slot, same index): responses by status
//! code (a small table claimed by compare-and-swap, so labels stay bounded), a duration
//! histogram with fixed buckets from 0.5 ms to 10 s, and health transitions. Globally
//! ([`GlobalStats`]): open client connections, parked ones (idle HTTP/1 connections
//! holding no HTTP state), retries, and the responses the balancer answered itself, by
//! reason. Everything is a `Relaxed` atomic; recording a request is a
//! handful of `fetch_add`s, no lock and no allocation. [`prometheus`] renders the text
//! exposition.

pub mod prometheus;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the duration histogram buckets; `+Inf` is implied.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKET_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Entries per backend: distinct status codes, then one per class (`1xx`..`5xx`) for
/// codes beyond those.
pub const CODES: usize = 24;
const SPECIFIC: usize = CODES - 5;

/// One backend's counters (same index as its health slot).
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Status code of each entry (0 = free; 1..=5 = "Nxx" overflow classes).
    codes: [AtomicU32; CODES],
    counts: [AtomicU64; CODES],
    buckets: [AtomicU64; 15],
    sum_us: AtomicU64,
    transitions_up: AtomicU64,
    transitions_down: AtomicU64,
}

impl BackendStats {
    /// Counts one response with `status` from this backend.
    #[inline]
    pub fn count_response(&self, status: u16) {
        let code = u32::from(status);
        for i in 0..SPECIFIC {
            let c = self.codes[i].load(Relaxed);
            if c == code {
                self.counts[i].fetch_add(1, Relaxed);
                return;
            }
            if c == 0 {
                match self.codes[i].compare_exchange(0, code, Relaxed, Relaxed) {
                    Ok(_) => {
                        self.counts[i].fetch_add(1, Relaxed);
                        return;
                    }
                    Err(now) if now == code => {
                        self.counts[i].fetch_add(1, Relaxed);
                        return;
                    }
                    Err(_) => {}
                }
            }
        }
        // Table full: count the code's class ("5xx") in its reserved entry.
        let class = (code / 100).clamp(1, 5);
        let i = SPECIFIC + class as usize - 1;
        self.codes[i].store(class, Relaxed);
        self.counts[i].fetch_add(1, Relaxed);
    }

    /// Records how long one request took, first byte in to last byte out.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = BUCKET_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKET_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn transition(&self, up: bool) {
        if up {
            self.transitions_up.fetch_add(1, Relaxed);
        } else {
            self.transitions_down.fetch_add(1, Relaxed);
        }
    }

    /// (code label, count) of every code seen.
    pub fn responses(&self) -> Vec<(String, u64)> {
        (0..CODES)
            .filter_map(|i| {
                let c = self.codes[i].load(Relaxed);
                match c {
                    0 => None,
                    1..=5 => Some((format!("{c}xx"), self.counts[i].load(Relaxed))),
                    _ => Some((c.to_string(), self.counts[i].load(Relaxed))),
                }
            })
            .collect()
    }

    /// Per-bucket (non-cumulative) counts, the last being `+Inf`, and the sum in seconds.
    pub fn histogram(&self) -> ([u64; 15], f64) {
        let mut b = [0u64; 15];
        for (i, x) in b.iter_mut().enumerate() {
            *x = self.buckets[i].load(Relaxed);
        }
        (b, self.sum_us.load(Relaxed) as f64 / 1e6)
    }

    pub fn transitions(&self) -> (u64, u64) {
        (
            self.transitions_up.load(Relaxed),
            self.transitions_down.load(Relaxed),
        )
    }
}

/// Why the balancer answered a request itself (label `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum LocalReason {
    BadRequest,
    UriTooLong,
    HeadersTooLarge,
    UnsupportedTransferCoding,
    MethodNotSupported,
    ExpectationFailed,
    BadBody,
    ClientBodyTimeout,
    NoHealthyBackend,
    ConnectFailed,
    BadGateway,
    Timeout,
    UpgradeNotSupported,
    TlsFailed,
    HeadTimeout,
    RateLimited,
    RateLimiterUnavailable,
    QueueFull,
    QueueTimeout,
    PlainHttpOnTls,
    RedirectHttps,
}

impl LocalReason {
    pub const ALL: [LocalReason; 21] = [
        LocalReason::BadRequest,
        LocalReason::UriTooLong,
        LocalReason::HeadersTooLarge,
        LocalReason::UnsupportedTransferCoding,
        LocalReason::MethodNotSupported,
        LocalReason::ExpectationFailed,
        LocalReason::BadBody,
        LocalReason::ClientBodyTimeout,
        LocalReason::NoHealthyBackend,
        LocalReason::ConnectFailed,
        LocalReason::BadGateway,
        LocalReason::Timeout,
        LocalReason::UpgradeNotSupported,
        LocalReason::TlsFailed,
        LocalReason::HeadTimeout,
        LocalReason::RateLimited,
        LocalReason::RateLimiterUnavailable,
        LocalReason::QueueFull,
        LocalReason::QueueTimeout,
        LocalReason::PlainHttpOnTls,
        LocalReason::RedirectHttps,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LocalReason::BadRequest => "bad_request",
            LocalReason::UriTooLong => "uri_too_long",
            LocalReason::HeadersTooLarge => "headers_too_large",
            LocalReason::UnsupportedTransferCoding => "unsupported_transfer_coding",
            LocalReason::MethodNotSupported => "method_not_supported",
            LocalReason::ExpectationFailed => "expectation_failed",
            LocalReason::BadBody => "bad_body",
            LocalReason::ClientBodyTimeout => "client_body_timeout",
            LocalReason::NoHealthyBackend => "no_healthy_backend",
            LocalReason::ConnectFailed => "connect_failed",
            LocalReason::BadGateway => "bad_gateway",
            LocalReason::Timeout => "timeout",
            LocalReason::UpgradeNotSupported => "upgrade_not_supported",
            LocalReason::TlsFailed => "tls_failed",
            LocalReason::HeadTimeout => "client_head_timeout",
            LocalReason::RateLimited => "rate_limited",
            LocalReason::RateLimiterUnavailable => "rate_limiter_unavailable",
            LocalReason::QueueFull => "queue_full",
            LocalReason::QueueTimeout => "queue_timeout",
            LocalReason::PlainHttpOnTls => "plain_http_on_tls",
            LocalReason::RedirectHttps => "redirect_https",
        }
    }
}

/// Process-wide counters.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct GlobalStats {
    pub connections_open: AtomicI64,
    /// Client connections parked now: idle HTTP/1 connections waiting on their socket
    /// alone, with no HTTP state (see `server::worker`).
    pub connections_parked: AtomicI64,
    pub retries: AtomicU64,
    /// Requests waiting for a backend under its `max_connections`, now.
    pub queued: AtomicI64,
    /// Requests that waited in the queue (then went, or timed out), and their wait.
    pub queue_waits: AtomicU64,
    pub queue_wait_us: AtomicU64,
    /// Connections closed at accept: the client had `limits.connections_per_client`.
    pub connections_refused_per_client: AtomicU64,
    /// Connections closed before their first request over `listen.proxy_protocol`:
    /// a trusted peer without a (valid) PROXY header, or an untrusted one with one.
    pub connections_refused_proxy_protocol: AtomicU64,
    /// Retries the retry budget did not allow.
    pub retries_skipped_budget: AtomicU64,
    /// Bumped on every backend up/down transition (see `HealthTable::epoch`).
    pub health_epoch: AtomicU64,
    /// Bumped whenever the admin API changes a weight override (see
    /// `HealthTable::weight_epoch`).
    pub weight_epoch: AtomicU64,
    /// Set when a drain starts (`/healthz` answers 503 from then on).
    pub draining: AtomicBool,
    /// Responses the balancer made itself, by `LocalReason` (with the status of each).
    local: [AtomicU64; LocalReason::ALL.len()],
    local_code: [AtomicU32; LocalReason::ALL.len()],
    /// Requests refused by each rate limit: counts by slot, the slot found by the
    /// limit name's hash (kept in `rate_limited_name`).
    rate_limited: [AtomicU64; RATE_LIMIT_SLOTS],
    rate_limited_name: [AtomicU64; RATE_LIMIT_SLOTS],
    /// Failures of each discovery source, found the same way by its label's hash.
    discovery_errors: [AtomicU64; RATE_LIMIT_SLOTS],
    discovery_errors_name: [AtomicU64; RATE_LIMIT_SLOTS],
}

/// Distinct rate-limit names counted over the life of the process.
pub const RATE_LIMIT_SLOTS: usize = 32;

impl GlobalStats {
    /// The counter slot of the limit named by `name_hash` (claimed the first time).
    fn rate_slot(&self, name_hash: u64) -> Option<usize> {
        named_slot(&self.rate_limited_name, name_hash)
    }

    /// Counts a failure of the discovery source whose label hashes to `label_hash`.
    pub fn count_discovery_error(&self, label_hash: u64) {
        if let Some(i) = named_slot(&self.discovery_errors_name, label_hash) {
            self.discovery_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Failures so far of the discovery source whose label hashes to `label_hash`.
    pub fn discovery_errors(&self, label_hash: u64) -> u64 {
        named_slot(&self.discovery_errors_name, label_hash)
            .map_or(0, |i| self.discovery_errors[i].load(Relaxed))
    }

    /// Counts a request refused by the limit named by `name_hash`.
    pub fn count_rate_limited(&self, name_hash: u64) {
        if let Some(i) = self.rate_slot(name_hash) {
            self.rate_limited[i].fetch_add(1, Relaxed);
        }
    }

    /// Requests refused so far by the limit named by `name_hash`.
    pub fn rate_limited(&self, name_hash: u64) -> u64 {
        self.rate_slot(name_hash)
            .map_or(0, |i| self.rate_limited[i].load(Relaxed))
    }

    #[inline]
    pub fn count_local(&self, reason: LocalReason, status: u16) {
        self.local[reason as usize].fetch_add(1, Relaxed);
        self.local_code[reason as usize].store(u32::from(status), Relaxed);
    }

    /// (code, reason, count) for every reason seen.
    pub fn local_responses(&self) -> Vec<(u32, &'static str, u64)> {
        LocalReason::ALL
            .iter()
            .filter_map(|&r| {
                let n = self.local[r as usize].load(Relaxed);
                (n > 0).then(|| (self.local_code[r as usize].load(Relaxed), r.label(), n))
            })
            .collect()
    }
}

/// The slot of `names` that holds `hash` (claimed the first time it is asked for).
fn named_slot(names: &[AtomicU64], hash: u64) -> Option<usize> {
    let key = hash.max(1);
    let n = names.len();
    let start = (key % n as u64) as usize;
    (0..n).map(|p| (start + p) % n).find(|&i| {
        match names[i].compare_exchange(0, key, Relaxed, Relaxed) {
            Ok(_) => true,
            Err(k) => k == key,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_counted_and_bounded() {
        let s = BackendStats::default();
        s.count_response(200);
        s.count_response(200);
        s.count_response(503);
        let mut r = s.responses();
        r.sort();
        assert_eq!(r, [("200".to_string(), 2), ("503".to_string(), 1)]);
        for code in 300..400 {
            s.count_response(code);
        }
        let r = s.responses();
        assert!(r.len() <= CODES, "{}", r.len());
        let total: u64 = r.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 103, "nothing lost: {r:?}");
        assert!(r.iter().any(|(c, _)| c == "3xx"));
    }

    #[test]
    fn histogram_buckets() {
        let s = BackendStats::default();
        s.observe(Duration::from_micros(300));
        s.observe(Duration::from_millis(3));
        s.observe(Duration::from_secs(60));
        let (b, sum) = s.histogram();
        assert_eq!(b[0], 1);
        assert_eq!(b[3], 1);
        assert_eq!(b[14], 1);
        assert!((sum - 60.0033).abs() < 1e-6);
    }
}
