//! The nested sections — `health:`, `timeouts:`, `limits:`, `sticky:`, `pool:` — and
//! `retries`: each absent value takes the contract's default, each present one is
//! range-checked, and every duration must be greater than zero.

use std::time::Duration;

use super::Ctx;
use crate::config::file::{
    HashFile, HealthFile, LimitsFile, PoolFile, RateLimitFile, RetryBudgetFile, StickyFile,
    TimeoutsFile,
};
use crate::config::{ConfigError, HealthConfig, Limits, PoolConfig, Timeouts};
use crate::health::StatusRanges;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(super) fn health(cx: &Ctx<'_>, h: Option<HealthFile>) -> Result<HealthConfig, ConfigError> {
    let h = h.unwrap_or_default();
    let path = h.path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        let problem =
            format!("'{path}' is not a request path: it must start with '/' and hold no spaces");
        return Err(cx.err("health.path", problem, "write e.g. `path: /healthz`"));
    }
    let threshold = |key: &str, v: Option<u64>, default: u64| {
        let n = cx.number(key, v, default, 1..=1000)?;
        Ok::<u32, ConfigError>(u32::try_from(n).unwrap_or(u32::MAX))
    };
    Ok(HealthConfig {
        path,
        interval: cx.duration("health.interval", h.interval.as_ref(), secs(5))?,
        timeout: cx.duration("health.timeout", h.timeout.as_ref(), secs(2))?,
        unhealthy_threshold: threshold("health.unhealthy_threshold", h.unhealthy_threshold, 3)?,
        healthy_threshold: threshold("health.healthy_threshold", h.healthy_threshold, 2)?,
        passive_5xx: h.passive_5xx.unwrap_or(false),
        probes: h.probes.unwrap_or(true),
        expect_status: match &h.expect_status {
            None => StatusRanges::default(),
            Some(s) => StatusRanges::parse(s).map_err(|e| {
                cx.err(
                    "health.expect_status",
                    e,
                    "write e.g. `expect_status: 200-399` or `2xx,301`",
                )
            })?,
        },
    })
}

pub(super) fn timeouts(cx: &Ctx<'_>, t: Option<TimeoutsFile>) -> Result<Timeouts, ConfigError> {
    let t = t.unwrap_or_default();
    let d =
        |key: &str, v: &Option<String>, default: u64| cx.duration(key, v.as_ref(), secs(default));
    Ok(Timeouts {
        connect: d("timeouts.connect", &t.connect, 2)?,
        client_header: d("timeouts.client_header", &t.client_header, 10)?,
        backend_response: d("timeouts.backend_response", &t.backend_response, 30)?,
        client_idle: d("timeouts.client_idle", &t.client_idle, 60)?,
        drain: d("timeouts.drain", &t.drain, 30)?,
    })
}

/// A request tries at most `Tried::CAP` (8) backends: the first attempt and 7 retries.
pub(super) fn retries(cx: &Ctx<'_>, r: Option<u64>) -> Result<u32, ConfigError> {
    match r {
        Some(r) if r > 7 => {
            let problem = format!(
                "{r} is too many: a request tries at most 8 backends, so at most 7 retries"
            );
            Err(cx.err(
                "retries",
                problem,
                "write a number from 0 to 7, e.g. `retries: 2`",
            ))
        }
        r => Ok(u32::try_from(r.unwrap_or(2)).unwrap_or(2)),
    }
}

