//! Listeners and workers.
//!
//! [`listener::bind`] makes one SO_REUSEPORT socket per worker; [`start`] runs one
//! [`worker`] per socket on its own thread (thread mode) and returns a [`Running`]
//! handle to stop them. Servers take bound listeners, so tests bind port 0 and callers
//! report bind errors before anything starts. What all workers share (the backend
//! health table) is atomics only; the active prober runs once per process beside them.

pub mod conn_io;
pub mod listener;
pub mod sniff;
pub mod worker;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::config::Config;
use crate::health::HealthTable;
use crate::health::probe::Prober;

/// Workers running in this process.
pub struct Running {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    health: Arc<HealthTable>,
    /// Dropped after the workers (field order): stops the probes.
    _prober: Option<Prober>,
}

impl Running {
    /// The address the listeners are bound to (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The health table all workers share (tests and the admin view read it).
    pub fn health(&self) -> &Arc<HealthTable> {
        &self.health
    }

    /// Stops accepting and waits for the workers to exit.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    /// Blocks until every worker has exited.
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn stop_inner(&mut self) {
        let _ = self.shutdown.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Starts one worker thread per listener.
pub fn start(config: Arc<Config>, listeners: Vec<TcpListener>) -> io::Result<Running> {
    let local_addr = match listeners.first() {
        Some(l) => l.local_addr()?,
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listener")),
    };
    let health = Arc::new(HealthTable::new(
        &config.backends,
        config.health.thresholds(),
    ));
    // One prober per process, whatever the worker count.
    let prober = if config.health.probes {
        Some(Prober::start(Arc::clone(&config), Arc::clone(&health))?)
    } else {
        None
    };
    let (tx, rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(listeners.len());
    for (id, listener) in listeners.into_iter().enumerate() {
        let config = Arc::clone(&config);
        let health = Arc::clone(&health);
        let rx = rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || {
                if let Err(e) = worker::run(id, config, health, listener, rx) {
                    tracing::error!(worker = id, "worker failed: {e}");
                }
            })?;
        threads.push(t);
    }
    Ok(Running {
        local_addr,
        shutdown: tx,
        threads,
        health,
        _prober: prober,
    })
}
