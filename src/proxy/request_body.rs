//! Request bodies, as read from the client and sent to a backend.
//!
//! [`read_request_body`] reads at most [`REPLAY_LIMIT`] bytes before the backend is
//! contacted. A body that ends within it is held whole ([`ReqBody::Full`]): it was
//! fully validated (a bad chunk size is a 400 and nothing reaches a backend) and can be
//! sent again on a retry. A longer body streams: the prefix first, then the rest as it
//! arrives, each frame bounded by the client idle timeout. The request's [`Upload`]
//! records when its last byte was handed to the backend connection (so the
//! `backend_response` clock starts after the upload, not before it) and whether the
//! client side failed, and how. Apart from the response side ([`super::body`]) because
//! `upstream` sends these, and the response side reads `upstream`'s bodies.

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

/// Largest request body held whole before the backend is contacted (and replayable).
pub const REPLAY_LIMIT: usize = 64 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
