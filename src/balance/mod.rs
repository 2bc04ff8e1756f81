//! Backend selection: one small trait, one file per strategy.
//!
//! A strategy is built once per worker from an immutable [`BackendSet`] (so a worker
//! owns its counters and RNG: no atomics, no locks) and answers
//! [`Strategy::pick`] with the index of a backend in that set, or `None` when no
//! candidate is eligible. A candidate is eligible when the [`HealthTable`] says it is
//! up and not drained (admin API) and it is not in the request's [`Tried`] set
//! (retries never reuse a backend).
//! `pick` never allocates (but consistent-hash rebuilds its table once after an admin
//! weight override changes). [`AnyStrategy`] dispatches with a `match`, not a vtable.

pub mod latency;
mod least_conn;
pub mod maglev;
mod random;
mod round_robin;
mod sticky;
mod weighted;

pub use latency::LeastLatency;
pub use least_conn::LeastConnections;
pub use maglev::ConsistentHash;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use sticky::Sticky;
pub use weighted::WeightedRoundRobin;

use crate::backend::{BackendId, BackendSet};
use crate::health::HealthTable;

/// The strategies a config can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyKind {
    RoundRobin,
    WeightedRoundRobin,
    Random,
    Sticky,
    LeastConnections,
    ConsistentHash,
    LeastLatency,
}

impl StrategyKind {
    /// Every accepted name, for error messages and `--help`.
    pub const NAMES: &'static str = "round-robin, weighted-round-robin, random, sticky, \
                                     least-connections, least-latency, consistent-hash";

    pub fn parse(s: &str) -> Option<StrategyKind> {
        Some(match s {
            "round-robin" => StrategyKind::RoundRobin,
            "weighted-round-robin" => StrategyKind::WeightedRoundRobin,
            "random" => StrategyKind::Random,
            "sticky" => StrategyKind::Sticky,
            "least-connections" => StrategyKind::LeastConnections,
            "consistent-hash" => StrategyKind::ConsistentHash,
            "least-latency" => StrategyKind::LeastLatency,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::WeightedRoundRobin => "weighted-round-robin",
            StrategyKind::Random => "random",
            StrategyKind::Sticky => "sticky",
            StrategyKind::LeastConnections => "least-connections",
            StrategyKind::ConsistentHash => "consistent-hash",
            StrategyKind::LeastLatency => "least-latency",
        }
    }
}

/// What `strategy: consistent-hash` hashes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HashKey {
    /// The client's IP address.
    #[default]
    ClientIp,
    /// A request header's value (name lowercased).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The path, without the query.
    Path,
    /// The whole request target, query included.
    Uri,
}

impl HashKey {
    pub const FORMS: &'static str = "client_ip, header:NAME, cookie:NAME, path, uri";

    pub fn parse(s: &str) -> Option<HashKey> {
        let s = s.trim();
        let named = |rest: &str| {
            let rest = rest.trim();
            (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
                .then(|| rest.to_owned())
        };
        Some(match s {
            "client_ip" => HashKey::ClientIp,
            "path" => HashKey::Path,
            "uri" => HashKey::Uri,
            _ => {
                if let Some(h) = s.strip_prefix("header:") {
                    HashKey::Header(named(h)?.to_ascii_lowercase())
                } else if let Some(c) = s.strip_prefix("cookie:") {
                    HashKey::Cookie(named(c)?)
                } else {
                    return None;
                }
            }
        })
    }
}

/// `hash:` (plain data; used by `consistent-hash`).
#[derive(Clone, Debug, PartialEq)]
pub struct HashConfig {
    pub key: HashKey,
    /// Slots in the Maglev table (prime).
    pub table_size: usize,
    /// Bounded load: a backend past this many times the mean in flight is passed
    /// over; 0 = off.
    pub load_factor: f64,
}

impl Default for HashConfig {
    fn default() -> HashConfig {
        HashConfig {
            key: HashKey::ClientIp,
            table_size: maglev::DEFAULT_TABLE_SIZE,
            load_factor: 1.25,
        }
    }
}

/// What a strategy is built from besides the backend set.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub hash: HashConfig,
    /// Workers (in-flight totals are summed over their ledgers).
    pub workers: usize,
}

/// Backends already tried by one request (at most [`Tried::CAP`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tried {
    idx: [u32; Tried::CAP],
    len: u8,
}

impl Tried {
    pub const CAP: usize = 8;

    pub fn insert(&mut self, i: usize) {
        if (self.len as usize) < Self::CAP && !self.contains(i) {
            self.idx[self.len as usize] = i as u32;
            self.len += 1;
        }
    }

    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        self.idx[..self.len as usize].contains(&(i as u32))
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Everything a strategy may look at for one pick.
pub struct View<'a> {
    pub health: &'a HealthTable,
    pub tried: &'a Tried,
    /// The backend id from the request's sticky cookie, if it had a well-formed one.
    pub sticky: Option<BackendId>,
    /// The hash of the request's key (`consistent-hash`), if it had one.
    pub key: Option<u64>,
    /// Slow start, when configured: the clock and the window.
    pub ramp: Option<Ramp>,
}

