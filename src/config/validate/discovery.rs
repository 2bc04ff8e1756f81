//! `discovery:` and `resolver:` -> [`crate::discovery::Source`]s.
//!
//! Only the shape is checked here (names are looked up by the loader as it runs the
//! sources, where a failure is logged and retried rather than refusing the config).

use std::net::SocketAddr;

use super::Ctx;
use crate::config::ConfigError;
use crate::config::file::DiscoveryFile;
use crate::discovery::{Kind, Source};

pub(super) fn sources(cx: &Ctx<'_>, items: Vec<DiscoveryFile>) -> Result<Vec<Source>, ConfigError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |k: &str| format!("discovery[{i}].{k}");
        let weight = cx.number(&at("weight"), item.weight, 1, 1..=10_000)? as u32;
        let kind = match (item.dns, item.srv, item.etcd) {
            (Some(d), None, None) => {
                let d = d.trim();
                let spec = crate::backend::parse_spec(d)
                    .ok()
                    .filter(|s| s.scheme == crate::backend::Scheme::Http && !d.contains("://"));
                match spec {
                    Some(s) if !d.contains(',') => Kind::Dns {
                        host: s
                            .host
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_owned(),
                        port: s.port,
                    },
                    _ => {
                        let problem = format!("'{d}' is not HOST:PORT");
                        let hint = "write e.g. `dns: api.internal:8080`";
                        return Err(cx.err(&at("dns"), problem, hint));
                    }
                }
            }
            (None, Some(s), None) => {
                let s = s.trim().trim_end_matches('.');
                if s.is_empty() || s.contains(char::is_whitespace) || s.contains(':') {
                    let problem = format!("'{s}' is not a DNS name");
                    let hint = "write e.g. `srv: _http._tcp.api.service.consul`";
                    return Err(cx.err(&at("srv"), problem, hint));
                }
                Kind::Srv { name: s.to_owned() }
            }
            (None, None, Some(e)) => {
                let endpoints = e
                    .endpoints
                    .unwrap_or_else(|| vec!["http://127.0.0.1:2379".into()]);
                for (j, ep) in endpoints.iter().enumerate() {
                    let ok = ep
                        .strip_prefix("http://")
                        .map(|a| a.trim_end_matches('/'))
                        .is_some_and(|a| !a.is_empty() && !a.contains('/') && a.contains(':'));
                    if !ok {
                        let problem = format!("'{ep}' is not an http://HOST:PORT endpoint");
                        let hint = "write e.g. `endpoints: [http://127.0.0.1:2379]` (https is not supported)";
                        return Err(cx.err(
                            &format!("discovery[{i}].etcd.endpoints[{j}]"),
                            problem,
                            hint,
                        ));
                    }
                }
                if endpoints.is_empty() {
                    let hint = "list at least one, e.g. `endpoints: [http://127.0.0.1:2379]`";
                    return Err(cx.err(&at("etcd.endpoints"), "is empty", hint));
                }
                let prefix = e.prefix.unwrap_or_default();
                if prefix.is_empty() {
                    let hint = "write e.g. `prefix: /switchyard/backends/`";
                    return Err(cx.err(&at("etcd.prefix"), "is missing", hint));
                }
                Kind::Etcd { endpoints, prefix }
            }
            _ => {
                let hint =
                    "write one of `dns: HOST:PORT`, `srv: NAME` or `etcd: {endpoints, prefix}`";
                return Err(cx.err(
                    &format!("discovery[{i}]"),
                    "needs exactly one of dns, srv or etcd",
                    hint,
                ));
            }
        };
        out.push(Source { kind, weight });
    }
    Ok(out)
}

pub(super) fn resolver(cx: &Ctx<'_>, v: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    let v = v.trim();
    let parsed = v.parse::<SocketAddr>().or_else(|_| {
        v.parse::<std::net::IpAddr>()
            .map(|ip| SocketAddr::new(ip, 53))
    });
    match parsed {
        Ok(a) => Ok(Some(a)),
        Err(_) => {
            let problem = format!("'{v}' is not an IP address (with an optional port)");
            Err(cx.err("resolver", problem, "write e.g. `resolver: 127.0.0.1:53`"))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::{B, load};

    #[test]
    fn discovery_sections() {
        let c = load(&format!(
            "{B}discovery:\n  - dns: api.internal:8080\n    weight: 2\n  - srv: _http._tcp.api.consul.\n  - etcd: {{prefix: /sy/}}\nresolver: 127.0.0.1:5353\n"
        ))
        .unwrap();
        assert_eq!(c.discovery.len(), 3);
        assert_eq!(c.discovery[0].label(), "dns:api.internal:8080");
        assert_eq!(c.discovery[0].weight, 2);
        assert_eq!(c.discovery[1].label(), "srv:_http._tcp.api.consul");
        assert_eq!(c.discovery[2].label(), "etcd:/sy/");
        assert_eq!(c.resolver, Some("127.0.0.1:5353".parse().unwrap()));
        // With discovery, no static backend is needed.
        assert!(load("discovery: [{dns: api.internal:8080}]\n").is_ok());
        for (text, key) in [
            ("discovery: [{dns: api.internal}]", "discovery[0].dns"),
            ("discovery: [{dns: 'a:1', srv: b}]", "discovery[0]"),
            ("discovery: [{}]", "discovery[0]"),
            ("discovery: [{srv: 'a b'}]", "discovery[0].srv"),
            (
                "discovery: [{etcd: {endpoints: ['https://x:1'], prefix: /a}}]",
                "discovery[0].etcd.endpoints[0]",
            ),
            ("discovery: [{etcd: {}}]", "discovery[0].etcd.prefix"),
            (
                "discovery: [{dns: 'a:1', weight: 0}]",
                "discovery[0].weight",
            ),
            ("resolver: nameserver", "resolver"),
        ] {
            let e = load(&format!("{B}{text}\n")).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }
}
