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
//!
//! Parking: an HTTP/1 connection idle for [`PARK_AFTER`] asks (through the same lazy
//! timer) to be parked: the worker then hands hyper's connection state back (its read
//! and write buffers are 16 KiB together) and waits for the next byte holding only the
//! socket and this state, so thousands of idle keep-alive clients cost little memory.
//! A busy connection never parks; the timer is re-armed at most once per
//! `PARK_AFTER`. An upgrade (101) hands the socket to the tunnel the same way.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
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
    /// When an idle HTTP/1 connection should be parked (set when it turns idle).
    park_at: Cell<Option<Instant>>,
    park_requested: Cell<bool>,
    /// The last response has been flushed to the socket (hyper is idle once the
    /// request was read whole, too).
    flushed: Cell<bool>,
    /// HTTP/2: the idle clock ran out and the connection was asked to close gracefully.
    goaway: Cell<bool>,
    /// Wakes the connection task when parking (HTTP/1) or a graceful close (HTTP/2,
    /// idle) is due.
    park: Notify,
    /// Where the socket goes once hyper has sent a 101 (the tunnel waits on it).
    upgrade: RefCell<Option<oneshot::Sender<Upgraded>>>,
}

/// How long an HTTP/1 connection waits for its next request before it gives its
/// buffers back (see "Parking" above).
pub const PARK_AFTER: Duration = Duration::from_millis(20);

/// A client connection after an upgrade: the socket, and bytes read past the head.
pub struct Upgraded {
    pub io: ClientStream,
    pub read_buf: Bytes,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("read_buf", &self.read_buf.len())
            .finish_non_exhaustive()
    }
}

impl ConnState {
    /// A connection waiting for its first request: it too parks after [`PARK_AFTER`].
    pub fn new(idle: Duration, header: Duration) -> ConnState {
        ConnState::resumed(idle, header, Instant::now() + idle)
    }

    /// A connection back from parking: its idle clock still runs to `deadline` (bytes
    /// that are no request, a TLS record in pieces say, must not restart it).
    pub fn resumed(idle: Duration, header: Duration, deadline: Instant) -> ConnState {
        ConnState {
            phase: Cell::new(Phase::Idle),
            deadline: Cell::new(deadline),
            idle,
            header,
            sniffer: RefCell::new(Sniffer::new()),
            requests: Cell::new(0),
            streams: Cell::new(0),
            park_at: Cell::new(Some(Instant::now() + PARK_AFTER)),
            park_requested: Cell::new(false),
            flushed: Cell::new(true),
            goaway: Cell::new(false),
            park: Notify::new(),
            upgrade: RefCell::new(None),
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
            _ => {
                self.phase.set(Phase::Busy);
                self.park_at.set(None);
            }
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
                let now = Instant::now();
                self.phase.set(Phase::Idle);
                self.deadline.set(now + self.idle);
                self.park_at.set(Some(now + PARK_AFTER));
                self.flushed.set(false);
            }
        }
    }

    /// The connection is now a tunnel: no more HTTP on it, so no more HTTP clocks and
    /// no more framing to follow.
    fn tunnel(&self) {
        self.phase.set(Phase::Tunnel);
        self.park_at.set(None);
        self.sniffer.borrow_mut().stop();
    }

    /// The connection becomes a tunnel once hyper has written the 101: the returned
    /// receiver gets the socket then (see [`ConnState::take_upgrade`]).
    pub fn await_upgrade(&self) -> oneshot::Receiver<Upgraded> {
        self.tunnel();
        let (tx, rx) = oneshot::channel();
        *self.upgrade.borrow_mut() = Some(tx);
        rx
    }

    /// Where the socket goes after an upgrade, if one was answered with a 101.
    pub fn take_upgrade(&self) -> Option<oneshot::Sender<Upgraded>> {
        self.upgrade.borrow_mut().take()
    }

    /// Resolves when this idle connection should be parked (HTTP/1) or closed
    /// gracefully (HTTP/2).
    pub async fn park_due(&self) {
        self.park.notified().await
    }

    /// True (once) when parking was asked for; clears the request.
    pub fn take_park_request(&self) -> bool {
        self.park_requested.replace(false)
    }

    /// When an idle connection times out.
    pub fn deadline(&self) -> Instant {
        self.deadline.get()
    }

    /// The connection speaks HTTP/2: streams instead of one request at a time, and no
    /// HTTP/1 framing to follow.
    pub fn multiplex(&self) {
        self.phase.set(Phase::Multiplex);
        self.deadline.set(Instant::now() + self.idle);
        self.sniffer.borrow_mut().stop();
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
            self.park_at.set(None);
            // A request is coming: a park asked for a moment ago must not happen.
            self.park_requested.set(false);
        }
    }

    /// True when a park was asked for and still may happen: hyper is idle (nothing of
    /// a next request read, the last response flushed). Clears a stale request.
    pub fn park_confirmed(&self) -> bool {
        let ok = self.park_requested.get() && self.phase.get() == Phase::Idle && self.parkable();
        if !ok {
            self.park_requested.set(false);
        }
        ok
    }

    /// True when hyper has nothing in progress: the response is flushed and the request
    /// was read whole (so stopping it cannot cut or change anything).
    fn parkable(&self) -> bool {
        self.flushed.get() && self.sniffer.borrow().between_messages()
    }

    /// The next time the read timer must look: the deadline, or parking if sooner.
    fn next_wake(&self) -> Instant {
        match self.park_at.get() {
            Some(p) if self.phase.get() == Phase::Idle => p.min(self.deadline.get()),
            _ => self.deadline.get(),
        }
    }
}

