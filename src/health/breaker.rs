//! The circuit breaker: a pure state machine over consecutive outcomes.
//!
//! Live requests and active probes feed the same breaker. A backend that is *up*
//! (closed breaker: traffic flows) goes *down* (open: no traffic) after
//! `unhealthy_threshold` consecutive failures; a *down* backend comes back after
//! `healthy_threshold` consecutive successes. A backend no probe has confirmed yet
//! is *unconfirmed*: it takes traffic, and its first probe decides at once (a backend
//! that is dead from the start is down after one probe, not three). [`step`] takes the
//! state and an outcome and returns the new state and the transition, if any; the
//! caller (`state.rs`) applies it atomically and logs the transition once.

/// Breaker state of one backend, small enough to live in one atomic word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub up: bool,
    /// A probe has answered at least once.
    pub confirmed: bool,
    /// Consecutive failures (while up) or successes (while down), saturating.
    pub streak: u16,
}

impl Breaker {
    /// A new backend: up, unconfirmed.
    pub const NEW: Breaker = Breaker {
        up: true,
        confirmed: false,
        streak: 0,
    };

    /// One word: bit 0 = *down*, bit 1 = confirmed, high half = streak. Zero is
    /// [`Breaker::NEW`], so zeroed shared memory holds new backends.
    pub fn pack(self) -> u32 {
        u32::from(!self.up) | u32::from(self.confirmed) << 1 | u32::from(self.streak) << 16
    }

    pub fn unpack(v: u32) -> Breaker {
        Breaker {
            up: v & 1 == 0,
            confirmed: v & 2 != 0,
            streak: (v >> 16) as u16,
        }
    }
}

/// Where an outcome came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Probe,
    Request,
}

/// The thresholds of `health:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub unhealthy: u32,
    pub healthy: u32,
}

/// A change of state worth logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Down,
    Up,
}

/// Applies one outcome (`ok` = success) to `b`.
pub fn step(b: Breaker, ok: bool, source: Source, t: Thresholds) -> (Breaker, Option<Transition>) {
    let bump = |s: u16| s.saturating_add(1);
    let confirmed = b.confirmed || source == Source::Probe;
    match (b.up, ok) {
        // Up and fine: forget past failures.
        (true, true) => (
            Breaker {
                up: true,
                confirmed,
                streak: 0,
            },
            None,
        ),
        (true, false) => {
            let streak = bump(b.streak);
            let first_probe = !b.confirmed && source == Source::Probe;
            if u32::from(streak) >= t.unhealthy || first_probe {
                (
                    Breaker {
                        up: false,
                        confirmed,
                        streak: 0,
                    },
                    Some(Transition::Down),
                )
            } else {
                (
                    Breaker {
                        up: true,
                        confirmed,
                        streak,
                    },
                    None,
                )
            }
        }
        (false, true) => {
            let streak = bump(b.streak);
            if u32::from(streak) >= t.healthy {
                (
                    Breaker {
                        up: true,
                        confirmed,
                        streak: 0,
                    },
                    Some(Transition::Up),
                )
            } else {
                (
                    Breaker {
                        up: false,
                        confirmed,
                        streak,
                    },
                    None,
                )
            }
        }
        // Down and failing again: keep counting from zero successes.
        (false, false) => (
            Breaker {
                up: false,
                confirmed,
                streak: 0,
            },
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        unhealthy: 3,
        healthy: 2,
    };

    fn run(mut b: Breaker, outcomes: &[(bool, Source)]) -> (Breaker, Vec<Option<Transition>>) {
        let mut ts = Vec::new();
        for &(ok, src) in outcomes {
            let (nb, t) = step(b, ok, src, T);
            b = nb;
            ts.push(t);
        }
        (b, ts)
    }

    use Source::{Probe as P, Request as R};

    #[test]
    fn three_failures_open_two_successes_close() {
        let b = Breaker {
            up: true,
            confirmed: true,
            streak: 0,
        };
        let (b, ts) = run(b, &[(false, R), (false, R), (false, P)]);
        assert_eq!(ts, [None, None, Some(Transition::Down)]);
        assert!(!b.up);
        let (b, ts) = run(b, &[(true, P), (true, R)]);
        assert_eq!(ts, [None, Some(Transition::Up)]);
        assert!(b.up);
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let b = Breaker {
            up: true,
            confirmed: true,
            streak: 0,
        };
        let (b, ts) = run(
            b,
            &[(false, R), (false, R), (true, R), (false, R), (false, R)],
        );
        assert!(ts.iter().all(Option::is_none));
        assert!(b.up);
    }

    #[test]
    fn a_failure_resets_the_recovery_streak() {
        let b = Breaker {
            up: false,
            confirmed: true,
            streak: 0,
        };
        let (b, ts) = run(b, &[(true, P), (false, P), (true, P)]);
        assert!(ts.iter().all(Option::is_none));
        assert!(!b.up);
    }

    #[test]
    fn first_probe_decides_an_unconfirmed_backend() {
        let (b, ts) = run(Breaker::NEW, &[(false, P)]);
        assert_eq!(ts, [Some(Transition::Down)]);
        assert!(b.confirmed && !b.up);
        // A live failure on an unconfirmed backend counts normally.
        let (b, ts) = run(Breaker::NEW, &[(false, R)]);
        assert_eq!(ts, [None]);
        assert!(b.up && !b.confirmed);
        // After a good first probe, a bad one is just one failure.
        let (b, ts) = run(Breaker::NEW, &[(true, P), (false, P)]);
        assert_eq!(ts, [None, None]);
        assert!(b.up);
    }

    #[test]
    fn zero_is_new() {
        assert_eq!(Breaker::NEW.pack(), 0);
        assert_eq!(Breaker::unpack(0), Breaker::NEW);
    }

    #[test]
    fn pack_round_trips() {
        for b in [
            Breaker::NEW,
            Breaker {
                up: false,
                confirmed: true,
                streak: 65535,
            },
        ] {
            assert_eq!(Breaker::unpack(b.pack()), b);
        }
    }
}
