//! An HTTP/2 client connection's socket, with its idle and write-stall clocks.
//!
//! hyper serves HTTP/2 clients, so the clocks wrap its socket. The [`ConnState`]
//! counts open streams (the request path marks one busy when hyper hands it a request,
//! and idle again when its response body is done); while none is open the
//! `client_idle` deadline runs, and when it passes the connection is asked to close
//! gracefully (GOAWAY), then cut if that takes another idle period. Open streams time
//! themselves (request body, backend response), and pings find a client that
//! vanished.
//!
//! The timer is lazy: one `Sleep` per connection, armed only when a read would block
//! and re-armed only when it fires early or a nearer deadline appears. Writes have
//! their own clock: a client that stops reading for longer than `client_idle` gets its
//! connection closed, so it cannot hold responses open forever.
//!
//! HTTP/1 clients do not come here: `server::h1` keeps its deadlines in its own state.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Open streams and the idle deadline of one HTTP/2 client connection, shared by its
/// socket and its requests.
#[derive(Debug)]
pub struct ConnState {
    deadline: Cell<Instant>,
    idle: Duration,
    /// Streams being served.
    streams: Cell<u32>,
    /// The idle clock ran out and the connection was asked to close gracefully.
    goaway: Cell<bool>,
    /// Wakes the connection task when a graceful close is due.
    close: Notify,
}

impl ConnState {
    pub fn new(idle: Duration) -> ConnState {
        ConnState {
            deadline: Cell::new(Instant::now() + idle),
            idle,
            streams: Cell::new(0),
            goaway: Cell::new(false),
            close: Notify::new(),
        }
    }

    /// A stream is being served.
    #[inline]
    pub fn busy(&self) {
        self.streams.set(self.streams.get() + 1);
    }

    /// A stream's response is done; the idle clock starts again when it was the last.
    #[inline]
    pub fn idle(&self) {
        let open = self.streams.get().saturating_sub(1);
        self.streams.set(open);
        if open == 0 {
            self.deadline.set(Instant::now() + self.idle);
        }
    }

    /// Resolves when the idle connection should be closed gracefully.
    pub async fn close_due(&self) {
        self.close.notified().await
    }
}

/// A client socket whose reads fail with `TimedOut` once the idle deadline passes
/// (after a graceful close was asked for), and whose writes fail once they have been
/// blocked for the idle timeout.
pub struct TimedIo {
    io: ClientStream,
    clock: std::rc::Rc<ConnState>,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    /// Send-side stall clock; created lazily, armed while writes keep blocking.
    write_sleep: Option<Pin<Box<Sleep>>>,
    write_stalled: bool,
}

impl TimedIo {
    pub fn new(io: ClientStream, clock: std::rc::Rc<ConnState>) -> TimedIo {
        let deadline = clock.deadline.get();
        TimedIo {
            io,
            clock,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            armed: false,
            write_sleep: None,
            write_stalled: false,
        }
    }

    /// Passes a write result through, failing it once writes have blocked for longer
    /// than the idle timeout.
    fn on_write<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.write_stalled = false;
            return r;
        }
        if !self.write_stalled {
            self.write_stalled = true;
            let deadline = Instant::now() + self.clock.idle;
            match &mut self.write_sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.write_sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        if let Some(s) = &mut self.write_sleep {
            if s.as_mut().poll(cx).is_ready() {
                let e = io::Error::new(io::ErrorKind::TimedOut, "client stopped reading");
                return Poll::Ready(Err(e));
            }
        }
        Poll::Pending
    }

    /// Polls the idle deadline; `Ready` means it has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let want = self.clock.deadline.get();
            if !self.armed || want < self.sleep.deadline() {
                self.sleep.as_mut().reset(want);
                self.armed = true;
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.clock.deadline.get() <= Instant::now() {
                return Poll::Ready(());
            }
            // Fired early: the deadline moved later since it was armed.
            self.armed = false;
        }
    }
}

/// A client connection: plain TCP, or TLS terminated here.
pub type ClientStream = crate::tls::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {
                if this.clock.streams.get() == 0 && this.poll_deadline(cx).is_ready() {
                    if !this.clock.goaway.get() {
                        // Idle: close gracefully (GOAWAY, queued data flushed, new
                        // streams refused cleanly); cut it only if that takes another
                        // idle period.
                        this.clock.goaway.set(true);
                        this.clock.deadline.set(Instant::now() + this.clock.idle);
                        this.clock.close.notify_one();
                        return Poll::Pending;
                    }
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client connection idle for too long",
                    );
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.on_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.on_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// True when TLS has already decrypted bytes not yet read: readiness of the socket
/// would never announce them.
pub fn tls_has_plaintext(stream: &mut ClientStream) -> bool {
    match stream {
        ClientStream::Plain(_) => false,
        ClientStream::Tls(s) => s
            .get_mut()
            .1
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_clock_runs_only_without_streams() {
        let c = ConnState::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(c.deadline.get(), t0 + Duration::from_secs(60));
        c.busy();
        c.busy();
        tokio::time::advance(Duration::from_secs(100)).await;
        c.idle();
        assert_eq!(c.streams.get(), 1);
        assert_eq!(
            c.deadline.get(),
            t0 + Duration::from_secs(60),
            "a stream is still open"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        c.idle();
        assert_eq!(c.deadline.get(), t0 + Duration::from_secs(165));
    }
}
