//! The memory region all workers share: one slot of atomics per backend, found by id.
//!
//! The region is an anonymous shared mapping made once at start-up, before any worker
//! (thread or forked process) exists, so every worker, the prober and the master see
//! the same physical pages. A backend's slot is found by its [`BackendId`] with open
//! addressing; a slot is claimed with one compare-and-swap on its id and never freed,
//! so a reload that keeps a backend keeps its state, and a snapshot built in another
//! process finds the same slot. All-zero bytes are a valid new slot (up, unconfirmed,
//! nothing in flight), so a slot is usable the instant it is claimed.
//!
//! The same mapping holds the metrics counters ([`GlobalStats`], one [`BackendStats`]
//! per slot), so `/metrics` sums nothing: every worker already adds to one number.
//!
//! Nothing here locks. The only `unsafe` is the mapping itself and handing out
//! references into it, which live as long as the process (the mapping is never unmapped).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::backend::BackendId;
use crate::metrics::{BackendStats, GlobalStats};

/// Slots in a region: distinct backends over the life of the process, across reloads.
pub const CAPACITY: usize = 4096;

/// One backend's shared state. 64 bytes, so neighbours never share a cache line.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct Slot {
    /// `BackendId` (0 means free; an id of 0 is stored as 1).
    key: AtomicU64,
    /// Packed breaker state, see `breaker::Breaker::pack` (0 = new).
    pub(crate) breaker: AtomicU32,
    pub(crate) in_flight: AtomicU32,
    /// Monotonic milliseconds of the last failure; 0 = never.
    pub(crate) last_failure_ms: AtomicU64,
    pub(crate) last_reason: AtomicU8,
    /// Monotonic milliseconds since which the backend is up: when its slot was first
    /// claimed (a new backend) or its last down -> up transition (slow start).
    pub(crate) up_since_ms: AtomicU64,
    /// The latest latency estimate (µs) a least-latency worker published (/backends).
    pub(crate) latency_us: AtomicU32,
    /// What the admin API set (`health::admin`): drained flag and weight override.
    /// 0 = nothing set, so a newly claimed slot starts clean.
    pub(crate) admin: AtomicU64,
}

/// Ledgers: one per worker index (modulo), for what a dead worker leaves behind.
pub const LEDGERS: usize = 64;

/// What one worker has added to the shared gauges (in-flight per slot, open and parked
/// client connections), so the master can take it back out when that worker dies.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Ledger {
    /// The worker accepts (set when its accept loop starts, cleared when it drains or
    /// dies): the master's readiness (systemd, binary upgrade) waits for every worker.
    pub(crate) serving: std::sync::atomic::AtomicBool,
    /// Requests this worker has in flight to any backend (bounded-load hashing sums
    /// these rather than every backend's count).
    pub(crate) in_flight_total: AtomicU32,
    /// This worker's requests and retries per second over the last 10 s (the retry
    /// budget sums them over all workers; each worker writes only its own).
    pub(crate) budget: [Bucket; BUDGET_SECONDS],
    /// This worker's open connections per client address
    /// (`limits.connections_per_client`).
    pub(crate) by_client: crate::limit::conns::Counts,
    /// Requests of this worker waiting in the queue (`max_connections`).
    pub(crate) queued: std::sync::atomic::AtomicI64,
    pub(crate) conns: std::sync::atomic::AtomicI64,
    pub(crate) parked: std::sync::atomic::AtomicI64,
    pub(crate) in_flight: [AtomicU32; CAPACITY + 1],
}

/// Seconds the retry budget looks back over.
pub const BUDGET_SECONDS: usize = 10;

/// One second of one worker's requests and retries.
#[repr(C)]
#[derive(Debug)]
pub struct Bucket {
    /// Which second (monotonic) the counts are of.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Bucket {
    /// The bucket for `second`, emptied first if it holds an older second. Only the
    /// owning worker writes it, so the reset needs no compare-and-swap.
    fn at(&self, second: u64) -> &Bucket {
        if self.second.load(Relaxed) != second {
            self.requests.store(0, Relaxed);
            self.retries.store(0, Relaxed);
            self.second.store(second, Relaxed);
        }
        self
    }
}

impl Ledger {
    /// Counts a client request (the retry budget's base).
    pub fn count_request(&self, now_ms: u64) {
        let s = now_ms / 1000;
        self.budget[(s % BUDGET_SECONDS as u64) as usize]
            .at(s)
            .requests
            .fetch_add(1, Relaxed);
    }

