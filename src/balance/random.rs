//! Uniform random choice among the eligible backends.
//!
//! [`Random`] owns a per-worker ChaCha12 generator ([`StdRng`]) seeded from the
//! operating system, so picks are unpredictable to clients and uncorrelated across
//! workers. A pick first tries one uniformly drawn index of the whole set; if that
//! backend is down or already tried, it counts the eligible backends and walks to a
//! second, uniformly drawn one among them. Either way each eligible backend has
//! exactly probability 1/eligible, with no allocation, no modulo bias, and with all
//! backends up a single draw. It ignores weights and load, and it promises nothing
//! about short-run evenness: use round-robin for that. During `slow_start` a ramping
//! backend that is drawn is kept with the probability of its ramp.

use std::cell::RefCell;

use rand::rngs::{StdRng, SysRng};
use rand::{Rng, SeedableRng};

use super::{Strategy, View};
use crate::backend::BackendSet;

/// Uniform random choice over one set.
#[derive(Debug)]
pub struct Random {
    n: usize,
    /// Boxed: the ChaCha state is ~330 bytes and would otherwise make every
    /// `AnyStrategy` that large (clippy's `large_enum_variant`).
    rng: RefCell<Box<StdRng>>,
}

impl Random {
    /// Seeded from the operating system's random source.
    pub fn new(set: &BackendSet) -> Random {
        let rng = StdRng::try_from_rng(&mut SysRng).unwrap_or_else(|_| fallback_rng());
        Random {
            n: set.len(),
            rng: RefCell::new(Box::new(rng)),
        }
    }

    /// Deterministic picks, for tests and benchmarks.
    pub fn with_seed(set: &BackendSet, seed: [u8; 32]) -> Random {
        Random {
            n: set.len(),
            rng: RefCell::new(Box::new(StdRng::from_seed(seed))),
        }
    }
}

