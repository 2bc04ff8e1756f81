//! Per-backend slots shared by all workers: breaker state, in-flight count, last failure.
//!
//! Index `i` is the backend at index `i` of the snapshot's `BackendSet`; each slot also
//! records the backend's id so a new snapshot (a reload) can carry the state of the
//! backends it keeps. Every field is an atomic: the request path reads `is_up` with one
//! `Relaxed` load and never waits. Outcomes are applied with a compare-and-swap loop
//! around the pure [`breaker::step`], so each transition happens (and is logged) once,
//! whichever worker or probe caused it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::breaker::{self, Breaker, Source, Thresholds, Transition};
use crate::backend::{Backend, BackendId, BackendSet};

/// Why the last failure happened (for logs and the admin view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    None = 0,
    ConnectRefused,
    ConnectTimeout,
    Reset,
    Timeout,
    BadResponse,
    Status5xx,
    ProbeStatus,
}

impl Reason {
    fn from_u8(v: u8) -> Reason {
        use Reason::*;
        [
            None,
            ConnectRefused,
            ConnectTimeout,
            Reset,
            Timeout,
            BadResponse,
            Status5xx,
            ProbeStatus,
        ]
        .get(usize::from(v))
        .copied()
        .unwrap_or(None)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::ConnectRefused => "connection refused or unreachable",
            Reason::ConnectTimeout => "connect timed out",
            Reason::Reset => "connection reset or closed mid-exchange",
            Reason::Timeout => "response timed out",
            Reason::BadResponse => "malformed response",
            Reason::Status5xx => "5xx response",
            Reason::ProbeStatus => "probe got an unexpected status",
        }
    }
}

#[derive(Debug)]
struct Slot {
    id: BackendId,
    breaker: AtomicU32,
    in_flight: AtomicU32,
    /// Milliseconds since the table's epoch of the last failure; 0 = never.
    last_failure_ms: AtomicU64,
    last_reason: AtomicU8,
}

/// Lock-free health and load view of a backend set.
#[derive(Debug)]
pub struct HealthTable {
    slots: Box<[Slot]>,
    addresses: Box<[String]>,
    thresholds: Thresholds,
    epoch: Instant,
}

impl HealthTable {
    /// A table for `set`, every backend new (up, unconfirmed).
    pub fn new(set: &BackendSet, thresholds: Thresholds) -> HealthTable {
        let slots = set
            .iter()
            .map(|b| Slot {
                id: b.id,
                breaker: AtomicU32::new(Breaker::NEW.pack()),
                in_flight: AtomicU32::new(0),
                last_failure_ms: AtomicU64::new(0),
                last_reason: AtomicU8::new(Reason::None as u8),
            })
            .collect();
        let addresses = set.iter().map(|b| b.address.clone()).collect();
        HealthTable {
            slots,
            addresses,
            thresholds,
            epoch: Instant::now(),
        }
    }

    /// `n` anonymous backends, all up and confirmed (strategy tests and benchmarks).
    pub fn all_up(n: usize) -> HealthTable {
        let ids: Vec<Backend> = (0..n)
            .map(|i| Backend {
                id: BackendId(i as u64),
                address: format!("backend-{i}"),
                host: String::new(),
                port: 0,
                scheme: crate::backend::Scheme::Http,
                addrs: Vec::new(),
                weight: 1,
            })
            .collect();
        let t = HealthTable::new(
            &BackendSet::new(ids),
            Thresholds {
                unhealthy: 3,
                healthy: 2,
            },
        );
        for i in 0..n {
            t.set_up(i, true);
        }
        t
    }

