//! Listeners, workers, and the control of a running balancer.
//!
//! [`listener::bind`] makes one SO_REUSEPORT socket per worker; [`start`] runs one
//! [`worker`] per socket on its own thread (thread mode) and returns [`Running`], the
//! handle that reloads, drains and stops them. Servers take bound listeners, so tests
//! bind port 0 and callers report bind errors before anything starts.
//!
//! What workers share is published, not locked: a [`Snapshot`] (validated config +
//! its health view) goes out on a `watch` channel that each worker's reload task
//! follows, and backend health lives in the shared [`Region`] (atomics, made before
//! any worker exists, keyed by backend id, so a reload keeps the state of the
//! backends it keeps). The active prober runs once per process beside the workers.

mod client;
pub mod conn_io;
pub mod control;
pub mod generation;
pub mod h1;
pub mod handover;
pub mod listener;
pub mod lot;
pub mod master;
pub mod notify;
pub mod pidfile;
pub mod sidecar;
pub mod signals;
pub mod worker;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::health::{HealthTable, Region};
pub use crate::snapshot::Snapshot;
use sidecar::Prober;

/// What the workers are told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Serving,
    /// Stop accepting, finish in-flight requests (up to the deadline), then exit.
    Draining {
        deadline: tokio::time::Instant,
    },
}

/// The sockets a balancer serves: bound here, or handed over (binary upgrade,
/// systemd).
pub struct Sockets {
    /// Per worker: one socket per `listen:` entry.
    pub listeners: listener::Sets,
    pub admin: Option<TcpListener>,
    /// After an upgrade: where to tell the old master that this one serves.
    pub ready: Option<std::os::unix::net::UnixStream>,
}

impl Sockets {
    /// Takes over `inherited` sockets (see [`handover::Inherited::from_env`]) and
    /// binds every `listen:` entry nothing was handed over for (refusing an occupied
    /// address), and `admin`.
    pub fn open(config: &Config, inherited: Option<handover::Inherited>) -> io::Result<Sockets> {
        let workers = config.workers;
        let wanted = config.listen_addrs();
        let Some(inherited) = inherited else {
            return Ok(Sockets {
                listeners: listener::bind_all(&wanted, workers)?,
                admin: config.admin.map(bind_admin).transpose()?,
                ready: None,
            });
        };
        tracing::info!(
            from = ?inherited.source,
            sockets = inherited.listeners.iter().map(Vec::len).sum::<usize>(),
            "serving on sockets handed over"
        );
        let given = by_address(inherited.listeners, &wanted);
        let mut groups = Vec::with_capacity(wanted.len());
        let mut given = given.into_iter();
        for addr in &wanted {
            let group = given.next().filter(|g| !g.is_empty());
            groups.push(match group {
                Some(g) => {
                    let at = g.first().and_then(|l| l.local_addr().ok());
                    if at.is_some_and(|at| at != *addr) {
                        tracing::info!(listen = %addr, serving = ?at, "listen is not bound: the socket handed over takes its place");
                    }
                    handover::Inherited::for_workers(g, workers)?
                }
                None => listener::bind(*addr, workers)?,
            });
        }
        let admin = match (inherited.admin, config.admin) {
            (Some(a), Some(want)) if a.local_addr().ok() == Some(want) => Some(a),
            (_, want) => want.map(bind_admin).transpose()?,
        };
        Ok(Sockets {
            listeners: listener::by_worker(groups),
            admin,
            ready: inherited.ready,
        })
    }
}

