//! The control loop of a running balancer: signals and config reloads.
//!
//! SIGTERM and SIGINT start a graceful drain (stop accepting, finish in-flight requests
//! for up to `timeouts.drain`, then exit 0). SIGHUP, or a change of the config file,
//! reloads: the file is read and validated again with the same command-line overrides;
//! a valid config is swapped in everywhere, an invalid one is logged and the old one
//! keeps serving. Runs on the main thread with its own small runtime; the workers never
//! wait for it.

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use super::Running;
use crate::config::{Config, Overrides, input, reload};

/// Where a reload comes from.
pub struct ReloadSource {
    pub path: PathBuf,
    pub overrides: Overrides,
    /// The bytes the running config was built from (a change is measured against them).
    pub loaded: Vec<u8>,
}

/// Signal handlers and the file watch, set up before any worker starts so that a
/// signal arriving during start-up is never lost (nor kills the process).
pub struct Control {
    rt: tokio::runtime::Runtime,
    term: Signal,
    int: Signal,
    hup: Signal,
    changes: mpsc::UnboundedReceiver<()>,
    _watch: Option<reload::FileWatch>,
    source: Option<ReloadSource>,
}

impl Control {
    pub fn new(source: Option<ReloadSource>) -> std::io::Result<Control> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _guard = rt.enter();
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        let hup = signal(SignalKind::hangup())?;
        let (tx, changes) = mpsc::unbounded_channel();
        let watch = match &source {
            Some(s) => match reload::watch(&s.path, tx) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(path = %s.path.display(), "cannot watch the config file ({e}); reload with SIGHUP");
                    None
                }
            },
            None => None,
        };
        drop(_guard);
        Ok(Control {
            rt,
            term,
            int,
            hup,
            changes,
            _watch: watch,
            source,
        })
    }

    /// Serves until SIGTERM/SIGINT, then drains. Returns when every worker has exited.
    pub fn run(self, running: Running) -> std::io::Result<()> {
        let Control {
            rt,
            mut term,
            mut int,
            mut hup,
            mut changes,
            _watch,
            source,
        } = self;
        rt.block_on(async move {
            let mut last = source.as_ref().map(|s| s.loaded.clone());
            // The file may have changed between loading it and watching it.
            if let Some(s) = &source {
                let now = input::read_file(&s.path).ok();
                if now.is_some() && now != last {
                    last = now;
                    reload_from(&running, s, "file change");
                }
            }
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: draining"); break }
                    _ = int.recv() => { tracing::info!("SIGINT: draining"); break }
                    _ = hup.recv() => match &source {
                        Some(s) => {
                            last = input::read_file(&s.path).ok();
                            reload_from(&running, s, "SIGHUP");
                        }
                        None => tracing::warn!("SIGHUP: no config file (-c) to reload"),
                    },
                    Some(()) = changes.recv() => {
                        // Editors write in several steps: let them finish.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while changes.try_recv().is_ok() {}
                        if let Some(s) = &source {
                            let now = input::read_file(&s.path).ok();
                            if now.is_some() && now != last {
                                last = now;
                                reload_from(&running, s, "file change");
                            }
                        }
                    }
                }
            }
            tokio::task::spawn_blocking(move || running.drain())
                .await
                .map_err(std::io::Error::other)?;
            tracing::info!("drained; exiting");
            Ok(())
        })
    }
}

fn reload_from(running: &Running, source: &ReloadSource, why: &str) {
    match Config::load(&source.path, &source.overrides) {
        Ok(config) => {
            tracing::info!(trigger = why, "reloading configuration");
            running.reload(config);
        }
        Err(e) => {
            tracing::error!(
                trigger = why,
                "configuration rejected, the current one keeps serving: {e}"
            );
        }
    }
}