    /// A table for `set` that keeps the breaker state of every backend `old` also had.
    pub fn carry_over(old: &HealthTable, set: &BackendSet, thresholds: Thresholds) -> HealthTable {
        let mut t = HealthTable::new(set, thresholds);
        t.epoch = old.epoch;
        for slot in t.slots.iter_mut() {
            if let Some(o) = old.slots.iter().find(|o| o.id == slot.id) {
                slot.breaker.store(o.breaker.load(Relaxed), Relaxed);
                slot.last_failure_ms
                    .store(o.last_failure_ms.load(Relaxed), Relaxed);
                slot.last_reason.store(o.last_reason.load(Relaxed), Relaxed);
            }
        }
        t
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    #[inline]
    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].breaker.load(Relaxed) & 1 != 0
    }

    /// True when no backend is up.
    pub fn all_down(&self) -> bool {
        (0..self.len()).all(|i| !self.is_up(i))
    }

    /// Forces a backend up or down (tests, admin).
    pub fn set_up(&self, i: usize, up: bool) {
        let b = Breaker {
            up,
            confirmed: true,
            streak: 0,
        };
        self.slots[i].breaker.store(b.pack(), Relaxed);
    }

    #[inline]
    pub fn in_flight(&self, i: usize) -> u32 {
        self.slots[i].in_flight.load(Relaxed)
    }

    /// Milliseconds since the table's epoch of backend `i`'s last failure (0 = never).
    pub fn last_failure_ms(&self, i: usize) -> u64 {
        self.slots[i].last_failure_ms.load(Relaxed)
    }

    pub fn last_reason(&self, i: usize) -> Reason {
        Reason::from_u8(self.slots[i].last_reason.load(Relaxed))
    }

    /// Counts one request in flight to backend `i` until the guard drops.
    #[inline]
    pub fn start_request(self: &Arc<Self>, i: usize) -> InFlightGuard {
        self.slots[i].in_flight.fetch_add(1, Relaxed);
        InFlightGuard {
            table: Arc::clone(self),
            index: i,
        }
    }

    /// A successful exchange or probe.
    #[inline]
    pub fn record_success(&self, i: usize, source: Source) {
        let slot = &self.slots[i];
        let cur = slot.breaker.load(Relaxed);
        // Fast path: up, confirmed (or a live request), no failure streak.
        let b = Breaker::unpack(cur);
        if b.up && b.streak == 0 && (b.confirmed || source == Source::Request) {
            return;
        }
        self.apply(i, true, source, Reason::None);
    }

    /// A failed exchange or probe.
    pub fn record_failure(&self, i: usize, source: Source, reason: Reason) {
        let ms = (self.epoch.elapsed().as_millis() as u64).max(1);
        self.slots[i].last_failure_ms.store(ms, Relaxed);
        self.slots[i].last_reason.store(reason as u8, Relaxed);
        self.apply(i, false, source, reason);
    }

    fn apply(&self, i: usize, ok: bool, source: Source, reason: Reason) {
        let slot = &self.slots[i];
        let mut cur = slot.breaker.load(Relaxed);
        loop {
            let (next, transition) =
                breaker::step(Breaker::unpack(cur), ok, source, self.thresholds);
            if next.pack() == cur {
                return;
            }
            match slot
                .breaker
                .compare_exchange_weak(cur, next.pack(), Relaxed, Relaxed)
            {
                Ok(_) => {
                    let addr = &self.addresses[i];
                    match transition {
                        Some(Transition::Down) => tracing::warn!(
                            backend = %addr,
                            reason = reason.as_str(),
                            via = ?source,
                            "backend marked DOWN"
                        ),
                        Some(Transition::Up) => {
                            tracing::warn!(backend = %addr, via = ?source, "backend marked UP")
                        }
                        None => {}
                    }
                    return;
                }
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Decrements the in-flight counter of one backend when dropped (end of response
/// body, or the request failing).
#[derive(Debug)]
pub struct InFlightGuard {
    table: Arc<HealthTable>,
    index: usize,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.table.slots[self.index].in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::backend_set;

    const T: Thresholds = Thresholds {
        unhealthy: 3,
        healthy: 2,
    };

    fn set() -> BackendSet {
        backend_set(&[
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ])
    }

    #[test]
    fn in_flight_counts_until_drop() {
        let t = Arc::new(HealthTable::new(&set(), T));
        let g1 = t.start_request(1);
        let g2 = t.start_request(1);
        assert_eq!((t.in_flight(0), t.in_flight(1)), (0, 2));
        drop(g1);
        assert_eq!(t.in_flight(1), 1);
        drop(g2);
        assert_eq!(t.in_flight(1), 0);
    }

    #[test]
    fn failures_and_successes_move_the_flag() {
        let t = HealthTable::new(&set(), T);
        for _ in 0..2 {
            t.record_failure(0, Source::Request, Reason::Reset);
        }
        assert!(t.is_up(0));
        t.record_failure(0, Source::Request, Reason::Reset);
        assert!(!t.is_up(0));
        assert_eq!(t.last_reason(0), Reason::Reset);
        assert!(t.last_failure_ms(0) > 0);
        assert!(!t.all_down());
        t.record_success(0, Source::Probe);
        assert!(!t.is_up(0));
        t.record_success(0, Source::Probe);
        assert!(t.is_up(0));
    }

    #[test]
    fn reload_keeps_state_by_id_not_position() {
        let old = HealthTable::new(&set(), T);
        old.record_failure(1, Source::Probe, Reason::ConnectRefused);
        assert!(!old.is_up(1));
        // Reordered, plus a new backend.
        let new_set = backend_set(&[
            "127.0.0.1:3".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
        ]);
        let t = HealthTable::carry_over(&old, &new_set, T);
        assert!(t.is_up(0), "new backend starts up");
        assert!(!t.is_up(1), "127.0.0.1:2 stays down");
        assert!(t.is_up(2));
        assert_eq!(t.last_reason(1), Reason::ConnectRefused);
    }
}
