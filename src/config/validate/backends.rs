//! Backends from the file (`backends:`) or the command line (`-b`): parsed, checked
//! for what is not supported yet (TLS, protocol choice) and for duplicates (of an
//! address, or of a `name:`), then resolved once with the system resolver. Each error
//! names the list item.

use std::net::{SocketAddr, ToSocketAddrs};

use super::Ctx;
use crate::backend::{self, Backend, BackendId, BackendSpec, Scheme};
use crate::config::ConfigError;
use crate::config::file::BackendFile;

/// Splits a `backend::parse_*` message into problem and its trailing `(hint)`.
fn split_hint(msg: String) -> (String, String) {
    if let Some(stripped) = msg.strip_suffix(')') {
        if let Some((problem, hint)) = stripped.rsplit_once(" (") {
            return (problem.to_owned(), hint.to_owned());
        }
    }
    (
        msg,
        "write HOST:PORT or http://HOST:PORT, e.g. 127.0.0.1:9001".to_owned(),
    )
}

pub(super) fn from_file(
    cx: &Ctx<'_>,
    items: Vec<BackendFile>,
) -> Result<Vec<Backend>, ConfigError> {
    let mut out: Vec<Backend> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let base = format!("backends[{i}]");
        // The short form `- HOST:PORT` has no `address:` line of its own.
        let addr_key = if item.short {
            base.clone()
        } else {
            format!("{base}.address")
        };
        let Some(addr) = item.address else {
            return Err(cx.err(
                &addr_key,
                "the backend address is missing",
                "add `address: HOST:PORT`",
            ));
        };
        let spec = if item.short {
            backend::parse_spec(&addr)
        } else if addr.contains(',') {
            let hint = "write the address alone and the weight as `weight: N` below it";
            return Err(cx.err(&addr_key, format!("'{addr}' holds options"), hint));
        } else {
            let key = format!("{base}.weight");
            let w = cx.number(&key, item.weight, 1, 1..=u64::from(u32::MAX))?;
            backend::parse_address(&addr, u32::try_from(w).unwrap_or(u32::MAX))
        };
        let spec = spec.map_err(|e| {
            let (problem, hint) = split_hint(e);
            cx.err(&addr_key, problem, hint)
        })?;
        let mut backend = make_backend(cx, &addr_key, &spec, &out)?;
        if let Some(name) = item.name {
            backend.name = Some(check_name(cx, &format!("{base}.name"), name, &out)?);
        }
        let key = format!("{base}.max_connections");
        backend.max_connections = cx.number(&key, item.max_connections, 0, 0..=1_000_000)? as u32;
        if let Some(p) = &item.protocol {
            let key = format!("{base}.protocol");
            match p.as_str() {
                "h2c" if item.tls.is_none() && spec.scheme == Scheme::Http => {
                    backend.protocol = crate::backend::Protocol::H2c
                }
                "h2c" => {
                    let hint = "remove `protocol:`: TLS backends choose HTTP/2 or HTTP/1.1 by ALPN";
                    return Err(cx.err(&key, "h2c is HTTP/2 without TLS", hint));
                }
                "http1" | "http/1.1" => backend.protocol = crate::backend::Protocol::Http1,
                other => {
                    let hint = "write `protocol: h2c` (HTTP/2 with prior knowledge) or `http1`";
                    return Err(cx.err(&key, format!("unknown protocol '{other}'"), hint));
                }
            }
        }
        if let Some(v) = &item.proxy_protocol {
            use crate::proxy_protocol::Version;
            backend.proxy_protocol = Some(match v.as_str() {
                "v1" | "1" => Version::V1,
                "v2" | "2" => Version::V2,
                other => {
                    let key = format!("{base}.proxy_protocol");
                    let hint = "write `proxy_protocol: v2` (binary) or `v1` (text)";
                    return Err(cx.err(&key, format!("unknown version '{other}'"), hint));
                }
            });
        }
        if let Some(tls) = item.tls {
            // `tls:` turns TLS on, whatever the port.
            backend.scheme = Scheme::Https;
            backend.tls.insecure = tls.insecure.unwrap_or(false);
            if let Some(ca) = tls.ca_file {
                let key = format!("{base}.tls.ca_file");
                let path = cx.relative(&ca);
                let read = match cx.offline {
                    true => Ok(Default::default()),
                    false => crate::tls::client::read_ca_file(&path),
                };
                read.map_err(|e| {
                    cx.err(
                        &key,
                        e,
                        "give a PEM file holding one or more CA certificates",
                    )
                })?;
                backend.tls.ca_file = Some(path);
            }
        }
        out.push(backend);
    }
    Ok(out)
}

/// Longest `name:` allowed, in characters (all ASCII).
const NAME_MAX: usize = 64;

