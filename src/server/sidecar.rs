//! The sidecar of the workers: health probes and the admin listener, once per process.
//!
//! Both read the current snapshot and neither serves client traffic, so they share one
//! small current-thread runtime: a thread beside the workers in thread mode
//! ([`Prober`]), or the prober process in process mode (`master`). [`serve`] is the one
//! place the admin listener is started, whichever it is.

use std::sync::Arc;

use tokio::sync::watch;

use crate::health::probe;
use crate::snapshot::Snapshot;

/// Runs the probes, and the admin listener when given, until `stop` turns true.
pub async fn serve(
    snapshots: watch::Receiver<Arc<Snapshot>>,
    admin: Option<std::net::TcpListener>,
    stop: watch::Receiver<bool>,
) {
    if let Some(l) = admin {
        tokio::spawn(crate::admin::serve(l, snapshots.clone(), stop.clone()));
    }
    probe::run(snapshots, stop).await;
}

/// The sidecar's thread (thread mode); stops when dropped.
pub struct Prober {
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Prober {
    /// Starts [`serve`] on a thread of its own.
    pub fn start(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        admin: Option<std::net::TcpListener>,
    ) -> std::io::Result<Prober> {
        let (tx, rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("prober".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("health prober could not start: {e}");
                        return;
                    }
                };
                rt.block_on(serve(snapshots, admin, rx));
            })?;
        Ok(Prober {
            shutdown: tx,
            thread: Some(thread),
        })
    }
}
