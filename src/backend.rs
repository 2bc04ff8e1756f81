//! Backends as plain values: where a backend lives, its weight, and its stable id.
//!
//! A backend's [`BackendId`] is a fixed-seed hash of its *normalised* address
//! (`http://h:p`, `H:p` and `h:p` give the same id), never its position in a list.
//! Health state, sticky cookies and (later) consistent hashing key on it, so they
//! survive a reload that reorders backends and agree across balancer instances.
//! A backend's optional `name:` is a label for people (logs, `/backends`, metrics) and
//! never part of its id, so naming or renaming a backend keeps all of that state.
//! A [`BackendSet`] is the immutable, validated list one config snapshot serves.

use std::fmt;
use std::net::SocketAddr;

/// Stable identity of a backend: FNV-1a (64 bit, fixed offset basis) of `host:port`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u64);

/// FNV-1a's offset basis: where a hash of nothing starts.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes`, continuing from `h`: tiny, fast, deterministic across processes,
/// machines and versions (backend ids, and the keys of hashing and rate limits).
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl BackendId {
    /// Id of a normalised `host:port` address (see [`normalise`]).
    pub fn of(normalised: &str) -> BackendId {
        BackendId(fnv1a(FNV_OFFSET, normalised.as_bytes()))
    }

    /// Parses the 16-hex-digit form produced by `Display` (the sticky cookie value).
    pub fn parse_hex(s: &[u8]) -> Option<BackendId> {
        if s.len() != 16 {
            return None;
        }
        let mut v: u64 = 0;
        for &c in s {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return None,
            };
            v = (v << 4) | u64::from(d);
        }
        Some(BackendId(v))
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackendId({self})")
    }
}

/// How the balancer talks to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// How to speak TLS to an `https` backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra trusted CA certificates (PEM), besides the system trust store.
    pub ca_file: Option<std::path::PathBuf>,
    /// Skip certificate verification (warned about at start).
    pub insecure: bool,
}

/// One backend of a validated config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: BackendId,
    /// Normalised `host:port` (lower-case host); also the `backend` metric label.
    pub address: String,
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    /// Resolved once when the config is built (and again on reload); tried in order.
    pub addrs: Vec<SocketAddr>,
    /// Relative share of traffic for weighted strategies; always >= 1.
    pub weight: u32,
    /// TLS settings; used when `scheme` is `Https`.
    pub tls: TlsOptions,
    /// Which HTTP version to speak (`protocol:`).
    pub protocol: Protocol,
    /// Most requests in flight to it, all workers together (`max_connections:`); 0 =
    /// no cap. A request that finds every eligible backend at its cap waits in the
    /// queue (`queue:`).
    pub max_connections: u32,
    /// `proxy_protocol: v1 | v2`: a PROXY header starts each new connection to it.
    pub proxy_protocol: Option<crate::proxy_protocol::Version>,
    /// `name:` (letters, digits, `-`, `_`, `.`; unique): shown in logs, `/backends` and
    /// as the `name` metric label. Never part of the id (the address is).
    pub name: Option<String>,
}

/// A backend's `protocol:` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 to plain backends; TLS backends choose HTTP/2 or HTTP/1.1 by ALPN.
    #[default]
    Auto,
    /// HTTP/1.1 only (`protocol: http1`): ALPN offers only `http/1.1`.
    Http1,
    /// HTTP/2 with prior knowledge to a plain backend (`protocol: h2c`).
    H2c,
}

impl Backend {
    /// True when requests go to this backend as HTTP/2 without asking first.
    pub fn h2c(&self) -> bool {
        self.protocol == Protocol::H2c
    }

    /// True when a TLS handshake with this backend may offer `h2` by ALPN.
    pub fn offers_h2(&self) -> bool {
        self.protocol == Protocol::Auto
    }

    /// True when connections made for `other` would be made the same way for `self`
    /// (same addresses in any order, scheme, TLS settings and protocol): its pool may
    /// carry over.
    pub fn dials_like(&self, other: &Backend) -> bool {
        let sorted = |b: &Backend| {
            let mut a = b.addrs.clone();
            a.sort_unstable();
            a
        };
        sorted(self) == sorted(other)
            && self.scheme == other.scheme
            && self.tls == other.tls
            && self.protocol == other.protocol
            && self.proxy_protocol == other.proxy_protocol
    }
}

/// The immutable list of backends one config snapshot serves. Strategies and the
/// health table refer to backends by their index in this list.
#[derive(Clone, Debug, Default)]
pub struct BackendSet {
    backends: Vec<Backend>,
}

impl BackendSet {
    pub fn new(backends: Vec<Backend>) -> BackendSet {
        BackendSet { backends }
    }
    pub fn len(&self) -> usize {
        self.backends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }
    pub fn get(&self, i: usize) -> &Backend {
        &self.backends[i]
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Backend> {
        self.backends.iter()
    }
    pub fn as_slice(&self) -> &[Backend] {
        &self.backends
    }
}

/// A parsed `-b` / `backends[].address` spec before DNS resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    pub weight: u32,
}

impl BackendSpec {
    /// `host:port`, lower-case host: the form the id hashes and labels show.
    pub fn normalised(&self) -> String {
        normalise(&self.host, self.port)
    }
}

/// `host:port` with the host lower-cased (IPv6 hosts keep their brackets).
pub fn normalise(host: &str, port: u16) -> String {
    format!("{}:{}", host.to_ascii_lowercase(), port)
}

