//! Listening sockets handed over rather than bound: from an old master during a binary
//! upgrade (SIGUSR2), or from systemd (socket activation).
//!
//! A socket that is handed over keeps its accept queue: nothing that connected during
//! the hand-over is refused. Two sources, read once at start-up:
//! - **upgrade:** `SWITCHYARD_FDS=listen:5,6;listen:9,10;admin:7` names the old
//!   master's sockets (one `listen:` group per `listen:` entry, a socket per worker),
//!   inherited across `exec`, and `SWITCHYARD_READY_FD=8` is a socket on which the new
//!   master writes `ready` once its workers accept. The old master then drains and
//!   exits; if `ready` never comes (the binary or its config is bad, or it hangs), the
//!   old one kills it and keeps serving.
//! - **systemd:** `LISTEN_PID` (our pid) and `LISTEN_FDS=n`: descriptors 3..3+n are the
//!   traffic listeners. With one `listen:` entry they all serve it (its address is
//!   then not bound); with several, each socket serves the entry with its address.
//!
//! Sockets are matched to `listen:` entries by address (`Sockets::open`), so an
//! upgrade may reorder, add or remove entries; an entry nothing was handed over for
//! is bound as usual. The variables are removed once read, so nothing started later
//! sees them. When a group has fewer sockets than workers,
//! workers share them (one accept queue for several workers works with any socket; a
//! systemd socket need not have SO_REUSEPORT); extra sockets are closed.

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const FDS: &str = "SWITCHYARD_FDS";
const READY_FD: &str = "SWITCHYARD_READY_FD";

/// Where inherited sockets came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Upgrade,
    Systemd,
}

/// Sockets this process was started with.
#[derive(Debug)]
pub struct Inherited {
    pub source: Source,
    /// Upgrade: one group per `listen:` entry of the old master, in order. Systemd:
    /// one group of every socket it passed.
    pub listeners: Vec<Vec<TcpListener>>,
    pub admin: Option<TcpListener>,
    /// Upgrade only: where to say `ready`.
    pub ready: Option<UnixStream>,
}

impl Inherited {
    /// Reads (and removes) the variables. `Ok(None)`: nothing was handed over.
    pub fn from_env() -> io::Result<Option<Inherited>> {
        let found = if let Some(spec) = std::env::var_os(FDS) {
            let spec = spec.to_string_lossy().into_owned();
            let ready = std::env::var(READY_FD).ok();
            Some(from_upgrade(&spec, ready.as_deref())?)
        } else {
            from_systemd()?
        };
        // SAFETY: called at start-up, before any thread of ours exists.
        unsafe {
            for v in [FDS, READY_FD, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
                std::env::remove_var(v);
            }
        }
        Ok(found)
    }

    /// One listener per worker: the inherited ones, shared round-robin when there
    /// are fewer than `workers`.
    pub fn for_workers(
        listeners: Vec<TcpListener>,
        workers: usize,
    ) -> io::Result<Vec<TcpListener>> {
        let n = listeners.len();
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listener was handed over",
            ));
        }
        let mut out = Vec::with_capacity(workers.max(1));
        for i in 0..workers.max(1) {
            out.push(match listeners.get(i) {
                Some(l) if i < n => l.try_clone()?,
                _ => listeners[i % n].try_clone()?,
            });
        }
        Ok(out)
    }

    /// Tells the old master this one serves (upgrade only; a no-op otherwise).
    pub fn say_ready(ready: &mut Option<UnixStream>) {
        if let Some(mut s) = ready.take() {
            if let Err(e) = s.write_all(b"ready\n") {
                tracing::warn!("cannot tell the old master we serve: {e}");
            }
        }
    }
}

fn from_upgrade(spec: &str, ready: Option<&str>) -> io::Result<Inherited> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{FDS}: {what}"));
    let mut listeners: Vec<Vec<TcpListener>> = Vec::new();
    let mut admin = None;
    for part in spec.split(';').filter(|p| !p.is_empty()) {
        let (role, fds) = part
            .split_once(':')
            .ok_or_else(|| bad("expected ROLE:FD,FD"))?;
        if role == "listen" {
            listeners.push(Vec::new());
        }
        for fd in fds.split(',').filter(|f| !f.is_empty()) {
            let fd: RawFd = fd.parse().map_err(|_| bad("not a descriptor number"))?;
            let l = adopt_listener(fd)?;
            match (role, listeners.last_mut()) {
                ("listen", Some(group)) => group.push(l),
                ("admin", _) => admin = Some(l),
                _ => return Err(bad("unknown role")),
            }
        }
    }

    if listeners.iter().all(Vec::is_empty) {
        return Err(bad("no listen sockets"));
    }
    let ready = match ready {
        Some(fd) => {
            let fd: RawFd = fd.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{READY_FD}: not a number"),
                )
            })?;
            set_cloexec(fd)?;
            // SAFETY: the old master passed this descriptor to us for this purpose, and
            // nothing else in this process owns it.
            Some(unsafe { UnixStream::from_raw_fd(fd) })
        }
        None => None,
    };
    Ok(Inherited {
        source: Source::Upgrade,
        listeners,
        admin,
        ready,
    })
}

