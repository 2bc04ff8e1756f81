//! `scope: redis`: one GCRA budget per key for every instance that uses the same Redis.
//!
//! The GCRA step runs inside Redis as one Lua script (EVALSHA; the client loads it the
//! first time it is missing), timed by Redis's own clock (`TIME`), so instances on
//! different machines agree on "now". One decision is one round trip on this worker's
//! multiplexed connection (the `redis` crate, tokio flavour), bounded by
//! `redis.timeout`. When Redis does not answer in time, or cannot be reached, the
//! request gets what `redis.on_error` says (allow, or a 503), and nothing waits longer
//! than the timeout: a failed connection is not retried for a second, during which
//! decisions go straight to `on_error`. Keys expire once their bucket is full again.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use super::{Decision, Pace};

/// What a request gets when Redis cannot decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Let it through (the limit is off while Redis is away).
    Allow,
    /// Refuse it with 503.
    Deny,
}

/// `redis:` (plain data).
#[derive(Clone, Debug, PartialEq)]
pub struct RedisConfig {
    pub url: String,
    pub timeout: Duration,
    pub on_error: OnError,
}

/// The GCRA step (as [`super::check`]: slots stay on one grid). KEYS[1]: the key; ARGV[1]: period (µs); ARGV[2]: tolerance (µs).
/// Returns {1, remaining} or {0, retry after (µs)}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if now > tat then tat = tat + math.floor((now - tat) / period) * period end
if tat - now > tolerance then
  return {0, tat - now - tolerance}
end
local next = tat + period
redis.call('SET', KEYS[1], next, 'PX', math.floor((next - now) / 1000) + 1000)
return {1, math.floor((tolerance - (next - now)) / period) + 1}
";

/// Why Redis could not decide.
#[derive(Debug)]
pub enum Unavailable {
    Timeout,
    Down(String),
}

/// One worker's link to Redis.
pub struct RedisLimiter {
    pub config: RedisConfig,
    client: Option<redis::Client>,
    conn: RefCell<Option<redis::aio::MultiplexedConnection>>,
    /// After a failure, no new connection before this.
    quiet_until: Cell<Option<Instant>>,
    script: redis::Script,
}

impl RedisLimiter {
    pub fn new(config: RedisConfig) -> RedisLimiter {
        let client = match redis::Client::open(config.url.as_str()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(url = %config.url, "redis: {e}");
                None
            }
        };
        RedisLimiter {
            config,
            client,
            conn: RefCell::new(None),
            quiet_until: Cell::new(None),
            script: redis::Script::new(GCRA),
        }
    }

    /// One GCRA step for `key` in Redis.
    pub async fn check(&self, key: u64, pace: Pace) -> Result<Decision, Unavailable> {
        let timeout = self.config.timeout;
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => return Err(e),
        };
        let Some(mut conn) = conn else {
            return Err(Unavailable::Down("not connected".into()));
        };
        let period_us = (pace.period_ns / 1000).max(1);
        let tolerance_us = pace.burst.saturating_mul(period_us);
        let mut call = self.script.key(format!("switchyard:rl:{key:016x}"));
        call.arg(period_us).arg(tolerance_us);
        let step = call.invoke_async::<(u8, u64)>(&mut conn);
        match tokio::time::timeout(timeout, step).await {
            Ok(Ok((1, remaining))) => Ok(Decision::Allow { remaining }),
            Ok(Ok((_, retry_after_us))) => Ok(Decision::Deny {
                retry_after_ns: retry_after_us.saturating_mul(1000),
            }),
            Ok(Err(e)) => {
                self.failed(&e);
                Err(Unavailable::Down(e.to_string()))
            }
            Err(_) => Err(Unavailable::Timeout),
        }
    }

    /// The connection, made (within the timeout) if there is none and Redis was not
    /// found down in the last second.
    async fn connection(&self) -> Result<Option<redis::aio::MultiplexedConnection>, Unavailable> {
        if let Some(c) = self.conn.borrow().as_ref() {
            return Ok(Some(c.clone()));
        }
        if self.quiet_until.get().is_some_and(|t| Instant::now() < t) {
            return Err(Unavailable::Down("down (retrying each second)".into()));
        }
        let Some(client) = &self.client else {
            return Err(Unavailable::Down("bad redis.url".into()));
        };
        let t = self.config.timeout;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        match tokio::time::timeout(
            t,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => {
                *self.conn.borrow_mut() = Some(c.clone());
                if self.quiet_until.take().is_some() {
                    tracing::info!(url = %self.config.url, "redis is back");
                }
                Ok(Some(c))
            }
            Ok(Err(e)) => {
                self.failed(&e);
                Err(Unavailable::Down(e.to_string()))
            }
            Err(_) => {
                self.failed(&"connect timed out");
                Err(Unavailable::Timeout)
            }
        }
    }

    fn failed(&self, why: &dyn std::fmt::Display) {
        // Once per outage: a request-per-line log would flood while Redis is away.
        if self.quiet_until.get().is_none() {
            tracing::warn!(url = %self.config.url, "redis unavailable ({why}): on_error = {:?} until it is back", self.config.on_error);
        }
        *self.conn.borrow_mut() = None;
        self.quiet_until
            .set(Some(Instant::now() + Duration::from_secs(1)));
    }
}
