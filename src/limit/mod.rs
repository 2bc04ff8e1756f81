//! Rate limits: GCRA over a lock-free table in the shared region.
//!
//! GCRA (the generic cell rate algorithm; a token bucket kept as one timestamp) holds,
//! per key, the *theoretical arrival time* `tat` of the next request at the limit's
//! pace. A request at `now` is allowed when `tat - now <= burst x period` (it arrived
//! no earlier than the bucket allows), and then moves `tat` one period on; otherwise it
//! is refused, and may come back after `tat - now - burst x period`. Textbook GCRA
//! moves `tat` to `max(tat, now) + period`, which throws away how late each request
//! came after its slot: with `burst: 0` and clients at four times the rate, random
//! arrivals got ~80% of the rate and clumped ones ~53%. Here the slots stay on one
//! grid: a late request takes the last slot at or before `now` (`tat` plus whole
//! periods), so only slots in which nobody asked are lost, and traffic at or above
//! the rate is admitted at the rate. An idle key stores up nothing beyond `burst`: any
//! window of `n` periods admits at
//! most `n + burst + 1` requests. One 64-bit word per key, updated with compare-and-swap: no lock, and every
//! worker (threads or processes: the table lives in the mapping made before the forks)
//! shares one budget per key.
//!
//! The table ([`Entry`] x [`TABLE_ENTRIES`]) is open-addressed: a key (the limit's
//! name and the request's key value, hashed together) lives in one of [`PROBES`]
//! consecutive entries from its hash. When all of them hold other keys, the entry
//! whose `tat` is oldest is taken over: a key whose `tat` is in the past has a full
//! bucket anyway, so evicting it loses nothing; only with more than `TABLE_ENTRIES`
//! keys busy at once does a limited key lose its state (and get a fresh bucket).
//! Keys are never removed otherwise. Because state is keyed by the limit's *name*, a
//! reload that changes a limit's rate keeps every key's state.

pub mod conns;
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Keys the table holds at once, over all limits of an instance.
pub const TABLE_ENTRIES: usize = 1 << 16;
/// Entries a key may live in.
pub const PROBES: usize = 8;

/// One key's state.
#[repr(C, align(16))]
#[derive(Debug, Default)]
pub struct Entry {
    /// The key's hash (0 = free; a hash of 0 is stored as 1).
    key: AtomicU64,
    /// Theoretical arrival time, ns of the shared monotonic clock.
    tat: AtomicU64,
}

/// What a limit counts by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's IP address.
    ClientIp,
    /// A request header's value (name lowercased); requests without it are not limited.
    Header(String),
    /// One budget for every request.
    Global,
}

/// Where a limit's state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The shared region: one budget for all workers of this instance.
    Local,
    /// Redis: one budget for every instance using the same Redis.
    Redis,
}

/// One configured limit (`rate_limits:` item), as plain data.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    pub name: String,
    /// Hash of the name: keys in the table and the metrics slot.
    pub name_hash: u64,
    pub key: LimitKey,
    /// `quota` requests per `window_s` seconds.
    pub quota: u64,
    pub window_s: u64,
    pub burst: u64,
    pub scope: Scope,
}

impl RateLimit {
    pub fn pace(&self) -> Pace {
        Pace::new(self.quota, self.window_s, self.burst)
    }

    /// The table key of this limit for a request's key value.
    pub fn key_of(&self, value: &[u8]) -> u64 {
        let h = crate::backend::fnv1a(self.name_hash ^ 0x9e37_79b9_7f4a_7c15, value);
        crate::balance::maglev::mix(h)
    }
}

/// `N/s`, `N/m` or `N/h` -> (N, seconds).
pub fn parse_rate(s: &str) -> Option<(u64, u64)> {
    let (n, per) = s.trim().split_once('/')?;
    let n: u64 = n.trim().parse().ok().filter(|&n| n > 0)?;
    let window = match per.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    Some((n, window))
}

/// The hash of a limit's name.
pub fn name_hash(name: &str) -> u64 {
    crate::balance::maglev::hash_key(name.as_bytes())
}

/// What a limit answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` more would be allowed right now.
    Allow { remaining: u64 },
    /// Refused; allowed again after this many ns.
    Deny { retry_after_ns: u64 },
}

/// The pace of one limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// ns between requests at the limit's rate.
    pub period_ns: u64,
    /// Extra requests allowed at once.
    pub burst: u64,
}

impl Pace {
    /// `rate` requests per `per` seconds.
    pub fn new(rate: u64, per_seconds: u64, burst: u64) -> Pace {
        let period_ns = (per_seconds.saturating_mul(1_000_000_000) / rate.max(1)).max(1);
        Pace { period_ns, burst }
    }
}

/// One GCRA step for `key` at `now_ns` in `table`.
pub fn check(table: &[Entry], key: u64, now_ns: u64, pace: Pace) -> Decision {
    let key = key.max(1);
    let Some(entry) = find(table, key) else {
        // An empty table (tests): nothing to limit with.
        return Decision::Allow {
            remaining: pace.burst,
        };
    };
    let tolerance = pace.burst.saturating_mul(pace.period_ns);
    let mut tat = entry.tat.load(Relaxed);
    loop {
        let base = slot(tat, now_ns, pace.period_ns);
        if base.saturating_sub(now_ns) > tolerance {
            return Decision::Deny {
                retry_after_ns: base - now_ns - tolerance,
            };
        }
        let next = base + pace.period_ns;
        match entry.tat.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
            Ok(_) => {
                let ahead = next - now_ns;
                let remaining = match tolerance.checked_sub(ahead) {
                    Some(room) => room / pace.period_ns + 1,
                    None => 0,
                };
                return Decision::Allow { remaining };
            }
            Err(now_tat) => tat = now_tat,
        }
    }
}

