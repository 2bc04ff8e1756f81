//! Talking to backends: dialing ([`connect`]), our HTTP/1.1 client ([`h1`]), keeping
//! connections ([`pool`]), and HTTP/2 through hyper.
//!
//! Each worker owns one [`Upstreams`]: the dialer settings, plus a [`pool::Pool`] per
//! backend of the current snapshot. HTTP/1.1 connections are ours ([`h1::BackendConn`]):
//! the request's own task writes to them and reads from them, with no connection task.
//! A backend that speaks HTTP/2 (h2c, or ALPN chose it) gets one shared hyper
//! connection per worker. [`Upstreams::link`] hands out the connection a request
//! goes on; [`Upstreams::send`] sends an `http::Request` (the HTTP/2 client path) on
//! one. A pooled connection found closed before the request was written is dropped
//! and the request goes out on the next one, so a stale keep-alive connection never
//! costs a client an error. Nothing here is shared between workers.

pub mod connect;
pub mod h1;
pub mod pool;

use std::rc::Rc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::backend::Backend;
use crate::proxy::request_body::{ReqBody, Upload};
use crate::proxy_protocol::Origin;

/// HTTP/2 carries the target as `:scheme` and `:authority`: the URI becomes absolute
/// (authority from `Host`, which then goes), and the version HTTP/2.
fn to_h2_form(backend: &Backend, req: &mut Request<ReqBody>) {
    let scheme = match backend.scheme {
        crate::backend::Scheme::Http => http::uri::Scheme::HTTP,
        crate::backend::Scheme::Https => http::uri::Scheme::HTTPS,
    };
    let host = req.headers_mut().remove(http::header::HOST);
    let authority = host
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .or_else(|| http::uri::Authority::try_from(backend.address.as_str()).ok());
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_2;
}

/// Undoes [`to_h2_form`] for a request handed back unsent, which may go next to an
/// HTTP/1.1 backend: `Host` from the authority, origin-form target, HTTP/1.1.
fn from_h2_form(req: &mut Request<ReqBody>) {
    if let Some(host) = req
        .uri()
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = http::Uri::from(pq);
    *req.version_mut() = http::Version::HTTP_11;
}

/// A held (or empty) body goes out with the head: the response clock starts now. A
/// streamed body sets the time itself when its last byte is handed over.
pub(crate) fn mark_sent(req: &Request<ReqBody>, upload: &Upload) {
    if !req.body().is_streaming() {
        upload.sent_at.set(Some(tokio::time::Instant::now()));
    }
}

pub use pool::Pool;

/// How to dial a backend: plain (`Ok(None)`), TLS, or TLS that cannot work (why).
pub type TlsChoice<'a> = Result<Option<&'a tokio_rustls::TlsConnector>, &'a str>;

/// Why a request to a backend failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made: nothing was sent.
    Connect(std::io::Error),
    /// Dialing took longer than `timeouts.connect`: nothing was sent.
    ConnectTimeout,
    /// The connection failed after the request was (maybe partly) written, or the
    /// response could not be read.
    Send(SendFailure),
    /// TCP connected but TLS did not (certificate verification, handshake): nothing
    /// was sent.
    Tls(String),
}

/// How an exchange failed once a connection was there.
#[derive(Debug)]
pub struct SendFailure {
    /// What came back is not a response (as opposed to the connection failing).
    pub bad_response: bool,
    pub cause: String,
}

impl SendFailure {
    fn hyper(e: hyper::Error) -> SendFailure {
        SendFailure {
            bad_response: e.is_parse(),
            cause: e.to_string(),
        }
    }

    fn io(e: &std::io::Error) -> SendFailure {
        SendFailure {
            bad_response: false,
            cause: e.to_string(),
        }
    }
}

/// A response body from a backend: a stream of a shared HTTP/2 connection, or read
/// from our own HTTP/1.1 connection (which it holds, and gives back to the pool when
/// the exchange ends cleanly).
pub enum UpBody {
    H2(Incoming),
    Own(Box<h1::OwnBody>),
}

/// The outcome of one successful exchange: the response head, its body streaming.
pub struct Exchange {
    pub response: Response<UpBody>,
    /// True when the connection came from the pool rather than a fresh dial.
    pub reused: bool,
}

/// A failed exchange; `request` is handed back when it was never written.
pub struct Failed {
    pub error: UpstreamError,
    pub request: Option<Request<ReqBody>>,
    pub reused: bool,
}