/// `slow_start`: a new or recovered backend's share ramps up over `window_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Ramp {
    pub now_ms: u64,
    pub window_ms: u64,
}

/// The least share a ramping backend gets (so it is measured at all).
pub const RAMP_FLOOR: f64 = 0.01;

impl View<'_> {
    /// Up, not drained by the admin API, not yet tried by this request, and under its
    /// `max_connections`.
    #[inline]
    pub fn eligible(&self, i: usize) -> bool {
        self.health.is_up(i)
            && !self.health.is_drained(i)
            && !self.tried.contains(i)
            && self.health.has_room(i)
    }

    /// Backend `i`'s share during slow start, from [`RAMP_FLOOR`] to 1 over the window
    /// (linearly); 1 outside it or without slow start.
    #[inline]
    pub fn ramp(&self, i: usize) -> f64 {
        let Some(r) = self.ramp else { return 1.0 };
        let since = self.health.up_since_ms(i);
        let age = r.now_ms.saturating_sub(since);
        if since == 0 || age >= r.window_ms || r.window_ms == 0 {
            1.0
        } else {
            (age as f64 / r.window_ms as f64).max(RAMP_FLOOR)
        }
    }
}

/// A per-worker xorshift64* stream, seeded from the clock: the cheap draws of
/// least-latency's two choices and of slow-start thinning (`admit`). Not for anything
/// a client must not predict (`random` uses a CSPRNG).
#[derive(Debug)]
pub(crate) struct XorShift(std::cell::Cell<u64>);

impl XorShift {
    pub(crate) fn new() -> XorShift {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x2545_f491, |d| d.as_nanos() as u64);
        XorShift(std::cell::Cell::new(seed | 1))
    }

    /// The next 64 bits of the stream.
    #[inline]
    fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform draw in [0, 1).
    #[inline]
    pub(crate) fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform draw in `[0, n)` (multiply-shift; the bias is below n / 2^32).
    #[inline]
    pub(crate) fn below(&self, n: usize) -> usize {
        ((self.next() >> 32) as usize * n) >> 32
    }

    /// True with probability `view.ramp(i)`: a strategy without weights thins a
    /// ramping backend's picks this way, so its share grows with the ramp.
    #[inline]
    pub(crate) fn admit(&self, view: &View<'_>, i: usize) -> bool {
        let f = view.ramp(i);
        f >= 1.0 || self.unit() < f
    }
}

/// One load-balancing algorithm over a fixed backend set.
pub trait Strategy {
    /// Index of the chosen backend, or `None` if no backend is eligible.
    fn pick(&self, view: &View<'_>) -> Option<usize>;
}

/// What a sticky pick decided, so the response can (re)set the cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    /// True when the response must carry `Set-Cookie` for this backend.
    pub set_cookie: bool,
}

/// All strategies behind one `match`.
pub enum AnyStrategy {
    RoundRobin(RoundRobin),
    WeightedRoundRobin(WeightedRoundRobin),
    Random(Random),
    Sticky(Sticky),
    LeastConnections(LeastConnections),
    ConsistentHash(ConsistentHash),
    LeastLatency(LeastLatency),
}

impl AnyStrategy {
    pub fn new(kind: StrategyKind, set: &BackendSet, o: &Options) -> AnyStrategy {
        match kind {
            StrategyKind::RoundRobin => AnyStrategy::RoundRobin(RoundRobin::new(set)),
            StrategyKind::WeightedRoundRobin => {
                AnyStrategy::WeightedRoundRobin(WeightedRoundRobin::new(set))
            }
            StrategyKind::Random => AnyStrategy::Random(Random::new(set)),
            StrategyKind::Sticky => AnyStrategy::Sticky(Sticky::new(set)),
            StrategyKind::LeastConnections => {
                AnyStrategy::LeastConnections(LeastConnections::new(set))
            }
            StrategyKind::ConsistentHash => AnyStrategy::ConsistentHash(ConsistentHash::new(
                set,
                o.hash.table_size,
                o.hash.load_factor,
                o.workers,
            )),
            StrategyKind::LeastLatency => AnyStrategy::LeastLatency(LeastLatency::new(set)),
        }
    }

    /// True when the strategy learns from response times ([`AnyStrategy::observe`]).
    #[inline]
    pub fn wants_latency(&self) -> bool {
        matches!(self, AnyStrategy::LeastLatency(_))
    }

    /// A response head from backend `index` came `rtt` after the request went.
    #[inline]
    pub fn observe(&self, index: usize, rtt: std::time::Duration) {
        if let AnyStrategy::LeastLatency(s) = self {
            s.observe(index, rtt);
        }
    }