/// Parses `HOST:PORT | http://HOST[:PORT] | https://HOST[:PORT]` with an optional
/// `,weight=N` suffix. The error says what is wrong and what to write instead.
pub fn parse_spec(spec: &str) -> Result<BackendSpec, String> {
    let spec = spec.trim();
    let (addr, weight) = match spec.split_once(',') {
        None => (spec, 1),
        Some((addr, rest)) => {
            let w = rest.trim().strip_prefix("weight=").ok_or_else(|| {
                format!("unknown option '{rest}' in backend '{spec}' (write HOST:PORT,weight=N)")
            })?;
            let w: u32 = w.parse().map_err(|_| {
                format!(
                    "weight '{w}' in backend '{spec}' is not a whole number (write e.g. weight=3)"
                )
            })?;
            if w == 0 {
                return Err(format!(
                    "weight 0 in backend '{spec}' would never be picked (use a weight from 1 up, or remove the backend)"
                ));
            }
            (addr.trim(), w)
        }
    };
    parse_address(addr, weight)
}

/// Parses an address without the weight suffix.
pub fn parse_address(addr: &str, weight: u32) -> Result<BackendSpec, String> {
    let (scheme, rest, default_port) = if let Some(r) = strip_prefix_ci(addr, "https://") {
        (Scheme::Https, r, Some(443))
    } else if let Some(r) = strip_prefix_ci(addr, "http://") {
        (Scheme::Http, r, Some(80))
    } else if addr.contains("://") {
        return Err(format!(
            "backend '{addr}' has an unsupported scheme (write HOST:PORT, http://HOST:PORT or https://HOST[:PORT])"
        ));
    } else {
        (Scheme::Http, addr, None)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(format!(
            "backend '{addr}' has no host (write HOST:PORT, e.g. 127.0.0.1:9001)"
        ));
    }
    if rest.contains('/') {
        return Err(format!(
            "backend '{addr}' has a path; only HOST:PORT is allowed (the request path is forwarded as it came)"
        ));
    }
    let (host, port) = split_host_port(rest).map_err(|e| format!("backend '{addr}': {e}"))?;
    let port = match (port, default_port) {
        (Some(p), _) => p,
        (None, Some(d)) => d,
        (None, None) => {
            return Err(format!(
                "backend '{addr}' has no port (write HOST:PORT, e.g. {rest}:80)"
            ));
        }
    };
    // Port 443 means TLS, as the contract says.
    let scheme = if port == 443 { Scheme::Https } else { scheme };
    Ok(BackendSpec {
        host: host.to_ascii_lowercase(),
        port,
        scheme,
        weight,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`, not indexing: the cut may fall inside a multi-byte character.
    match (s.get(..prefix.len()), s.get(prefix.len()..)) {
        (Some(head), Some(rest)) if head.eq_ignore_ascii_case(prefix) => Some(rest),
        _ => None,
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]`.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let end = r
            .find(']')
            .ok_or("unclosed '[' in IPv6 address (write [::1]:8080)")?;
        let host = &s[..end + 2];
        match &r[end + 1..] {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("expected ':PORT' after ']'")?),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err("IPv6 addresses need brackets (write [::1]:8080)".into()),
            None => (s, None),
        }
    };
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b == b'@') {
        return Err(format!("'{host}' is not a valid host"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("port '{p}' is not a number from 1 to 65535")),
            Ok(n) => Some(n),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the config fuzz target: a multi-byte character where a scheme prefix
    /// would end used to panic (a crash of `check` and of every reload).
    #[test]
    fn non_ascii_specs_are_refused_not_panicked_on() {
        for spec in [
            "127.0bИИ9002,weight=1",
            "ИИ",
            "httpИ://x:1",
            "https:/И",
            "И:80",
        ] {
            let _ = parse_spec(spec);
            let _ = parse_address(spec, 1);
        }
        assert!(parse_spec("127.0bИИ9002").is_err());
    }

    #[test]
    fn id_ignores_scheme_and_case_and_is_fixed() {
        let a = parse_spec("http://Example.com:8080").unwrap();
        let b = parse_spec("example.com:8080").unwrap();
        assert_eq!(
            BackendId::of(&a.normalised()),
            BackendId::of(&b.normalised())
        );
        // Fixed seed: the value never changes between runs or machines.
        assert_eq!(
            BackendId::of("127.0.0.1:9001").to_string(),
            format!("{:016x}", BackendId::of("127.0.0.1:9001").0)
        );
        assert_eq!(BackendId::of("").0, 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn hex_round_trip() {
        let id = BackendId::of("10.0.0.1:80");
        assert_eq!(BackendId::parse_hex(id.to_string().as_bytes()), Some(id));
        assert_eq!(BackendId::parse_hex(b"xyz"), None);
        assert_eq!(BackendId::parse_hex(b"000000000000000g"), None);
    }

    #[test]
    fn specs() {
        let s = parse_spec("127.0.0.1:9001,weight=5").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.weight, s.scheme),
            ("127.0.0.1", 9001, 5, Scheme::Http)
        );
        assert_eq!(parse_spec("https://api.example.com").unwrap().port, 443);
        assert_eq!(
            parse_spec("api.example.com:443").unwrap().scheme,
            Scheme::Https
        );
        assert_eq!(parse_spec("[::1]:81").unwrap().host, "[::1]");
        for bad in [
            "",
            "host",
            "h:0",
            "h:99999",
            "ftp://h:1",
            "h:1,weight=0",
            "h:1,weight=x",
            "h:1,w=2",
            "::1:80",
            "h:1/x",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad} should be rejected");
        }
    }
}
