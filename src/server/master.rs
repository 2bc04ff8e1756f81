//! Process mode: a master that forks workers and a prober, watches and replaces them.
//!
//! The master forks everything before it creates any runtime or thread: N workers,
//! each pinned to a CPU (worker i -> CPU i mod ncpu) and serving its own SO_REUSEPORT
//! listener with the same `worker::run` as thread mode, and one prober process. The
//! master keeps every listening socket open itself: a dead worker's socket stays in
//! the group with its queue, and the replacement serves that same socket, so a death
//! loses only the connections the worker had accepted. Backend
//! health lives in the shared [`Region`] mapped before the forks, so probes run once per
//! backend and every worker sees every transition. The master serves no traffic: it
//! reaps children (SIGCHLD + `waitpid`), replaces a dead one at once (backing off,
//! up to 10 s, when one keeps dying within a second of starting), and turns signals
//! into commands on each child's control socket: SIGTERM/SIGINT -> `drain`, SIGHUP, a
//! config-file change or a discovery update -> `generation` with the new generation
//! ([`super::generation`]: the master resolves and discovers, never a child). A child whose control
//! socket closes (the master died) drains and exits, so no worker outlives it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::control::{Lifecycle, ReloadSource, UPGRADE_WITHIN};
use super::generation::{Loader, Message};
use super::handover::Outcome;
use super::signals::{self, SignalFd, Signals};
use super::{RunState, Snapshot, worker};
use crate::config::{Config, Overrides, input, reload};
use crate::health::Region;

/// What a child process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Role {
    Worker(usize),
    Prober,
}

struct Child {
    pid: libc::pid_t,
    /// Dropping it tells the child the master is done with it.
    control: Option<UnixStream>,
    started: Instant,
}

/// Everything a child needs, fixed at fork time.
struct Plan {
    region: &'static Region,
    config: Arc<Config>,
    generation: u64,
    path: Option<PathBuf>,
    overrides: Overrides,
    /// The admin listener, kept by the master so a replacement prober can serve it.
    admin: Option<TcpListener>,
    /// Each worker's listening socket, kept by the master: a replacement serves the
    /// same socket, so connections queued on it while a worker was dead are not lost.
    /// Emptied when the drain starts (nobody would accept what queues after that).
    listeners: super::listener::Sets,
    /// The master's signalfd (closed in children).
    signal_fd: RawFd,
    /// After an upgrade, until serving: the socket to the old master (closed in
    /// children, so that the old master sees it close if this one dies).
    ready_fd: Option<RawFd>,
}