fn from_systemd() -> io::Result<Option<Inherited>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let n = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(n)) = (pid, n) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (a wrapper that did not clear them).
        return Ok(None);
    }
    let n: RawFd = n
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "LISTEN_FDS: not a number"))?;
    let listeners = (0..n)
        .map(|i| adopt_listener(3 + i))
        .collect::<io::Result<Vec<_>>>()?;
    if listeners.is_empty() {
        return Ok(None);
    }
    Ok(Some(Inherited {
        source: Source::Systemd,
        listeners: vec![listeners],
        admin: None,
        ready: None,
    }))
}

/// Takes ownership of `fd` after checking it is a listening TCP socket.
fn adopt_listener(fd: RawFd) -> io::Result<TcpListener> {
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `listening`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || listening == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} was handed over but is not a listening socket"),
        ));
    }
    set_cloexec(fd)?;
    // SAFETY: a listening socket handed to this process, owned by nothing else here.
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    l.set_nonblocking(true)?;
    Ok(l)
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; fails cleanly if it is not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new binary starting with our sockets, not yet serving.
pub struct Upgrade {
    pub child: std::process::Child,
    ready: UnixStream,
}

/// How an upgrade ended.
pub enum Outcome {
    /// The new master serves: drain and exit.
    Ready(u32),
    /// It did not come up; the reason is for the log.
    Failed(String),
}

impl Upgrade {
    /// Starts `exe` with our arguments and the sockets named in the environment.
    pub fn start(
        exe: &Path,
        listeners: &super::listener::Sets,
        admin: Option<&TcpListener>,
    ) -> io::Result<Upgrade> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut keep: Vec<RawFd> = Vec::new();
        let entries = listeners.first().map_or(0, Vec::len);
        let mut groups = Vec::with_capacity(entries);
        for i in 0..entries {
            let fds: Vec<RawFd> = listeners
                .iter()
                .filter_map(|set| set.get(i))
                .map(|l| l.as_raw_fd())
                .collect();
            let text: Vec<String> = fds.iter().map(|f| f.to_string()).collect();
            groups.push(format!("listen:{}", text.join(",")));
            keep.extend(fds);
        }
        let mut spec = groups.join(";");
        if let Some(a) = admin {
            spec.push_str(&format!(";admin:{}", a.as_raw_fd()));
            keep.push(a.as_raw_fd());
        }
        keep.push(theirs.as_raw_fd());
        let mut cmd = std::process::Command::new(exe);
        cmd.args(std::env::args_os().skip(1))
            .env(FDS, spec)
            .env(READY_FD, theirs.as_raw_fd().to_string())
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS");
        // SAFETY: between fork and exec only async-signal-safe calls: fcntl to let the
        // named descriptors cross `exec`, and sigprocmask to undo the master's blocked
        // signals (a signal mask survives `exec`).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                for &fd in &keep {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        Ok(Upgrade { child, ready: ours })
    }

    /// Waits for `ready` or failure, up to `within`.
    pub async fn wait(mut self, within: Duration) -> Outcome {
        use tokio::io::AsyncReadExt;
        let pid = self.child.id();
        let ready = self
            .ready
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(self.ready));
        let mut ready = match ready {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("watching the new binary: {e}")),
        };
        let read = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            loop {
                match ready.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        if got.starts_with(b"ready\n") {
                            return true;
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(within, read).await {
            Ok(true) => Outcome::Ready(pid),
            Ok(false) => {
                // It closed the socket without saying ready: it exited, or is exiting.
                let mut status = None;
                for _ in 0..50 {
                    match self.child.try_wait() {
                        Ok(Some(s)) => {
                            status = Some(s.to_string());
                            break;
                        }
                        Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                        // Already reaped by the master's SIGCHLD handling.
                        Err(_) => break,
                    }
                }
                let status = status.unwrap_or_else(|| "exited".to_owned());
                Outcome::Failed(format!(
                    "the new binary (pid {pid}) {status} before serving"
                ))
            }
            Err(_) => {
                // Not ready in time: it must not linger with our sockets.
                let _ = self.child.kill();
                let _ = self.child.wait();
                Outcome::Failed(format!(
                    "the new binary (pid {pid}) was not serving within {within:?}; killed it"
                ))
            }
        }
    }
}