/// A TCP stream whose reads fail with `TimedOut` once the clock's deadline passes.
pub struct TimedIo {
    io: ClientStream,
    /// Bytes read before this `TimedIo` existed (kept over a park), served first.
    unread: Bytes,
    clock: std::rc::Rc<ConnState>,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    /// Send-side stall clock; created lazily, armed while writes keep blocking.
    write_sleep: Option<Pin<Box<Sleep>>>,
    write_stalled: bool,
}

impl TimedIo {
    pub fn new(io: ClientStream, clock: std::rc::Rc<ConnState>, unread: Bytes) -> TimedIo {
        let deadline = clock.deadline.get();
        TimedIo {
            io,
            unread,
            clock,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            armed: false,
            write_sleep: None,
            write_stalled: false,
        }
    }

    /// The socket back (after hyper handed the connection over), and carried-over bytes
    /// hyper has not read yet.
    pub fn into_inner(self) -> (ClientStream, Bytes) {
        (self.io, self.unread)
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

    /// Polls the deadline; `Ready` means the connection has timed out. On the way, an
    /// idle connection past its park time asks its task to park it.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let want = self.clock.next_wake();
            if !self.armed || want < self.sleep.deadline() {
                self.sleep.as_mut().reset(want);
                self.armed = true;
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Fired: really expired, or the deadline moved later since we armed it?
            let now = Instant::now();
            if self.clock.deadline.get() <= now {
                return Poll::Ready(());
            }
            if let Some(p) = self.clock.park_at.get() {
                if p <= now && self.clock.phase.get() == Phase::Idle {
                    if self.clock.parkable() {
                        self.clock.park_at.set(None);
                        self.clock.park_requested.set(true);
                        self.clock.park.notify_one();
                    } else {
                        // hyper is not idle yet (still flushing the response, or reading
                        // a request body the backend did not want): look again later.
                        self.clock.park_at.set(Some(now + PARK_AFTER));
                    }
                }
            }
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
        if !this.unread.is_empty() {
            // Already seen by the sniffer when first read.
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
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
                    if this.clock.phase.get() == Phase::Multiplex && !this.clock.goaway.get() {
                        // HTTP/2 idle: close gracefully (GOAWAY, queued data flushed,
                        // new streams refused cleanly); cut it only if that takes
                        // another idle period.
                        this.clock.goaway.set(true);
                        this.clock.deadline.set(Instant::now() + this.clock.idle);
                        this.clock.park.notify_one();
                        return Poll::Pending;
                    }
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
        if r.is_ready() && this.clock.phase.get() == Phase::Idle {
            this.clock.flushed.set(true);
            // A response just ended: hyper may not read again before the client does
            // (its last read was polled while the request was busy), so the idle and
            // park timer is armed here, once the response is out.
            if this.poll_deadline(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        this.on_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.clock.park_requested.get() {
            // Parking: hyper lets go of the connection, the client keeps it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
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
    }

    #[tokio::test(start_paused = true)]
    async fn parks_only_when_hyper_has_nothing_in_progress() {
        let c = ConnState::new(Duration::from_secs(60), Duration::from_secs(10));
        assert!(c.parkable(), "a new connection has nothing in progress");
        c.sniffer
            .borrow_mut()
            .feed(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
        c.busy();
        c.idle(); // the response ended: not yet flushed, and half the body is unread
        assert!(!c.parkable());
        c.flushed.set(true);
        assert!(!c.parkable(), "the request body is still coming");
        c.sniffer.borrow_mut().feed(b"cd");
        assert!(c.parkable());
        assert_eq!(c.park_at.get(), Some(Instant::now() + PARK_AFTER));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_arriving_cancels_a_park() {
        let c = ConnState::new(Duration::from_secs(60), Duration::from_secs(10));
        c.park_requested.set(true);
        assert!(c.park_confirmed());
        c.park_requested.set(true);
        c.on_bytes(); // the first byte of a request
        assert!(!c.park_confirmed());
        assert!(
            !c.take_park_request(),
            "hyper's shutdown must not be skipped then"
        );
        // A resumed connection keeps the deadline it was parked with.
        let at = Instant::now() + Duration::from_secs(5);
        let r = ConnState::resumed(Duration::from_secs(60), Duration::from_secs(10), at);
        assert_eq!(r.deadline(), at);
    }
}