/// Runs the master until SIGTERM/SIGINT and every child has drained.
pub fn run(
    config: Config,
    reload_from: Option<ReloadSource>,
    sockets: super::Sockets,
    mut life: Lifecycle,
    // Made before the sockets were bound: the master's signals wait in it.
    sigfd: SignalFd,
) -> std::io::Result<()> {
    let region = Region::new()?;
    let (path, overrides, loaded) = match reload_from {
        Some(s) => (Some(s.path), s.overrides, Some(s.loaded)),
        None => (None, Overrides::default(), None),
    };
    // Discovery's first lookups, before any fork (they run in a runtime of their own
    // that is gone when this returns).
    let (mut loader, config, discovered) =
        Loader::start(config, path.clone(), overrides.clone(), loaded);
    let super::Sockets {
        listeners, admin, ..
    } = sockets;
    let mut plan = Plan {
        region,
        config: Arc::new(config),
        generation: 0,
        path,
        overrides,
        admin,
        listeners,
        signal_fd: sigfd.raw(),
        ready_fd: life.ready.as_ref().map(|r| r.as_raw_fd()),
    };
    let mut children: HashMap<Role, Child> = HashMap::new();
    // Fork everything first: no runtime, no thread exists yet in this process.
    for i in 0..plan.listeners.len() {
        let c = spawn(Role::Worker(i), &plan, &children)?;
        children.insert(Role::Worker(i), c);
    }
    let c = spawn(Role::Prober, &plan, &children)?;
    children.insert(Role::Prober, c);
    tracing::info!(
        listen = ?plan.config.listen_addrs(),
        workers = plan.config.workers,
        strategy = plan.config.strategy.name(),
        backends = plan.config.backends.len(),
        "switchyard serving (process mode)"
    );

    // The loop waits inside the runtime, but forks outside it: a child forked from
    // within a runtime would inherit its context and could not start its own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut ev = rt.block_on(async { Events::new(sigfd, plan.path.as_deref(), discovered) })?;
    {
        let _enter = rt.enter();
        loader.watch();
    }
    // The file may have changed between loading it and watching it (an edit landing
    // while the workers started would otherwise wait for the next one).
    if plan.path.is_some() {
        reload_all(&mut plan, &mut children, &mut loader, "file change", false);
    }
    // Until every worker accepts: then systemd (and an old master) hear of it.
    let mut starting = true;
    let mut fast_exits: HashMap<Role, u32> = HashMap::new();
    let mut due: Vec<(Instant, Role)> = Vec::new();
    let mut draining: Option<Instant> = None;
    loop {
        if draining.is_some() && children.is_empty() {
            break;
        }
        if draining.is_some() && !children.keys().any(|r| matches!(r, Role::Worker(_))) {
            // Workers are gone: the prober (and /healthz, answering 503) may stop too.
            if let Some(p) = children.get_mut(&Role::Prober) {
                p.control = None;
            }
        }
        if starting && plan.region.serving(plan.listeners.len()) {
            starting = false;
            life.serving();
            // Closed now: its number may be reused, and must not be closed in children.
            plan.ready_fd = None;
        }
        let soon = starting.then(|| Instant::now() + Duration::from_millis(5));
        let next_due = due.iter().map(|(t, _)| *t).chain(soon).min();
        match rt.block_on(ev.next(draining, next_due)) {
            Event::Drain(why) => {
                if draining.is_none() {
                    draining = Some(start_drain(&mut children, &plan, why));
                    // New connections now go to sockets nobody will close under them:
                    // the workers' copies are closed as they stop accepting.
                    plan.listeners.clear();
                }
            }
            Event::Reload(why, force) => {
                let _enter = rt.enter();
                reload_all(&mut plan, &mut children, &mut loader, why, force)
            }
            Event::Reopen => {
                crate::logging::reopen();
                for control in children.values_mut().filter_map(|c| c.control.as_mut()) {
                    let _ = writeln!(control, "reopen 0");
                }
            }
            Event::Discovered(u) => {
                if let Some(config) = loader.discovered(&u, plan.region) {
                    publish(&mut plan, &mut children, &loader, config, "discovery");
                }
            }
            Event::Upgrade => {
                if ev.upgrading.is_some() {
                    tracing::warn!("SIGUSR2: an upgrade is already under way");
                } else if draining.is_none() {
                    let _enter = rt.enter();
                    ev.upgrading = life
                        .start_upgrade(&plan.listeners, plan.admin.as_ref())
                        .map(|u| Box::pin(u.wait(UPGRADE_WITHIN)) as _);
                }
            }
            Event::Upgraded(outcome) => {
                if life.upgrade_ended(outcome) && draining.is_none() {
                    draining = Some(start_drain(&mut children, &plan, "upgrade"));
                    plan.listeners.clear();
                    // The admin socket is the new master's now.
                    plan.admin = None;
                }
            }
            Event::ChildExited => {
                for (role, lived) in reap(&mut children, plan.region) {
                    if draining.is_some() {
                        continue;
                    }
                    let n = fast_exits.entry(role).or_default();
                    *n = if lived < Duration::from_secs(1) {
                        *n + 1
                    } else {
                        0
                    };
                    let delay = match *n {
                        0 | 1 => Duration::ZERO,
                        k => Duration::from_millis(100 << (k - 2).min(7))
                            .min(Duration::from_secs(10)),
                    };
                    if delay > Duration::ZERO {
                        tracing::warn!(
                            ?role,
                            ?delay,
                            "child keeps dying: backing off before replacing it"
                        );
                    }
                    due.push((Instant::now() + delay, role));
                }
            }
            Event::Tick => {}
            Event::DrainTimeout => {
                for (role, c) in &children {
                    tracing::warn!(
                        ?role,
                        pid = c.pid,
                        "still running after the drain timeout: killing it"
                    );
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(c.pid, libc::SIGKILL) };
                }
                draining = Some(Instant::now() + Duration::from_secs(3600));
            }
        }
        // Replacements whose time has come, forked outside the runtime.
        let now = Instant::now();
        let (ready, later): (Vec<_>, Vec<_>) = due.drain(..).partition(|(t, _)| *t <= now);
        due = later;
        for (_, role) in ready {
            if draining.is_some() || children.contains_key(&role) {
                continue;
            }
            match spawn(role, &plan, &children) {
                Ok(c) => {
                    tracing::info!(?role, pid = c.pid, "replacement started");
                    children.insert(role, c);
                }
                Err(e) => {
                    tracing::error!(?role, "cannot start a replacement: {e}");
                    due.push((now + Duration::from_secs(1), role));
                }
            }
        }
    }
    tracing::info!("all children drained; exiting");
    Ok(())
}

