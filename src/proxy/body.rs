//! Bodies on the request path, both directions, always streamed.
//!
//! Request side: [`read_request_body`] reads at most [`REPLAY_LIMIT`] bytes before the
//! backend is contacted. A body that ends within it is held whole ([`ReqBody::Full`]):
//! it was fully validated (a bad chunk size is a 400 and nothing reaches a backend)
//! and can be sent again on a retry. A longer body streams: the prefix first, then the
//! rest as it arrives, each frame bounded by the client idle timeout. The request's
//! [`Upload`] records when its last byte was handed to the backend connection (so the
//! `backend_response` clock starts after the upload, not before it) and whether the
//! client side failed, and how.
//!
//! Response side: [`ProxyBody`] is either a short local text (errors) or the backend's
//! body, whose frames must keep coming within `backend_response` of each other. When it
//! is dropped it marks the client connection idle again, releases the backend's
//! in-flight count, and returns the backend connection to its pool only if both the
//! response and the request body went through completely (anything else leaves the
//! connection in an unknown state: it is closed).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::access_log;
use crate::health::InFlightGuard;
use crate::metrics::BackendStats;
use crate::server::conn_io::ConnState;
use crate::upstream::UpBody;

/// Largest request body held whole before the backend is contacted (and replayable).
pub const REPLAY_LIMIT: usize = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the client's side of a request body failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// Malformed framing (bad chunk size, body shorter than Content-Length...).
    Malformed,
    /// The client stopped sending for longer than the idle timeout.
    Timeout,
}

/// Per-request upload state shared by the request path and the body being sent.
#[derive(Debug, Default)]
pub struct Upload {
    /// When the whole request (head and body) was handed to a backend connection.
    pub sent_at: Cell<Option<Instant>>,
    /// Set when the client side of a streamed body failed.
    pub client_fault: Cell<Option<ClientFault>>,
    /// The last time a streamed upload moved (a frame handed to the backend): a backend
    /// that stops reading an upload is timed by it.
    pub progress_at: Cell<Option<Instant>>,
}

/// The request body as sent to a backend.
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Streaming(Box<Streaming>),
    /// Pieces pumped in by an HTTP/1 client's task (a long upload to an HTTP/2
    /// backend, whose connection task polls the body).
    Channel(tokio::sync::mpsc::Receiver<Piece>),
}

/// A piece of a body sent through [`ReqBody::Channel`]. Only `End` ends the body:
/// a channel closed without it is an error (the stream is reset), never a body that
/// looks complete but is short.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    End,
}

pub struct Streaming {
    prefix: Option<Bytes>,
    rest: Incoming,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    upload: Rc<Upload>,
}

/// Reads up to [`REPLAY_LIMIT`] bytes of `body`.
pub async fn read_request_body(
    mut body: Incoming,
    idle: Duration,
    upload: &Rc<Upload>,
) -> Result<ReqBody, ClientFault> {
    if body.is_end_stream() {
        return Ok(ReqBody::Empty);
    }
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    let mut total = 0usize;
    loop {
        if total >= REPLAY_LIMIT && !body.is_end_stream() {
            let sleep = Box::pin(tokio::time::sleep(idle));
            return Ok(ReqBody::Streaming(Box::new(Streaming {
                prefix: join(first, more),
                rest: body,
                idle,
                sleep,
                upload: Rc::clone(upload),
            })));
        }
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ClientFault::Timeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ClientFault::Malformed),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers are dropped: `Trailer` is hop-by-hop and the body is re-framed.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        total += data.len();
        if let Some(m) = &mut more {
            m.extend_from_slice(&data);
        } else if let Some(f) = first.take() {
            let mut m = BytesMut::with_capacity((f.len() + data.len()).max(8192));
            m.extend_from_slice(&f);
            m.extend_from_slice(&data);
            more = Some(m);
        } else {
            first = Some(data);
        }
    }
    Ok(ReqBody::Full(join(first, more)))
}

fn join(first: Option<Bytes>, more: Option<BytesMut>) -> Option<Bytes> {
    match (first, more) {
        (_, Some(m)) => Some(m.freeze()),
        (f, None) => f,
    }
}

