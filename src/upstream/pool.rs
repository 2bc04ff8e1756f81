//! Idle keep-alive connections to one backend, for one worker.
//!
//! A stack (LIFO, as the seed's pool): the most recently used connection is reused
//! first, so a few hot connections carry the load and the rest age out. The stack is
//! bounded (`pool.max_idle_per_backend`; past it the oldest idle connection closes)
//! and entries older than `pool.idle_timeout` are dropped when met and by a periodic
//! sweep. A connection is checked in only after its response body ended cleanly and
//! only if it is still open; a connection that failed is dropped, never pooled, so a
//! broken connection is never handed out twice. Per worker: a `RefCell`, no lock.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::Conn;

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One backend's idle connections in one worker.
pub struct Pool {
    idle: RefCell<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: RefCell::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently returned live connection, if any.
    pub fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        while let Some(entry) = idle.pop_back() {
            if entry.since.elapsed() >= self.idle_timeout {
                // LIFO: everything below is older still.
                idle.clear();
                return None;
            }
            if !entry.conn.sender.is_closed() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection whose exchange completed cleanly.
    pub fn checkin(&self, conn: Conn) {
        if self.max_idle == 0 || conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Drops expired and closed connections (run periodically by the worker).
    pub fn sweep(&self) {
        let mut idle = self.idle.borrow_mut();
        let timeout = self.idle_timeout;
        idle.retain(|e| e.since.elapsed() < timeout && !e.conn.sender.is_closed());
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}
