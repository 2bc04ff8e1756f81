//! Least connections: the eligible backend with the fewest requests in flight.
//!
//! [`LeastConnections`] reads each backend's in-flight count from the shared
//! [`HealthTable`](crate::health::HealthTable) (counted by the request path's
//! `start_request` guards, across all workers) and takes the smallest. Ties go
//! round-robin: the scan starts at a per-worker rotating offset, the first minimum
//! found wins, and the offset moves just past the winner; with all counts equal it
//! is exactly round-robin, and ties among a subset rotate within that subset. A
//! backend with nothing in flight ends the scan early. Counts are read without
//! synchronisation, so concurrent workers may pick on slightly stale numbers; that
//! is the usual trade-off and it does not weigh backends by capacity (no weights).
//! During `slow_start` a ramping backend's load counts as `(load + 1) / ramp`.

use std::cell::Cell;

use super::{Strategy, View};
use crate::backend::BackendSet;

/// Fewest in-flight requests over one set, ties broken round-robin.
#[derive(Debug)]
pub struct LeastConnections {
    n: usize,
    /// Where the next scan starts; always `< n` (or 0 for an empty set).
    next: Cell<usize>,
}

impl LeastConnections {
    pub fn new(set: &BackendSet) -> LeastConnections {
        LeastConnections {
            n: set.len(),
            next: Cell::new(0),
        }
    }
}

impl Strategy for LeastConnections {
    #[inline]
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        // Backends missing from a too-short health table count as down (no panic).
        let n = self.n.min(view.health.len());
        let mut i = self.next.get();
        if i >= n {
            i = 0;
        }
        let mut best: Option<(usize, u32)> = None;
        for _ in 0..n {
            if view.eligible(i) {
                let mut load = view.health.in_flight(i);
                if view.ramp.is_some() {
                    // Slow start: a ramping backend counts as (load + 1) / ramp.
                    let f = view.ramp(i);
                    if f < 1.0 {
                        load = (f64::from(load + 1) / f) as u32;
                    }
                }
                if best.is_none_or(|(_, b)| load < b) {
                    best = Some((i, load));
                    if load == 0 {
                        break;
                    }
                }
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        let (i, _) = best?;
        self.next.set(if i + 1 == n { 0 } else { i + 1 });
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::balance::Tried;
    use crate::balance::test_support::{counts, indices, n_backends, picks};
    use crate::health::{HealthTable, InFlightGuard};

    /// A table of `loads.len()` backends with `loads[i]` requests in flight to `i`.
    fn loaded(loads: &[u32]) -> (Arc<HealthTable>, Vec<InFlightGuard>) {
        let health = Arc::new(HealthTable::all_up(loads.len()));
        let guards = loads
            .iter()
            .enumerate()
            .flat_map(|(i, &k)| (0..k).map(move |_| i))
            .map(|i| health.start_request(i, health.ledger(0)))
            .collect();
        (health, guards)
    }

    #[test]
    fn picks_the_least_loaded() {
        let lc = LeastConnections::new(&n_backends(3));
        let (health, _guards) = loaded(&[2, 0, 1]);
        assert_eq!(indices(&lc, &health, &Tried::default(), 3), [1, 1, 1]);
    }

    #[test]
    fn equal_loads_rotate_like_round_robin() {
        let lc = LeastConnections::new(&n_backends(3));
        let (health, _guards) = loaded(&[0, 0, 0]);
        assert_eq!(
            indices(&lc, &health, &Tried::default(), 7),
            [0, 1, 2, 0, 1, 2, 0]
        );
        let (health, _guards) = loaded(&[4, 4, 4]);
        assert_eq!(
            indices(&lc, &health, &Tried::default(), 6),
            [1, 2, 0, 1, 2, 0]
        );
    }

    #[test]
    fn ties_rotate_within_the_tied_subset() {
        let lc = LeastConnections::new(&n_backends(5));
        let (health, _guards) = loaded(&[3, 1, 2, 1, 1]);
        let picked = indices(&lc, &health, &Tried::default(), 9);
        assert_eq!(picked, [1, 3, 4, 1, 3, 4, 1, 3, 4]);
        let picked = indices(&lc, &health, &Tried::default(), 300);
        assert_eq!(counts(&picked, 5), [0, 100, 0, 100, 100]);
    }

    #[test]
    fn follows_loads_as_they_change() {
        let lc = LeastConnections::new(&n_backends(3));
        let health = Arc::new(HealthTable::all_up(3));
        // Keep every picked request in flight: the picks then fill the backends
        // evenly, never letting one get two ahead of another.
        let mut guards = Vec::new();
        let view = View {
            health: &health,
            tried: &Tried::default(),
            sticky: None,
            key: None,
            ramp: None,
        };
        for _ in 0..30 {
            let i = lc.pick(&view).unwrap();
            guards.push((i, health.start_request(i, health.ledger(0))));
            let loads: Vec<u32> = (0..3).map(|i| health.in_flight(i)).collect();
            assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1);
        }
        assert_eq!(
            (0..3).map(|i| health.in_flight(i)).collect::<Vec<_>>(),
            [10; 3]
        );
        // Finishing backend 2's requests makes it the only choice.
        guards.retain(|(i, _)| *i != 2);
        assert_eq!(health.in_flight(2), 0);
        assert_eq!(
            picks(&lc, &health, &Tried::default(), 2),
            [Some(2), Some(2)]
        );
    }

    #[test]
    fn skips_down_and_tried_even_if_idle() {
        let lc = LeastConnections::new(&n_backends(4));
        let (health, _guards) = loaded(&[0, 5, 0, 9]);
        health.set_up(0, false);
        let mut tried = Tried::default();
        tried.insert(2);
        assert_eq!(indices(&lc, &health, &tried, 3), [1, 1, 1]);
    }

    #[test]
    fn all_down_is_none() {
        let lc = LeastConnections::new(&n_backends(3));
        let (health, _guards) = loaded(&[1, 0, 2]);
        for i in 0..3 {
            health.set_up(i, false);
        }
        assert_eq!(picks(&lc, &health, &Tried::default(), 2), [None, None]);
    }
}
