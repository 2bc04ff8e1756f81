//! Smooth weighted round-robin, as nginx does it.
//!
//! [`WeightedRoundRobin`] gives each backend a share of picks proportional to its
//! [`Backend::weight`](crate::backend::Backend::weight), interleaved rather than in
//! bursts: on every pick each eligible backend's `current` grows by its weight, the
//! largest `current` wins (the first one on a tie), and the winner's `current` drops
//! by the total weight of that round's eligible backends. Weights 5:1:1 give
//! a, a, b, a, c, a, a and then repeat exactly. Backends that are down or already
//! tried sit the round out: their `current` is neither raised nor counted in the
//! total, so the others share the traffic by their own weights. State is per worker
//! (`Cell`s); weights are fixed for the set's lifetime, except that a weight override
//! set through the admin API (read from the shared slot with each pick, so it applies
//! at once in every worker) takes the configured weight's place. It does not lower a failing
//! backend's weight the way nginx's `effective_weight` does: health decisions belong
//! to the health table, which only says up or down. During `slow_start` a new or
//! recovered backend's weight is scaled by its ramp (weights are kept in thousandths
//! for that).

use std::cell::Cell;

use super::{Strategy, View};
use crate::backend::BackendSet;

/// Smooth weighted round-robin over one set.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    /// `Backend::weight` (>= 1) per index, widened once.
    weights: Box<[i64]>,
    /// nginx's `current_weight` per index. Over all backends these always sum to 0,
    /// and each stays within a small multiple of the total weight.
    current: Box<[Cell<i64>]>,
}

impl WeightedRoundRobin {
    pub fn new(set: &BackendSet) -> WeightedRoundRobin {
        WeightedRoundRobin {
            // A weight of 0 cannot come out of config validation; treat it as 1 so a
            // hand-built set still gets each backend picked. In thousandths, so that
            // slow start can scale a weight finely.
            weights: set
                .iter()
                .map(|b| i64::from(b.weight.max(1)) * 1000)
                .collect(),
            current: set.iter().map(|_| Cell::new(0)).collect(),
        }
    }
}

impl Strategy for WeightedRoundRobin {
    #[inline]
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        // Backends missing from a too-short health table count as down (no panic).
        let n = self.weights.len().min(view.health.len());
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (&w, cur)) in self.weights[..n].iter().zip(&self.current[..n]).enumerate() {
            if !view.eligible(i) {
                continue;
            }
            // The admin API's weight override, when set, replaces the configured one.
            let w = match view.health.weight_override(i) {
                0 => w,
                o => i64::from(o) * 1000,
            };
            // Slow start: a ramping backend's weight grows with its ramp.
            let w = if view.ramp.is_some() {
                ((w as f64 * view.ramp(i)) as i64).max(1)
            } else {
                w
            };
            // Wrapping only keeps debug builds panic-free; the values stay tiny.
            let c = cur.get().wrapping_add(w);
            cur.set(c);
            total = total.wrapping_add(w);
            if best.is_none_or(|(_, b)| c > b) {
                best = Some((i, c));
            }
        }
        let (i, c) = best?;
        self.current[i].set(c.wrapping_sub(total));
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Tried;
    use crate::balance::test_support::{counts, indices, picks, weighted_set};
    use crate::health::HealthTable;

    fn five_one_one() -> WeightedRoundRobin {
        WeightedRoundRobin::new(&weighted_set(&[
            ("a.test:80", 5),
            ("b.test:80", 1),
            ("c.test:80", 1),
        ]))
    }

    #[test]
    fn smooth_sequence_matches_nginx() {
        let w = five_one_one();
        let health = HealthTable::all_up(3);
        // nginx: a a b a c a a, and the same again (all currents are back to 0).
        assert_eq!(
            indices(&w, &health, &Tried::default(), 14),
            [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn never_five_in_a_row_and_exact_shares() {
        let w = five_one_one();
        let health = HealthTable::all_up(3);
        let picked = indices(&w, &health, &Tried::default(), 7000);
        assert_eq!(counts(&picked, 3), [5000, 1000, 1000]);
        let longest_run = picked
            .chunk_by(|a, b| a == b)
            .map(<[usize]>::len)
            .max()
            .unwrap();
        // a a b a c a a | a a b ...: the wrap-around makes the longest run 4.
        assert_eq!(longest_run, 4);
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        let w = WeightedRoundRobin::new(&weighted_set(&[
            ("a.test:80", 2),
            ("b.test:80", 2),
            ("c.test:80", 2),
        ]));
        let health = HealthTable::all_up(3);
        assert_eq!(
            indices(&w, &health, &Tried::default(), 6),
            [0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn down_backend_is_left_out_of_the_round() {
        let w = five_one_one();
        let health = HealthTable::all_up(3);
        health.set_up(1, false);
        // Only a (5) and c (1) share: a a a c a a per 6 picks, exactly 5:1.
        let picked = indices(&w, &health, &Tried::default(), 6);
        assert_eq!(picked, [0, 0, 0, 2, 0, 0]);
        let picked = indices(&w, &health, &Tried::default(), 6000);
        assert_eq!(counts(&picked, 3), [5000, 0, 1000]);
    }

    #[test]
    fn tried_backend_is_skipped() {
        let w = five_one_one();
        let health = HealthTable::all_up(3);
        let mut tried = Tried::default();
        tried.insert(0);
        // b and c alone, equal weights: alternate.
        assert_eq!(indices(&w, &health, &tried, 4), [1, 2, 1, 2]);
    }

    #[test]
    fn shares_recover_after_an_outage() {
        let w = five_one_one();
        let health = HealthTable::all_up(3);
        health.set_up(0, false);
        let _ = indices(&w, &health, &Tried::default(), 5);
        health.set_up(0, true);
        let picked = indices(&w, &health, &Tried::default(), 7000);
        let c = counts(&picked, 3);
        // The outage leaves a little carried-over `current`, at most a round's worth.
        for (got, want) in c.iter().zip([5000, 1000, 1000]) {
            assert!(got.abs_diff(want) <= 7, "{c:?}");
        }
    }

    #[test]
    fn admin_weight_override_and_drain_apply_at_the_next_pick() {
        use crate::health::AdminState;
        let w = five_one_one();
        let health = HealthTable::all_up(3);
        health.update_admin(1, |s| AdminState {
            weight: Some(5),
            ..s
        });
        let picked = indices(&w, &health, &Tried::default(), 11000);
        assert_eq!(counts(&picked, 3), [5000, 5000, 1000]);
        health.update_admin(0, |s| AdminState { drained: true, ..s });
        let picked = indices(&w, &health, &Tried::default(), 6000);
        assert_eq!(counts(&picked, 3), [0, 5000, 1000]);
        // Cleared: back to the configured 5:1:1 (within the carried-over round).
        health.update_admin(0, |_| AdminState::default());
        health.update_admin(1, |_| AdminState::default());
        let picked = indices(&w, &health, &Tried::default(), 7000);
        let c = counts(&picked, 3);
        for (got, want) in c.iter().zip([5000, 1000, 1000]) {
            assert!(got.abs_diff(want) <= 7, "{c:?}");
        }
    }

    #[test]
    fn all_down_is_none() {
        let w = five_one_one();
        let health = HealthTable::all_up(3);
        for i in 0..3 {
            health.set_up(i, false);
        }
        assert_eq!(picks(&w, &health, &Tried::default(), 2), [None, None]);
        health.set_up(2, true);
        let mut tried = Tried::default();
        tried.insert(2);
        assert_eq!(picks(&w, &health, &tried, 1), [None]);
    }
}
