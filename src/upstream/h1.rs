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
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{Exchange, Failed, Pool, SendFailure, UpBody, UpstreamError, connect};
use crate::http1::Framing;
use crate::http1::chunked::{self, Decoder, Step};
use crate::http1::response::{self, ResponseHead};
use crate::proxy::request_body::{ReqBody, Upload};

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
    /// The client its PROXY header named, if it began with one: only that client's
    /// requests may reuse it.
    pub proxied: Option<crate::proxy_protocol::Origin>,
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
            proxied: None,
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

impl BackendConn {
    /// Reads more bytes into the buffer from a poll context; 0 at end of stream.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.pos > 0 && self.buf.capacity() - self.buf.len() < POLL_CHUNK {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + POLL_CHUNK, 0);
        let mut rb = tokio::io::ReadBuf::new(&mut self.buf[len..]);
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        self.buf.truncate(len + n);
        r.map(|r| r.map(|()| n))
    }
}

/// What one poll of the body reads at most.
const POLL_CHUNK: usize = 8 * 1024;

/// Sends an `http::Request` (an HTTP/2 client's, put in HTTP/1.1 form) on `conn` and
/// reads the response head. The body streams from the returned [`OwnBody`].
pub async fn send(
    mut conn: BackendConn,
    mut req: http::Request<ReqBody>,
    upload: &Upload,
    reused: bool,
    pool: &Rc<Pool>,
) -> Result<Exchange, Failed> {
    let mut head = Vec::with_capacity(512);
    let chunked = write_request_head(&mut head, &req);
    let held: &[u8] = match req.body() {
        ReqBody::Full(Some(b)) => b,
        _ => &[],
    };
    super::mark_sent(&req, upload);
    let mut bufs = [IoSlice::new(&head), IoSlice::new(held)];
    let failed = |e: &io::Error| UpstreamError::Send(SendFailure::io(e));
    match write_all_vectored(&mut conn.io, &mut bufs).await {
        Ok(()) => {}
        Err((e, false)) => {
            return Err(Failed {
                error: failed(&e),
                request: Some(req),
                reused,
            });
        }
        Err((e, true)) => {
            return Err(Failed {
                error: failed(&e),
                request: None,
                reused,
            });
        }
    }
    if req.body().is_streaming() {
        let mut size = [0u8; 18];
        loop {
            let frame = match req.body_mut().frame().await {
                None => break,
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    let e = io::Error::other(e.to_string());
                    return Err(Failed {
                        error: failed(&e),
                        request: None,
                        reused,
                    });
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let w = if chunked {
                let line = chunked::size_line(data.len(), &mut size);
                let mut bufs = [
                    IoSlice::new(line),
                    IoSlice::new(&data),
                    IoSlice::new(b"\r\n"),
                ];
                write_all_vectored(&mut conn.io, &mut bufs).await
            } else {
                write_all_vectored(&mut conn.io, &mut [IoSlice::new(&data)]).await
            };
            if let Err((e, _)) = w {
                return Err(Failed {
                    error: failed(&e),
                    request: None,
                    reused,
                });
            }
        }
        if chunked {
            let w =
                write_all_vectored(&mut conn.io, &mut [IoSlice::new(chunked::LAST_CHUNK)]).await;
            if let Err((e, _)) = w {
                return Err(Failed {
                    error: failed(&e),
                    request: None,
                    reused,
                });
            }
        }
    }
    let to_head = req.method() == http::Method::HEAD;
    if let Err(e) = conn.read_head(to_head).await {
        let (bad_response, cause) = match e {
            RecvError::Closed { cause, .. } => (
                false,
                cause.map_or_else(|| "connection closed".to_owned(), |c| c.to_string()),
            ),
            RecvError::Malformed(why) => (true, why.to_owned()),
        };
        return Err(Failed {
            error: UpstreamError::Send(SendFailure {
                bad_response,
                cause,
            }),
            request: None,
            reused,
        });
    }
    let response = match response_of(&conn) {
        Some(r) => r,
        None => {
            return Err(Failed {
                error: UpstreamError::Send(SendFailure {
                    bad_response: true,
                    cause: "response head not representable".to_owned(),
                }),
                request: None,
                reused,
            });
        }
    };
    let len = conn.head.len;
    conn.consume(len);
    let body = OwnBody::new(conn, Rc::clone(pool));
    Ok(Exchange {
        response: response.map(|()| UpBody::Own(Box::new(body))),
        reused,
    })
}

/// Writes `req`'s head in HTTP/1.1 form; true when its body goes chunked.
fn write_request_head(out: &mut Vec<u8>, req: &http::Request<ReqBody>) -> bool {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        if name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let has_length = req.headers().contains_key(http::header::CONTENT_LENGTH);
    let mut chunked = false;
    match req.body() {
        ReqBody::Full(Some(b)) if !has_length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(crate::http1::encode::itoa(b.len() as u64, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        ReqBody::Streaming(_) if !has_length => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            chunked = true;
        }
        ReqBody::Empty | ReqBody::Full(None) if !has_length => {
            if matches!(
                *req.method(),
                http::Method::POST | http::Method::PUT | http::Method::PATCH
            ) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// The parsed response head of `conn` as an `http::Response` (for hyper's HTTP/2
/// server to write).
fn response_of(conn: &BackendConn) -> Option<http::Response<()>> {
    let buf = conn.pending();
    let head = &conn.head;
    let mut resp = http::Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(head.status).ok()?;
    let headers = resp.headers_mut();
    for h in &head.headers {
        let name = http::header::HeaderName::from_bytes(h.name.of(buf)).ok()?;
        let value = http::HeaderValue::from_bytes(h.value.of(buf)).ok()?;
        headers.append(name, value);
    }
    Some(resp)
}

enum BodyState {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
}

/// A response body read from our own backend connection, for a client whose response
/// hyper writes (HTTP/2). The connection goes back to its pool when the body ended
/// cleanly and the request went out whole ([`OwnBody::give_back`]).
pub struct OwnBody {
    conn: Box<BackendConn>,
    state: BodyState,
    done: bool,
    pool: Rc<Pool>,
}

impl OwnBody {
    fn new(conn: BackendConn, pool: Rc<Pool>) -> OwnBody {
        let (state, done) = match conn.head.framing {
            Framing::None => (BodyState::Length(0), true),
            Framing::Length(n) => (BodyState::Length(n), n == 0),
            Framing::Chunked => (BodyState::Chunked(Decoder::new(64 * 1024)), false),
            Framing::UntilClose => (BodyState::UntilClose, false),
        };
        OwnBody {
            conn: Box::new(conn),
            state,
            done,
            pool,
        }
    }

    pub fn is_end(&self) -> bool {
        self.done
    }

    /// Bytes left, when the body has a length.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(n) => Some(n),
            _ => None,
        }
    }

    /// The next piece of body, `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let pending = self.conn.pending();
            match &mut self.state {
                BodyState::Length(left) if !pending.is_empty() => {
                    let n = pending
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let data = Bytes::copy_from_slice(&pending[..n]);
                    *left -= n as u64;
                    self.done = *left == 0;
                    self.conn.consume(n);
                    return Poll::Ready(Some(Ok(data)));
                }
                BodyState::UntilClose if !pending.is_empty() => {
                    let data = Bytes::copy_from_slice(pending);
                    let n = pending.len();
                    self.conn.consume(n);
                    return Poll::Ready(Some(Ok(data)));
                }
                BodyState::Chunked(dec) => {
                    let (used, step) = dec.decode(pending).map_err(io::Error::other)?;
                    match step {
                        Step::Data(r) => {
                            let data = Bytes::copy_from_slice(&pending[r]);
                            self.conn.consume(used);
                            return Poll::Ready(Some(Ok(data)));
                        }
                        Step::Done => {
                            self.conn.consume(used);
                            self.done = true;
                            return Poll::Ready(None);
                        }
                        Step::NeedMore => self.conn.consume(used),
                    }
                }
                _ => {}
            }
            match self.conn.poll_read_more(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(0)) => {
                    if matches!(self.state, BodyState::UntilClose) {
                        self.done = true;
                        return Poll::Ready(None);
                    }
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "backend closed mid-body");
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Returns the connection to its pool if the exchange ended cleanly.
    pub fn give_back(self) {
        let reusable = self.done
            && self.conn.head.keep_alive()
            && !matches!(self.state, BodyState::UntilClose)
            && self.conn.pending().is_empty();
        if reusable {
            self.pool.checkin_own(*self.conn);
        }
    }
}
