//! Consistent hashing: a Maglev lookup table with bounded load.
//!
//! Maglev (Eisenbud et al., NSDI 2016): every backend has a permutation of the table's
//! slots, derived from its id alone (an offset and a skip, from two fixed-seed hashes),
//! and the backends take turns claiming their next preferred free slot until the table
//! is full. A key hashes to a slot, the slot names a backend. Because the permutation
//! depends only on the id and the backends are taken in id order, every worker and
//! every instance with the same backend set builds the same table, whatever the order
//! of the config file. Weights are turns: a backend of weight w claims w slots for
//! every `max_weight` turns of the heaviest (credit carried over), so shares hold to
//! within a slot or two of w/sum.
//!
//! A key's *preference order* is the table read from its slot onwards. The backend at
//! the slot is taken unless it is down, already tried by this request, or (bounded
//! load, Mirrokni et al., "Consistent Hashing with Bounded Loads"; HAProxy's
//! `hash-balance-factor`) it has more requests in flight, across all workers, than
//! `load_factor` x the mean over up backends; then the next slot's backend is tried.
//! So a backend that goes down moves only its own keys (to each key's next
//! preference), and comes back to exactly the keys it had: the table is not rebuilt
//! for health changes at all, which moves fewer keys than a rebuild would (a Maglev
//! rebuild also shifts a few slots between live backends). It is rebuilt, off the
//! request path, when a reload changes the backend set (a new strategy per snapshot),
//! and by each worker at its next keyed pick after the admin API changes a weight
//! override (a shared weight epoch says so; without overrides it never changes).
//!
//! A request without the key (no such header or cookie) goes round-robin.

use std::cell::{Cell, RefCell};

use super::{Strategy, View};
use crate::backend::BackendSet;

/// The default (and a commonly used) table size: prime, and large enough that each of
/// a few hundred backends holds many slots.
pub const DEFAULT_TABLE_SIZE: usize = 65_537;

/// 64-bit finaliser (splitmix64): spreads FNV-ish ids and keys over all bits.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of `bytes`, then [`mix`]: the hash of a request's key, the same on every
/// instance and version.
#[inline]
pub fn hash_key(bytes: &[u8]) -> u64 {
    mix(crate::backend::fnv1a(crate::backend::FNV_OFFSET, bytes))
}

/// Builds the table: slot -> index into `backends` (`(id, weight)` pairs). `size`
/// should be prime (each permutation then covers every slot) and larger than the
/// backend count; an empty set gives an empty table.
pub fn build(backends: &[(u64, u32)], size: usize) -> Vec<u32> {
    let n = backends.len();
    if n == 0 || size == 0 {
        return Vec::new();
    }
    // Id order, so the table does not depend on the order backends were listed in.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| backends[i].0);
    let m = size as u64;
    let offset: Vec<u64> = backends.iter().map(|b| mix(b.0) % m).collect();
    let skip: Vec<u64> = backends
        .iter()
        .map(|b| {
            if m > 1 {
                mix(b.0 ^ 0x5bd1_e995_5bd1_e995) % (m - 1) + 1
            } else {
                1
            }
        })
        .collect();
    let max_w = backends
        .iter()
        .map(|b| u64::from(b.1.max(1)))
        .max()
        .unwrap_or(1);
    let mut next = vec![0u64; n];
    let mut credit = vec![0u64; n];
    let mut table = vec![u32::MAX; size];
    let mut filled = 0;
    while filled < size {
        for &i in &order {
            credit[i] += u64::from(backends[i].1.max(1));
            while credit[i] >= max_w && filled < size {
                credit[i] -= max_w;
                // The next slot in i's permutation that is still free. The
                // permutation visits every slot within `size` steps (size prime).
                loop {
                    let c = ((offset[i] + next[i] * skip[i]) % m) as usize;
                    next[i] += 1;
                    if table[c] == u32::MAX {
                        table[c] = i as u32;
                        filled += 1;
                        break;
                    }
                    if next[i] > 2 * m {
                        // Only when `size` is not prime: fall back to a linear scan.
                        let free = table.iter().position(|&s| s == u32::MAX);
                        if let Some(c) = free {
                            table[c] = i as u32;
                            filled += 1;
                        }
                        break;
                    }
                }
            }
        }
    }
    table
}

