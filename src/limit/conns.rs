//! `limits.connections_per_client`: open connections per client address, counted
//! across all workers.
//!
//! Each worker counts its own connections in its own table (in its ledger, in the
//! shared region), and a new connection is admitted when the sum over the workers'
//! tables is under the cap. A worker writes only its own table, so there is no shared
//! write on accept, and when a worker dies the master clears its table with the rest of
//! its ledger: its connections died with it, and so do their counts.
//!
//! A table entry is one 64-bit word, `tag << 24 | count`, so that claiming an entry and
//! counting in it is one compare-and-swap: `tag` is 40 bits of the address's hash
//! (never 0), `count` up to 16 million. An entry whose count fell to 0 may be taken
//! over by another address. If all [`PROBES`] entries of an address are held by other
//! addresses with open connections, the connection is admitted uncounted (a table of
//! [`TABLE`] entries per worker holds that many busy addresses).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Entries per worker.
pub const TABLE: usize = 4096;
const PROBES: usize = 8;
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// One worker's counts.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Counts([AtomicU64; TABLE]);

/// The tag of an address hash: 40 bits, never 0.
fn tag(hash: u64) -> u64 {
    (hash >> COUNT_BITS).max(1)
}

impl Counts {
    /// This table's count for `hash`.
    pub fn get(&self, hash: u64) -> u64 {
        let t = tag(hash);
        let start = (hash as usize) % TABLE;
        (0..PROBES)
            .map(|p| self.0[(start + p) % TABLE].load(Relaxed))
            .find(|&w| w >> COUNT_BITS == t && w & COUNT_MASK > 0)
            .map_or(0, |w| w & COUNT_MASK)
    }

    /// Counts one more connection for `hash`; false when no entry was free (the
    /// connection then goes uncounted, and must not be released).
    pub fn add(&self, hash: u64) -> bool {
        let t = tag(hash);
        let start = (hash as usize) % TABLE;
        // Its own entry first, anywhere in the probe window.
        for p in 0..PROBES {
            let e = &self.0[(start + p) % TABLE];
            let mut w = e.load(Relaxed);
            while w >> COUNT_BITS == t && w & COUNT_MASK > 0 {
                match e.compare_exchange_weak(w, w + 1, Relaxed, Relaxed) {
                    Ok(_) => return true,
                    Err(now) => w = now,
                }
            }
        }
        // Then a free one (never used, or its count fell to 0).
        for p in 0..PROBES {
            let e = &self.0[(start + p) % TABLE];
            let w = e.load(Relaxed);
            if w & COUNT_MASK == 0
                && e.compare_exchange(w, (t << COUNT_BITS) | 1, Relaxed, Relaxed)
                    .is_ok()
            {
                return true;
            }
        }
        false
    }

    /// One connection counted by [`Counts::add`] closed.
    pub fn release(&self, hash: u64) {
        let t = tag(hash);
        let start = (hash as usize) % TABLE;
        for p in 0..PROBES {
            let e = &self.0[(start + p) % TABLE];
            let mut w = e.load(Relaxed);
            while w >> COUNT_BITS == t && w & COUNT_MASK > 0 {
                match e.compare_exchange_weak(w, w - 1, Relaxed, Relaxed) {
                    Ok(_) => return,
                    Err(now) => w = now,
                }
            }
        }
    }

    /// Forgets every count (the worker died).
    pub fn clear(&self) {
        for e in &self.0 {
            e.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Box<Counts> {
        // SAFETY: all-zero bytes are a valid `Counts` (atomics of zero).
        unsafe { Box::new(std::mem::zeroed()) }
    }

    #[test]
    fn add_get_release() {
        let c = table();
        let (a, b) = (0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321);
        for _ in 0..3 {
            assert!(c.add(a));
        }
        assert!(c.add(b));
        assert_eq!((c.get(a), c.get(b)), (3, 1));
        c.release(a);
        assert_eq!(c.get(a), 2);
        c.release(b);
        assert_eq!(c.get(b), 0);
        // b's entry is free again: a new address may take it.
        assert!(c.add(0x1111_2222_3333_4444));
        c.clear();
        assert_eq!(c.get(a), 0);
    }

    #[test]
    fn a_full_window_leaves_the_connection_uncounted() {
        let c = table();
        // Nine addresses whose hashes start at the same entry.
        let hashes: Vec<u64> = (1..=9u64).map(|i| (i << 40) | 7).collect();
        for h in &hashes[..8] {
            assert!(c.add(*h));
        }
        assert!(!c.add(hashes[8]));
        assert_eq!(c.get(hashes[8]), 0);
    }
}
