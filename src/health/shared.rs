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
//! Nothing here locks. The only `unsafe` is the mapping itself and handing out
//! references into it, which live as long as the process (the mapping is never unmapped).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::backend::BackendId;

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
}

/// A shared mapping of [`CAPACITY`] slots.
#[derive(Debug)]
pub struct Region {
    slots: &'static [Slot],
}

impl Region {
    /// Maps a new region, shared with every process forked after this call.
    pub fn new() -> std::io::Result<&'static Region> {
        let len = CAPACITY * std::mem::size_of::<Slot>();
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
        // SAFETY: the mapping is page-aligned (so aligned for `Slot`), `len` bytes long,
        // zero-filled by the kernel (all-zero is a valid `Slot`: atomics of zero), and
        // never unmapped, so the slice is valid for 'static. Slots are only touched
        // through atomics, which is sound for memory shared between processes.
        let slots = unsafe { std::slice::from_raw_parts(ptr.cast::<Slot>(), CAPACITY) };
        Ok(Box::leak(Box::new(Region { slots })))
    }

    /// The slot of backend `id`, claiming a free one the first time.
    pub fn slot_for(&self, id: BackendId) -> &'static Slot {
        let key = id.0.max(1);
        let start = (key % CAPACITY as u64) as usize;
        for probe in 0..CAPACITY {
            let slot = &self.slots[(start + probe) % CAPACITY];
            match slot.key.compare_exchange(0, key, Relaxed, Relaxed) {
                Ok(_) => return slot,
                Err(k) if k == key => return slot,
                Err(_) => {}
            }
        }
        // Thousands of distinct backends over the process's life: keep serving with a
        // private slot (state then is per process, not shared).
        tracing::warn!(backend = %id, "shared health region is full; this backend's state is not shared");
        Box::leak(Box::default())
    }
}

/// Milliseconds of a monotonic clock that every process on the machine agrees on.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
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