/// How often an HTTP/2 connection (to a backend or from a client) is pinged, and how
/// long the answer may take before the connection is closed as dead.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-worker backend connections.
pub struct Upstreams {
    connect_timeout: Duration,
    h2_builder: hyper::client::conn::http2::Builder<LocalExec>,
}

/// Runs hyper's HTTP/2 background tasks on the current worker's `LocalSet`.
#[derive(Clone, Copy, Debug)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// The request half of an HTTP/2 backend connection (cheap to clone: one per stream).
pub type H2Sender = hyper::client::conn::http2::SendRequest<ReqBody>;

/// Marks the end of a single-flight HTTP/2 dial when dropped.
struct DialDone<'a>(&'a Pool);

impl Drop for DialDone<'_> {
    fn drop(&mut self) {
        self.0.h2_dial_done();
    }
}

/// A backend connection for the HTTP/1 client path.
pub enum Link {
    /// Our own HTTP/1.1 client's connection, held by the request.
    Own(h1::BackendConn),
    /// A stream on the backend's shared HTTP/2 connection.
    H2(H2Sender),
}

impl Upstreams {
    pub fn new(connect_timeout: Duration) -> Upstreams {
        let mut h2_builder = hyper::client::conn::http2::Builder::new(LocalExec);
        // Streams in flight on one backend connection, at most (the backend's own
        // SETTINGS_MAX_CONCURRENT_STREAMS applies too).
        h2_builder
            .max_concurrent_reset_streams(64)
            .initial_max_send_streams(128)
            // A shared connection whose backend vanished (no FIN, no RST) is found by
            // pings, not by the next requests timing out on it.
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .keep_alive_while_idle(true);
        Upstreams {
            connect_timeout,
            h2_builder,
        }
    }

    /// Sends `req` to `backend`, on a pooled connection if one is alive.
    pub async fn send(
        &self,
        backend: &Backend,
        tls: TlsChoice<'_>,
        pool: &Rc<Pool>,
        mut req: Request<ReqBody>,
        upload: &Upload,
        origin: &Origin,
    ) -> Result<Exchange, Failed> {
        loop {
            let (link, reused) = match self.link(backend, tls, pool, false, origin).await {
                Ok(l) => l,
                Err(error) => {
                    return Err(Failed {
                        error,
                        request: Some(req),
                        reused: false,
                    });
                }
            };
            let result = match link {
                Link::H2(h2) => return Self::send_h2(backend, h2, req, upload, reused).await,
                Link::Own(conn) => h1::send(conn, req, upload, reused, pool).await,
            };
            match result {
                // Not written: the pooled connection died while idle. Try the next one.
                Err(Failed {
                    request: Some(r),
                    reused: true,
                    ..
                }) => req = r,
                other => return other,
            }
        }
    }

    /// Sends `req` on a newly dialed connection (which, if it speaks HTTP/2, becomes the
    /// backend's shared HTTP/2 connection in `pool`).
    pub async fn send_fresh(
        &self,
        backend: &Backend,
        tls: TlsChoice<'_>,
        pool: &Rc<Pool>,
        req: Request<ReqBody>,
        upload: &Upload,
        origin: &Origin,
    ) -> Result<Exchange, Failed> {
        match self.link_fresh(backend, tls, pool, origin).await {
            Ok((Link::H2(h2), _)) => Self::send_h2(backend, h2, req, upload, false).await,
            Ok((Link::Own(conn), _)) => h1::send(conn, req, upload, false, pool).await,
            Err(error) => Err(Failed {
                error,
                request: Some(req),
                reused: false,
            }),
        }
    }

    /// Sends `req` as a stream on the backend's shared HTTP/2 connection `h2`.
    pub(crate) async fn send_h2(
        backend: &Backend,
        mut h2: H2Sender,
        mut req: Request<ReqBody>,
        upload: &Upload,
        reused: bool,
    ) -> Result<Exchange, Failed> {
        to_h2_form(backend, &mut req);
        // Waits while the connection is at its concurrent-stream limit.
        if let Err(e) = h2.ready().await {
            from_h2_form(&mut req);
            return Err(Failed {
                error: UpstreamError::Send(SendFailure::hyper(e)),
                request: Some(req),
                reused,
            });
        }
        mark_sent(&req, upload);
        match h2.try_send_request(req).await {
            Ok(response) => Ok(Exchange {
                response: response.map(UpBody::H2),
                reused,
            }),
            Err(mut e) => {
                let request = e.take_message().map(|mut r| {
                    from_h2_form(&mut r);
                    r
                });
                Err(Failed {
                    error: UpstreamError::Send(SendFailure::hyper(e.into_error())),
                    request,
                    reused,
                })
            }
        }
    }