/// Sockets handed over, as groups (an old master's, one per its `listen:` entry;
/// systemd's, all in one), for the `wanted` entries, in their order. One group for
/// one entry: it serves that entry whatever its address (systemd's socket replaces
/// `listen`, and an upgrade keeps serving the socket it had). Otherwise each socket
/// serves the entry on its port and address, so entries may be reordered, added or
/// removed across an upgrade; a socket no entry names is closed, and logged.
fn by_address(groups: Vec<Vec<TcpListener>>, wanted: &[SocketAddr]) -> Vec<Vec<TcpListener>> {
    if groups.len() <= 1 && wanted.len() <= 1 {
        return groups;
    }
    let mut out: Vec<Vec<TcpListener>> = wanted.iter().map(|_| Vec::new()).collect();
    for l in groups.into_iter().flatten() {
        let at = l.local_addr().ok();
        let i = at.and_then(|at| wanted.iter().position(|w| same_socket(*w, at)));
        match i {
            Some(i) => out[i].push(l),
            None => {
                tracing::warn!(socket = ?at, "a socket handed over matches no `listen:` entry: closed")
            }
        }
    }
    out
}

/// Whether a socket bound to `at` serves `want` (same port; same address, or either
/// is the wildcard).
fn same_socket(want: SocketAddr, at: SocketAddr) -> bool {
    want.port() == at.port()
        && (want.ip() == at.ip() || want.ip().is_unspecified() || at.ip().is_unspecified())
}

/// Workers running in this process.
pub struct Running {
    /// Each listener's address (worker 0's sockets).
    local_addrs: Vec<SocketAddr>,
    region: &'static Region,
    workers: usize,
    /// Copies of the sockets, for a binary upgrade to hand over (emptied by a drain).
    handover: listener::Sets,
    admin: Option<TcpListener>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    state: watch::Sender<RunState>,
    threads: Vec<JoinHandle<()>>,
    /// Dropped after the workers (field order): stops the probes.
    _prober: Option<Prober>,
}

impl Running {
    /// The address the first listener is bound to (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every listener's address, in the config's order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Waits (up to `within`) until every worker accepts.
    pub fn wait_serving(&self, within: Duration) -> bool {
        let until = std::time::Instant::now() + within;
        while !self.region.serving(self.workers) {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// The listening sockets and the admin socket, for a binary upgrade.
    pub fn sockets(&self) -> (&listener::Sets, Option<&TcpListener>) {
        (&self.handover, self.admin.as_ref())
    }

    /// The shared region (health, metrics, ledgers).
    pub fn region(&self) -> &'static Region {
        self.region
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshots.borrow())
    }

    /// The health view of the current snapshot (tests and the admin view read it).
    pub fn health(&self) -> Arc<HealthTable> {
        Arc::clone(&self.snapshots.borrow().health)
    }

    /// Swaps in `config` everywhere. What cannot change in place (listen address,
    /// worker count, mode, admin address) keeps its old value, with a warning.
    pub fn reload(&self, config: Config) {
        let old = self.snapshot();
        let config = keep_restart_only_settings(&old.config, config, false);
        crate::config::warn_insecure(Some(&old.config), &config);
        let next = Snapshot::build(
            self.region,
            Arc::new(config),
            old.generation + 1,
            Some(&old),
        );
        let snapshot = match next {
            Ok(s) => s,
            Err(e) => return tracing::error!("reload refused: {e}"),
        };
        tracing::info!(
            generation = snapshot.generation,
            backends = snapshot.config.backends.len(),
            strategy = snapshot.config.strategy.name(),
            changed = %crate::config::diff::describe(&old.config, &snapshot.config),
            "configuration reloaded"
        );
        self.snapshots.send_replace(Arc::new(snapshot));
    }

    /// Stops accepting, lets in-flight requests finish for up to `timeouts.drain`,
    /// closes idle connections, and waits for the workers to exit.
    pub fn drain(mut self) {
        let drain = self.snapshot().config.timeouts.drain;
        self.stop_inner(drain);
    }

    /// Stops at once (in-flight requests are cut) and waits for the workers.
    pub fn stop(mut self) {
        self.stop_inner(Duration::ZERO);
    }

    /// Blocks until every worker has exited.
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn stop_inner(&mut self, grace: Duration) {
        self.handover.clear();
        self.admin = None;
        self.region
            .global()
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + grace;
        self.state.send_replace(RunState::Draining { deadline });
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_inner(Duration::ZERO);
    }
}

