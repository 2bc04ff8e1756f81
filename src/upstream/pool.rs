//! Idle keep-alive connections to one backend, for one worker.
//!
//! A stack (LIFO, as the seed's pool): the most recently used connection is reused
//! first, so a few hot connections carry the load and the rest age out. The stack is
//! bounded (`pool.max_idle_per_backend`; past it the oldest idle connection closes)
//! and entries older than `pool.idle_timeout` are dropped when met and by a periodic
//! sweep. A connection is checked in only after its response body ended cleanly and
//! only if it is still open; a connection that failed is dropped, never pooled, so a
//! broken connection is never handed out twice. Per worker: a `RefCell`, no lock.
//!
//! A connection that began with a PROXY header speaks for the client it names: it
//! is handed out again only to requests from the same client address (to the same
//! local address), as HAProxy keys such connections.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::h1::BackendConn;
use crate::proxy_protocol::Origin;

struct IdleOwn {
    conn: BackendConn,
    since: Instant,
}

/// One backend's idle connections in one worker.
pub struct Pool {
    /// Idle HTTP/1.1 connections, newest last.
    own: RefCell<VecDeque<IdleOwn>>,
    /// The backend's shared HTTP/2 connection, once one was negotiated.
    h2: RefCell<Option<super::H2Sender>>,
    /// The backend speaks HTTP/2 (h2c, or a dial negotiated it): new connections are
    /// dialed one at a time, and requests wait for it rather than dial their own.
    h2_expected: std::cell::Cell<bool>,
    h2_dialing: std::cell::Cell<bool>,
    h2_ready: tokio::sync::Notify,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            own: RefCell::new(VecDeque::new()),
            h2: RefCell::new(None),
            h2_expected: std::cell::Cell::new(false),
            h2_dialing: std::cell::Cell::new(false),
            h2_ready: tokio::sync::Notify::new(),
            max_idle,
            idle_timeout,
        }
    }

    /// A handle on the shared HTTP/2 connection, if there is a live one.
    pub fn h2(&self) -> Option<super::H2Sender> {
        let mut h2 = self.h2.borrow_mut();
        if h2.as_ref().is_some_and(|s| s.is_closed()) {
            *h2 = None;
        }
        h2.clone()
    }

    /// Makes `sender` the backend's shared HTTP/2 connection.
    pub fn set_h2(&self, sender: super::H2Sender) {
        *self.h2.borrow_mut() = Some(sender);
        self.h2_expected.set(true);
    }

    /// Waits for an HTTP/2 dial in progress, if the backend speaks HTTP/2 and one is;
    /// then the shared connection, if it came up.
    pub async fn h2_after_dial(&self, h2c: bool) -> Option<super::H2Sender> {
        if (h2c || self.h2_expected.get()) && self.h2_dialing.get() {
            self.h2_ready.notified().await;
        }
        self.h2()
    }

    /// Marks an HTTP/2 dial in progress (when the backend speaks HTTP/2); returns
    /// whether this caller must call [`Pool::h2_dial_done`].
    pub fn h2_dial_start(&self, h2c: bool) -> bool {
        let mine = (h2c || self.h2_expected.get()) && !self.h2_dialing.get();
        if mine {
            self.h2_dialing.set(true);
        }
        mine
    }

    pub fn h2_dial_done(&self) {
        self.h2_dialing.set(false);
        self.h2_ready.notify_waiters();
    }

    /// The most recently returned connection of our own client that is still open.
    pub fn checkout_own(&self, proxied: Option<&Origin>) -> Option<BackendConn> {
        if let Some(o) = proxied {
            return self.checkout_proxied(o);
        }
        let mut idle = self.own.borrow_mut();
        while let Some(mut entry) = idle.pop_back() {
            if entry.since.elapsed() >= self.idle_timeout {
                idle.clear();
                return None;
            }
            if entry.conn.still_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// The newest live connection whose PROXY header named `o`'s client.
    fn checkout_proxied(&self, o: &Origin) -> Option<BackendConn> {
        let mut idle = self.own.borrow_mut();
        while idle
            .front()
            .is_some_and(|e| e.since.elapsed() >= self.idle_timeout)
        {
            idle.pop_front();
        }
        let same = |p: &Option<Origin>| {
            p.is_some_and(|p| p.client.ip() == o.client.ip() && p.local == o.local)
        };
        while let Some(i) = idle.iter().rposition(|e| same(&e.conn.proxied)) {
            let mut entry = idle.remove(i)?;
            if entry.conn.still_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection whose exchange ended cleanly (nothing pending on it).
    pub fn checkin_own(&self, conn: BackendConn) {
        if self.max_idle == 0 || !conn.pending().is_empty() {
            return;
        }
        let mut idle = self.own.borrow_mut();
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(IdleOwn {
            conn,
            since: Instant::now(),
        });
    }

    /// Drops expired and closed connections (run periodically by the worker).
    pub fn sweep(&self) {
        let timeout = self.idle_timeout;
        self.own
            .borrow_mut()
            .retain_mut(|e| e.since.elapsed() < timeout && e.conn.still_open());
    }

    pub fn idle_count(&self) -> usize {
        self.own.borrow().len()
    }
}