/// `strategy: consistent-hash`.
#[derive(Debug)]
pub struct ConsistentHash {
    table: RefCell<Box<[u32]>>,
    /// `(id, weight)` per index, the weight the table was built with (the configured
    /// one, or the admin API's override).
    built: RefCell<Box<[(u64, u32)]>>,
    /// The weight epoch `built` reflects (0: no override was ever set).
    weights_seen: Cell<u64>,
    /// `Backend::weight` per index.
    configured: Box<[u32]>,
    n: usize,
    /// Bounded load: a backend past `load_factor` x the mean in flight is passed over;
    /// 0 = off.
    load_factor: f64,
    /// Ledgers to sum for the total in flight (the worker count).
    workers: usize,
    /// Round-robin for requests without the key.
    rr: Cell<usize>,
    /// (health epoch, up backends) as last counted.
    up: Cell<(u64, usize)>,
}

impl ConsistentHash {
    pub fn new(
        set: &BackendSet,
        table_size: usize,
        load_factor: f64,
        workers: usize,
    ) -> ConsistentHash {
        let backends: Vec<(u64, u32)> = set.iter().map(|b| (b.id.0, b.weight)).collect();
        ConsistentHash {
            table: RefCell::new(build(&backends, table_size).into_boxed_slice()),
            built: RefCell::new(backends.into_boxed_slice()),
            weights_seen: Cell::new(0),
            configured: set.iter().map(|b| b.weight).collect(),
            n: set.len(),
            load_factor,
            workers: workers.max(1),
            rr: Cell::new(0),
            up: Cell::new((u64::MAX, 0)),
        }
    }

    /// The backend index in slot `s` (tests).
    #[cfg(test)]
    pub(crate) fn slot(&self, s: usize) -> u32 {
        self.table.borrow()[s]
    }

    /// Rebuilds the table when the admin API changed a weight override since it was
    /// built (one load per pick; the rebuild, a few ms for the default size, happens
    /// once per worker per change).
    #[inline]
    fn follow_weights(&self, view: &View<'_>) {
        let epoch = view.health.weight_epoch();
        if epoch != self.weights_seen.get() {
            self.weights_seen.set(epoch);
            self.rebuild(view);
        }
    }

    #[cold]
    fn rebuild(&self, view: &View<'_>) {
        let now: Vec<(u64, u32)> = self
            .built
            .borrow()
            .iter()
            .zip(&self.configured)
            .enumerate()
            .map(|(i, (&(id, _), &w))| match i < view.health.len() {
                true => (id, view.health.weight(i, w)),
                false => (id, w),
            })
            .collect();
        if **self.built.borrow() == *now {
            return;
        }
        let size = self.table.borrow().len();
        *self.table.borrow_mut() = build(&now, size).into_boxed_slice();
        *self.built.borrow_mut() = now.into_boxed_slice();
    }

    /// How many backends are up and not drained, recounted only when health (or a
    /// drain) changed.
    fn up_count(&self, view: &View<'_>) -> usize {
        let epoch = view.health.epoch();
        let (seen, count) = self.up.get();
        if seen == epoch {
            return count;
        }
        let n = self.n.min(view.health.len());
        let count = (0..n)
            .filter(|&i| view.health.is_up(i) && !view.health.is_drained(i))
            .count();
        self.up.set((epoch, count));
        count
    }

    fn round_robin(&self, view: &View<'_>) -> Option<usize> {
        let n = self.n.min(view.health.len());
        let start = self.rr.get();
        for k in 0..n {
            let i = (start + k) % n;
            if view.eligible(i) {
                self.rr.set((i + 1) % n);
                return Some(i);
            }
        }
        None
    }
}

impl Strategy for ConsistentHash {
    #[inline]
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        let Some(key) = view.key else {
            return self.round_robin(view);
        };
        self.follow_weights(view);
        let table = self.table.borrow();
        let m = table.len();
        if m == 0 {
            return None;
        }
        let n = self.n.min(view.health.len());
        // The most any backend may have in flight (with this request), or no bound.
        let cap = if self.load_factor > 0.0 {
            let up = self.up_count(view).max(1) as f64;
            let total = f64::from(view.health.in_flight_total(self.workers));
            Some(((total + 1.0) * self.load_factor / up).ceil() as u32)
        } else {
            None
        };
        let start = (key % m as u64) as usize;
        let mut fallback = None;
        // Each backend holds about m/n slots spread evenly, so a walk past a few
        // ineligible ones is short; it stops after a full turn.
        for step in 0..m {
            let slot = start + step;
            let b = table[if slot >= m { slot - m } else { slot }] as usize;
            if b >= n || !view.eligible(b) {
                continue;
            }
            match cap {
                Some(c) if view.health.in_flight(b) + 1 > c => {
                    // Over its bound: the key's next preference, unless none is under.
                    fallback.get_or_insert(b);
                }
                _ => return Some(b),
            }
            if step > 4 * m / n.max(1) + 64 && fallback.is_some() {
                // Every backend seen many times over: take the first one found.
                break;
            }
        }
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Tried;
    use crate::balance::test_support::{n_backends, weighted_set};
    use crate::health::HealthTable;

