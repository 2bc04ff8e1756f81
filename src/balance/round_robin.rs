//! Plain round-robin: each pick takes the next eligible backend after the last one.
//!
//! [`RoundRobin`] keeps one rotating counter per worker (a `Cell`, since strategies
//! are never shared between threads). A pick scans forward from the counter, at most
//! once around the set, and takes the first backend that is up and not yet tried by
//! the request; the counter then moves just past it, so with backend 1 of 3 down the
//! picks alternate 0, 2, 0, 2. It ignores weights and load (see
//! [`WeightedRoundRobin`](super::WeightedRoundRobin) and
//! [`LeastConnections`](super::LeastConnections)), and since each worker counts on
//! its own, the rotation is exact per worker, not across workers.
//! [`Sticky`](super::Sticky) reuses it for requests without a usable cookie. During
//! `slow_start` a ramping backend's turn is taken only with the probability of its
//! ramp (and passed to the next backend otherwise).

use std::cell::Cell;

use super::{Strategy, View, XorShift};
use crate::backend::BackendSet;

/// Round-robin over the eligible backends of one set.
#[derive(Debug)]
pub struct RoundRobin {
    n: usize,
    /// Where the next scan starts; always `< n` (or 0 for an empty set).
    next: Cell<usize>,
    /// Slow start: a ramping backend's turn is taken with probability of its ramp.
    thin: XorShift,
}

impl RoundRobin {
    pub fn new(set: &BackendSet) -> RoundRobin {
        RoundRobin {
            n: set.len(),
            next: Cell::new(0),
            thin: XorShift::new(),
        }
    }
}

impl Strategy for RoundRobin {
    #[inline]
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        // A health table shorter than the set would be a bug elsewhere; treat the
        // missing backends as down rather than panicking on the index.
        let n = self.n.min(view.health.len());
        let mut i = self.next.get();
        if i >= n {
            i = 0;
        }
        let mut passed = None;
        for _ in 0..n {
            if view.eligible(i) {
                if view.ramp.is_none() || self.thin.admit(view, i) {
                    self.next.set(if i + 1 == n { 0 } else { i + 1 });
                    return Some(i);
                }
                passed.get_or_insert(i);
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        // Only ramping backends, all passed over this time: take the first.
        let i = passed?;
        self.next.set(if i + 1 == n { 0 } else { i + 1 });
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Tried;
    use crate::balance::test_support::{counts, indices, n_backends, picks};
    use crate::health::HealthTable;

    #[test]
    fn rotates_in_order() {
        let rr = RoundRobin::new(&n_backends(3));
        let health = HealthTable::all_up(3);
        assert_eq!(
            indices(&rr, &health, &Tried::default(), 9),
            [0, 1, 2, 0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn skips_a_down_backend() {
        let rr = RoundRobin::new(&n_backends(3));
        let health = HealthTable::all_up(3);
        health.set_up(1, false);
        assert_eq!(
            indices(&rr, &health, &Tried::default(), 6),
            [0, 2, 0, 2, 0, 2]
        );
    }

    #[test]
    fn resumes_after_a_backend_comes_back() {
        let rr = RoundRobin::new(&n_backends(3));
        let health = HealthTable::all_up(3);
        health.set_up(1, false);
        assert_eq!(indices(&rr, &health, &Tried::default(), 2), [0, 2]);
        health.set_up(1, true);
        assert_eq!(indices(&rr, &health, &Tried::default(), 4), [0, 1, 2, 0]);
    }

    #[test]
    fn skips_tried_backends() {
        let rr = RoundRobin::new(&n_backends(4));
        let health = HealthTable::all_up(4);
        let mut tried = Tried::default();
        tried.insert(0);
        tried.insert(2);
        assert_eq!(indices(&rr, &health, &tried, 4), [1, 3, 1, 3]);
    }

    #[test]
    fn even_over_many_picks() {
        let rr = RoundRobin::new(&n_backends(16));
        let health = HealthTable::all_up(16);
        let picked = indices(&rr, &health, &Tried::default(), 16 * 100);
        assert_eq!(counts(&picked, 16), [100; 16]);
    }

    #[test]
    fn all_down_or_tried_is_none() {
        let rr = RoundRobin::new(&n_backends(3));
        let health = HealthTable::all_up(3);
        health.set_up(0, false);
        health.set_up(2, false);
        let mut tried = Tried::default();
        tried.insert(1);
        assert_eq!(picks(&rr, &health, &tried, 2), [None, None]);
        for i in 0..3 {
            health.set_up(i, false);
        }
        assert_eq!(picks(&rr, &health, &Tried::default(), 2), [None, None]);
    }

    #[test]
    fn empty_set_and_short_health_table_do_not_panic() {
        let rr = RoundRobin::new(&n_backends(0));
        assert_eq!(
            picks(&rr, &HealthTable::all_up(0), &Tried::default(), 1),
            [None]
        );
        let rr = RoundRobin::new(&n_backends(3));
        assert_eq!(
            picks(&rr, &HealthTable::all_up(2), &Tried::default(), 3),
            [Some(0), Some(1), Some(0)]
        );
    }
}
