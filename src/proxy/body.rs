//! Bodies on the request path, both directions, always streamed.
//!
//! Request side: in [`super::request_body`] (re-exported here).
//!
//! Response side: [`ProxyBody`] is either a short local text (errors) or the backend's
//! body, whose frames must keep coming within `backend_response` of each other. When it
//! is dropped it marks the client connection idle again, releases the backend's
//! in-flight count, and returns the backend connection to its pool only if both the
//! response and the request body went through completely (anything else leaves the
//! connection in an unknown state: it is closed).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::access_log;
use crate::health::InFlightGuard;
use crate::metrics::BackendStats;
use crate::server::conn_io::ConnState;
use crate::upstream::UpBody;

pub use super::request_body::{
    BoxError, ClientFault, Piece, REPLAY_LIMIT, ReqBody, Streaming, Upload, read_request_body,
};

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