macro_rules! warn_if {
    ($on:expr, $($t:tt)*) => {
        if $on {
            tracing::warn!($($t)*);
        }
    };
}

/// Keeps the settings that only a restart can change, and says so when `warn` (the
/// loader does, once per reload; workers and the swap after it do not repeat it).
pub(crate) fn keep_restart_only_settings(old: &Config, mut new: Config, warn: bool) -> Config {
    let addrs = |c: &Config| c.listen_addrs();
    if addrs(&new) != addrs(old) {
        let (o, n) = (addrs(old), addrs(&new));
        warn_if!(warn, old = ?o, new = ?n, "listen addresses changed: restart switchyard to apply them (every listener keeps its current settings)");
        new.listeners = old.listeners.clone();
    }
    if new.workers != old.workers {
        warn_if!(
            warn,
            old = old.workers,
            new = new.workers,
            "workers changed: restart switchyard to apply it"
        );
        new.workers = old.workers;
    }
    if new.mode != old.mode {
        warn_if!(warn, "mode changed: restart switchyard to apply it");
        new.mode = old.mode;
    }
    if new.limits != old.limits {
        warn_if!(warn, "limits changed: restart switchyard to apply them");
        new.limits = old.limits.clone();
    }
    for (n, o) in new.listeners.iter_mut().zip(&old.listeners) {
        if n.tls.is_some() != o.tls.is_some() {
            // Never turn an HTTPS port into a plaintext one (or the reverse) under clients.
            let now = if o.tls.is_some() { "TLS" } else { "plain HTTP" };
            warn_if!(
                warn,
                listen = %o.address,
                "listen tls added or removed: restart switchyard to apply it; the listener stays {now}"
            );
            n.tls = o.tls.clone();
        }
    }
    // Redirects point at the first entry that serves TLS now (validation chose from
    // the file, whose TLS changes may have been kept out just above).
    let https = new.listeners.iter().find(|l| l.tls.is_some());
    let https = https.map(|l| l.address.port());
    for (n, o) in new.listeners.iter_mut().zip(&old.listeners) {
        if n.redirect_https.is_none() {
            continue;
        }
        match https {
            Some(port) if n.tls.is_none() => n.redirect_https = Some(port),
            _ => {
                warn_if!(
                    warn,
                    listen = %o.address,
                    "redirect_https needs a TLS listener that serves now: the listener keeps its current setting"
                );
                n.redirect_https = o.redirect_https;
            }
        }
    }
    if new.access_log_format != old.access_log_format || new.access_log_path != old.access_log_path
    {
        warn_if!(
            warn,
            "access_log.format or .path changed: restart switchyard to apply it"
        );
        new.access_log_format = old.access_log_format;
        new.access_log_path = old.access_log_path.clone();
    }
    if new.log_format != old.log_format || new.log_file != old.log_file {
        warn_if!(
            warn,
            "log_format or log_file changed: restart switchyard to apply it"
        );
        new.log_format = old.log_format;
        new.log_file = old.log_file.clone();
    }
    if new.admin != old.admin {
        warn_if!(warn, "admin changed: restart switchyard to apply it");
        new.admin = old.admin;
    }
    new
}

/// Binds the admin listener (a plain socket: one process serves it).
pub fn bind_admin(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on admin address {addr}: {e}"),
        )
    })
}

/// Starts one worker thread per set of listeners, and the prober (binding the admin
/// listener).
pub fn start(config: Arc<Config>, listeners: listener::Sets) -> io::Result<Running> {
    let admin = config.admin.map(bind_admin).transpose()?;
    start_with(
        config,
        Sockets {
            listeners,
            admin,
            ready: None,
        },
    )
}