    /// Backend `index`'s latency estimate in µs, for strategies that keep one.
    pub fn latency_us(&self, index: usize) -> Option<f64> {
        match self {
            AnyStrategy::LeastLatency(s) => s.latency_us(index),
            _ => None,
        }
    }

    /// Picks a backend; for sticky, also says whether the cookie must be (re)set.
    #[inline]
    pub fn pick(&self, view: &View<'_>) -> Option<Pick> {
        let index = match self {
            AnyStrategy::RoundRobin(s) => s.pick(view),
            AnyStrategy::WeightedRoundRobin(s) => s.pick(view),
            AnyStrategy::Random(s) => s.pick(view),
            AnyStrategy::LeastConnections(s) => s.pick(view),
            AnyStrategy::ConsistentHash(s) => s.pick(view),
            AnyStrategy::LeastLatency(s) => s.pick(view),
            AnyStrategy::Sticky(s) => return s.pick_sticky(view),
        }?;
        Some(Pick {
            index,
            set_cookie: false,
        })
    }

    pub fn is_sticky(&self) -> bool {
        matches!(self, AnyStrategy::Sticky(_))
    }
}

/// Shared by the strategy tests: backend sets from addresses, and a picking loop.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{Strategy, Tried, View};
    use crate::backend::{Backend, BackendId, BackendSet, Scheme};
    use crate::health::HealthTable;

    /// A set of `host:port` addresses with the given weights, in the given order.
    pub(crate) fn weighted_set(backends: &[(&str, u32)]) -> BackendSet {
        BackendSet::new(
            backends
                .iter()
                .map(|&(address, weight)| {
                    let (host, port) = address.rsplit_once(':').expect("host:port");
                    Backend {
                        id: BackendId::of(address),
                        address: address.to_string(),
                        host: host.to_string(),
                        port: port.parse().expect("port"),
                        scheme: Scheme::Http,
                        addrs: vec![],
                        weight,
                        tls: Default::default(),
                        protocol: Default::default(),
                        max_connections: 0,
                        proxy_protocol: None,
                        name: None,
                    }
                })
                .collect(),
        )
    }

    /// A set of `host:port` addresses, all of weight 1.
    pub(crate) fn set(addresses: &[&str]) -> BackendSet {
        let with_weights: Vec<(&str, u32)> = addresses.iter().map(|&a| (a, 1)).collect();
        weighted_set(&with_weights)
    }

    /// `n` backends `10.0.0.1:80`, `10.0.0.2:80`, ... (then `10.0.1.0:80`), weight 1.
    pub(crate) fn n_backends(n: usize) -> BackendSet {
        let addresses: Vec<String> = (1..=n)
            .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        set(&refs)
    }

    /// `count` picks with no sticky cookie; `None` picks are kept as `None`.
    pub(crate) fn picks(
        s: &impl Strategy,
        health: &HealthTable,
        tried: &Tried,
        count: usize,
    ) -> Vec<Option<usize>> {
        let view = View {
            health,
            tried,
            sticky: None,
            key: None,
            ramp: None,
        };
        (0..count).map(|_| s.pick(&view)).collect()
    }

    /// `count` picks that must all succeed.
    pub(crate) fn indices(
        s: &impl Strategy,
        health: &HealthTable,
        tried: &Tried,
        count: usize,
    ) -> Vec<usize> {
        picks(s, health, tried, count)
            .into_iter()
            .map(|p| p.expect("a backend is eligible"))
            .collect()
    }

    /// How often each of `n` indices occurs in `picked`.
    pub(crate) fn counts(picked: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in picked {
            c[i] += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::n_backends;
    use super::*;

    #[test]
    fn any_strategy_sets_the_cookie_only_for_sticky_fallbacks() {
        let set = n_backends(3);
        let health = HealthTable::all_up(3);
        let tried = Tried::default();
        let view = |sticky| View {
            health: &health,
            tried: &tried,
            sticky,
            key: None,
            ramp: None,
        };
        for kind in [
            StrategyKind::RoundRobin,
            StrategyKind::WeightedRoundRobin,
            StrategyKind::Random,
            StrategyKind::LeastConnections,
        ] {
            let s = AnyStrategy::new(kind, &set, &Options::default());
            assert!(!s.is_sticky());
            let p = s.pick(&view(Some(set.get(2).id))).unwrap();
            assert!(!p.set_cookie, "{kind:?}");
        }
        let s = AnyStrategy::new(StrategyKind::Sticky, &set, &Options::default());
        assert!(s.is_sticky());
        let hit = Pick {
            index: 2,
            set_cookie: false,
        };
        assert_eq!(s.pick(&view(Some(set.get(2).id))), Some(hit));
        let miss = Pick {
            index: 0,
            set_cookie: true,
        };
        assert_eq!(s.pick(&view(None)), Some(miss));
    }
}
