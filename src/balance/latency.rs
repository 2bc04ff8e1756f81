//! Least latency: power of two choices over peak-EWMA latency x (in flight + 1), as
//! linkerd and Finagle balance.
//!
//! Each pick draws two distinct eligible backends at random and takes the one with
//! the lower score, `cost x (in_flight + 1)`: `cost` is this worker's peak-EWMA of the
//! backend's response time (time to the response head), and `in_flight` the shared
//! count over all workers. Peak-EWMA: an observation above the current cost replaces
//! it at once (a backend that turns slow is avoided at once), one below it is blended
//! in with weight `1 - exp(-dt / TAU)`; and the cost decays toward zero while no
//! observation comes (`TAU` = 10 s), so a backend that was slow is tried again after
//! a while rather than starved forever. A backend not measured yet costs the running
//! average of every observation (the neutral cost), so a new backend is neither
//! flooded (as a zero cost would) nor shunned. Two random choices, not the minimum
//! over all, so workers picking on slightly stale numbers do not all stampede the same
//! backend. Weights do not apply; during `slow_start` a ramping backend's score is
//! divided by its ramp.

use std::cell::Cell;
use std::time::Duration;

use super::{Strategy, View};
use crate::backend::BackendSet;

/// How fast the cost forgets: observations older than this weigh 1/e.
pub const TAU: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
struct Ewma {
    /// Microseconds.
    cost: f64,
    /// When it was last observed ([`now_us`]); `None`: not measured yet.
    stamp: Option<u64>,
}

/// A coarse monotonic clock in µs (CLOCK_MONOTONIC_COARSE: a few ns to read, a few ms
/// of resolution, plenty for a 10 s decay; `Instant::now` would be a quarter of a pick).
#[inline]
fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// `strategy: least-latency`.
#[derive(Debug)]
pub struct LeastLatency {
    ewma: Box<[Cell<Ewma>]>,
    /// Running average of all observations (µs): the cost of an unmeasured backend.
    neutral: Cell<f64>,
    rng: super::XorShift,
}

impl LeastLatency {
    pub fn new(set: &BackendSet) -> LeastLatency {
        LeastLatency {
            ewma: set
                .iter()
                .map(|_| {
                    Cell::new(Ewma {
                        cost: 0.0,
                        stamp: None,
                    })
                })
                .collect(),
            neutral: Cell::new(1000.0),
            rng: super::XorShift::new(),
        }
    }

    /// Backend `i`'s cost at `now` (µs), decayed since its last observation.
    #[inline]
    fn cost(&self, i: usize, now: u64) -> f64 {
        let e = self.ewma[i].get();
        match e.stamp {
            None => self.neutral.get(),
            Some(t) => e.cost * decay(now.saturating_sub(t)),
        }
    }

    /// Records a response time for backend `i`.
    pub fn observe(&self, i: usize, rtt: Duration) {
        let Some(cell) = self.ewma.get(i) else { return };
        let now = now_us();
        let rtt = rtt.as_secs_f64() * 1e6;
        let e = cell.get();
        let cost = match e.stamp {
            None => rtt,
            Some(t) => {
                let w = decay(now.saturating_sub(t));
                let c = e.cost * w;
                if rtt > c {
                    rtt
                } else {
                    c + (rtt - c) * (1.0 - w)
                }
            }
        };
        cell.set(Ewma {
            cost,
            stamp: Some(now),
        });
        let n = self.neutral.get();
        self.neutral.set(n + (rtt - n) * 0.05);
    }

    /// Backend `i`'s current cost in µs (for /backends), if measured.
    pub fn latency_us(&self, i: usize) -> Option<f64> {
        let e = self.ewma.get(i)?.get();
        e.stamp.map(|_| self.cost(i, now_us()))
    }

    /// The first eligible backend at or after `from` (wrapping), other than `not`.
    fn eligible_from(
        &self,
        view: &View<'_>,
        n: usize,
        from: usize,
        not: Option<usize>,
    ) -> Option<usize> {
        (0..n)
            .map(|k| (from + k) % n)
            .find(|&i| Some(i) != not && view.eligible(i))
    }
}

