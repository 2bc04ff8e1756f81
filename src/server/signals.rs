//! The master's signals, read from a `signalfd` it owns.
//!
//! The master forks children after its runtime exists (replacements), so it must not
//! use tokio's signal handling: that installs process-wide handlers writing to a global
//! pipe, and every runtime a child builds would register the inherited pipe too and
//! steal the master's signals. Instead the master blocks TERM, INT, HUP and CHLD before
//! it forks anything and reads them from a signalfd (no handler runs at all); children
//! close the descriptor and unblock the signals. A signal that arrives during start-up
//! waits in the signalfd until the event loop reads it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

const SIGNALS: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGCHLD,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The blocked signals' descriptor, before the runtime exists.
pub struct SignalFd(OwnedFd);

impl SignalFd {
    /// Blocks the master's signals and opens a non-blocking signalfd for them.
    pub fn new() -> io::Result<SignalFd> {
        // SAFETY: plain libc calls on a local, initialised sigset.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in SIGNALS {
                libc::sigaddset(&mut set, s);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd(OwnedFd::from_raw_fd(fd)))
        }
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Registers the descriptor with the current runtime.
    pub fn into_async(self) -> io::Result<Signals> {
        // SAFETY: an `OwnedFd` keeps its descriptor open and unchanged until dropped,
        // and the `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register_with_interest(self.0, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Signals {
            fd,
            pending: VecDeque::new(),
        })
    }
}

/// Signals as an async stream (inside the master's runtime).
pub struct Signals {
    fd: AsyncFd<OwnedFd>,
    pending: VecDeque<libc::c_int>,
}

impl Signals {
    /// The next signal number.
    pub async fn recv(&mut self) -> io::Result<libc::c_int> {
        loop {
            if let Some(s) = self.pending.pop_front() {
                return Ok(s);
            }
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                let size = std::mem::size_of::<libc::signalfd_siginfo>();
                // SAFETY: reading one siginfo record into a buffer of exactly its size.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        (&mut info as *mut libc::signalfd_siginfo).cast(),
                        size,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(info.ssi_signo as libc::c_int)
                }
            });
            match read {
                Ok(Ok(sig)) => self.pending.push_back(sig),
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

/// In a freshly forked child: no inherited mask, and signals sent to the whole process
/// group (Ctrl-C, systemd stopping the unit) do not kill it: it drains when the master
/// tells it to, over its control socket.
pub fn reset_in_child() {
    // SAFETY: setting dispositions and the mask in a single-threaded child.
    unsafe {
        // SIGUSR1 too: the master relays a log reopen over the control socket.
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
            libc::signal(s, libc::SIG_IGN);
        }
        for s in [libc::SIGCHLD, libc::SIGUSR2] {
            libc::signal(s, libc::SIG_DFL);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}