pub(super) fn limits(cx: &Ctx<'_>, l: Option<LimitsFile>) -> Result<Limits, ConfigError> {
    const MIB: u64 = 1024 * 1024;
    let l = l.unwrap_or_default();
    let n = |key: &str, v: Option<u64>, default: u64, range| {
        cx.number(key, v, default, range)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    Ok(Limits {
        request_line: n("limits.request_line", l.request_line, 8192, 256..=MIB)?,
        header_section: n("limits.header_section", l.header_section, 65536, 1024..=MIB)?,
        headers: n("limits.headers", l.headers, 100, 8..=1000)?,
        connections_per_client: n(
            "limits.connections_per_client",
            l.connections_per_client,
            0,
            0..=1_000_000,
        )? as u32,
    })
}

pub(super) fn sticky_cookie(cx: &Ctx<'_>, s: Option<StickyFile>) -> Result<String, ConfigError> {
    let cookie = s
        .and_then(|s| s.cookie)
        .unwrap_or_else(|| "SWITCHYARD_BACKEND".into());
    // RFC 6265 cookie-name: an RFC 2616 token.
    let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
    if cookie.is_empty() || !cookie.bytes().all(token) {
        let problem = format!("'{cookie}' is not a valid cookie name");
        let hint =
            "use letters, digits and -_.!#$%&'*+^`|~ only, e.g. `cookie: SWITCHYARD_BACKEND`";
        return Err(cx.err("sticky.cookie", problem, hint));
    }
    Ok(cookie)
}

pub(super) fn hash(
    cx: &Ctx<'_>,
    h: Option<HashFile>,
) -> Result<crate::balance::HashConfig, ConfigError> {
    use crate::balance::{HashConfig, HashKey};
    let h = h.unwrap_or_default();
    let d = HashConfig::default();
    let key = match h.key {
        None => d.key,
        Some(k) => HashKey::parse(&k).ok_or_else(|| {
            let hint = format!("use one of: {}", HashKey::FORMS);
            cx.err(
                "hash.key",
                format!("'{k}' is not a key switchyard can hash"),
                hint,
            )
        })?,
    };
    let table_size = cx.number(
        "hash.table_size",
        h.table_size,
        d.table_size as u64,
        3..=1_000_003,
    )?;
    if !is_prime(table_size) {
        let hint = "use a prime, e.g. `table_size: 65537` (or 251, 4099, 131071)";
        let problem = format!("{table_size} is not a prime");
        return Err(cx.err("hash.table_size", problem, hint));
    }
    let load_factor = h.load_factor.unwrap_or(d.load_factor);
    if !(load_factor == 0.0 || (1.0..=100.0).contains(&load_factor)) {
        let hint = "use 0 (no bound) or a factor from 1 up, e.g. `load_factor: 1.25`";
        let problem = format!("{load_factor} would bound every backend below the mean");
        return Err(cx.err("hash.load_factor", problem, hint));
    }
    Ok(HashConfig {
        key,
        table_size: table_size as usize,
        load_factor,
    })
}

pub(super) fn retry_budget(
    cx: &Ctx<'_>,
    b: Option<RetryBudgetFile>,
) -> Result<Option<crate::config::RetryBudget>, ConfigError> {
    let Some(b) = b else { return Ok(None) };
    let ratio = b.ratio.unwrap_or(0.2);
    if !(0.0..=10.0).contains(&ratio) {
        let hint = "write a fraction of the requests, e.g. `ratio: 0.2` (20%)";
        let problem = format!("{ratio} is not between 0 and 10");
        return Err(cx.err("retry_budget.ratio", problem, hint));
    }
    let min = cx.number(
        "retry_budget.min_per_second",
        b.min_per_second,
        3,
        0..=100_000,
    )?;
    Ok(Some(crate::config::RetryBudget {
        ratio,
        min_per_second: min as u32,
    }))
}

pub(super) fn rate_limits(
    cx: &Ctx<'_>,
    items: Vec<RateLimitFile>,
) -> Result<Vec<crate::limit::RateLimit>, ConfigError> {
    use crate::limit::{LimitKey, RateLimit, Scope};
    let mut out: Vec<RateLimit> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |k: &str| format!("rate_limits[{i}].{k}");
        let name = item.name.unwrap_or_default();
        let token = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
        if name.is_empty() || name.len() > 64 || !name.bytes().all(token) {
            let problem = format!("'{name}' is not a usable limit name");
            let hint = "name each limit with letters, digits, - _ or ., e.g. `name: per-client`";
            return Err(cx.err(&at("name"), problem, hint));
        }
        if out.iter().any(|l| l.name == name) {
            let problem = format!("a second limit named '{name}'");
            return Err(cx.err(&at("name"), problem, "give each limit its own name"));
        }
        let key = match item.key.as_deref().map(str::trim) {
            None | Some("client_ip") => LimitKey::ClientIp,
            Some("global") => LimitKey::Global,
            Some(k) => match k.strip_prefix("header:").map(str::trim) {
                Some(h)
                    if !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b':') =>
                {
                    LimitKey::Header(h.to_ascii_lowercase())
                }
                _ => {
                    let problem = format!("'{k}' is not a key a limit can count by");
                    return Err(cx.err(
                        &at("key"),
                        problem,
                        "use client_ip, header:NAME or global",
                    ));
                }
            },
        };
        let Some(rate) = item.rate else {
            return Err(cx.err(
                &at("rate"),
                "is missing",
                "write e.g. `rate: 100/s` (or N/m, N/h)",
            ));
        };
        let Some((quota, window_s)) = crate::limit::parse_rate(&rate) else {
            let problem = format!("'{rate}' is not a rate");
            return Err(cx.err(
                &at("rate"),
                problem,
                "write N/s, N/m or N/h, e.g. `rate: 100/s`",
            ));
        };
        if quota / window_s > 10_000_000 {
            let problem = format!("'{rate}' is more than 10 million a second");
            return Err(cx.err(
                &at("rate"),
                problem,
                "write a rate a limit can mean, e.g. `rate: 100/s`",
            ));
        }
        let burst = cx.number(&at("burst"), item.burst, 0, 0..=1_000_000)?;
        let scope = match item.scope.as_deref().map(str::trim) {
            None | Some("local") => Scope::Local,
            Some("redis") => Scope::Redis,
            Some(s) => {
                let problem = format!("'{s}' is not a scope");
                return Err(cx.err(&at("scope"), problem, "use scope: local or scope: redis"));
            }
        };
        out.push(RateLimit {
            name_hash: crate::limit::name_hash(&name),
            name,
            key,
            quota,
            window_s,
            burst,
            scope,
        });
    }
    Ok(out)
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

