//! Bodies on the request path, both directions, always streamed.
//!
//! Request side: [`read_request_body`] reads at most [`REPLAY_LIMIT`] bytes before the
//! backend is contacted. A body that ends within it is held whole ([`ReqBody::Full`]):
//! it was fully validated (a bad chunk size is a 400 and nothing reaches a backend)
//! and can be sent again on a retry. A longer body streams: the prefix first, then the
//! rest as it arrives, each frame bounded by the client idle timeout.
//! [`ReqBody`] records when its last byte was handed to the backend connection, so the
//! `backend_response` clock starts after the upload, not before it.
//!
//! Response side: [`ProxyBody`] is either a short local text (errors) or the backend's
//! body. When it is dropped it marks the client connection idle again, releases the
//! backend's in-flight count, and returns the backend connection to its pool if the
//! body ended cleanly (a half-read body means a dirty connection: it is closed).

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

use crate::health::InFlightGuard;
use crate::server::conn_io::ConnState;
use crate::upstream::{Pool, Sender};

/// Largest request body held whole before the backend is contacted (and replayable).
pub const REPLAY_LIMIT: usize = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why reading the client's body failed.
#[derive(Debug)]
pub enum ClientBodyError {
    /// Malformed framing (bad chunk size, body shorter than Content-Length...).
    Malformed(hyper::Error),
    /// The client stopped sending for longer than the idle timeout.
    Timeout,
}

/// When the request body was completely handed to the backend connection.
pub type SentAt = Rc<Cell<Option<Instant>>>;

/// The request body as sent to a backend.
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Streaming(Box<Streaming>),
}

pub struct Streaming {
    prefix: Option<Bytes>,
    rest: Incoming,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    sent_at: SentAt,
    /// Set when the client side of the stream failed (vs. the backend side).
    client_failed: Rc<Cell<bool>>,
}

/// Reads up to [`REPLAY_LIMIT`] bytes of `body`.
pub async fn read_request_body(
    mut body: Incoming,
    idle: Duration,
    sent_at: &SentAt,
    client_failed: &Rc<Cell<bool>>,
) -> Result<ReqBody, ClientBodyError> {
    if body.is_end_stream() {
        return Ok(ReqBody::Empty);
    }
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    let mut total = 0usize;
    loop {
        if total >= REPLAY_LIMIT {
            let prefix = join(first, more);
            let sleep = Box::pin(tokio::time::sleep(idle));
            return Ok(ReqBody::Streaming(Box::new(Streaming {
                prefix,
                rest: body,
                idle,
                sleep,
                sent_at: Rc::clone(sent_at),
                client_failed: Rc::clone(client_failed),
            })));
        }
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ClientBodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ClientBodyError::Malformed(e)),
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
    Ok(match join(first, more) {
        None => ReqBody::Full(None),
        some => ReqBody::Full(some),
    })
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
            ReqBody::Streaming(_) => None,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Streaming(s) => s.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Streaming(s) => s.prefix.is_none() && s.rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
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
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(p) = self.prefix.take() {
            self.sleep.as_mut().reset(Instant::now() + self.idle);
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        match Pin::new(&mut self.rest).poll_frame(cx) {
            Poll::Ready(None) => {
                self.sent_at.set(Some(Instant::now()));
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.sleep.as_mut().reset(Instant::now() + self.idle);
                match frame.into_data() {
                    Ok(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                    // Trailers: dropped (see read_request_body); end the body here.
                    Err(_) => {
                        self.sent_at.set(Some(Instant::now()));
                        Poll::Ready(None)
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                self.client_failed.set(true);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_ready() {
                    self.client_failed.set(true);
                    let e =
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "client body stalled");
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Pending
            }
        }
    }
}

/// A backend connection on loan to one response body.
pub struct Lease {
    pub pool: Rc<Pool>,
    pub sender: Sender,
}

/// The body of a response to a client.
pub struct ProxyBody {
    kind: Kind,
    clock: Option<Rc<ConnState>>,
}

enum Kind {
    Local(Option<Bytes>),
    Upstream {
        inner: Incoming,
        ended: bool,
        lease: Option<Lease>,
        _in_flight: InFlightGuard,
    },
}

impl ProxyBody {
    /// A short body the balancer wrote itself.
    pub fn local(text: Bytes, clock: Option<Rc<ConnState>>) -> ProxyBody {
        ProxyBody {
            kind: Kind::Local(Some(text)),
            clock,
        }
    }

    /// The backend's body; `lease` goes back to its pool if the body ends cleanly.
    pub fn upstream(
        inner: Incoming,
        lease: Option<Lease>,
        in_flight: InFlightGuard,
        clock: Option<Rc<ConnState>>,
    ) -> ProxyBody {
        ProxyBody {
            kind: Kind::Upstream {
                inner,
                ended: false,
                lease,
                _in_flight: in_flight,
            },
            clock,
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
        match &mut self.get_mut().kind {
            Kind::Local(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { inner, ended, .. } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(None) => {
                    *ended = true;
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(b) => b.is_none(),
            Kind::Upstream { inner, ended, .. } => *ended || inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(clock) = &self.clock {
            clock.idle();
        }
        if let Kind::Upstream {
            inner,
            ended,
            lease,
            ..
        } = &mut self.kind
        {
            if *ended || inner.is_end_stream() {
                if let Some(lease) = lease.take() {
                    lease.pool.checkin(lease.sender);
                }
            }
        }
    }
}