    const M: usize = 65_537;

    fn ids(set: &BackendSet) -> Vec<(u64, u32)> {
        set.iter().map(|b| (b.id.0, b.weight)).collect()
    }

    /// The table as backend ids, so tables of differently ordered sets compare.
    fn by_id(backends: &[(u64, u32)], size: usize) -> Vec<u64> {
        build(backends, size)
            .iter()
            .map(|&i| backends[i as usize].0)
            .collect()
    }

    #[test]
    fn the_table_does_not_depend_on_order() {
        let set = ids(&n_backends(7));
        let mut rev = set.clone();
        rev.reverse();
        let mut rotated = set.clone();
        rotated.rotate_left(3);
        let a = by_id(&set, 1009);
        assert_eq!(a, by_id(&rev, 1009));
        assert_eq!(a, by_id(&rotated, 1009));
        assert!(
            a.iter().all(|&id| set.iter().any(|b| b.0 == id)),
            "every slot filled"
        );
    }

    fn key_owner(table: &[u32], backends: &[(u64, u32)], key: u64) -> u64 {
        backends[table[(key % table.len() as u64) as usize] as usize].0
    }

    #[test]
    fn removing_or_adding_a_backend_moves_few_keys() {
        let n = 10;
        let all = ids(&n_backends(n + 1));
        let base = &all[..n];
        let t = build(base, M);
        let keys: Vec<u64> = (0..100_000u64)
            .map(|k| hash_key(&k.to_le_bytes()))
            .collect();
        // Remove one: only (about) its keys move.
        let removed = base[3].0;
        let fewer: Vec<(u64, u32)> = base.iter().copied().filter(|b| b.0 != removed).collect();
        let t2 = build(&fewer, M);
        let moved = keys
            .iter()
            .filter(|&&k| key_owner(&t, base, k) != key_owner(&t2, &fewer, k))
            .count();
        assert!(
            (moved as f64) <= 1.1 / n as f64 * keys.len() as f64,
            "{moved} of {} keys moved when 1 of {n} backends left",
            keys.len()
        );
        // Add one: about 1/(n+1) move.
        let t3 = build(&all, M);
        let moved = keys
            .iter()
            .filter(|&&k| key_owner(&t, base, k) != key_owner(&t3, &all, k))
            .count();
        let expect = keys.len() as f64 / (n + 1) as f64;
        assert!(
            (moved as f64) < expect * 1.15 && (moved as f64) > expect * 0.85,
            "{moved} keys moved when a backend joined {n}; about {expect:.0} expected"
        );
    }

    #[test]
    fn a_weight_override_rebuilds_the_table_once_and_clearing_restores_it() {
        use crate::health::AdminState;
        let set = n_backends(2);
        let health = HealthTable::all_up(2);
        let s = ConsistentHash::new(&set, 1009, 0.0, 1);
        let tried = Tried::default();
        let share_of_0 = || {
            let view = View {
                health: &health,
                tried: &tried,
                sticky: None,
                key: Some(1),
                ramp: None,
            };
            let _ = s.pick(&view); // follows the weights
            (0..1009).filter(|&i| s.slot(i) == 0).count() as f64 / 1009.0
        };
        let before = share_of_0();
        assert!((before - 0.5).abs() < 0.02, "{before}");
        health.update_admin(0, |a| AdminState {
            weight: Some(3),
            ..a
        });
        let heavier = share_of_0();
        assert!((heavier - 0.75).abs() < 0.02, "{heavier}");
        health.update_admin(0, |a| AdminState { weight: None, ..a });
        assert_eq!(share_of_0(), before);
    }

    #[test]
    fn weights_hold_within_two_percent() {
        let set = weighted_set(&[
            ("10.0.0.1:80", 1),
            ("10.0.0.2:80", 2),
            ("10.0.0.3:80", 3),
            ("10.0.0.4:80", 5),
            ("10.0.0.5:80", 1),
        ]);
        let b = ids(&set);
        let t = build(&b, M);
        let total: u32 = b.iter().map(|x| x.1).sum();
        for (i, &(_, w)) in b.iter().enumerate() {
            let share = t.iter().filter(|&&s| s as usize == i).count() as f64 / M as f64;
            let want = f64::from(w) / f64::from(total);
            assert!(
                (share - want).abs() / want < 0.02,
                "backend {i} (weight {w}): {share:.4} of slots, {want:.4} wanted"
            );
        }
    }

