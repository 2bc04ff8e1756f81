//! Sticky sessions: a cookie names the backend, by id, that served the client before.
//!
//! [`Sticky`] holds the set's [`BackendId`]s sorted once at construction, so a pick
//! finds the cookie's backend by binary search: no hashing, no allocation. If the
//! request's cookie (already parsed into [`View::sticky`]) names a backend of this
//! set that is up and not yet tried, that backend serves it and the cookie stays as
//! it is. Otherwise (no cookie, an id this set does not know, or that backend down or
//! already tried) it falls back to [`RoundRobin`] over the eligible backends and asks
//! for `Set-Cookie`, so the client sticks to the new backend from then on. Because
//! the cookie carries the address-derived id and not a position, stickiness survives
//! reloads that reorder, add or remove other backends. It does not parse or write
//! cookies (the proxy does), and it does not sign them: a client may choose its
//! backend by forging an id, which only ever selects a configured, healthy backend.

use super::{Pick, RoundRobin, Strategy, View};
use crate::backend::{BackendId, BackendSet};

/// Cookie affinity over one set, round-robin for newcomers.
#[derive(Debug)]
pub struct Sticky {
    /// `(id, index)` for every backend, sorted by id (then index).
    by_id: Box<[(u64, usize)]>,
    fallback: RoundRobin,
}

impl Sticky {
    pub fn new(set: &BackendSet) -> Sticky {
        let mut by_id: Box<[(u64, usize)]> =
            set.iter().enumerate().map(|(i, b)| (b.id.0, i)).collect();
        by_id.sort_unstable();
        Sticky {
            by_id,
            fallback: RoundRobin::new(set),
        }
    }

    /// The eligible backend with this id, if any. A set that lists one address
    /// twice has two entries with one id; the first eligible of them is used.
    #[inline]
    fn lookup(&self, id: BackendId, view: &View<'_>) -> Option<usize> {
        let n = view.health.len();
        let start = self.by_id.partition_point(|&(k, _)| k < id.0);
        self.by_id[start..]
            .iter()
            .take_while(|&&(k, _)| k == id.0)
            .map(|&(_, i)| i)
            .find(|&i| i < n && view.eligible(i))
    }

    /// Picks a backend and says whether the response must (re)set the cookie.
    #[inline]
    pub fn pick_sticky(&self, view: &View<'_>) -> Option<Pick> {
        if let Some(index) = view.sticky.and_then(|id| self.lookup(id, view)) {
            return Some(Pick {
                index,
                set_cookie: false,
            });
        }
        self.fallback.pick(view).map(|index| Pick {
            index,
            set_cookie: true,
        })
    }
}

impl Strategy for Sticky {
    #[inline]
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        self.pick_sticky(view).map(|p| p.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendSet;
    use crate::balance::Tried;
    use crate::balance::test_support::{n_backends, set};
    use crate::health::HealthTable;

    fn pick(
        s: &Sticky,
        health: &HealthTable,
        tried: &Tried,
        cookie: Option<BackendId>,
    ) -> Option<Pick> {
        s.pick_sticky(&View {
            health,
            tried,
            sticky: cookie,
            key: None,
            ramp: None,
        })
    }

    fn id(addr: &str) -> Option<BackendId> {
        Some(BackendId::of(addr))
    }

    fn p(index: usize, set_cookie: bool) -> Option<Pick> {
        Some(Pick { index, set_cookie })
    }

    fn three() -> BackendSet {
        set(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])
    }

    #[test]
    fn known_healthy_id_sticks_without_setting_the_cookie() {
        let s = Sticky::new(&three());
        let health = HealthTable::all_up(3);
        let tried = Tried::default();
        for _ in 0..5 {
            assert_eq!(pick(&s, &health, &tried, id("10.0.0.2:80")), p(1, false));
        }
        assert_eq!(pick(&s, &health, &tried, id("10.0.0.3:80")), p(2, false));
        assert_eq!(pick(&s, &health, &tried, id("10.0.0.1:80")), p(0, false));
    }

    #[test]
    fn no_cookie_or_unknown_id_goes_round_robin_and_sets_the_cookie() {
        let s = Sticky::new(&three());
        let health = HealthTable::all_up(3);
        let tried = Tried::default();
        let got: Vec<_> = [None, id("10.9.9.9:80"), None, Some(BackendId(0)), None]
            .into_iter()
            .map(|cookie| pick(&s, &health, &tried, cookie))
            .collect();
        assert_eq!(
            got,
            [p(0, true), p(1, true), p(2, true), p(0, true), p(1, true)]
        );
    }

    #[test]
    fn sticky_hits_do_not_move_the_round_robin() {
        let s = Sticky::new(&three());
        let health = HealthTable::all_up(3);
        let tried = Tried::default();
        assert_eq!(pick(&s, &health, &tried, None), p(0, true));
        assert_eq!(pick(&s, &health, &tried, id("10.0.0.1:80")), p(0, false));
        assert_eq!(pick(&s, &health, &tried, None), p(1, true));
    }

    #[test]
    fn down_or_tried_backend_moves_the_client_and_resets_the_cookie() {
        let s = Sticky::new(&three());
        let health = HealthTable::all_up(3);
        health.set_up(0, false);
        let got = pick(&s, &health, &Tried::default(), id("10.0.0.1:80")).unwrap();
        assert!(got.set_cookie);
        assert_ne!(got.index, 0);

        // A retry of a request stuck to backend 1 must not go back to it.
        health.set_up(0, true);
        let mut tried = Tried::default();
        tried.insert(1);
        for _ in 0..4 {
            let got = pick(&s, &health, &tried, id("10.0.0.2:80")).unwrap();
            assert!(got.set_cookie);
            assert_ne!(got.index, 1);
        }
    }

    #[test]
    fn id_not_position_decides() {
        let forward = set(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        let backward = set(&["10.0.0.3:80", "10.0.0.2:80", "10.0.0.1:80"]);
        let health = HealthTable::all_up(3);
        let tried = Tried::default();
        for target in ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] {
            let address_in = |backends: &BackendSet| {
                let picked = pick(&Sticky::new(backends), &health, &tried, id(target)).unwrap();
                assert!(!picked.set_cookie);
                backends.get(picked.index).address.clone()
            };
            assert_eq!(address_in(&forward), target);
            assert_eq!(address_in(&backward), target);
        }
    }

    #[test]
    fn finds_every_id_in_a_large_set() {
        let backends = n_backends(256);
        let s = Sticky::new(&backends);
        let health = HealthTable::all_up(256);
        let tried = Tried::default();
        for (i, b) in backends.iter().enumerate() {
            assert_eq!(pick(&s, &health, &tried, Some(b.id)), p(i, false));
        }
    }

    #[test]
    fn strategy_pick_is_the_index() {
        let s = Sticky::new(&three());
        let health = HealthTable::all_up(3);
        let view = View {
            health: &health,
            tried: &Tried::default(),
            sticky: id("10.0.0.3:80"),
            key: None,
            ramp: None,
        };
        assert_eq!(Strategy::pick(&s, &view), Some(2));
    }

    #[test]
    fn all_down_is_none_even_with_a_cookie() {
        let s = Sticky::new(&three());
        let health = HealthTable::all_up(3);
        for i in 0..3 {
            health.set_up(i, false);
        }
        let tried = Tried::default();
        assert_eq!(pick(&s, &health, &tried, id("10.0.0.1:80")), None);
        assert_eq!(pick(&s, &health, &tried, None), None);
    }
}