/// The slot the request at `now` takes: `tat` when it is early, else the last slot of
/// `tat`'s grid at or before `now`.
fn slot(tat: u64, now: u64, period: u64) -> u64 {
    if tat >= now {
        tat
    } else {
        tat + (now - tat) / period * period
    }
}

/// The entry for `key`: its own, a free one claimed, or the stalest one taken over.
fn find(table: &[Entry], key: u64) -> Option<&Entry> {
    let n = table.len();
    if n == 0 {
        return None;
    }
    let start = (key as usize) % n;
    let mut stalest: Option<(&Entry, u64)> = None;
    for p in 0..PROBES.min(n) {
        let e = &table[(start + p) % n];
        match e.key.load(Relaxed) {
            k if k == key => return Some(e),
            0 => match e.key.compare_exchange(0, key, Relaxed, Relaxed) {
                Ok(_) => return Some(e),
                Err(k) if k == key => return Some(e),
                Err(_) => {}
            },
            _ => {}
        }
        let tat = e.tat.load(Relaxed);
        if stalest.is_none_or(|(_, t)| tat < t) {
            stalest = Some((e, tat));
        }
    }
    let (e, _) = stalest?;
    // Take it over: a new key starts with a full bucket. Racing takeovers of the same
    // entry are harmless: one key wins it, the other finds it again next time.
    let old_key = e.key.load(Relaxed);
    if e.key
        .compare_exchange(old_key, key, Relaxed, Relaxed)
        .is_ok()
    {
        e.tat.store(0, Relaxed);
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<Entry> {
        (0..n).map(|_| Entry::default()).collect()
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn steady_rate_and_burst() {
        let t = table(64);
        let pace = Pace::new(100, 1, 5); // 100/s = one per 10 ms, burst 5
        let mut allowed = 0;
        // 60 requests at one instant: 1 + burst.
        for _ in 0..60 {
            if let Decision::Allow { .. } = check(&t, 7, 1_000 * MS, pace) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 6);
        let Decision::Deny { retry_after_ns } = check(&t, 7, 1_000 * MS, pace) else {
            panic!("should be limited");
        };
        assert_eq!(retry_after_ns, 10 * MS);
        // Then exactly one per 10 ms.
        let mut allowed = 0;
        for ms in 1..=1000 {
            if let Decision::Allow { .. } = check(&t, 7, (1_000 + ms) * MS, pace) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 100);
        // Another key has its own bucket.
        assert!(matches!(
            check(&t, 8, 2_000 * MS, pace),
            Decision::Allow { remaining: 5 }
        ));
    }

    #[test]
    fn late_arrivals_keep_their_slot() {
        // 200/s, burst 0, 10 s of arrivals at four times the rate: random gaps (mean
        // 1.25 ms) and clumps of four every 5 ms, each a little late. Textbook GCRA
        // admitted ~1,600 and ~1,060 of the 2,000.
        let pace = Pace::new(200, 1, 0);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let t = table(64);
        let (mut now, mut random) = (1_000 * MS, 0);
        while now < 11_000 * MS {
            if matches!(check(&t, 1, now, pace), Decision::Allow { .. }) {
                random += 1;
            }
            now += (-(1.0 - rand()).ln() * 1.25e6) as u64;
        }
        let t = table(64);
        let mut clumped = 0;
        for slot in 0..2_000 {
            for _ in 0..4 {
                let at = 1_000 * MS + slot * 5 * MS + (rand() * 2e6) as u64;
                if matches!(check(&t, 1, at, pace), Decision::Allow { .. }) {
                    clumped += 1;
                }
            }
        }
        for n in [random, clumped] {
            assert!((1_950..=2_001).contains(&n), "{random} {clumped}");
        }
        // An idle key does not store up a burst: two at once after a pause, one passes.
        let t = table(64);
        assert!(matches!(
            check(&t, 1, 100 * MS, pace),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            check(&t, 1, 900 * MS, pace),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            check(&t, 1, 900 * MS, pace),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn a_full_table_takes_over_the_stalest_key() {
        let t = table(PROBES);
        let pace = Pace::new(1, 1, 0);
        for k in 1..=PROBES as u64 {
            assert!(matches!(check(&t, k, 0, pace), Decision::Allow { .. }));
        }
        // A ninth key: takes over an entry, starting full.
        assert!(matches!(check(&t, 99, 0, pace), Decision::Allow { .. }));
        assert!(matches!(check(&t, 99, 0, pace), Decision::Deny { .. }));
    }

    #[test]
    fn workers_share_one_budget() {
        let t: &'static [Entry] = Box::leak(table(1024).into_boxed_slice());
        let pace = Pace::new(1000, 1, 0);
        let now = 5_000 * MS;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|&i| {
                            let at = now + i * MS / 10; // 1,000 tries over 100 ms each
                            matches!(check(t, 42, at, pace), Decision::Allow { .. })
                        })
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // 100 ms at 1,000/s: 100 (+1 at the start), however the threads interleave.
        assert!((100..=102).contains(&total), "{total}");
    }
}