    /// Counts a retry made.
    pub fn count_retry(&self, now_ms: u64) {
        let s = now_ms / 1000;
        self.budget[(s % BUDGET_SECONDS as u64) as usize]
            .at(s)
            .retries
            .fetch_add(1, Relaxed);
    }
}

/// A shared mapping: global counters, then [`CAPACITY`] health slots and as many
/// per-backend counter blocks (plus one overflow entry each), then the worker ledgers.
#[derive(Debug)]
pub struct Region {
    global: &'static GlobalStats,
    slots: &'static [Slot],
    stats: &'static [BackendStats],
    ledgers: &'static [Ledger],
    /// Rate-limit state (`limit::check`), one table for every limit of the instance.
    rate: &'static [crate::limit::Entry],
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl Region {
    /// Maps a new region, shared with every process forked after this call.
    pub fn new() -> std::io::Result<&'static Region> {
        let n = CAPACITY + 1;
        let slots_at = round_up(std::mem::size_of::<GlobalStats>(), 64);
        let stats_at = slots_at + round_up(n * std::mem::size_of::<Slot>(), 64);
        let ledgers_at = stats_at + round_up(n * std::mem::size_of::<BackendStats>(), 64);
        let rate_at = round_up(ledgers_at + LEDGERS * std::mem::size_of::<Ledger>(), 64);
        let len =
            rate_at + crate::limit::TABLE_ENTRIES * std::mem::size_of::<crate::limit::Entry>();
        // SAFETY: an anonymous shared mapping with no address hint; the result is
        // checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = ptr.cast::<u8>();
        // SAFETY: the mapping is page-aligned and `len` bytes long; each part starts at a
        // multiple of 64 (the alignment of all three types) and the parts do not overlap.
        // The kernel zero-fills it and all-zero bytes are valid for these types (atomics
        // of zero). It is never unmapped, so the references are valid for 'static, and
        // it is only touched through atomics, which is sound across processes.
        let region = unsafe {
            Region {
                global: &*base.cast::<GlobalStats>(),
                slots: std::slice::from_raw_parts(base.add(slots_at).cast::<Slot>(), n),
                stats: std::slice::from_raw_parts(base.add(stats_at).cast::<BackendStats>(), n),
                ledgers: std::slice::from_raw_parts(base.add(ledgers_at).cast::<Ledger>(), LEDGERS),
                rate: std::slice::from_raw_parts(
                    base.add(rate_at).cast::<crate::limit::Entry>(),
                    crate::limit::TABLE_ENTRIES,
                ),
            }
        };
        Ok(Box::leak(Box::new(region)))
    }

    /// The index of backend `id`'s slot, claiming a free one the first time.
    pub fn index_for(&self, id: BackendId) -> usize {
        self.index_for_new(id, false)
    }

    /// Like [`Region::index_for`]; a slot claimed now counts as just up when
    /// `stamp_new` (a backend a reload added: slow start ramps it; backends there at
    /// start-up do not ramp).
    pub fn index_for_new(&self, id: BackendId, stamp_new: bool) -> usize {
        let key = id.0.max(1);
        let start = (key % CAPACITY as u64) as usize;
        for probe in 0..CAPACITY {
            let i = (start + probe) % CAPACITY;
            match self.slots[i].key.compare_exchange(0, key, Relaxed, Relaxed) {
                Ok(_) => {
                    // A new backend: its slow start (if any) runs from now.
                    if stamp_new {
                        self.slots[i].up_since_ms.store(monotonic_ms(), Relaxed);
                    }
                    return i;
                }
                Err(k) if k == key => return i,
                Err(_) => {}
            }
        }
        // Thousands of distinct backends over the process's life: keep serving on the
        // shared overflow entry (its state then mixes those backends').
        tracing::warn!(backend = %id, "shared health region is full; this backend shares an overflow slot");
        CAPACITY
    }