/// Starts one worker thread per set of listeners of `sockets`, and the prober.
pub fn start_with(config: Arc<Config>, sockets: Sockets) -> io::Result<Running> {
    let Sockets {
        listeners, admin, ..
    } = sockets;
    let local_addrs = match listeners.first() {
        Some(set) if !set.is_empty() => set
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listener")),
    };
    let handover = listeners
        .iter()
        .map(|set| set.iter().map(TcpListener::try_clone).collect())
        .collect::<io::Result<listener::Sets>>()?;
    let admin_copy = admin.as_ref().map(TcpListener::try_clone).transpose()?;
    let workers = listeners.len();
    let region = Region::new()?;
    let first = Snapshot::build(region, config, 0, None)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let first = Arc::new(first);
    let (snapshots, snapshot_rx) = watch::channel(Arc::clone(&first));
    let (state, state_rx) = watch::channel(RunState::Serving);
    // One prober (and the admin listener) per process, whatever the worker count.
    let prober = Prober::start(snapshot_rx.clone(), admin)?;
    let mut threads = Vec::with_capacity(listeners.len());
    for (id, listener) in listeners.into_iter().enumerate() {
        let snapshots = snapshot_rx.clone();
        let state = state_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || {
                if let Err(e) = worker::run(id, listener, snapshots, state) {
                    tracing::error!(worker = id, "worker failed: {e}");
                }
            })?;
        threads.push(t);
    }
    Ok(Running {
        local_addrs,
        region,
        workers,
        handover,
        admin: admin_copy,
        snapshots,
        state,
        threads,
        _prober: Some(prober),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_sockets_serve_the_entry_with_their_address() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let stray = TcpListener::bind("127.0.0.1:0").unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let wild = SocketAddr::from(([0, 0, 0, 0], ba.port()));
        let groups = by_address(vec![vec![b, stray, a]], &[aa, wild]);
        let addrs: Vec<Vec<SocketAddr>> = groups
            .iter()
            .map(|g| g.iter().map(|l| l.local_addr().unwrap()).collect())
            .collect();
        assert_eq!(addrs, vec![vec![aa], vec![ba]]);
        // One entry: every socket serves it, whatever its address.
        let c = TcpListener::bind("127.0.0.1:0").unwrap();
        let d = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(by_address(vec![vec![c, d]], &[aa])[0].len(), 2);
    }

    /// A reload that adds TLS to an entry (restart-only, kept out) cannot make another
    /// entry redirect to it: the redirect keeps its current setting.
    #[test]
    fn redirects_point_at_a_listener_that_serves_tls_now() {
        let text = |redirect: bool| {
            format!(
                "backends: [127.0.0.1:9001]\nlisten:\n  - {{address: 127.0.0.1:80, redirect_https: {redirect}}}\n  - 127.0.0.1:443\n  - 127.0.0.1:8443\n"
            )
        };
        let load = |t: &str| {
            Config::parse(std::path::Path::new("lb.yaml"), t, &Default::default()).unwrap()
        };
        let tls = || crate::config::ListenTls {
            certificates: Vec::new(),
        };
        // Running: no TLS anywhere. New file: 443 gets TLS and 80 redirects to it.
        let old = load(&text(false));
        let mut new = load(&text(false));
        new.listeners[0].redirect_https = Some(443);
        new.listeners[1].tls = Some(tls());
        let kept = keep_restart_only_settings(&old, new, false);
        assert_eq!(kept.listeners[1].tls, None);
        assert_eq!(kept.listeners[0].redirect_https, None);
        // Running: 8443 has TLS. New file: 443 gets TLS too (kept out): 80 redirects
        // to 8443, the TLS listener that serves.
        let mut old = load(&text(false));
        old.listeners[2].tls = Some(tls());
        let mut new = load(&text(false));
        new.listeners[0].redirect_https = Some(443);
        new.listeners[1].tls = Some(tls());
        new.listeners[2].tls = Some(tls());
        let kept = keep_restart_only_settings(&old, new, false);
        assert_eq!(kept.listeners[0].redirect_https, Some(8443));
    }
}