/// Used only when the OS random source fails (no `getrandom`, no `/dev/urandom`).
/// Balancing then still works, spread by a seed mixed from the clock, the process
/// id and a stack address (different per worker thread); it is merely predictable
/// to someone who can guess those, which for spreading load is an acceptable loss.
/// Not worth panicking a worker over.
fn fallback_rng() -> StdRng {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let address = std::ptr::addr_of!(local) as usize as u64;
    let pid = u64::from(std::process::id());
    StdRng::seed_from_u64(nanos ^ address.rotate_left(32) ^ pid.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Uniform in `[0, n)` for `n >= 1`, by Lemire's multiply-and-reject method
/// (unbiased; rejects with probability below `n / 2^64`).
#[inline]
fn below(rng: &mut StdRng, n: u64) -> u64 {
    debug_assert!(n >= 1);
    let n = n.max(1);
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

impl Strategy for Random {
    #[inline]
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        // Backends missing from a too-short health table count as down (no panic).
        let n = self.n.min(view.health.len());
        if n == 0 {
            return None;
        }
        // Only this worker uses the strategy and `pick` does not re-enter, so the
        // borrow cannot fail; `try_borrow_mut` keeps that a `None`, not a panic.
        let mut rng = self.rng.try_borrow_mut().ok()?;

        // Fast path: one uniform index over the whole set. If it is ineligible, the
        // second draw is uniform over the e eligible ones, so each gets
        // 1/n + (n - e)/n * 1/e = 1/e overall.
        let first = below(&mut rng, n as u64) as usize;
        if view.ramp.is_none() {
            if view.eligible(first) {
                return Some(first);
            }
        } else {
            // Slow start: a ramping backend drawn is kept with the probability of its
            // ramp, else drawn again (a few times, then the walk below decides).
            let mut draw = first;
            for _ in 0..8 {
                if view.eligible(draw) {
                    let f = view.ramp(draw);
                    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    if f >= 1.0 || unit < f {
                        return Some(draw);
                    }
                }
                draw = below(&mut rng, n as u64) as usize;
            }
        }
        let eligible = (0..n).filter(|&i| view.eligible(i)).count();
        if eligible == 0 {
            return None;
        }
        let mut r = below(&mut rng, eligible as u64) as usize;
        // Health may change between the count and the walk (other workers flip it);
        // then settle for the last eligible backend seen rather than for nothing.
        let mut last = None;
        for i in 0..n {
            if view.eligible(i) {
                if r == 0 {
                    return Some(i);
                }
                r -= 1;
                last = Some(i);
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Tried;
    use crate::balance::test_support::{counts, indices, n_backends, picks};
    use crate::health::HealthTable;

    const SEED: [u8; 32] = *b"switchyard random strategy tests";

    fn assert_within(counts: &[usize], want: usize, tolerance_pct: usize) {
        for &c in counts {
            assert!(
                c.abs_diff(want) * 100 <= want * tolerance_pct,
                "{counts:?} not within {tolerance_pct}% of {want}"
            );
        }
    }

    #[test]
    fn uniform_over_three() {
        let r = Random::with_seed(&n_backends(3), SEED);
        let health = HealthTable::all_up(3);
        let picked = indices(&r, &health, &Tried::default(), 30_000);
        assert_within(&counts(&picked, 3), 10_000, 10);
    }

    #[test]
    fn os_seeded_is_uniform_too() {
        let r = Random::new(&n_backends(3));
        let health = HealthTable::all_up(3);
        let picked = indices(&r, &health, &Tried::default(), 30_000);
        // 10% is about 12 standard deviations: a failure means a real bias.
        assert_within(&counts(&picked, 3), 10_000, 10);
    }

    #[test]
    fn down_backend_is_never_picked_and_the_rest_stay_even() {
        let r = Random::with_seed(&n_backends(3), SEED);
        let health = HealthTable::all_up(3);
        health.set_up(1, false);
        let c = counts(&indices(&r, &health, &Tried::default(), 30_000), 3);
        assert_eq!(c[1], 0);
        assert_within(&[c[0], c[2]], 15_000, 10);
    }

    #[test]
    fn uneven_eligibility_stays_uniform() {
        // 8 backends, 5 of them ineligible: the fast path misses often, so this
        // checks the two-draw scheme really is uniform over the 3 left.
        let r = Random::with_seed(&n_backends(8), SEED);
        let health = HealthTable::all_up(8);
        for i in [0, 1, 2, 4, 6] {
            health.set_up(i, false);
        }
        let c = counts(&indices(&r, &health, &Tried::default(), 30_000), 8);
        assert_eq!([c[0], c[1], c[2], c[4], c[6]], [0; 5]);
        assert_within(&[c[3], c[5], c[7]], 10_000, 10);
    }

    #[test]
    fn tried_backends_are_skipped() {
        let r = Random::with_seed(&n_backends(4), SEED);
        let health = HealthTable::all_up(4);
        let mut tried = Tried::default();
        tried.insert(0);
        tried.insert(3);
        let c = counts(&indices(&r, &health, &tried, 2_000), 4);
        assert_eq!((c[0], c[3]), (0, 0));
        assert_within(&[c[1], c[2]], 1_000, 15);
    }

    #[test]
    fn same_seed_same_picks() {
        let health = HealthTable::all_up(16);
        let a = Random::with_seed(&n_backends(16), SEED);
        let b = Random::with_seed(&n_backends(16), SEED);
        let (pa, pb) = (
            indices(&a, &health, &Tried::default(), 100),
            indices(&b, &health, &Tried::default(), 100),
        );
        assert_eq!(pa, pb);
        // And not stuck on one value.
        assert!(counts(&pa, 16).iter().filter(|&&c| c > 0).count() > 8);
    }

    #[test]
    fn below_is_in_range_and_unbiased() {
        let mut rng = StdRng::from_seed(SEED);
        assert!((0..1000).all(|_| below(&mut rng, 1) == 0));
        let mut c = [0usize; 7];
        for _ in 0..70_000 {
            c[below(&mut rng, 7) as usize] += 1;
        }
        assert_within(&c, 10_000, 5);
        let big = u64::MAX - 1;
        assert!((0..1000).all(|_| below(&mut rng, big) < big));
    }

    #[test]
    fn all_down_is_none() {
        let r = Random::with_seed(&n_backends(3), SEED);
        let health = HealthTable::all_up(3);
        for i in 0..3 {
            health.set_up(i, false);
        }
        assert_eq!(picks(&r, &health, &Tried::default(), 3), [None; 3]);
        let r = Random::with_seed(&n_backends(0), SEED);
        assert_eq!(
            picks(&r, &HealthTable::all_up(0), &Tried::default(), 1),
            [None]
        );
    }
}
