//! Talking to backends: dialing ([`connect`]) and keeping connections ([`pool`]).
//!
//! Each worker owns one [`Upstreams`]: a [`pool::Pool`] per backend of the current
//! snapshot plus the dialer settings. [`Upstreams::send`] takes a pooled connection
//! (LIFO) or dials a new one, and sends one request. A pooled connection found closed
//! before the request was written is dropped and the request goes out on the next
//! one, so a stale keep-alive connection never costs a client an error. Nothing here
//! is shared between workers.

pub mod connect;
pub mod pool;

use std::rc::Rc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use crate::backend::Backend;
use crate::proxy::body::{ReqBody, Upload};

/// A held (or empty) body goes out with the head: the response clock starts now. A
/// streamed body sets the time itself when its last byte is handed over.
fn mark_sent(req: &Request<ReqBody>, upload: &Upload) {
    if !req.body().is_streaming() {
        upload.sent_at.set(Some(tokio::time::Instant::now()));
    }
}

pub use pool::Pool;

/// The request half of a backend connection.
pub type Sender = SendRequest<ReqBody>;

/// How to dial a backend: plain (`Ok(None)`), TLS, or TLS that cannot work (why).
pub type TlsChoice<'a> = Result<Option<&'a tokio_rustls::TlsConnector>, &'a str>;

/// A backend connection: its request half and the task driving its socket.
pub struct Conn {
    pub sender: Sender,
    task: tokio::task::AbortHandle,
}

impl Conn {
    /// Closes the connection now, even mid-exchange (an upload still being written to
    /// a backend that already answered, say). Dropping a `Conn` instead lets hyper
    /// finish what it is doing.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Why a request to a backend failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made: nothing was sent.
    Connect(std::io::Error),
    /// Dialing took longer than `timeouts.connect`: nothing was sent.
    ConnectTimeout,
    /// The connection failed after the request was (maybe partly) written.
    Send(hyper::Error),
    /// TCP connected but TLS did not (certificate verification, handshake): nothing
    /// was sent.
    Tls(String),
}

/// The outcome of one successful exchange: the response head and the connection it
/// came on, to be returned to the pool when the response body is done.
pub struct Exchange {
    pub response: Response<Incoming>,
    pub conn: Conn,
    /// True when the connection came from the pool rather than a fresh dial.
    pub reused: bool,
}

/// A failed exchange; `request` is handed back when it was never written.
pub struct Failed {
    pub error: UpstreamError,
    pub request: Option<Request<ReqBody>>,
    pub reused: bool,
}

/// Per-worker backend connections.
pub struct Upstreams {
    connect_timeout: Duration,
    builder: hyper::client::conn::http1::Builder,
}

impl Upstreams {
    pub fn new(connect_timeout: Duration) -> Upstreams {
        let mut builder = hyper::client::conn::http1::Builder::new();
        builder.max_buf_size(256 * 1024);
        Upstreams {
            connect_timeout,
            builder,
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
    ) -> Result<Exchange, Failed> {
        while let Some(mut conn) = pool.checkout() {
            if conn.sender.ready().await.is_err() {
                continue; // closed while idle: never hand it out
            }
            mark_sent(&req, upload);
            match conn.sender.try_send_request(req).await {
                Ok(response) => {
                    return Ok(Exchange {
                        response,
                        conn,
                        reused: true,
                    });
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the connection died while idle. Try the next one.
                    Some(r) => req = r,
                    None => {
                        let error = UpstreamError::Send(e.into_error());
                        return Err(Failed {
                            error,
                            request: None,
                            reused: true,
                        });
                    }
                },
            }
        }
        self.send_fresh(backend, tls, req, upload).await
    }

    /// Sends `req` on a newly dialed connection.
    pub async fn send_fresh(
        &self,
        backend: &Backend,
        tls: TlsChoice<'_>,
        req: Request<ReqBody>,
        upload: &Upload,
    ) -> Result<Exchange, Failed> {
        let mut conn = match self.dial(backend, tls).await {
            Ok(c) => c,
            Err(error) => {
                return Err(Failed {
                    error,
                    request: Some(req),
                    reused: false,
                });
            }
        };
        mark_sent(&req, upload);
        match conn.sender.try_send_request(req).await {
            Ok(response) => Ok(Exchange {
                response,
                conn,
                reused: false,
            }),
            Err(mut e) => {
                let request = e.take_message();
                let error = UpstreamError::Send(e.into_error());
                Err(Failed {
                    error,
                    request,
                    reused: false,
                })
            }
        }
    }

    async fn dial(&self, backend: &Backend, tls: TlsChoice<'_>) -> Result<Conn, UpstreamError> {
        let connector = match tls {
            Ok(c) => c,
            Err(e) => return Err(UpstreamError::Tls(e.to_owned())),
        };
        let dial = connect::open(backend, connector);
        let stream = match tokio::time::timeout(self.connect_timeout, dial).await {
            Ok(Ok(s)) => s,
            Ok(Err(connect::DialError::Tcp(e))) => return Err(UpstreamError::Connect(e)),
            Ok(Err(connect::DialError::Tls(e))) => return Err(UpstreamError::Tls(e)),
            Err(_) => return Err(UpstreamError::ConnectTimeout),
        };
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = self
            .builder
            .handshake::<_, ReqBody>(io)
            .await
            .map_err(UpstreamError::Send)?;
        let task = tokio::task::spawn_local(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("backend connection ended: {e}");
            }
        });
        Ok(Conn {
            sender,
            task: task.abort_handle(),
        })
    }
}