/// What woke the master.
enum Event {
    Drain(&'static str),
    Reload(&'static str, bool),
    /// A discovery source found something (or failed).
    Discovered(crate::discovery::Update),
    /// SIGUSR2.
    Upgrade,
    /// SIGUSR1: reopen the log file, here and in every child.
    Reopen,
    /// The new binary serves, or failed to.
    Upgraded(Outcome),
    ChildExited,
    /// A replacement may be due.
    Tick,
    DrainTimeout,
}

/// The master's event sources (created inside its runtime).
struct Events {
    signals: Signals,
    changes: mpsc::UnboundedReceiver<()>,
    _watch: Option<reload::FileWatch>,
    discovered: mpsc::UnboundedReceiver<crate::discovery::Update>,
    /// A new binary starting (SIGUSR2), until it serves or fails.
    upgrading: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Outcome>>>>,
}

impl Events {
    fn new(
        signals: SignalFd,
        path: Option<&std::path::Path>,
        discovered: mpsc::UnboundedReceiver<crate::discovery::Update>,
    ) -> std::io::Result<Events> {
        let (tx, changes) = mpsc::unbounded_channel();
        let watch = match path {
            Some(p) => match reload::watch(p, tx) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(path = %p.display(), "cannot watch the config file ({e}); reload with SIGHUP");
                    None
                }
            },
            None => None,
        };
        Ok(Events {
            signals: signals.into_async()?,
            changes,
            _watch: watch,
            discovered,
            upgrading: None,
        })
    }

    async fn next(&mut self, draining: Option<Instant>, due: Option<Instant>) -> Event {
        let far = Instant::now() + Duration::from_secs(3600);
        let kill_at = draining.map(|d| d + Duration::from_secs(2)).unwrap_or(far);
        tokio::select! {
            sig = self.signals.recv() => match sig {
                Ok(libc::SIGTERM) => Event::Drain("SIGTERM"),
                Ok(libc::SIGINT) => Event::Drain("SIGINT"),
                Ok(libc::SIGHUP) => Event::Reload("SIGHUP", true),
                Ok(libc::SIGUSR2) => Event::Upgrade,
                Ok(libc::SIGUSR1) => Event::Reopen,
                Ok(_) => Event::ChildExited,
                Err(e) => {
                    tracing::error!("reading signals failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Event::ChildExited
                }
            },
            Some(()) = self.changes.recv() => {
                // Editors write in several steps: let them finish.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while self.changes.try_recv().is_ok() {}
                Event::Reload("file change", false)
            }
            Some(u) = self.discovered.recv() => Event::Discovered(u),
            outcome = async { self.upgrading.as_mut().expect("guarded").await }, if self.upgrading.is_some() => {
                self.upgrading = None;
                Event::Upgraded(outcome)
            }
            _ = tokio::time::sleep_until(due.unwrap_or(far)) => Event::Tick,
            _ = tokio::time::sleep_until(kill_at), if draining.is_some() => Event::DrainTimeout,
            // A safety net: reap even if a SIGCHLD was somehow missed.
            _ = tokio::time::sleep(Duration::from_secs(1)) => Event::ChildExited,
        }
    }
}

fn start_drain(children: &mut HashMap<Role, Child>, plan: &Plan, why: &str) -> Instant {
    tracing::info!("{why}: draining");
    super::notify::stopping();
    plan.region
        .global()
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let drain = plan.config.timeouts.drain;
    for (role, c) in children.iter_mut() {
        if let (Role::Worker(_), Some(control)) = (role, c.control.as_mut()) {
            let _ = writeln!(control, "drain {}", drain.as_millis());
        }
    }
    Instant::now() + drain
}

fn reload_all(
    plan: &mut Plan,
    children: &mut HashMap<Role, Child>,
    loader: &mut Loader,
    why: &str,
    force: bool,
) {
    let Some(path) = plan.path.clone() else {
        tracing::warn!("{why}: no config file (-c) to reload");
        return;
    };
    let Ok(text) = input::read_file(&path) else {
        return;
    };
    if !force && loader.loaded() == Some(&text[..]) {
        return;
    }
    match loader.reload(&plan.config, text) {
        Ok(config) => {
            crate::config::warn_insecure(Some(&plan.config), &config);
            publish(plan, children, loader, config, why);
        }
        Err(e) => tracing::error!(
            trigger = why,
            "configuration rejected, the current one keeps serving: {e}"
        ),
    }
}

/// Makes `config` the next generation and sends it to every child.
fn publish(
    plan: &mut Plan,
    children: &mut HashMap<Role, Child>,
    loader: &Loader,
    config: Config,
    why: &str,
) {
    let message = loader.message(&config);
    let changed = crate::config::diff::describe(&plan.config, &config);
    plan.config = Arc::new(config);
    plan.generation += 1;
    tracing::info!(
        trigger = why,
        generation = plan.generation,
        backends = plan.config.backends.len(),
        changed = %changed,
        "configuration reloaded"
    );
    super::notify::reloading();
    for control in children.values_mut().filter_map(|c| c.control.as_mut()) {
        let _ = writeln!(control, "generation {}", message.len());
        let _ = control.write_all(&message);
    }
    super::notify::ready();
}

/// Reaps every exited child; returns the roles that died and how long they lived.
/// Only our own children are waited for (not `waitpid(-1)`): a new binary started by
/// SIGUSR2 is waited for by its own handle, which needs its exit status.
fn reap(children: &mut HashMap<Role, Child>, region: &Region) -> Vec<(Role, Duration)> {
    let mut dead = Vec::new();
    let roles: Vec<(Role, libc::pid_t)> = children.iter().map(|(r, c)| (*r, c.pid)).collect();
    for (role, pid) in roles {
        let mut status = 0;
        // SAFETY: reaping our own child, non-blocking.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
            continue;
        }
        if let Some(c) = children.remove(&role) {
            let how = if libc::WIFSIGNALED(status) {
                format!("killed by signal {}", libc::WTERMSIG(status))
            } else {
                format!("exited with status {}", libc::WEXITSTATUS(status))
            };
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                tracing::info!(?role, pid, "child {how}");
            } else {
                tracing::warn!(?role, pid, "child {how}");
            }
            if let Role::Worker(w) = role {
                // Its in-flight requests and connections died with it.
                region.settle(w);
            }
            dead.push((role, c.started.elapsed()));
        }
    }
    dead
}

