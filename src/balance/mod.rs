//! Backend selection: one small trait, one file per strategy.
//!
//! A strategy is built once per worker from an immutable [`BackendSet`] (so a worker
//! owns its counters and RNG: no atomics, no locks) and answers
//! [`Strategy::pick`] with the index of a backend in that set, or `None` when no
//! candidate is eligible. A candidate is eligible when the [`HealthTable`] says it is
//! up and it is not in the request's [`Tried`] set (retries never reuse a backend).
//! `pick` never allocates. [`AnyStrategy`] dispatches with a `match`, not a vtable.

mod least_conn;
mod random;
mod round_robin;
mod sticky;
mod weighted;

pub use least_conn::LeastConnections;
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
}

impl StrategyKind {
    /// Every accepted name, for error messages and `--help`.
    pub const NAMES: &'static str =
        "round-robin, weighted-round-robin, random, sticky, least-connections";

    pub fn parse(s: &str) -> Option<StrategyKind> {
        Some(match s {
            "round-robin" => StrategyKind::RoundRobin,
            "weighted-round-robin" => StrategyKind::WeightedRoundRobin,
            "random" => StrategyKind::Random,
            "sticky" => StrategyKind::Sticky,
            "least-connections" => StrategyKind::LeastConnections,
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
        }
    }
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
}

impl View<'_> {
    /// Up and not yet tried by this request.
    #[inline]
    pub fn eligible(&self, i: usize) -> bool {
        self.health.is_up(i) && !self.tried.contains(i)
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
}

impl AnyStrategy {
    pub fn new(kind: StrategyKind, set: &BackendSet) -> AnyStrategy {
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
