//! What a worker knows of its client connections, shared by the accept loop, the
//! HTTP/1 connection tasks and the lot where idle ones wait.
//!
//! Kept apart from `worker` so that `h1` and `lot` depend on it and not on each other
//! or on the worker: the worker wires them together (the lot is handed the function
//! that resumes a connection).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::conn_io::{ClientStream, tls_has_plaintext};
use super::lot::{Drain, Lot, Parked};
use crate::health::shared::Ledger;
use crate::proxy::Proxy;

/// The worker's current handler, swapped on reload.
pub(super) type Current = Rc<RefCell<Rc<Proxy>>>;

/// Open client connections of this worker, and a way to tell them to wind down.
#[derive(Default)]
pub(super) struct Connections {
    pub(super) open: Cell<usize>,
    pub(super) draining: Cell<bool>,
    /// Wakes connection tasks when draining starts.
    pub(super) drain: Notify,
    /// While draining: until when an idle connection may still send one more request
    /// (answered with `Connection: close`). Closing it at once would race a request
    /// already on its way, which the client would see as an error.
    pub(super) linger_until: Cell<Option<tokio::time::Instant>>,
    /// Wakes the worker when the last connection closes.
    pub(super) empty: Notify,
}

/// Counts a connection open (per worker and in the shared gauge) until dropped.
pub(super) struct OpenGuard(
    pub(super) Rc<Connections>,
    pub(super) &'static crate::metrics::GlobalStats,
    pub(super) &'static Ledger,
    /// The client's address hash, when it is counted for `connections_per_client`.
    pub(super) Option<u64>,
);

impl OpenGuard {
    /// Counts the connection parked (`by` = 1) or no longer parked (`by` = -1), in
    /// the shared gauge and this worker's ledger (which the master settles if the
    /// worker dies).
    pub(super) fn count_parked(&self, by: i64) {
        self.1.connections_parked.fetch_add(by, Relaxed);
        if by > 0 {
            self.2.parked.fetch_add(1, Relaxed);
        } else {
            self.2.parked.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.1.connections_open.fetch_sub(1, Relaxed);
        self.2.conns.fetch_sub(1, Relaxed);
        if let Some(h) = self.3 {
            Proxy::release_client(self.2, h);
        }
        let c = &self.0;
        c.open.set(c.open.get() - 1);
        if c.open.get() == 0 {
            c.empty.notify_waiters();
        }
    }
}

/// What a client connection's task knows of it.
pub(super) struct ClientCtx {
    /// The client's address (the peer's, or the one its PROXY header named) and the
    /// local address it reached (the listener's when no backend's header needs it).
    pub(super) origin: crate::proxy_protocol::Origin,
    pub(super) https: bool,
    /// The index of the listener that took it (`config.listeners`): its options
    /// (e.g. `redirect_https`) are read from the current config per request.
    pub(super) listener: usize,
    pub(super) current: Current,
    /// Counts the connection open until the last task holding it ends.
    pub(super) guard: Rc<OpenGuard>,
    /// Where it waits while idle.
    pub(super) lot: Rc<Lot<Idle>>,
}

impl ClientCtx {
    pub(super) fn conns(&self) -> &Connections {
        &self.guard.0
    }
}

/// An idle HTTP/1 connection, as it waits in the lot.
pub(super) struct Idle {
    pub(super) io: ClientStream,
    pub(super) ctx: ClientCtx,
}

impl Parked for Idle {
    fn socket(&self) -> &TcpStream {
        match &self.io {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => s.get_ref().0,
        }
    }

    fn has_buffered(&mut self) -> bool {
        tls_has_plaintext(&mut self.io)
    }

    fn draining(&self) -> bool {
        self.ctx.conns().draining.get()
    }

    fn idle_timeout(&self) -> Duration {
        self.ctx.current.borrow().timeouts().client_idle
    }

    fn count(&self, parked: bool) {
        self.ctx.guard.count_parked(if parked { 1 } else { -1 });
    }
}

impl Drain for Connections {
    fn linger_until(&self) -> Option<tokio::time::Instant> {
        self.linger_until.get()
    }

    fn signal(&self) -> &Notify {
        &self.drain
    }
}