/// Forks a child for `role` (worker `i` serves the master's sockets `listeners[i]`,
/// one per `listen:` entry). Returns in the master only.
fn spawn(role: Role, plan: &Plan, others: &HashMap<Role, Child>) -> std::io::Result<Child> {
    let (parent_end, child_end) = UnixStream::pair()?;
    // SAFETY: the child only resets signal dispositions, closes descriptors, and then
    // runs its own single-threaded code path to `_exit`, never returning here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(parent_end);
        // This worker's own copies of its sockets; every other listener is closed below.
        let listeners = match role {
            Role::Worker(i) => plan.listeners.get(i).and_then(|set| {
                set.iter()
                    .map(TcpListener::try_clone)
                    .collect::<std::io::Result<Vec<_>>>()
                    .ok()
            }),
            Role::Prober => None,
        };
        // Descriptors of the master and of other children must not live on here: a
        // listener kept open by the wrong process would keep receiving connections
        // nobody accepts, a control socket would hide the master's death.
        let mut close: Vec<RawFd> = plan
            .listeners
            .iter()
            .flatten()
            .map(|l| l.as_raw_fd())
            .collect();
        close.extend(
            others
                .values()
                .filter_map(|c| c.control.as_ref())
                .map(|c| c.as_raw_fd()),
        );
        close.push(plan.signal_fd);
        close.extend(plan.ready_fd);
        if role != Role::Prober {
            close.extend(plan.admin.as_ref().map(|a| a.as_raw_fd()));
        }
        for fd in close {
            // SAFETY: closing descriptors this copy of the process must not keep; their
            // owning objects are never dropped here (the child leaves with `_exit`).
            unsafe { libc::close(fd) };
        }
        signals::reset_in_child();
        // Never unwind into the master's frames (their descriptors are closed here).
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            child_main(role, listeners, child_end, plan)
        }))
        .unwrap_or(101);
        // SAFETY: leave without running the master's destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    // A stopped child must not freeze the master: writes give up after a second.
    let _ = parent_end.set_write_timeout(Some(Duration::from_secs(1)));
    Ok(Child {
        pid,
        control: Some(parent_end),
        started: Instant::now(),
    })
}