    #[test]
    fn same_key_same_backend_and_down_backends_move_only_their_keys() {
        let set = n_backends(5);
        let s = ConsistentHash::new(&set, 1009, 0.0, 1);
        let health = HealthTable::all_up(5);
        let tried = Tried::default();
        let pick = |key: u64| {
            s.pick(&View {
                health: &health,
                tried: &tried,
                sticky: None,
                key: Some(key),
                ramp: None,
            })
            .unwrap()
        };
        let keys: Vec<u64> = (0..2000u64).map(mix).collect();
        let before: Vec<usize> = keys.iter().map(|&k| pick(k)).collect();
        assert_eq!(before, keys.iter().map(|&k| pick(k)).collect::<Vec<_>>());
        health.set_up(2, false);
        let after: Vec<usize> = keys.iter().map(|&k| pick(k)).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b, "a key of a live backend moved");
            } else {
                assert_ne!(*a, 2);
            }
        }
        // Its keys spread over the others, not onto one.
        let mut spread = [0usize; 5];
        for (b, a) in before.iter().zip(&after) {
            if *b == 2 {
                spread[*a] += 1;
            }
        }
        assert!(spread.iter().filter(|&&c| c > 0).count() >= 3, "{spread:?}");
        health.set_up(2, true);
        assert_eq!(
            before,
            keys.iter().map(|&k| pick(k)).collect::<Vec<_>>(),
            "it gets them back"
        );
        assert_eq!(s.slot(0) as usize, s.table.borrow()[0] as usize);
    }

    #[test]
    fn requests_without_the_key_go_round_robin() {
        let set = n_backends(3);
        let s = ConsistentHash::new(&set, 1009, 1.25, 1);
        let health = HealthTable::all_up(3);
        let tried = Tried::default();
        let v = View {
            health: &health,
            tried: &tried,
            sticky: None,
            key: None,
            ramp: None,
        };
        let picks: Vec<usize> = (0..6).map(|_| s.pick(&v).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    /// Zipf-skewed keys (s = 1.1, 10k keys, 10 backends) with requests that stay in
    /// flight: with bounded load at 1.25, no backend ever has more than 1.25x the
    /// mean in flight (plus the one being placed).
    #[test]
    fn bounded_load_caps_every_backend_under_skew() {
        use std::collections::VecDeque;
        let n = 10;
        let set = n_backends(n);
        let health = HealthTable::all_up(n);
        let s = ConsistentHash::new(&set, M, 1.25, 1);
        let ledger = health.ledger(0);
        // Zipf(1.1) over 10k keys by inverse CDF, from a fixed xorshift stream.
        let weights: Vec<f64> = (1..=10_000).map(|r| 1.0 / (r as f64).powf(1.1)).collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(weights.len());
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cdf.push(acc);
        }
        let mut x: u64 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let tried = Tried::default();
        let mut in_flight = VecDeque::new();
        let mut worst = 0.0f64;
        for _ in 0..50_000 {
            let u = next();
            let rank = cdf.partition_point(|&c| c < u);
            let key = mix(rank as u64);
            let b = s
                .pick(&View {
                    health: &health,
                    tried: &tried,
                    sticky: None,
                    key: Some(key),
                    ramp: None,
                })
                .unwrap();
            in_flight.push_back(health.start_request(b, ledger));
            let total = f64::from(health.in_flight_total(1));
            // The bound the pick obeyed (the paper's guarantee).
            assert!(
                f64::from(health.in_flight(b)) <= (1.25 * total / n as f64).ceil(),
                "backend {b} took a request past its bound: {} of {total}",
                health.in_flight(b)
            );
            // 200 requests in flight at any time.
            if in_flight.len() > 200 {
                in_flight.pop_front();
            }
            let total = f64::from(health.in_flight_total(1));
            let mean = total / n as f64;
            let top = (0..n).map(|i| health.in_flight(i)).max().unwrap_or(0);
            worst = worst.max(f64::from(top) / mean.max(1.0));
            // Completions elsewhere can leave one request over until the next pick.
            assert!(
                f64::from(top) <= (1.25 * mean).ceil() + 1.0,
                "a backend has {top} in flight, the mean is {mean}"
            );
        }
        assert!(worst > 1.0, "the keys were not skewed at all");
        // Without the bound the hottest key's backend would take far more.
        let unbounded = ConsistentHash::new(&set, M, 0.0, 1);
        let hot = unbounded
            .pick(&View {
                health: &health,
                tried: &tried,
                sticky: None,
                key: Some(mix(0)),
                ramp: None,
            })
            .unwrap();
        assert!(hot < n);
    }
}