/// About `exp(-dt / TAU)` for `dt` in µs: `1 / (1 + x + x^2/2 + x^3/6)`, the inverse of
/// exp's series, which is exact to 0.1% while `x` < 0.3 (the common case: a backend seen
/// within 3 s) and decreases to zero after (more slowly than exp; a backend unseen for
/// a minute still costs 3% of its peak, which is what a decay toward re-trying needs).
#[inline]
fn decay(dt_us: u64) -> f64 {
    let x = dt_us as f64 / TAU.as_micros() as f64;
    1.0 / (1.0 + x * (1.0 + x * (0.5 + x / 6.0)))
}

impl Strategy for LeastLatency {
    #[inline]
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        let n = self.ewma.len().min(view.health.len());
        if n == 0 {
            return None;
        }
        let a = self.eligible_from(view, n, self.rng.below(n), None)?;
        let Some(b) = self.eligible_from(view, n, self.rng.below(n), Some(a)) else {
            return Some(a);
        };
        let now = now_us();
        // Slow start: a ramping backend's score is divided by its ramp.
        let score =
            |i: usize| self.cost(i, now) * f64::from(view.health.in_flight(i) + 1) / view.ramp(i);
        Some(if score(b) < score(a) { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Tried;
    use crate::balance::test_support::{counts, n_backends};
    use crate::health::HealthTable;

    fn view<'a>(health: &'a HealthTable, tried: &'a Tried) -> View<'a> {
        View {
            health,
            tried,
            sticky: None,
            key: None,
            ramp: None,
        }
    }

    #[test]
    fn a_slow_backend_is_avoided_and_a_fast_one_preferred() {
        let s = LeastLatency::new(&n_backends(3));
        let health = HealthTable::all_up(3);
        let tried = Tried::default();
        s.observe(0, Duration::from_millis(1));
        s.observe(1, Duration::from_millis(1));
        s.observe(2, Duration::from_millis(50));
        let picks: Vec<usize> = (0..1000)
            .map(|_| s.pick(&view(&health, &tried)).unwrap())
            .collect();
        let c = counts(&picks, 3);
        assert_eq!(c[2], 0, "the slow one lost every comparison: {c:?}");
        assert!(c[0] > 300 && c[1] > 300, "{c:?}");
    }

    #[test]
    fn in_flight_counts_against_a_fast_backend() {
        let s = LeastLatency::new(&n_backends(2));
        let health = HealthTable::all_up(2);
        let tried = Tried::default();
        s.observe(0, Duration::from_millis(1));
        s.observe(1, Duration::from_millis(3));
        let _busy: Vec<_> = (0..5)
            .map(|_| health.start_request(0, health.ledger(0)))
            .collect();
        // 1 ms x 6 in flight against 3 ms x 1.
        assert_eq!(s.pick(&view(&health, &tried)), Some(1));
    }

    #[test]
    fn peak_then_decay() {
        let s = LeastLatency::new(&n_backends(1));
        s.observe(0, Duration::from_millis(1));
        s.observe(0, Duration::from_millis(40));
        let now = now_us();
        assert!(
            s.cost(0, now) > 39_000.0,
            "a peak replaces the cost at once"
        );
        // Ten TAUs later it has all but gone (the series' inverse: to 0.6%).
        assert!(s.cost(0, now + TAU.as_micros() as u64 * 10) < 300.0);
        let x: f64 = 0.2;
        assert!((decay(2_000_000) - (-x).exp()).abs() < 1e-3);
        // Unmeasured backends cost the neutral (running average) value.
        let t = LeastLatency::new(&n_backends(2));
        t.observe(0, Duration::from_millis(2));
        assert!(t.cost(1, now_us()) > 0.0);
    }

    #[test]
    fn down_and_tried_backends_are_never_picked() {
        let s = LeastLatency::new(&n_backends(3));
        let health = HealthTable::all_up(3);
        health.set_up(0, false);
        let mut tried = Tried::default();
        tried.insert(1);
        for _ in 0..50 {
            assert_eq!(s.pick(&view(&health, &tried)), Some(2));
        }
        tried.insert(2);
        assert_eq!(s.pick(&view(&health, &tried)), None);
    }
}
