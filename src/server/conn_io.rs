//! The client connection's socket, with the `client_idle` and `client_header` timeouts
//! and the framing [`Sniffer`] that sees every byte hyper reads.
//!
//! hyper's own `header_read_timeout` starts when it begins waiting for a head, so it
//! would also cut idle keep-alive connections. The contract wants two clocks:
//! `client_idle` while nothing has arrived (after accept or between requests), and
//! `client_header` from the first byte of a head until the head is complete. The
//! [`ConnState`] holds the phase (idle, reading a head, busy with a request): the read
//! path moves idle -> head on the first byte, the proxy marks busy when hyper hands
//! it a request, and the response body marks idle again when it is done. An HTTP/2
//! connection counts its open streams instead: its idle clock runs while none is open.
//!
//! The timer is lazy: one `Sleep` per connection, armed only when a read would block,
//! and re-armed only when it fires early or a nearer deadline appears, so a busy
//! keep-alive connection costs two `Cell` writes per request and no timer work.
//! An expired deadline makes the read fail with `TimedOut`; hyper then closes.
//!
//! Writes have their own clock: a client that stops reading (its window full, our
//! write pending) for longer than `client_idle` gets its connection closed, so it
//! cannot hold a connection and a backend response open forever. Its `Sleep` is only
//! created the first time a write would block.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::sniff::Sniffer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request head.
    Idle,
    /// Some bytes of a head have arrived; the rest must come before the deadline.
    Head,
    /// A request is being served; no client timeout from this clock.
    Busy,
    /// The connection became a tunnel (an upgrade): the tunnel times itself.
    Tunnel,
    /// HTTP/2: requests come as streams. The idle clock runs while no stream is open;
    /// open streams time themselves (request body, backend response), and pings find
    /// a client that vanished.
    Multiplex,
}

/// Phase and deadline of one client connection, shared by its socket and its requests.
#[derive(Debug)]
pub struct ConnState {
    phase: Cell<Phase>,
    deadline: Cell<Instant>,
    idle: Duration,
    header: Duration,
    sniffer: RefCell<Sniffer>,
    /// Requests handed to the proxy so far on this connection.
    requests: Cell<u64>,
    /// HTTP/2 streams being served (`Multiplex` only).
    streams: Cell<u32>,
}

impl ConnState {
    pub fn new(idle: Duration, header: Duration) -> ConnState {
        ConnState {
            phase: Cell::new(Phase::Idle),
            deadline: Cell::new(Instant::now() + idle),
            idle,
            header,
            sniffer: RefCell::new(Sniffer::new()),
            requests: Cell::new(0),
            streams: Cell::new(0),
        }
    }

    /// Counts a new request and says whether its head carried both Content-Length
    /// and Transfer-Encoding (see [`Sniffer`]).
    pub fn next_request_ambiguous(&self) -> bool {
        let index = self.requests.get();
        self.requests.set(index + 1);
        self.sniffer.borrow_mut().was_ambiguous(index)
    }

    /// A request head is complete and being served (HTTP/2: one more stream).
    #[inline]
    pub fn busy(&self) {
        match self.phase.get() {
            Phase::Multiplex => self.streams.set(self.streams.get() + 1),
            _ => self.phase.set(Phase::Busy),
        }
    }

    /// The response is done; the connection waits for its next request (HTTP/2: one
    /// stream fewer, and the idle clock starts again when it was the last).
    #[inline]
    pub fn idle(&self) {
        if self.phase.get() == Phase::Multiplex {
            let open = self.streams.get().saturating_sub(1);
            self.streams.set(open);
            if open == 0 {
                self.deadline.set(Instant::now() + self.idle);
            }
            return;
        }
        if self.phase.get() == Phase::Busy {
            // Part of the next head may have arrived with this request (pipelining):
            // then its `client_header` clock runs now, not the idle one.
            if self.sniffer.borrow().head_started() {
                self.phase.set(Phase::Head);
                self.deadline.set(Instant::now() + self.header);
            } else {
                self.phase.set(Phase::Idle);
                self.deadline.set(Instant::now() + self.idle);
            }
        }
    }