pub(super) fn pool(cx: &Ctx<'_>, p: Option<PoolFile>) -> Result<PoolConfig, ConfigError> {
    let p = p.unwrap_or_default();
    let max = cx.number(
        "pool.max_idle_per_backend",
        p.max_idle_per_backend,
        64,
        0..=10_000,
    )?;
    Ok(PoolConfig {
        max_idle_per_backend: usize::try_from(max).unwrap_or(10_000),
        idle_timeout: cx.duration("pool.idle_timeout", p.idle_timeout.as_ref(), secs(60))?,
    })
}

/// `listen.proxy_protocol:`: the trusted networks, each named by its index on error.
pub(super) fn proxy_protocol_trusted(
    cx: &Ctx<'_>,
    prefix: &str,
    pp: &crate::config::file::ListenProxyProtocolFile,
) -> Result<Vec<crate::proxy_protocol::Cidr>, ConfigError> {
    let hint =
        "list the networks of the balancers in front, e.g. `trusted: [10.0.0.0/8, 127.0.0.1]`";
    let nets = match pp.trusted.as_deref() {
        None | Some([]) => {
            let key = format!("{prefix}.proxy_protocol.trusted");
            return Err(cx.err(&key, "no trusted network given", hint));
        }
        Some(nets) => nets,
    };
    let mut out = Vec::with_capacity(nets.len());
    for (i, text) in nets.iter().enumerate() {
        let key = format!("{prefix}.proxy_protocol.trusted[{i}]");
        out.push(
            text.trim()
                .parse()
                .map_err(|e: String| cx.err(&key, e, hint))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::{B, assert_errs, load};

    #[test]
    fn durations() {
        assert_errs(&[
            (
                "health:\n  interval: soon",
                "health.interval",
                "like 250ms, 5s or 1m",
            ),
            ("health:\n  timeout: 2", "health.timeout", "has no unit"),
            (
                "timeouts:\n  drain: 0s",
                "timeouts.drain",
                "must be greater than zero",
            ),
            (
                "timeouts:\n  client_header: 1d",
                "timeouts.client_header",
                "unknown unit",
            ),
            (
                "pool:\n  idle_timeout: 0ms",
                "pool.idle_timeout",
                "e.g. `idle_timeout: 60s`",
            ),
        ]);
        let c = load(&format!(
            "{B}timeouts:\n  client_idle: 1m\n  connect: 250ms\n"
        ))
        .unwrap();
        assert_eq!(
            (c.timeouts.client_idle, c.timeouts.connect),
            (secs(60), Duration::from_millis(250))
        );
    }

    #[test]
    fn health_values() {
        assert_errs(&[
            (
                "health:\n  unhealthy_threshold: 0",
                "health.unhealthy_threshold",
                "too small",
            ),
            (
                "health:\n  healthy_threshold: 0",
                "health.healthy_threshold",
                "too small",
            ),
            (
                "health:\n  path: healthz",
                "health.path",
                "e.g. `path: /healthz`",
            ),
            ("health:\n  path: /a b", "health.path", "no spaces"),
            (
                "health:\n  expect_status: 2xx-ish",
                "health.expect_status",
                "200-399",
            ),
        ]);
    }

    #[test]
    fn limits() {
        assert_errs(&[
            (
                "limits:\n  request_line: 255",
                "limits.request_line",
                "from 256 to 1048576",
            ),
            (
                "limits:\n  header_section: 1023",
                "limits.header_section",
                "from 1024 to 1048576",
            ),
            (
                "limits:\n  header_section: 1048577",
                "limits.header_section",
                "too large",
            ),
            ("limits:\n  headers: 7", "limits.headers", "from 8 to 1000"),
            ("limits:\n  headers: 1001", "limits.headers", "too large"),
        ]);
        let c = load(&format!(
            "{B}limits: {{request_line: 256, header_section: 1048576, headers: 8}}\n"
        ));
        let l = c.unwrap().limits;
        assert_eq!(
            (l.request_line, l.header_section, l.headers),
            (256, 1 << 20, 8)
        );
    }

    #[test]
    fn hash_section() {
        assert_errs(&[
            ("hash:\n  key: body", "hash.key", "client_ip, header:NAME"),
            ("hash:\n  key: 'header:'", "hash.key", "not a key"),
            (
                "hash:\n  table_size: 65536",
                "hash.table_size",
                "not a prime",
            ),
            (
                "hash:\n  table_size: 2",
                "hash.table_size",
                "least allowed is 3",
            ),
            (
                "hash:\n  load_factor: 0.5",
                "hash.load_factor",
                "load_factor: 1.25",
            ),
            (
                "hash:\n  seed: 3",
                "hash.seed",
                "valid keys here: key, table_size",
            ),
        ]);
        let c = load(&format!(
            "{B}strategy: consistent-hash\nhash: {{key: 'cookie:sid', table_size: 251, load_factor: 0}}\n"
        ))
        .unwrap();
        assert_eq!(c.strategy, crate::balance::StrategyKind::ConsistentHash);
        assert_eq!(c.hash.key, crate::balance::HashKey::Cookie("sid".into()));
        assert_eq!((c.hash.table_size, c.hash.load_factor), (251, 0.0));
        let d = load(B).unwrap();
        assert_eq!((d.hash.table_size, d.hash.load_factor), (65_537, 1.25));
    }

    #[test]
    fn rate_limits_section() {
        assert_errs(&[
            (
                "rate_limits:\n  - {rate: 10/s}",
                "rate_limits[0].name",
                "usable limit name",
            ),
            (
                "rate_limits:\n  - {name: a}",
                "rate_limits[0].rate",
                "is missing",
            ),
            (
                "rate_limits:\n  - {name: a, rate: 10/d}",
                "rate_limits[0].rate",
                "N/s, N/m or N/h",
            ),
            (
                "rate_limits:\n  - {name: a, rate: 0/s}",
                "rate_limits[0].rate",
                "not a rate",
            ),
            (
                "rate_limits:\n  - {name: a, rate: 1/s, key: cookie:x}",
                "rate_limits[0].key",
                "client_ip, header:NAME or global",
            ),
            (
                "rate_limits:\n  - {name: a, rate: 1/s, scope: redis}",
                "rate_limits[0].scope",
                "needs a redis: section",
            ),
            (
                "rate_limits:\n  - {name: a, rate: 1/s, per: 3}",
                "rate_limits[0].per",
                "valid keys here",
            ),
        ]);
        let dup = load(&format!(
            "{B}rate_limits:\n  - {{name: a, rate: 1/s}}\n  - {{name: a, rate: 2/s}}\n"
        ));
        let dup = dup.unwrap_err().to_string();
        assert!(
            dup.contains("rate_limits[1].name: a second limit named 'a'"),
            "{dup}"
        );
        let c = load(&format!(
            "{B}rate_limits:\n  - {{name: api, key: 'header:X-Key', rate: 100/m, burst: 5}}\n"
        ))
        .unwrap();
        let l = &c.rate_limits[0];
        assert_eq!((l.quota, l.window_s, l.burst), (100, 60, 5));
        assert_eq!(l.key, crate::limit::LimitKey::Header("x-key".into()));
    }

    #[test]
    fn sticky_cookie_and_pool() {
        assert_errs(&[
            (
                "sticky:\n  cookie: \"a b\"",
                "sticky.cookie",
                "not a valid cookie name",
            ),
            (
                "sticky:\n  cookie: a=b",
                "sticky.cookie",
                "e.g. `cookie: SWITCHYARD_BACKEND`",
            ),
            (
                "sticky:\n  cookie: ''",
                "sticky.cookie",
                "not a valid cookie name",
            ),
            (
                "pool:\n  max_idle_per_backend: 10001",
                "pool.max_idle_per_backend",
                "from 0 to 10000",
            ),
        ]);
        let c = load(&format!(
            "{B}sticky: {{cookie: sy-id}}\npool: {{max_idle_per_backend: 0}}\n"
        ));
        let c = c.unwrap();
        assert_eq!(
            (c.sticky_cookie.as_str(), c.pool.max_idle_per_backend),
            ("sy-id", 0)
        );
    }

    #[test]
    fn proxy_protocol_settings() {
        use crate::config::validate::tests::assert_err;
        use crate::proxy_protocol::Version;
        let l = "listen:\n  address: 127.0.0.1:8080\n  proxy_protocol:\n";
        let c = load(&format!(
            "{l}    trusted: [10.0.0.0/8, 127.0.0.1, 'fd00::/8']\n{B}"
        ))
        .unwrap();
        let nets = c.listeners[0].proxy_protocol.clone().unwrap();
        assert_eq!(nets.len(), 3);
        assert!(nets[1].contains("127.0.0.1".parse().unwrap()));
        assert!(load(B).unwrap().listeners[0].proxy_protocol.is_none());
        let t = format!("{l}    trusted:\n      - 10.0.0.0/8\n      - 10.0.0.1/8\n{B}");
        assert_err(
            &t,
            "listen.proxy_protocol.trusted[1]",
            Some(6),
            "did you mean 10.0.0.0/8",
        );
        let t = format!("{l}    trusted: [10.0.0.0/8, nope]\n{B}");
        assert_err(
            &t,
            "listen.proxy_protocol.trusted[1]",
            Some(4),
            "'nope' is not an IP address",
        );
        for t in [
            format!("{l}    trusted: []\n{B}"),
            format!("{l}    {{}}\n{B}"),
        ] {
            let key = "listen.proxy_protocol.trusted";
            assert_eq!(load(&t).unwrap_err().key, key, "{t}");
        }
        let b = "backends:\n  - address: 127.0.0.1:9001\n    proxy_protocol: ";
        let c = load(&format!("{b}v2\n  - 127.0.0.1:9002\n")).unwrap();
        let got = (
            c.backends.get(0).proxy_protocol,
            c.backends.get(1).proxy_protocol,
        );
        assert_eq!(got, (Some(Version::V2), None));
        let c = load(&format!("{b}v1\n")).unwrap();
        assert_eq!(c.backends.get(0).proxy_protocol, Some(Version::V1));
        let t = format!("{b}v3\n");
        assert_err(
            &t,
            "backends[0].proxy_protocol",
            Some(3),
            "unknown version 'v3'",
        );
    }
}
