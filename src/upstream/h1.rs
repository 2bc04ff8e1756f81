//! HTTP/1.1 to a backend, inline: the request's own task holds the connection, writes
//! the head and body, and reads the response, with no connection task and no channel.
//!
//! A [`BackendConn`] owns its socket and read buffer (mini-redis's `Connection`), so
//! "what arrived past the response" is a fact of the connection, not a guess: a
//! connection goes back to the pool only when its response ended exactly at the end
//! of what was read. Before a pooled connection is reused, [`BackendConn::still_open`]
//! looks at the socket's readiness, which the reactor already knows: a connection the
//! backend closed (or wrote to) while idle is dropped, and a quiet one costs no
//! syscall.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect;
use crate::http1::response::{self, ResponseHead};

/// Room kept free in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Most interim (1xx) responses skipped before the real one.
const MAX_INTERIM: usize = 16;

/// One HTTP/1.1 connection to a backend.
pub struct BackendConn {
    pub io: connect::Stream,
    /// Bytes read and not yet used start at `pos`.
    pub buf: Vec<u8>,
    pub pos: usize,
    pub head: ResponseHead,
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum RecvError {
    /// The connection closed (or failed) before a complete head; `any` when some
    /// bytes of a response had come.
    Closed { any: bool, cause: Option<io::Error> },
    /// What came is not a response we can relay.
    Malformed(&'static str),
}

impl BackendConn {
    pub fn new(io: connect::Stream) -> BackendConn {
        BackendConn {
            io,
            buf: Vec::new(),
            pos: 0,
            head: ResponseHead::default(),
        }
    }

    /// Unused bytes.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Marks `n` pending bytes used.
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes into the buffer; 0 at end of stream.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_CHUNK);
        self.io.read_buf(&mut self.buf).await
    }

    /// True when an idle connection may carry a request: nothing arrived on it while it
    /// sat in the pool (no close, no stray bytes). Uses the reactor's readiness; reads
    /// only when that says something may have come.
    pub fn still_open(&mut self) -> bool {
        if !self.pending().is_empty() {
            return false;
        }
        let tcp = match &self.io {
            connect::Stream::Plain(s) => s,
            connect::Stream::Tls(s) => s.get_ref().0,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness may be left over from the last response's read: look.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads the response head into `self.head` (interim 1xx responses other than 101
    /// are skipped). The head's bytes stay pending until the caller consumes them.
    pub async fn read_head(&mut self, to_head: bool) -> Result<(), RecvError> {
        let mut interim = 0;
        let mut scanned = 0;
        loop {
            let pending = self.buf.get(self.pos..).unwrap_or_default();
            match response::parse(pending, scanned, to_head, &mut self.head) {
                Ok(response::Status::Complete) if self.head.is_interim() => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(RecvError::Malformed("too many interim responses"));
                    }
                    let len = self.head.len;
                    self.consume(len);
                    scanned = 0;
                    continue;
                }
                Ok(response::Status::Complete) => return Ok(()),
                Ok(response::Status::Partial { scanned: s }) => scanned = s,
                Err(e) => return Err(RecvError::Malformed(e.0)),
            }
            let any = interim > 0 || !self.pending().is_empty();
            match self.read_more().await {
                Ok(0) => return Err(RecvError::Closed { any, cause: None }),
                Ok(_) => {}
                Err(e) => {
                    return Err(RecvError::Closed {
                        any,
                        cause: Some(e),
                    });
                }
            }
        }
    }
}

/// Writes every byte of `bufs` to `w` (as few writes as the kernel allows), then
/// flushes (TLS). On failure, says whether any byte had been written.
pub async fn write_all_vectored<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    bufs: &mut [IoSlice<'_>],
) -> Result<(), (io::Error, bool)> {
    let mut bufs = bufs;
    let mut written = false;
    // Skip leading empty slices so the loop ends when all are written.
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = match w.write_vectored(bufs).await {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), written)),
            Ok(n) => n,
            Err(e) => return Err((e, written)),
        };
        written = true;
        IoSlice::advance_slices(&mut bufs, n);
    }
    w.flush().await.map_err(|e| (e, written))
}