    /// A connection for the HTTP/1 client path: the backend's shared HTTP/2 connection
    /// when it speaks HTTP/2, else a pooled connection of our own HTTP/1 client, else a
    /// new one. `upgrade` dials a fresh HTTP/1.1 connection whatever the backend speaks
    /// (a tunnel consumes it). The flag says whether the connection was reused.
    pub async fn link(
        &self,
        backend: &Backend,
        tls: TlsChoice<'_>,
        pool: &Pool,
        upgrade: bool,
        origin: &Origin,
    ) -> Result<(Link, bool), UpstreamError> {
        if upgrade {
            let stream = Box::pin(self.open(backend, tls, true, origin)).await?;
            return Ok((Link::Own(h1::BackendConn::new(stream)), false));
        }
        if let Some(h2) = pool.h2_after_dial(backend.h2c()).await {
            return Ok((Link::H2(h2), true));
        }
        if let Some(conn) = pool.checkout_own(backend.proxy_protocol.map(|_| origin)) {
            return Ok((Link::Own(conn), true));
        }
        Box::pin(self.dial_link(backend, tls, pool, origin)).await
    }

    /// A newly dialed connection (after a pooled one turned out stale).
    pub async fn link_fresh(
        &self,
        backend: &Backend,
        tls: TlsChoice<'_>,
        pool: &Pool,
        origin: &Origin,
    ) -> Result<(Link, bool), UpstreamError> {
        Box::pin(self.dial_link(backend, tls, pool, origin)).await
    }

    /// A new connection for the client `origin` (a PROXY header names it, when the
    /// backend wants one). A new HTTP/2 connection is then shared by every client, as
    /// HAProxy does: its header names the client that made it be dialed.
    async fn dial_link(
        &self,
        backend: &Backend,
        tls: TlsChoice<'_>,
        pool: &Pool,
        origin: &Origin,
    ) -> Result<(Link, bool), UpstreamError> {
        let _dialing = pool.h2_dial_start(backend.h2c()).then_some(DialDone(pool));
        let stream = self.open(backend, tls, false, origin).await?;
        if backend.h2c() || stream.negotiated_h2() {
            let h2 = self.handshake_h2(stream).await?;
            pool.set_h2(h2.clone());
            return Ok((Link::H2(h2), false));
        }
        let mut conn = h1::BackendConn::new(stream);
        conn.proxied = backend.proxy_protocol.map(|_| *origin);
        Ok((Link::Own(conn), false))
    }

    /// TCP (and TLS) to `backend`, bounded by `timeouts.connect`.
    async fn open(
        &self,
        backend: &Backend,
        tls: TlsChoice<'_>,
        http1_only: bool,
        origin: &Origin,
    ) -> Result<connect::Stream, UpstreamError> {
        let connector = match tls {
            Ok(c) => c,
            Err(e) => return Err(UpstreamError::Tls(e.to_owned())),
        };
        let dial = connect::open(backend, connector, http1_only, Some(origin));
        match tokio::time::timeout(self.connect_timeout, dial).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(connect::DialError::Tcp(e))) => Err(UpstreamError::Connect(e)),
            Ok(Err(connect::DialError::Tls(e))) => Err(UpstreamError::Tls(e)),
            Err(_) => Err(UpstreamError::ConnectTimeout),
        }
    }

    async fn handshake_h2(&self, stream: connect::Stream) -> Result<H2Sender, UpstreamError> {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = self
            .h2_builder
            .handshake::<_, ReqBody>(io)
            .await
            .map_err(|e| UpstreamError::Send(SendFailure::hyper(e)))?;
        tokio::task::spawn_local(async move {
            if let Err(e) = conn.await {
                tracing::debug!("backend HTTP/2 connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsent_http2_request_goes_back_to_http1_form() {
        let backend = crate::demo::backend_at("127.0.0.1:9001".parse().unwrap(), 1);
        let mut req = Request::get("/a?b=c")
            .header(http::header::HOST, "example.com")
            .header("x-other", "1")
            .body(ReqBody::Empty)
            .unwrap();
        to_h2_form(&backend, &mut req);
        assert_eq!(req.uri(), "http://example.com/a?b=c");
        assert!(!req.headers().contains_key(http::header::HOST));
        from_h2_form(&mut req);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.headers()[http::header::HOST], "example.com");
        assert_eq!(req.headers()["x-other"], "1");
        assert_eq!(req.version(), http::Version::HTTP_11);
    }
}
