//! Backends from outside the config file: DNS (A/AAAA and SRV) and etcd.
//!
//! Discovery runs in one place only, beside the config loader: the master in process
//! mode, the control loop in thread mode. It never runs in a worker, so every worker
//! serves the same backend set. Each `discovery:` item is a [`Source`]; its task
//! ([`dns`] or [`etcd`]) sends the source's whole current set as an [`Update`] when it
//! changes (or an error, after which the last known set is kept); the loader
//! (`server::generation`) builds the next generation from them.
//!
//! This module is mechanism: it knows neither the config nor the server; the config
//! holds its [`Source`]s as plain data.

pub mod dns;
pub mod etcd;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// One `discovery:` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub kind: Kind,
    /// Weight of each backend found (SRV records bring their own).
    pub weight: u32,
}

/// Where a source looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `dns: HOST:PORT`: every A/AAAA address of HOST, on PORT.
    Dns { host: String, port: u16 },
    /// `srv: NAME`: the targets and ports of NAME's SRV records (lowest priority).
    Srv { name: String },
    /// `etcd: {endpoints, prefix}`: one backend per key under the prefix.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

impl Source {
    /// The `source` label of `switchyard_discovery_errors_total` and of log lines.
    pub fn label(&self) -> String {
        match &self.kind {
            Kind::Dns { host, port } => format!("dns:{host}:{port}"),
            Kind::Srv { name } => format!("srv:{name}"),
            Kind::Etcd { prefix, .. } => format!("etcd:{prefix}"),
        }
    }
}

/// One backend a source found: its normalised `host:port`, its addresses (already
/// resolved by the loader: a worker never resolves) and weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub address: String,
    pub addrs: Vec<SocketAddr>,
    pub weight: u32,
}

/// What a source's task reports.
#[derive(Debug)]
pub struct Update {
    pub source: usize,
    /// The whole current set, or why it could not be had.
    pub result: Result<Vec<Entry>, String>,
}

/// The last known set of each source, in `discovery:` order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sets(pub Vec<Vec<Entry>>);

impl Sets {
    /// Applies `u`; true when a set changed. An error keeps the last known set.
    pub fn apply(&mut self, u: &Update) -> bool {
        let Ok(entries) = &u.result else { return false };
        if self.0.len() <= u.source {
            self.0.resize(u.source + 1, Vec::new());
        }
        let mut sorted = entries.clone();
        sorted.sort_by(|a, b| a.address.cmp(&b.address));
        if self.0[u.source] == sorted {
            return false;
        }
        self.0[u.source] = sorted;
        true
    }

    /// Every entry, sources in order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.0.iter().flatten()
    }
}

/// The normalised address of `addr` (what a backend id hashes): `SocketAddr`'s own
/// text, which already brackets IPv6 hosts.
pub fn address_of(addr: SocketAddr) -> String {
    addr.to_string()
}

/// How long a failed source waits before it tries again: 1 s, doubling to 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30))
}

/// Running source tasks; dropping it stops them.
pub struct Watchers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    /// Starts a task per source on the current runtime; they report on `tx`.
    pub fn start(
        sources: &[Source],
        resolver: Option<SocketAddr>,
        tx: &mpsc::UnboundedSender<Update>,
    ) -> Watchers {
        let tasks = sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let tx = tx.clone();
                match &s.kind {
                    Kind::Dns { .. } | Kind::Srv { .. } => {
                        tokio::spawn(dns::watch(i, s.clone(), resolver, tx))
                    }
                    Kind::Etcd { .. } => tokio::spawn(etcd::watch(i, s.clone(), tx)),
                }
            })
            .collect();
        Watchers { tasks }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The first set of every source, before any worker starts (each source gets up to
/// `within`; one that fails or is late starts empty, logged, and its task keeps
/// trying). Runs its own short-lived runtime, so no thread or runtime outlives it.
pub fn initial(sources: &[Source], resolver: Option<SocketAddr>, within: Duration) -> Sets {
    let mut sets = Sets(vec![Vec::new(); sources.len()]);
    if sources.is_empty() {
        return sets;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("discovery: no runtime for the first lookups: {e}");
            return sets;
        }
    };
    rt.block_on(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _w = Watchers::start(sources, resolver, &tx);
        let deadline = tokio::time::Instant::now() + within;
        let mut heard = vec![false; sources.len()];
        while heard.iter().any(|h| !h) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(u)) => {
                    if let Some(h) = heard.get_mut(u.source) {
                        *h = true;
                    }
                    report(sources, &u, None);
                    sets.apply(&u);
                }
                _ => break,
            }
        }
        for (i, h) in heard.iter().enumerate() {
            if !h {
                let label = sources[i].label();
                tracing::warn!(source = %label, "discovery: no answer at start; starting without it");
            }
        }
    });
    sets
}

/// Logs an update (an error with its source, a change with the new count) and counts
/// errors in `errors`.
pub fn report(sources: &[Source], u: &Update, errors: Option<&crate::metrics::GlobalStats>) {
    let Some(s) = sources.get(u.source) else {
        return;
    };
    let label = s.label();
    match &u.result {
        Ok(set) => tracing::debug!(source = %label, backends = set.len(), "discovery"),
        Err(e) => {
            tracing::warn!(source = %label, "discovery failed, keeping the last known backends: {e}");
            if let Some(g) = errors {
                g.count_discovery_error(crate::limit::name_hash(&label));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(a: &str, w: u32) -> Entry {
        Entry {
            address: a.into(),
            addrs: vec![a.parse().unwrap()],
            weight: w,
        }
    }

    #[test]
    fn sets_keep_the_last_known_on_error() {
        let mut s = Sets::default();
        let ok = Update {
            source: 1,
            result: Ok(vec![entry("10.0.0.2:80", 1), entry("10.0.0.1:80", 1)]),
        };
        assert!(s.apply(&ok));
        assert!(!s.apply(&ok), "the same set again is no change");
        let err = Update {
            source: 1,
            result: Err("down".into()),
        };
        assert!(!s.apply(&err));
        let addrs: Vec<_> = s.entries().map(|e| e.address.as_str()).collect();
        assert_eq!(addrs, ["10.0.0.1:80", "10.0.0.2:80"]);
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(address_of("10.1.2.3:80".parse().unwrap()), "10.1.2.3:80");
        assert_eq!(address_of("[::1]:8080".parse().unwrap()), "[::1]:8080");
        assert!(crate::backend::parse_spec(&address_of("[::1]:8080".parse().unwrap())).is_ok());
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(30));
    }
}
