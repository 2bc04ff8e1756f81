//! The one place each generation (the config a balancer serves with) is built.
//!
//! A generation is the config file's text, validated, plus the backends discovery
//! found ([`crate::discovery`]). The loader, the master in process mode or the control
//! loop in thread mode, reads the file, resolves every backend's host name and runs
//! the discovery sources; a worker process never does either. It gets each new
//! generation from the master as a [`Message`]: the file's text (which it validates
//! again, so its `Config` is built by the same code), every backend's addresses as the
//! master resolved them, and the discovered entries. So all workers always serve the
//! same backend set, even while a name's records change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::keep_restart_only_settings;
use crate::backend::{Backend, BackendId, BackendSet};
use crate::config::{Config, ConfigError, Overrides, Resolved};
use crate::discovery::{self, Entry, Sets, Update, Watchers};
use crate::health::Region;

/// How long the first lookup of each discovery source may hold up the start.
pub const FIRST_LOOKUP_WITHIN: Duration = Duration::from_secs(3);

/// `config` (built from the file) with the discovered backends added after its own:
/// the static `backends:` first, then every source's entries in order; a backend
/// named twice is counted once (the first). A merged generation applies like a
/// reload: backends that stay keep their health and pools, removed ones finish their
/// in-flight requests on the old generation.
pub fn merge(mut config: Config, sets: &Sets) -> Config {
    if config.discovery.is_empty() {
        return config;
    }
    let mut backends: Vec<Backend> = config.backends.iter().cloned().collect();
    for e in sets.entries() {
        if backends.iter().any(|b| b.address == e.address) {
            continue;
        }
        if let Some(b) = discovered_backend(e) {
            backends.push(b);
        }
    }
    config.backends = BackendSet::new(backends);
    config
}

/// A plain-HTTP backend with default options for a discovered entry.
fn discovered_backend(e: &Entry) -> Option<Backend> {
    let spec = crate::backend::parse_spec(&e.address).ok()?;
    Some(Backend {
        id: BackendId::of(&e.address),
        address: e.address.clone(),
        host: spec.host,
        port: spec.port,
        scheme: spec.scheme,
        addrs: e.addrs.clone(),
        weight: e.weight.max(1),
        tls: Default::default(),
        protocol: Default::default(),
        max_connections: 0,
        proxy_protocol: None,
        name: None,
    })
}

/// What the master sends a worker for each new generation (JSON on the control
/// socket, after a `generation LEN` line).
#[derive(Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    pub resolved: Resolved,
    pub discovered: Vec<Entry>,
}

impl Message {
    /// A worker's side: the generation's config, built from the message alone.
    pub fn build(
        bytes: &[u8],
        path: &Path,
        overrides: &Overrides,
        running: &Config,
    ) -> Result<Config, String> {
        let m: Message = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let config = Config::parse_resolved(path, &m.text, overrides, &m.resolved)
            .map_err(|e| e.to_string())?;
        let config = keep_restart_only_settings(running, config, false);
        Ok(merge(config, &Sets(vec![m.discovered])))
    }
}

/// The loader's state: the file's config, what discovery found, the sources running.
pub struct Loader {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
    /// The config as the file says it (before discovery adds to it).
    base: Config,
    /// The bytes it was built from (`None`: no file, the command line only).
    text: Option<Vec<u8>>,
    sets: Sets,
    watchers: Option<Watchers>,
    tx: mpsc::UnboundedSender<Update>,
}

impl Loader {
    /// Runs each source's first lookup (before any worker starts) and returns the
    /// loader with the first generation's config, and the receiver of later updates.
    pub fn start(
        base: Config,
        path: Option<PathBuf>,
        overrides: Overrides,
        text: Option<Vec<u8>>,
    ) -> (Loader, Config, mpsc::UnboundedReceiver<Update>) {
        let sets = discovery::initial(&base.discovery, base.resolver, FIRST_LOOKUP_WITHIN);
        let config = merge(base.clone(), &sets);
        let (tx, rx) = mpsc::unbounded_channel();
        let loader = Loader {
            path,
            overrides,
            base,
            text,
            sets,
            watchers: None,
            tx,
        };
        (loader, config, rx)
    }

    /// Starts the discovery sources on the current runtime (once it runs).
    pub fn watch(&mut self) {
        if self.watchers.is_none() && !self.base.discovery.is_empty() {
            self.watchers = Some(Watchers::start(
                &self.base.discovery,
                self.base.resolver,
                &self.tx,
            ));
        }
    }

    /// The bytes the running config was built from.
    pub fn loaded(&self) -> Option<&[u8]> {
        self.text.as_deref()
    }

    /// A new file text: validated (an error leaves everything as it was); sources
    /// that changed restart, and those that stayed keep what they found.
    pub fn reload(&mut self, running: &Config, bytes: Vec<u8>) -> Result<Config, ConfigError> {
        let path = self.path.clone().unwrap_or_default();
        let base = Config::from_bytes(&path, &bytes, &self.overrides)?;
        let base = keep_restart_only_settings(running, base, true);
        if self.base.discovery != base.discovery || self.base.resolver != base.resolver {
            // Keep the sets of sources that are still there, wherever they moved.
            let old = std::mem::take(&mut self.sets.0);
            self.sets.0 = (base.discovery.iter())
                .map(|s| {
                    (self.base.discovery.iter())
                        .position(|o| o == s && self.base.resolver == base.resolver)
                        .and_then(|i| old.get(i).cloned())
                        .unwrap_or_default()
                })
                .collect();
            let restart = self.watchers.take().is_some();
            self.base = base;
            if restart {
                self.watch();
            }
        } else {
            self.base = base;
        }
        self.text = Some(bytes);
        Ok(self.current())
    }

    /// A discovery update: logged, counted when it failed; the new generation's
    /// config when a set changed.
    pub fn discovered(&mut self, u: &Update, region: &Region) -> Option<Config> {
        discovery::report(&self.base.discovery, u, Some(region.global()));
        if !self.sets.apply(u) {
            return None;
        }
        let label = self.base.discovery.get(u.source).map(|s| s.label());
        let found = self.sets.0.get(u.source).map_or(0, Vec::len);
        tracing::info!(source = ?label, backends = found, "discovery: the backend set changed");
        Some(self.current())
    }

    /// The config of the current generation: the file's, with what discovery found.
    pub fn current(&self) -> Config {
        merge(self.base.clone(), &self.sets)
    }

    /// The message that gives a worker `config` (the current generation).
    pub fn message(&self, config: &Config) -> Vec<u8> {
        let m = Message {
            text: String::from_utf8_lossy(self.text.as_deref().unwrap_or_default()).into_owned(),
            resolved: config.resolved(),
            discovered: self.sets.entries().cloned().collect(),
        };
        serde_json::to_vec(&m).unwrap_or_default()
    }
}