/// A backend's `name:`: 1 to [`NAME_MAX`] letters, digits, `-`, `_` or `.` (safe in a
/// log line, a metric label and a JSON string as written), and no other backend's.
fn check_name(
    cx: &Ctx<'_>,
    key: &str,
    name: String,
    earlier: &[Backend],
) -> Result<String, ConfigError> {
    const CHARS: &str = "use only letters, digits, `-`, `_` and `.`, e.g. `name: api-1`";
    if name.is_empty() {
        return Err(cx.err(key, "is empty", format!("{CHARS}, or leave `name:` out")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(cx.err(key, format!("'{name}' holds {c:?}"), CHARS));
    }
    if name.len() > NAME_MAX {
        let problem = format!(
            "is {} characters long: the most allowed is {NAME_MAX}",
            name.len()
        );
        return Err(cx.err(key, problem, "shorten it"));
    }
    if let Some(j) = earlier
        .iter()
        .position(|b| b.name.as_deref() == Some(name.as_str()))
    {
        let problem = format!("'{name}' is already the name of backends[{j}]");
        return Err(cx.err(key, problem, "give each backend its own name"));
    }
    Ok(name)
}

pub(super) fn from_cli(cx: &Ctx<'_>, specs: &[BackendSpec]) -> Result<Vec<Backend>, ConfigError> {
    let mut out: Vec<Backend> = Vec::with_capacity(specs.len());
    for spec in specs {
        if spec.weight == 0 {
            let problem = format!("weight 0 for {} would never be picked", spec.normalised());
            return Err(cx.err(
                "--backend",
                problem,
                "use a weight from 1 up, or leave the backend out",
            ));
        }
        out.push(make_backend(cx, "--backend", spec, &out)?);
    }
    Ok(out)
}

/// Rejects TLS and duplicates, resolves the host, and builds the [`Backend`].
fn make_backend(
    cx: &Ctx<'_>,
    key: &str,
    spec: &BackendSpec,
    earlier: &[Backend],
) -> Result<Backend, ConfigError> {
    let address = spec.normalised();
    let id = BackendId::of(&address);
    if let Some(j) = earlier.iter().position(|b| b.address == address) {
        let first = if key.starts_with("--") {
            "an earlier --backend".to_owned()
        } else {
            format!("backends[{j}]")
        };
        let problem = format!("{address} is already listed as {first}");
        return Err(cx.err(
            key,
            problem,
            "list each backend once; use `weight:` to give it more traffic",
        ));
    }
    let host = spec.host.trim_start_matches('[').trim_end_matches(']');
    if let Some(table) = cx.resolved {
        let addrs = table.get(&address).cloned().unwrap_or_default();
        if addrs.is_empty() {
            let hint = "the loader sent no addresses for it";
            return Err(cx.err(key, format!("'{}' was not resolved", spec.host), hint));
        }
        return Ok(backend(id, address, spec, addrs));
    }
    let resolved = match cx.offline {
        // A name stands for 0.0.0.0: nothing is looked up.
        true => Ok(vec![SocketAddr::new(
            host.parse()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
            spec.port,
        )]
        .into_iter()),
        false => (host, spec.port).to_socket_addrs(),
    };
    let addrs: Vec<SocketAddr> = match resolved {
        Ok(a) => a.collect(),
        Err(e) => {
            let hint = "check the host name, or use an IP address";
            return Err(cx.err(key, format!("cannot resolve '{}': {e}", spec.host), hint));
        }
    };
    if addrs.is_empty() {
        let hint = "check the host name, or use an IP address";
        return Err(cx.err(key, format!("'{}' resolves to no address", spec.host), hint));
    }
    Ok(backend(id, address, spec, addrs))
}

fn backend(id: BackendId, address: String, spec: &BackendSpec, addrs: Vec<SocketAddr>) -> Backend {
    Backend {
        id,
        address,
        host: spec.host.clone(),
        port: spec.port,
        scheme: spec.scheme,
        addrs,
        weight: spec.weight,
        tls: Default::default(),
        protocol: Default::default(),
        max_connections: 0,
        proxy_protocol: None,
        name: None,
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::{BackendId, Scheme, parse_spec};
    use crate::config::Overrides;
    use crate::config::validate::tests::{assert_err, load, load_with};

    #[test]
    fn backend_is_built_with_id_and_addresses() {
        let c = load("backends:\n  - address: http://LOCALHOST:9001\n    weight: 3\n").unwrap();
        let b = c.backends.get(0);
        assert_eq!(
            (b.address.as_str(), b.host.as_str(), b.port),
            ("localhost:9001", "localhost", 9001)
        );
        assert_eq!(
            (b.id, b.weight, b.scheme),
            (BackendId::of("localhost:9001"), 3, Scheme::Http)
        );
        assert!(!b.addrs.is_empty() && b.addrs.iter().all(|a| a.port() == 9001));
        let c = load("backends: ['[::1]:9002']\n").unwrap();
        assert_eq!(c.backends.get(0).addrs, ["[::1]:9002".parse().unwrap()]);
    }

    #[test]
    fn no_backends() {
        let hint = "(add backends: - address: HOST:PORT, or pass -b HOST:PORT)";
        assert_err("workers: 1\n", "backends", None, hint);
        assert_err(
            "workers: 1\nbackends: []\n",
            "backends",
            Some(2),
            "no backends",
        );
    }

    #[test]
    fn bad_addresses_and_weights() {
        let t = "backends:\n  - address: 127.0.0.1:9001\n  - address: 127.0.0.1\n";
        assert_err(
            t,
            "backends[1].address",
            Some(3),
            "has no port (write HOST:PORT",
        );
        let t = "backends:\n  - address: 127.0.0.1:9001\n    weight: 0\n";
        assert_err(t, "backends[0].weight", Some(3), "0 is too small");
        assert_err(
            "backends:\n  - 127.0.0.1:9001,weight=0\n",
            "backends[0]",
            Some(2),
            "weight 0",
        );
        let t = "backends:\n  - address: 127.0.0.1:9001,weight=2\n";
        assert_err(t, "backends[0].address", Some(2), "`weight: N`");
        assert_err(
            "backends:\n  - weight: 2\n",
            "backends[0].address",
            Some(2),
            "missing",
        );
        assert_err(
            "backends: ['ftp://h:1']\n",
            "backends[0]",
            Some(1),
            "unsupported scheme",
        );
    }

    #[test]
    fn duplicates() {
        let t = "backends:\n  - 127.0.0.1:9001\n  - 127.0.0.1:9002\n  - http://127.0.0.1:9001\n";
        assert_err(
            t,
            "backends[2]",
            Some(4),
            "127.0.0.1:9001 is already listed as backends[0]",
        );
        let spec = parse_spec("127.0.0.1:9001").unwrap();
        let o = Overrides {
            backends: vec![spec.clone(), spec],
            ..Overrides::default()
        };
        let e = load_with("workers: 1\n", &o).unwrap_err();
        assert_eq!(
            (e.file.as_deref(), e.key.as_str(), e.line),
            (None, "--backend", None)
        );
    }

    #[test]
    fn tls_backends_and_protocol() {
        let ok = |t: &str| super::super::tests::load(t).expect("valid");
        let c = ok("backends:\n  - localhost:443\n");
        assert_eq!(c.backends.get(0).scheme, Scheme::Https);
        let c = ok("backends:\n  - address: 127.0.0.1:9001\n    tls: {insecure: true}\n");
        let b = c.backends.get(0);
        assert_eq!((b.scheme, b.tls.insecure), (Scheme::Https, true));
        let t =
            "backends:\n  - address: https://localhost\n    tls: {ca_file: /nonexistent/ca.pem}\n";
        assert_err(t, "backends[0].tls.ca_file", Some(3), "cannot read");
        let c = ok("backends:\n  - address: 127.0.0.1:9001\n    protocol: h2c\n");
        assert!(c.backends.get(0).h2c());
        let c = ok("backends:\n  - address: https://localhost\n    protocol: http1\n");
        assert!(!c.backends.get(0).offers_h2());
        let t = "backends:\n  - address: 127.0.0.1:9001\n    protocol: spdy\n";
        assert_err(t, "backends[0].protocol", Some(3), "unknown protocol");
        let t = "backends:\n  - address: https://localhost\n    protocol: h2c\n";
        assert_err(t, "backends[0].protocol", Some(3), "without TLS");
    }

    #[test]
    fn names() {
        let c = load(
            "backends:\n  - address: 127.0.0.1:9001\n    name: api-1\n  - 127.0.0.1:9002\n\
             \x20 - {address: 127.0.0.1:9003, name: A.b_9}\n",
        )
        .unwrap();
        let names: Vec<_> = c.backends.iter().map(|b| b.name.as_deref()).collect();
        assert_eq!(names, [Some("api-1"), None, Some("A.b_9")]);
        // The id stays the address's.
        assert_eq!(c.backends.get(0).id, BackendId::of("127.0.0.1:9001"));
        let at = |name: &str| format!("backends:\n  - address: 127.0.0.1:9001\n    name: {name}\n");
        assert_err(
            &at("'api 1'"),
            "backends[0].name",
            Some(3),
            "'api 1' holds ' '",
        );
        assert_err(
            &at("api/1"),
            "backends[0].name",
            Some(3),
            "only letters, digits",
        );
        assert_err(&at("apí"), "backends[0].name", Some(3), "holds 'í'");
        assert_err(&at("''"), "backends[0].name", Some(3), "is empty");
        let long = "a".repeat(65);
        assert_err(
            &at(&long),
            "backends[0].name",
            Some(3),
            "65 characters long",
        );
        assert!(load(&at(&"a".repeat(64))).is_ok());
        let t = "backends:\n  - address: 127.0.0.1:9001\n    name: api\n\
                 \x20 - address: 127.0.0.1:9002\n  - address: 127.0.0.1:9003\n    name: api\n";
        assert_err(
            t,
            "backends[2].name",
            Some(6),
            "'api' is already the name of backends[0] (give each backend its own name)",
        );
        // A name belongs to the long form only.
        assert!(load("backends: ['127.0.0.1:9001,name=x']\n").is_err());
    }

    #[test]
    fn unresolvable_host() {
        let t = "backends:\n  - address: 127.0.0.1:9001\n  - address: no-such-host.invalid:80\n";
        assert_err(
            t,
            "backends[1].address",
            Some(3),
            "cannot resolve 'no-such-host.invalid'",
        );
    }
}