    /// The slot of backend `id`, claiming a free one the first time.
    pub fn slot_for(&self, id: BackendId) -> &'static Slot {
        &self.slots[self.index_for(id)]
    }

    pub fn slot(&self, i: usize) -> &'static Slot {
        &self.slots[i]
    }

    pub fn stats(&self, i: usize) -> &'static BackendStats {
        &self.stats[i]
    }

    pub fn global(&self) -> &'static GlobalStats {
        self.global
    }

    /// The rate-limit table.
    pub fn rate_table(&self) -> &'static [crate::limit::Entry] {
        self.rate
    }

    /// The ledger of worker `w`.
    pub fn ledger(&self, w: usize) -> &'static Ledger {
        &self.ledgers[w % LEDGERS]
    }

    /// (requests, retries, seconds that saw requests) over the last
    /// [`BUDGET_SECONDS`] seconds, all of workers `0..n`.
    pub fn budget_window(&self, n: usize, now_ms: u64) -> (u64, u64, u32) {
        let now = now_ms / 1000;
        let oldest = now.saturating_sub(BUDGET_SECONDS as u64 - 1);
        let (mut requests, mut retries, mut active) = (0, 0, 0u32);
        for w in 0..n.min(LEDGERS) {
            for b in &self.ledger(w).budget {
                let s = b.second.load(Relaxed);
                if s >= oldest && s <= now {
                    let r = b.requests.load(Relaxed);
                    requests += r;
                    retries += b.retries.load(Relaxed);
                    if r > 0 {
                        active |= 1 << (s % BUDGET_SECONDS as u64);
                    }
                }
            }
        }
        (requests, retries, active.count_ones())
    }

    /// Open connections of the client whose address hashes to `hash`, over workers
    /// `0..n`.
    pub fn client_connections(&self, n: usize, hash: u64) -> u64 {
        (0..n.min(LEDGERS))
            .map(|w| self.ledger(w).by_client.get(hash))
            .sum()
    }

    /// Requests in flight over workers `0..n`.
    pub fn in_flight_total(&self, n: usize) -> u32 {
        (0..n.min(LEDGERS))
            .map(|w| self.ledger(w).in_flight_total.load(Relaxed))
            .sum()
    }

    /// Whether workers `0..n` all accept.
    pub fn serving(&self, n: usize) -> bool {
        (0..n).all(|w| self.ledger(w).serving.load(Relaxed))
    }

    /// Takes a dead worker's share back out of the shared gauges.
    pub fn settle(&self, w: usize) {
        let ledger = self.ledger(w);
        ledger.serving.store(false, Relaxed);
        ledger.in_flight_total.store(0, Relaxed);
        ledger.by_client.clear();
        let queued = ledger.queued.swap(0, Relaxed);
        self.global.queued.fetch_sub(queued, Relaxed);
        for (i, n) in ledger.in_flight.iter().enumerate() {
            let n = n.swap(0, Relaxed);
            if n > 0 {
                self.slots[i].in_flight.fetch_sub(n, Relaxed);
            }
        }
        let conns = ledger.conns.swap(0, Relaxed);
        self.global.connections_open.fetch_sub(conns, Relaxed);
        let parked = ledger.parked.swap(0, Relaxed);
        self.global.connections_parked.fetch_sub(parked, Relaxed);
    }
}

/// Nanoseconds of CLOCK_MONOTONIC, which every process on the machine agrees on (rate
/// limits, slow start, systemd's MONOTONIC_USEC).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + (ts.tv_nsec as u64)
}

/// Milliseconds of the same clock.
pub fn monotonic_ms() -> u64 {
    monotonic_ns() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_slot_and_zero_is_new() {
        let r = Region::new().unwrap();
        let a = r.slot_for(BackendId(42));
        let b = r.slot_for(BackendId(42 + CAPACITY as u64)); // same bucket, other id
        assert!(!std::ptr::eq(a, b));
        assert!(std::ptr::eq(a, r.slot_for(BackendId(42))));
        assert_eq!(a.breaker.load(Relaxed), 0);
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn settle_takes_a_dead_workers_connections_back_out() {
        let r = Region::new().unwrap();
        let g = r.global();
        for (w, open, parked) in [(2, 3, 2), (5, 1, 1)] {
            g.connections_open.fetch_add(open, Relaxed);
            r.ledger(w).conns.fetch_add(open, Relaxed);
            g.connections_parked.fetch_add(parked, Relaxed);
            r.ledger(w).parked.fetch_add(parked, Relaxed);
        }
        r.settle(2);
        assert_eq!(g.connections_open.load(Relaxed), 1);
        assert_eq!(g.connections_parked.load(Relaxed), 1);
        r.settle(2);
        assert_eq!(g.connections_parked.load(Relaxed), 1, "settled once only");
    }

    #[test]
    fn shared_with_a_forked_child() {
        let r = Region::new().unwrap();
        let s = r.slot_for(BackendId(7));
        // SAFETY: the child only does atomic stores and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            r.slot_for(BackendId(7)).in_flight.store(99, Relaxed);
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(s.in_flight.load(Relaxed), 99);
    }
}