impl ReqBody {
    /// A copy for a retry, if this body can be sent again.
    pub fn replay(&self) -> Option<ReqBody> {
        match self {
            ReqBody::Empty => Some(ReqBody::Empty),
            ReqBody::Full(b) => Some(ReqBody::Full(b.clone())),
            ReqBody::Streaming(_) | ReqBody::Channel(_) => None,
        }
    }

    pub fn is_streaming(&self) -> bool {
        matches!(self, ReqBody::Streaming(_) | ReqBody::Channel(_))
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Streaming(s) => s.poll_frame(cx),
            ReqBody::Channel(rx) => {
                let r = match rx.poll_recv(cx) {
                    Poll::Ready(Some(Piece::Data(d))) => Poll::Ready(Some(Ok(Frame::data(d)))),
                    Poll::Ready(Some(Piece::End)) => Poll::Ready(None),
                    Poll::Ready(None) => {
                        let e = std::io::Error::other("upload cut short");
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                    Poll::Pending => Poll::Pending,
                };
                if let Poll::Ready(None) = r {
                    // Ended as it should: later polls see an empty body, not a
                    // closed channel.
                    *this = ReqBody::Empty;
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Streaming(s) => s.prefix.is_none() && s.rest.is_end_stream(),
            ReqBody::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Channel(_) => SizeHint::default(),
            ReqBody::Streaming(s) => {
                let p = s.prefix.as_ref().map_or(0, |b| b.len() as u64);
                let r = s.rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(r.lower() + p);
                if let Some(u) = r.upper() {
                    h.set_upper(u + p);
                }
                h
            }
        }
    }
}

impl Streaming {
    /// The upload is complete once nothing is left to yield. hyper's client stops
    /// polling as soon as `is_end_stream` is true (a Content-Length body never sees a
    /// final `None`), so this is checked after every frame.
    fn note_if_done(&self) {
        self.upload.progress_at.set(Some(Instant::now()));
        if self.prefix.is_none() && self.rest.is_end_stream() {
            self.upload.sent_at.set(Some(Instant::now()));
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(p) = self.prefix.take() {
            self.sleep.as_mut().reset(Instant::now() + self.idle);
            self.note_if_done();
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        match Pin::new(&mut self.rest).poll_frame(cx) {
            Poll::Ready(None) => {
                self.upload.sent_at.set(Some(Instant::now()));
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.sleep.as_mut().reset(Instant::now() + self.idle);
                match frame.into_data() {
                    Ok(d) => {
                        self.note_if_done();
                        Poll::Ready(Some(Ok(Frame::data(d))))
                    }
                    // Trailers: dropped (see read_request_body); end the body here.
                    Err(_) => {
                        self.upload.sent_at.set(Some(Instant::now()));
                        Poll::Ready(None)
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                self.upload.client_fault.set(Some(ClientFault::Malformed));
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_ready() {
                    self.upload.client_fault.set(Some(ClientFault::Timeout));
                    let e =
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "client body stalled");
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Pending
            }
        }
    }
}

/// What decides whether the response's backend connection may be reused.
pub struct Lease {
    /// The request's upload: the connection is clean only if it completed.
    pub upload: Rc<Upload>,
}

/// The body of a response to a client.
pub struct ProxyBody {
    kind: Kind,
    clock: Option<Rc<ConnState>>,
    /// What to record when the response is over (metrics, access log); `None` when
    /// neither is on, so a plain request allocates nothing for it.
    finish: Option<Box<Finish>>,
    /// Body bytes handed to the client.
    bytes: u64,
}

/// The end-of-response bookkeeping of one request.
pub struct Finish {
    pub start: Instant,
    /// The backend's duration histogram, when metrics are on and a backend answered.
    pub stats: Option<&'static BackendStats>,
    pub log: Option<access_log::Entry>,
}

impl Finish {
    fn done(&self, bytes: u64) {
        let took = self.start.elapsed();
        if let Some(s) = self.stats {
            s.observe(took);
        }
        if let Some(entry) = &self.log {
            access_log::write(entry, bytes, took);
        }
    }
}

enum Kind {
    Local(Option<Bytes>),
    Upstream(Box<Upstream>),
}

struct Upstream {
    inner: Option<UpBody>,
    ended: bool,
    lease: Option<Lease>,
    _in_flight: InFlightGuard,
    /// Longest wait between two frames from the backend.
    stall: Duration,
    /// Created the first time the backend makes us wait.
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl ProxyBody {
    /// A short body the balancer wrote itself.
    pub fn local(text: Bytes, clock: Option<Rc<ConnState>>) -> ProxyBody {
        ProxyBody {
            kind: Kind::Local(Some(text)),
            clock,
            finish: None,
            bytes: 0,
        }
    }

    /// The backend's body; `lease` goes back to its pool if the exchange ends cleanly.
    /// Frames must keep coming within `stall` of each other.
    pub fn upstream(
        inner: UpBody,
        lease: Option<Lease>,
        in_flight: InFlightGuard,
        stall: Duration,
        clock: Option<Rc<ConnState>>,
    ) -> ProxyBody {
        let up = Upstream {
            inner: Some(inner),
            ended: false,
            lease,
            _in_flight: in_flight,
            stall,
            sleep: None,
            waiting: false,
        };
        ProxyBody {
            kind: Kind::Upstream(Box::new(up)),
            clock,
            finish: None,
            bytes: 0,
        }
    }

    /// Records `finish` when the response is over.
    pub fn with_finish(mut self, finish: Option<Box<Finish>>) -> ProxyBody {
        self.finish = finish;
        self
    }
}

impl Upstream {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            None => Poll::Ready(None),
            Some(UpBody::H2(i)) => Pin::new(i)
                .poll_frame(cx)
                .map(|r| r.map(|f| f.map_err(|e| Box::new(e) as BoxError))),
            Some(UpBody::Own(b)) => b
                .poll_data(cx)
                .map(|r| r.map(|d| d.map(Frame::data).map_err(|e| Box::new(e) as BoxError))),
        }
    }

    fn inner_ended(&self) -> bool {
        match &self.inner {
            None => true,
            Some(UpBody::H2(i)) => i.is_end_stream(),
            Some(UpBody::Own(b)) => b.is_end(),
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.poll_inner(cx) {
            Poll::Ready(r) => {
                self.waiting = false;
                match r {
                    None => {
                        self.ended = true;
                        Poll::Ready(None)
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                    Some(Ok(f)) => Poll::Ready(Some(Ok(f))),
                }
            }
            Poll::Pending => {
                let deadline = Instant::now() + self.stall;
                if !self.waiting {
                    self.waiting = true;
                    match &mut self.sleep {
                        Some(s) => s.as_mut().reset(deadline),
                        None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if let Some(s) = &mut self.sleep {
                    if s.as_mut().poll(cx).is_ready() {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "backend stopped sending its response body",
                        );
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = match &mut this.kind {
            Kind::Local(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(up) => up.poll_frame(cx),
        };
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                this.bytes += d.len() as u64;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(b) => b.is_none(),
            Kind::Upstream(up) => up.ended || up.inner_ended(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(up) => match &up.inner {
                Some(UpBody::H2(i)) => i.size_hint(),
                Some(UpBody::Own(b)) => match b.remaining() {
                    Some(n) => SizeHint::with_exact(n),
                    None => SizeHint::default(),
                },
                None => SizeHint::with_exact(0),
            },
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(clock) = &self.clock {
            clock.idle();
        }
        if let Some(f) = &self.finish {
            f.done(self.bytes);
        }
        if let Kind::Upstream(up) = &mut self.kind {
            let upload_done = up
                .lease
                .as_ref()
                .is_some_and(|l| l.upload.sent_at.get().is_some());
            // A backend may answer before reading the whole upload; that connection is
            // mid-request and must not be reused (dropping it closes it, which also
            // ends the upload from the client).
            if let Some(UpBody::Own(b)) = up.inner.take() {
                if upload_done {
                    b.give_back();
                }
            }
        }
    }
}