fn set_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

fn pin_to_cpu(i: usize) {
    // SAFETY: cpu_set_t values are plain bitmaps; each call gets its size and a valid
    // pointer, for this process (pid 0).
    unsafe {
        // Worker i goes to the i-th CPU this process may use (cpusets, taskset).
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if cpus.is_empty() {
            return;
        }
        let cpu = cpus[i % cpus.len()];
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size, &set) != 0 {
            tracing::warn!(cpu, "could not pin the worker to its CPU");
        }
    }
}

/// The body of a child process; returns its exit code.
fn child_main(
    role: Role,
    listeners: Option<Vec<TcpListener>>,
    control: UnixStream,
    plan: &Plan,
) -> i32 {
    let first = Snapshot::build(plan.region, Arc::clone(&plan.config), plan.generation, None);
    let snapshot = match first {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(?role, "cannot start: {e}");
            return 1;
        }
    };
    let (snapshots, snapshot_rx) = watch::channel(snapshot);
    let (state, state_rx) = watch::channel(RunState::Serving);
    let region = plan.region;
    let path = plan.path.clone();
    let overrides = plan.overrides.clone();
    let reader = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || read_commands(control, snapshots, state, region, path, overrides));
    if let Err(e) = reader {
        tracing::error!("cannot start the control reader: {e}");
        return 1;
    }
    let result = match role {
        Role::Worker(i) => {
            set_name(&format!("switchyard-w{i}"));
            pin_to_cpu(i);
            let Some(l) = listeners else { return 1 };
            worker::run(i, l, snapshot_rx, state_rx)
        }
        Role::Prober => {
            set_name("switchyard-prb");
            let admin = plan.admin.as_ref().and_then(|l| l.try_clone().ok());
            prober_main(snapshot_rx, state_rx, admin)
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(?role, "child failed: {e}");
            1
        }
    }
}

fn prober_main(
    snapshots: watch::Receiver<Arc<Snapshot>>,
    mut state: watch::Receiver<RunState>,
    admin: Option<TcpListener>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    rt.block_on(async move {
        let sidecar = tokio::spawn(super::sidecar::serve(snapshots, admin, stop_rx));
        while state.changed().await.is_ok() {
            if matches!(*state.borrow(), RunState::Draining { .. }) {
                break;
            }
        }
        let _ = stop_tx.send(true);
        let _ = sidecar.await;
    });
    Ok(())
}

/// Reads `drain MS`, `reopen 0` (the log file) and `generation LEN` + LEN bytes
/// ([`Message`]) from the master. EOF (the master is
/// gone) drains too.
fn read_commands(
    control: UnixStream,
    snapshots: watch::Sender<Arc<Snapshot>>,
    state: watch::Sender<RunState>,
    region: &'static Region,
    path: Option<PathBuf>,
    overrides: Overrides,
) {
    let mut r = BufReader::new(control);
    let mut line = String::new();
    let drain_now = |ms: u64| {
        let deadline = Instant::now() + Duration::from_millis(ms);
        state.send_replace(RunState::Draining { deadline });
    };
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let ms = snapshots.borrow().config.timeouts.drain.as_millis() as u64;
                return drain_now(ms);
            }
            Ok(_) => {}
        }
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|n| n.parse::<u64>().ok()),
        ) {
            (Some("drain"), Some(ms)) => return drain_now(ms),
            (Some("reopen"), _) => crate::logging::reopen(),
            (Some("generation"), Some(len)) => {
                let mut message = vec![0u8; len as usize];
                if r.read_exact(&mut message).is_err() {
                    continue;
                }
                let Some(path) = &path else { continue };
                let old = Arc::clone(&snapshots.borrow());
                match Message::build(&message, path, &overrides, &old.config) {
                    Ok(config) => {
                        let next = Snapshot::build(
                            region,
                            Arc::new(config),
                            old.generation + 1,
                            Some(&old),
                        );
                        match next {
                            Ok(next) => {
                                snapshots.send_replace(Arc::new(next));
                            }
                            Err(e) => tracing::error!("generation refused by this child: {e}"),
                        }
                    }
                    Err(e) => tracing::error!("generation refused by this child: {e}"),
                }
            }
            _ => tracing::warn!(command = line.trim(), "unknown control command"),
        }
    }
}