    /// The connection is now a tunnel: no more HTTP on it, so no more HTTP clocks and
    /// no more framing to follow.
    pub fn tunnel(&self) {
        self.phase.set(Phase::Tunnel);
        self.sniffer.borrow_mut().stop();
    }

    /// The connection speaks HTTP/2: streams instead of one request at a time, and no
    /// HTTP/1 framing to follow.
    pub fn multiplex(&self) {
        self.phase.set(Phase::Multiplex);
        self.deadline.set(Instant::now() + self.idle);
        self.sniffer.borrow_mut().stop();
    }

    /// True while HTTP/1 clocks and framing apply (not a tunnel, not HTTP/2).
    pub fn is_http1(&self) -> bool {
        !matches!(self.phase.get(), Phase::Tunnel | Phase::Multiplex)
    }

    /// True once the framing of this connection could not be followed: it must close
    /// after the current response (see `sniff.rs`).
    pub fn lost_sync(&self) -> bool {
        self.sniffer.borrow().lost_sync()
    }

    #[inline]
    fn on_bytes(&self) {
        if self.phase.get() == Phase::Idle {
            self.phase.set(Phase::Head);
            self.deadline.set(Instant::now() + self.header);
        }
    }
}

/// A TCP stream whose reads fail with `TimedOut` once the clock's deadline passes.
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

    /// Polls the deadline; `Ready` means the connection has timed out.
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
            // Fired: really expired, or the deadline moved later since we armed it?
            if self.clock.deadline.get() <= Instant::now() {
                return Poll::Ready(());
            }
            self.armed = false;
        }
    }
}

/// A client connection: plain TCP, or TLS terminated here.
pub type ClientStream = crate::tls::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

// SAFETY: hyper's upgrade support requires the connection's IO to be `Send` at the
// type level (an upgraded IO is boxed as `dyn Io + Send`), but a `TimedIo` never leaves
// its worker thread: it is made by the worker's accept loop, served by a connection task
// spawned with `spawn_local` on that worker's current-thread runtime, and after an
// upgrade it is consumed by a tunnel task spawned the same way. The `Rc<ConnState>` it
// holds is therefore only ever touched from that one thread.
unsafe impl Send for TimedIo {}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.on_bytes();
                    this.clock
                        .sniffer
                        .borrow_mut()
                        .feed(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let timed = match this.clock.phase.get() {
                    Phase::Idle | Phase::Head => true,
                    Phase::Busy | Phase::Tunnel => false,
                    Phase::Multiplex => this.clock.streams.get() == 0,
                };
                if timed && this.poll_deadline(cx).is_ready() {
                    let what = match this.clock.phase.get() {
                        Phase::Head => "client did not send a complete request head in time",
                        _ => "client connection idle for too long",
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn phases_move_the_deadline() {
        let c = ConnState::new(Duration::from_secs(60), Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(c.deadline.get(), t0 + Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(5)).await;
        c.on_bytes();
        assert_eq!(c.phase.get(), Phase::Head);
        assert_eq!(c.deadline.get(), t0 + Duration::from_secs(15));
        // More bytes of the same head do not extend it.
        tokio::time::advance(Duration::from_secs(1)).await;
        c.on_bytes();
        assert_eq!(c.deadline.get(), t0 + Duration::from_secs(15));
        c.busy();
        c.idle();
        assert_eq!(c.phase.get(), Phase::Idle);
        assert_eq!(c.deadline.get(), t0 + Duration::from_secs(66));
        // idle() outside a request changes nothing.
        c.idle();
        assert_eq!(c.deadline.get(), t0 + Duration::from_secs(66));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_idle_clock_runs_only_without_streams() {
        let c = ConnState::new(Duration::from_secs(60), Duration::from_secs(10));
        c.multiplex();
        let t0 = Instant::now();
        assert_eq!(c.deadline.get(), t0 + Duration::from_secs(60));
        // Bytes (pings, settings) do not start a head clock.
        c.on_bytes();
        assert_eq!(c.phase.get(), Phase::Multiplex);
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
        assert!(!c.is_http1());
    }
}
