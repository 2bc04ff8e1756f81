//! A snapshot's view of backend health: index -> shared slot.
//!
//! Index `i` is the backend at index `i` of the snapshot's `BackendSet`; its slot lives
//! in the shared [`Region`] and is found by the backend's id, so a reload that keeps a
//! backend keeps its state, and every worker (thread or process) and the prober see
//! the same slot. The request path reads `is_up` with one `Relaxed` load and never
//! waits. Outcomes are applied with a compare-and-swap loop around the pure
//! [`breaker::step`], so each transition happens (and is logged, with the backend's
//! address and its `name:` when it has one) once, whichever worker or probe caused it.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::admin::AdminState;
use super::breaker::{self, Breaker, Source, Thresholds, Transition};
use super::shared::{Ledger, Region, Slot, monotonic_ms};
use crate::backend::{Backend, BackendId, BackendSet};
use crate::metrics::{BackendStats, GlobalStats};

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
    Tls,
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
            Tls,
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
            Reason::Tls => "TLS handshake or certificate verification failed",
        }
    }
}

/// Lock-free health and load view of one snapshot's backend set.
#[derive(Debug)]
pub struct HealthTable {
    region: &'static Region,
    /// Each backend's index in the region.
    index: Box<[usize]>,
    slots: Box<[&'static Slot]>,
    stats: Box<[&'static BackendStats]>,
    global: &'static GlobalStats,
    addresses: Box<[String]>,
    /// Each backend's `name:`, if it has one.
    names: Box<[Option<String>]>,
    thresholds: Thresholds,
    /// `max_connections` per backend (0 = none).
    caps: Box<[u32]>,
    /// Whether any backend has one (every pick asks `has_room`; without caps that is
    /// this one well-predicted load).
    any_caps: bool,
}

impl HealthTable {
    /// The view of `set` in `region`: backends already known there keep their state.
    pub fn new(region: &'static Region, set: &BackendSet, thresholds: Thresholds) -> HealthTable {
        HealthTable::with_new(region, set, thresholds, false)
    }

    /// Like [`HealthTable::new`]; backends new to the region count as just up when
    /// `added` (a reload added them: slow start applies).
    pub fn with_new(
        region: &'static Region,
        set: &BackendSet,
        thresholds: Thresholds,
        added: bool,
    ) -> HealthTable {
        let index: Vec<usize> = set
            .iter()
            .map(|b| region.index_for_new(b.id, added))
            .collect();
        HealthTable {
            region,
            slots: index.iter().map(|&i| region.slot(i)).collect(),
            stats: index.iter().map(|&i| region.stats(i)).collect(),
            global: region.global(),
            index: index.into_boxed_slice(),
            addresses: set.iter().map(|b| b.address.clone()).collect(),
            names: set.iter().map(|b| b.name.clone()).collect(),
            thresholds,
            caps: set.iter().map(|b| b.max_connections).collect(),
            any_caps: set.iter().any(|b| b.max_connections > 0),
        }
    }

    /// `n` anonymous backends, all up and confirmed (strategy tests and benchmarks).
    pub fn all_up(n: usize) -> HealthTable {
        let backends: Vec<Backend> = (0..n)
            .map(|i| Backend {
                id: BackendId(i as u64 + 1),
                address: format!("backend-{i}"),
                host: String::new(),
                port: 0,
                scheme: crate::backend::Scheme::Http,
                addrs: Vec::new(),
                weight: 1,
                tls: Default::default(),
                protocol: Default::default(),
                max_connections: 0,
                proxy_protocol: None,
                name: None,
            })
            .collect();
        let region = match Region::new() {
            Ok(r) => r,
            Err(e) => panic!("cannot map a health region for a test table: {e}"),
        };
        let t = HealthTable::new(
            region,
            &BackendSet::new(backends),
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

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn address(&self, i: usize) -> &str {
        &self.addresses[i]
    }

    /// Backend `i`'s `name:`, if it has one.
    pub fn name(&self, i: usize) -> Option<&str> {
        self.names[i].as_deref()
    }

    #[inline]
    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].breaker.load(Relaxed) & 1 == 0
    }

    /// True when no backend can take a new request: each one is down or drained.
    pub fn all_down(&self) -> bool {
        (0..self.len()).all(|i| !self.is_up(i) || self.is_drained(i))
    }

    /// Whether the admin API drained backend `i` (one `Relaxed` load).
    #[inline]
    pub fn is_drained(&self, i: usize) -> bool {
        AdminState::drained_in(self.slots[i].admin.load(Relaxed))
    }

    /// Backend `i`'s weight override from the admin API, 0 = none.
    #[inline]
    pub fn weight_override(&self, i: usize) -> u32 {
        AdminState::weight_in(self.slots[i].admin.load(Relaxed))
    }

    /// Backend `i`'s admin state.
    pub fn admin_state(&self, i: usize) -> AdminState {
        AdminState::unpack(self.slots[i].admin.load(Relaxed))
    }

    /// Changes backend `i`'s admin state with `f` (one compare-and-swap loop, so two
    /// writes to different fields never undo each other) and returns the new state.
    /// `None` when the backend has no slot of its own (the region's overflow entry is
    /// shared, so a drain there would drain other backends too).
    pub fn update_admin(
        &self,
        i: usize,
        f: impl Fn(AdminState) -> AdminState,
    ) -> Option<AdminState> {
        if self.index[i] >= super::shared::CAPACITY {
            return None;
        }
        let slot = self.slots[i];
        let mut cur = slot.admin.load(Relaxed);
        loop {
            let next = f(AdminState::unpack(cur));
            match slot
                .admin
                .compare_exchange_weak(cur, next.pack(), Relaxed, Relaxed)
            {
                Ok(_) => {
                    if AdminState::drained_in(cur) != next.drained {
                        // Strategies cache what they derive from who can be picked.
                        self.global.health_epoch.fetch_add(1, Relaxed);
                    }
                    if AdminState::weight_in(cur) != next.weight.unwrap_or(0) {
                        // ... and from weights (consistent-hash's table).
                        self.global.weight_epoch.fetch_add(1, Relaxed);
                    }
                    return Some(next);
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Forces a backend up or down (tests, admin).
    pub fn set_up(&self, i: usize, up: bool) {
        let b = Breaker {
            up,
            confirmed: true,
            streak: 0,
        };
        let was_up = self.is_up(i);
        self.slots[i].breaker.store(b.pack(), Relaxed);
        if up && !was_up {
            self.slots[i].up_since_ms.store(monotonic_ms(), Relaxed);
        }
        self.global.health_epoch.fetch_add(1, Relaxed);
    }

    /// Backend `i`'s counters.
    #[inline]
    pub fn stats(&self, i: usize) -> &'static BackendStats {
        self.stats[i]
    }

    /// Process-wide counters.
    #[inline]
    pub fn global(&self) -> &'static GlobalStats {
        self.global
    }

    #[inline]
    pub fn in_flight(&self, i: usize) -> u32 {
        self.slots[i].in_flight.load(Relaxed)
    }

    /// Requests in flight to any backend, over workers `0..workers` (each worker's
    /// ledger keeps its own total, so counting costs no shared write).
    #[inline]
    pub fn in_flight_total(&self, workers: usize) -> u32 {
        self.region.in_flight_total(workers)
    }

    /// Monotonic milliseconds since backend `i` is up (new, or its last recovery).
    #[inline]
    pub fn up_since_ms(&self, i: usize) -> u64 {
        self.slots[i].up_since_ms.load(Relaxed)
    }

    /// Publishes backend `i`'s latency estimate (least-latency) for /backends.
    #[inline]
    pub fn set_latency_us(&self, i: usize, us: f64) {
        self.slots[i]
            .latency_us
            .store(us.min(f64::from(u32::MAX)) as u32, Relaxed);
    }

    /// Backend `i`'s last published latency estimate in µs (0 = none).
    pub fn latency_us(&self, i: usize) -> u32 {
        self.slots[i].latency_us.load(Relaxed)
    }

    /// Open connections of a client (by address hash) over workers `0..workers`.
    pub fn client_connections(&self, workers: usize, hash: u64) -> u64 {
        self.region.client_connections(workers, hash)
    }

    /// The rate-limit table of the shared region.
    #[inline]
    pub fn rate_table(&self) -> &'static [crate::limit::Entry] {
        self.region.rate_table()
    }

    /// (requests, retries, seconds with requests) of the last 10 s over workers
    /// `0..workers`.
    pub fn budget_window(&self, workers: usize, now_ms: u64) -> (u64, u64, u32) {
        self.region.budget_window(workers, now_ms)
    }

    /// Changes whenever any backend goes up or down (strategies cache what they
    /// derive from health, e.g. how many are up, against it).
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.global.health_epoch.load(Relaxed)
    }

    /// Changes whenever the admin API sets or clears a weight override (0 until the
    /// first one): consistent-hash rebuilds its table against it.
    #[inline]
    pub fn weight_epoch(&self) -> u64 {
        self.global.weight_epoch.load(Relaxed)
    }

    /// Backend `i`'s weight in force: the admin override, else `configured`.
    #[inline]
    pub fn weight(&self, i: usize, configured: u32) -> u32 {
        match self.weight_override(i) {
            0 => configured,
            w => w,
        }
    }

    /// Monotonic milliseconds of backend `i`'s last failure (0 = never).
    pub fn last_failure_ms(&self, i: usize) -> u64 {
        self.slots[i].last_failure_ms.load(Relaxed)
    }

    pub fn last_reason(&self, i: usize) -> Reason {
        Reason::from_u8(self.slots[i].last_reason.load(Relaxed))
    }

    /// The ledger of worker `w` (see `shared::Ledger`).
    pub fn ledger(&self, w: usize) -> &'static Ledger {
        self.region.ledger(w)
    }

    /// Whether backend `i` is under its `max_connections` (or has none).
    #[inline]
    pub fn has_room(&self, i: usize) -> bool {
        if !self.any_caps {
            return true;
        }
        let cap = self.caps.get(i).copied().unwrap_or(0);
        cap == 0 || self.slots[i].in_flight.load(Relaxed) < cap
    }

    /// Whether any backend has a `max_connections`.
    pub fn has_caps(&self) -> bool {
        self.any_caps
    }

    /// Like [`HealthTable::start_request`], but only while backend `i` is under its
    /// `max_connections` (checked and counted in one compare-and-swap, so the cap holds
    /// across workers).
    pub fn try_start_request(&self, i: usize, ledger: &'static Ledger) -> Option<InFlightGuard> {
        let cap = self.caps.get(i).copied().unwrap_or(0);
        if cap == 0 {
            return Some(self.start_request(i, ledger));
        }
        let slot = self.slots[i];
        let mut n = slot.in_flight.load(Relaxed);
        loop {
            if n >= cap {
                return None;
            }
            match slot
                .in_flight
                .compare_exchange_weak(n, n + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let mine = &ledger.in_flight[self.index[i]];
        let total = &ledger.in_flight_total;
        mine.fetch_add(1, Relaxed);
        total.fetch_add(1, Relaxed);
        Some(InFlightGuard {
            slot,
            mine,
            total,
            capped: true,
        })
    }

    /// Counts one request in flight to backend `i`, in the shared gauge and in the
    /// worker's ledger, until the guard drops.
    #[inline]
    pub fn start_request(&self, i: usize, ledger: &'static Ledger) -> InFlightGuard {
        let slot = self.slots[i];
        let mine = &ledger.in_flight[self.index[i]];
        let total = &ledger.in_flight_total;
        slot.in_flight.fetch_add(1, Relaxed);
        mine.fetch_add(1, Relaxed);
        total.fetch_add(1, Relaxed);
        InFlightGuard {
            slot,
            mine,
            total,
            capped: false,
        }
    }

    /// A successful exchange or probe.
    #[inline]
    pub fn record_success(&self, i: usize, source: Source) {
        // Fast path: up, confirmed (or a live request), no failure streak: no write.
        let b = Breaker::unpack(self.slots[i].breaker.load(Relaxed));
        if b.up && b.streak == 0 && (b.confirmed || source == Source::Request) {
            return;
        }
        self.apply(i, true, source, Reason::None);
    }

    /// A failed exchange or probe.
    pub fn record_failure(&self, i: usize, source: Source, reason: Reason) {
        let slot = self.slots[i];
        slot.last_failure_ms.store(monotonic_ms().max(1), Relaxed);
        slot.last_reason.store(reason as u8, Relaxed);
        self.apply(i, false, source, reason);
    }

    fn apply(&self, i: usize, ok: bool, source: Source, reason: Reason) {
        let slot = self.slots[i];
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
                    // Recorded only when the backend has a name.
                    let name = self.name(i);
                    if let Some(t) = transition {
                        self.stats[i].transition(t == Transition::Up);
                        if t == Transition::Up {
                            slot.up_since_ms.store(monotonic_ms(), Relaxed);
                        }
                        self.global.health_epoch.fetch_add(1, Relaxed);
                    }
                    match transition {
                        Some(Transition::Down) => tracing::warn!(
                            backend = %addr,
                            name,
                            reason = reason.as_str(),
                            via = ?source,
                            "backend marked DOWN"
                        ),
                        Some(Transition::Up) => {
                            tracing::info!(backend = %addr, name, via = ?source, "backend marked UP")
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
    slot: &'static Slot,
    mine: &'static AtomicU32,
    total: &'static AtomicU32,
    /// Counted under a `max_connections`: its end may let a queued request go.
    capped: bool,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Relaxed);
        self.mine.fetch_sub(1, Relaxed);
        self.total.fetch_sub(1, Relaxed);
        if self.capped {
            // A request of this worker may be waiting for the room this frees.
            ROOM.with(|n| n.notify_one());
        }
    }
}

thread_local! {
    /// Wakes (in FIFO order) this worker's requests queued for a backend under its
    /// `max_connections` when one of its own requests ends; ends elsewhere are seen by
    /// the waiters' own re-check.
    pub static ROOM: std::rc::Rc<tokio::sync::Notify> = std::rc::Rc::new(tokio::sync::Notify::new());
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
    fn every_reason_survives_its_byte() {
        use Reason::*;
        for r in [
            None,
            ConnectRefused,
            ConnectTimeout,
            Reset,
            Timeout,
            BadResponse,
            Status5xx,
            ProbeStatus,
            Tls,
        ] {
            assert_eq!(Reason::from_u8(r as u8), r);
        }
    }

    #[test]
    fn in_flight_counts_until_drop() {
        let t = HealthTable::new(Region::new().unwrap(), &set(), T);
        let l = t.ledger(0);
        let g1 = t.start_request(1, l);
        let g2 = t.start_request(1, l);
        assert_eq!((t.in_flight(0), t.in_flight(1)), (0, 2));
        drop(g1);
        assert_eq!(t.in_flight(1), 1);
        drop(g2);
        assert_eq!(t.in_flight(1), 0);
    }

    #[test]
    fn failures_and_successes_move_the_flag() {
        let t = HealthTable::new(Region::new().unwrap(), &set(), T);
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
    fn admin_state_is_per_backend_and_kept_by_a_new_snapshot() {
        let region = Region::new().unwrap();
        let old = HealthTable::new(region, &set(), T);
        let drain = |s: AdminState| AdminState { drained: true, ..s };
        let weigh = |s: AdminState| AdminState {
            weight: Some(5),
            ..s
        };
        let epoch = old.epoch();
        assert_eq!(old.update_admin(1, drain).map(|s| s.drained), Some(true));
        assert!(old.epoch() > epoch, "a drain changes who can be picked");
        // The weight write keeps the drain (and the drain the weight).
        assert_eq!(
            old.update_admin(1, weigh),
            Some(AdminState {
                drained: true,
                weight: Some(5)
            })
        );
        assert!((!old.is_drained(0), old.is_drained(1)) == (true, true));
        assert_eq!((old.weight_override(0), old.weight_override(1)), (0, 5));
        assert!(!old.all_down(), "backend 0 still takes requests");
        old.update_admin(0, drain);
        assert!(old.all_down(), "every backend drained: none can be picked");
        old.update_admin(0, |s| AdminState {
            drained: false,
            ..s
        });
        let new_set = backend_set(&[
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
        ]);
        let t = HealthTable::new(region, &new_set, T);
        assert!(t.is_drained(0) && !t.is_drained(1));
        assert_eq!(t.weight_override(0), 5);
    }

    #[test]
    fn a_new_snapshot_keeps_state_by_id_not_position() {
        let region = Region::new().unwrap();
        let old = HealthTable::new(region, &set(), T);
        old.record_failure(1, Source::Probe, Reason::ConnectRefused);
        assert!(!old.is_up(1));
        // Reordered, plus a new backend.
        let new_set = backend_set(&[
            "127.0.0.1:3".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
        ]);
        let t = HealthTable::new(region, &new_set, T);
        assert!(t.is_up(0), "new backend starts up");
        assert!(!t.is_up(1), "127.0.0.1:2 stays down");
        assert!(t.is_up(2));
        assert_eq!(t.last_reason(1), Reason::ConnectRefused);
        // In flight on the old snapshot is visible in the new one.
        let _g = old.start_request(0, old.ledger(3));
        assert_eq!(t.in_flight(2), 1);
        // A dead worker's share is taken back out.
        region.settle(3);
        assert_eq!(t.in_flight(2), 0);
    }
}
