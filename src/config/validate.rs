//! FileConfig + Overrides -> Config (stub).

use std::path::Path;
use std::time::Duration;

use super::file::FileConfig;
use super::*;
use crate::backend::{Backend, BackendId};

pub fn build(
    _src: Option<(&Path, &str)>,
    _file: FileConfig,
    o: &Overrides,
) -> Result<Config, ConfigError> {
    use std::net::ToSocketAddrs;
    let backends = o
        .backends
        .iter()
        .map(|s| Backend {
            id: BackendId::of(&s.normalised()),
            address: s.normalised(),
            host: s.host.clone(),
            port: s.port,
            scheme: s.scheme,
            addrs: (s.host.as_str(), s.port)
                .to_socket_addrs()
                .map(|a| a.collect())
                .unwrap_or_default(),
            weight: s.weight,
        })
        .collect();
    Ok(Config {
        listen: o
            .listen
            .unwrap_or_else(|| "0.0.0.0:8080".parse().expect("literal")),
        admin: o.admin,
        workers: o.workers.unwrap_or(1),
        mode: o.mode.unwrap_or(Mode::Thread),
        strategy: o.strategy.unwrap_or(StrategyKind::RoundRobin),
        backends: BackendSet::new(backends),
        health: HealthConfig {
            path: "/".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            passive_5xx: false,
        },
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            client_header: Duration::from_secs(10),
            backend_response: Duration::from_secs(30),
            client_idle: Duration::from_secs(60),
            drain: Duration::from_secs(30),
        },
        retries: 2,
        access_log: o.access_log,
        limits: Limits {
            request_line: 8192,
            header_section: 65536,
            headers: 100,
        },
        sticky_cookie: "SWITCHYARD_BACKEND".into(),
        pool: PoolConfig {
            max_idle_per_backend: 64,
            idle_timeout: Duration::from_secs(60),
        },
        insecure: o.insecure,
    })
}
