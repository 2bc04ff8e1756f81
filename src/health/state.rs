//! Per-backend slots: up flag and in-flight counter, shared by all workers.
//!
//! Index `i` is the backend at index `i` of the snapshot's `BackendSet`. Reads and
//! writes are `Relaxed`: the values are hints for picking a backend, and nothing else
//! is published through them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

#[derive(Debug, Default)]
struct Slot {
    up: AtomicBool,
    in_flight: AtomicU32,
}

/// Lock-free health and load view of a backend set.
#[derive(Debug)]
pub struct HealthTable {
    slots: Box<[Slot]>,
}

impl HealthTable {
    /// A table of `n` backends, all up.
    pub fn new(n: usize) -> HealthTable {
        let slots = (0..n)
            .map(|_| Slot {
                up: AtomicBool::new(true),
                in_flight: AtomicU32::new(0),
            })
            .collect();
        HealthTable { slots }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    #[inline]
    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].up.load(Relaxed)
    }

    pub fn set_up(&self, i: usize, up: bool) {
        self.slots[i].up.store(up, Relaxed);
    }

    #[inline]
    pub fn in_flight(&self, i: usize) -> u32 {
        self.slots[i].in_flight.load(Relaxed)
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

    #[test]
    fn in_flight_counts_until_drop() {
        let t = Arc::new(HealthTable::new(2));
        let g1 = t.start_request(1);
        let g2 = t.start_request(1);
        assert_eq!((t.in_flight(0), t.in_flight(1)), (0, 2));
        drop(g1);
        assert_eq!(t.in_flight(1), 1);
        drop(g2);
        assert_eq!(t.in_flight(1), 0);
        assert!(t.is_up(0));
        t.set_up(0, false);
        assert!(!t.is_up(0));
    }
}
