//! The control loop of a running balancer: signals and config reloads.
//!
//! SIGTERM and SIGINT start a graceful drain (stop accepting, finish in-flight requests
//! for up to `timeouts.drain`, then exit 0). SIGHUP, or a change of the config file,
//! reloads: the file is read and validated again with the same command-line overrides;
//! a valid config is swapped in everywhere, an invalid one is logged and the old one
//! keeps serving. SIGUSR2 starts the binary again with the listening sockets handed
//! over ([`super::handover`]); once it serves, this process drains and exits, and if it
//! fails this one keeps serving. Runs on the main thread with its own small runtime;
//! the workers never wait for it. systemd hears of each step ([`super::notify`]).

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use super::Running;
use super::generation::Loader;
use super::handover::{Outcome, Upgrade};
use super::notify;
use crate::config::{Config, Overrides, input, reload};
use crate::discovery::Update;

/// How long a new binary may take to serve before the upgrade is given up.
pub const UPGRADE_WITHIN: Duration = Duration::from_secs(30);

/// What a binary upgrade needs, fixed at start-up.
pub struct Lifecycle {
    /// The binary to start on SIGUSR2: the path this one was started from (resolved
    /// at start, so a binary replaced on disk since is the one that runs).
    pub exe: Option<PathBuf>,
    pub pid_file: Option<super::pidfile::PidFile>,
    /// After an upgrade: tell the old master once serving.
    pub ready: Option<std::os::unix::net::UnixStream>,
}

impl Lifecycle {
    /// This one serves: tell systemd, and the old master after an upgrade.
    pub fn serving(&mut self) {
        notify::ready();
        super::handover::Inherited::say_ready(&mut self.ready);
    }

    /// Starts the new binary with `sockets`; `None` (logged) when it cannot start.
    pub fn start_upgrade(
        &self,
        sockets: &super::listener::Sets,
        admin: Option<&std::net::TcpListener>,
    ) -> Option<Upgrade> {
        let Some(exe) = &self.exe else {
            tracing::error!("SIGUSR2: the path of this binary is unknown; no upgrade");
            return None;
        };
        if sockets.is_empty() {
            tracing::warn!("SIGUSR2 while draining: no upgrade");
            return None;
        }
        if let Some(p) = &self.pid_file {
            p.set_aside();
        }
        tracing::info!(exe = %exe.display(), "SIGUSR2: starting the new binary");
        match Upgrade::start(exe, sockets, admin) {
            Ok(u) => {
                tracing::info!(
                    pid = u.child.id(),
                    "new binary started; waiting for it to serve"
                );
                Some(u)
            }
            Err(e) => {
                tracing::error!(
                    "upgrade failed, this one keeps serving: cannot start {}: {e}",
                    exe.display()
                );
                if let Some(p) = &self.pid_file {
                    p.restore();
                }
                None
            }
        }
    }

    /// The new binary serves (true: drain now), or it failed (logged; keep serving).
    pub fn upgrade_ended(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Ready(pid) => {
                tracing::info!(pid, "upgrade: the new binary serves; draining");
                notify::main_pid(pid);
                true
            }
            Outcome::Failed(why) => {
                tracing::error!("upgrade failed, this one keeps serving: {why}");
                if let Some(p) = &self.pid_file {
                    p.restore();
                }
                false
            }
        }
    }
}

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
    usr1: Signal,
    usr2: Signal,
    changes: mpsc::UnboundedReceiver<()>,
    _watch: Option<reload::FileWatch>,
    source: Option<ReloadSource>,
    /// Builds each generation (after [`Control::first_generation`]).
    loader: Option<(Loader, mpsc::UnboundedReceiver<Update>)>,
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
        let usr1 = signal(SignalKind::user_defined1())?;
        let usr2 = signal(SignalKind::user_defined2())?;
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
            usr1,
            usr2,
            changes,
            _watch: watch,
            source,
            loader: None,
        })
    }

    /// The first generation's config: `config` with what each discovery source finds
    /// first (looked up here, before any worker starts).
    pub fn first_generation(&mut self, config: Config) -> Config {
        let (path, overrides, text) = match &self.source {
            Some(s) => (
                Some(s.path.clone()),
                s.overrides.clone(),
                Some(s.loaded.clone()),
            ),
            None => (None, Overrides::default(), None),
        };
        let (loader, config, rx) = Loader::start(config, path, overrides, text);
        self.loader = Some((loader, rx));
        config
    }

    /// Serves until SIGTERM/SIGINT (or a binary upgrade that took over), then drains.
    /// Returns when every worker has exited.
    pub fn run(self, running: Running, mut life: Lifecycle) -> std::io::Result<()> {
        let Control {
            rt,
            mut term,
            mut int,
            mut hup,
            mut usr1,
            mut usr2,
            mut changes,
            _watch,
            source,
            loader,
        } = self;
        let (mut loader, mut discovered) = match loader {
            Some(l) => l,
            None => {
                let config = (*running.snapshot().config).clone();
                let (l, _, rx) = Loader::start(config, None, Overrides::default(), None);
                (l, rx)
            }
        };
        if !running.wait_serving(Duration::from_secs(10)) {
            tracing::warn!("workers are slow to start accepting");
        }
        life.serving();
        rt.block_on(async move {
            loader.watch();
            let mut upgrading: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Outcome>>>> =
                None;
            let mut last = source.as_ref().map(|s| s.loaded.clone());
            // The file may have changed between loading it and watching it.
            if let Some(s) = &source {
                let now = input::read_file(&s.path).ok();
                if now.is_some() && now != last {
                    last = now;
                    reload_from(&running, &mut loader, s, "file change");
                }
            }
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: draining"); break }
                    _ = int.recv() => { tracing::info!("SIGINT: draining"); break }
                    _ = usr1.recv() => crate::logging::reopen(),
                    _ = usr2.recv() => {
                        if upgrading.is_some() {
                            tracing::warn!("SIGUSR2: an upgrade is already under way");
                        } else {
                            let (sockets, admin) = running.sockets();
                            upgrading = life
                                .start_upgrade(sockets, admin)
                                .map(|u| Box::pin(u.wait(UPGRADE_WITHIN)) as _);
                        }
                    }
                    outcome = async { upgrading.as_mut().expect("guarded").await }, if upgrading.is_some() => {
                        upgrading = None;
                        if life.upgrade_ended(outcome) {
                            break;
                        }
                    }
                    _ = hup.recv() => match &source {
                        Some(s) => {
                            last = input::read_file(&s.path).ok();
                            reload_from(&running, &mut loader, s, "SIGHUP");
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
                                reload_from(&running, &mut loader, s, "file change");
                            }
                        }
                    }
                    Some(u) = discovered.recv() => {
                        if let Some(config) = loader.discovered(&u, running.region()) {
                            running.reload(config);
                        }
                    }
                }
            }
            notify::stopping();
            tokio::task::spawn_blocking(move || running.drain())
                .await
                .map_err(std::io::Error::other)?;
            tracing::info!("drained; exiting");
            Ok(())
        })
    }
}

fn reload_from(running: &Running, loader: &mut Loader, source: &ReloadSource, why: &str) {
    let Ok(bytes) = input::read_file(&source.path) else {
        return;
    };
    match loader.reload(&running.snapshot().config, bytes) {
        Ok(config) => {
            tracing::info!(trigger = why, "reloading configuration");
            notify::reloading();
            running.reload(config);
            notify::ready();
        }
        Err(e) => {
            tracing::error!(
                trigger = why,
                "configuration rejected, the current one keeps serving: {e}"
            );
        }
    }
}
