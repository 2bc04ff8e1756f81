//! The request path for an HTTP/1 client, inline: [`Proxy::serve_h1`].
//!
//! The connection's own task runs each request from head to last body byte: policy
//! checks on the parsed head, the body held (up to the replay limit) or streamed, a
//! backend picked, the edited head and body written to a connection it holds, the
//! response head read, edited and written back with the first body bytes in one
//! vectored write, and the rest of the body copied from the backend's buffer to the
//! client. There is no connection task, no channel and no `HeaderMap` on this path
//! when the backend speaks HTTP/1.1; a backend that speaks HTTP/2 gets the request
//! rebuilt as an `http::Request` (see `to_h2`).
//!
//! One error type, [`Failure`] (shared with the HTTP/2 client path), carries what the
//! retry decision needs (was anything written, was the connection reused, did any
//! response byte come), so the attempt loop is one loop that reads it.

use std::io::IoSlice;
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::Proxy;
use super::body::{REPLAY_LIMIT, ReqBody};
use super::error_response::ProxyError;
use super::retry::{Failure, Replay};
use crate::access_log;
use crate::balance::{Pick, Tried};
use crate::health::{InFlightGuard, Reason, Source};
use crate::http1::chunked::{self, Decoder, Step};
use crate::http1::encode::{self, OutFraming, RequestEdits, ResponseEdits};
use crate::http1::request::RequestHead;
use crate::http1::{Framing, Known, Version};
use crate::server::conn_io::ClientStream;
use crate::upstream::Link;
use crate::upstream::h1::{BackendConn, RecvError, write_all_vectored};

/// What the request path knows of the client connection it serves.
pub struct Client<'a> {
    pub io: &'a mut ClientStream,
    /// The read buffer: the request's head at the start, then what followed it.
    pub buf: &'a mut Vec<u8>,
    /// Scratch for heads on their way out.
    pub out: &'a mut Vec<u8>,
    /// The client's IP, for X-Forwarded-For and the access log.
    pub addr: &'a [u8],
    /// The client's address and the one it reached, for backends' PROXY headers.
    pub origin: &'a crate::proxy_protocol::Origin,
    /// `http` or `https`.
    pub proto: &'static [u8],
    /// The index of the listener the connection came to (`config.listeners`).
    pub listener: usize,
    /// The worker is draining: this response closes the connection.
    pub closing: bool,
    /// Keeps the client connection counted open while a tunnel outlives the request.
    pub open: &'a Rc<dyn std::any::Any>,
    /// Where the next request starts in `buf`, once this one's body has been read to
    /// its end (`usize::MAX` until then: the connection cannot go on).
    pub next: usize,
    /// The connection's request timer (see [`within`]).
    pub timer: std::pin::Pin<&'a mut tokio::time::Sleep>,
}

/// Runs `fut` until `deadline` on `timer` (`None` if the deadline came first). The
/// timer is the connection's, reused: moving it later costs a store, and it is filed
/// with the timer wheel only when `fut` has to wait.
async fn within<F: std::future::Future>(
    timer: &mut std::pin::Pin<&mut tokio::time::Sleep>,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    timer.as_mut().reset(deadline);
    tokio::select! {
        biased;
        r = fut => Some(r),
        _ = timer.as_mut() => None,
    }
}

/// How the connection goes on after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Ready for the next request, which starts at this offset of the read buffer.
    Next(usize),
    /// Close it.
    Close,
}

/// The request body as read so far.
enum Body {
    Empty,
    /// Held whole (replayable): in the read buffer, or decoded from chunks.
    InBuf(Range<usize>),
    Decoded(Vec<u8>),
    /// Longer than the replay limit: `sent` is what was read so far (raw bytes of a
    /// Content-Length body from `at`, or decoded chunks), the rest comes from the client.
    Streaming(Box<Upload>),
}

struct Upload {
    /// Where unread body bytes start in the read buffer.
    at: usize,
    /// Where the body bytes that came with the head end (a Content-Length body).
    prefix_end: usize,
    /// Decoded bytes of a chunked body read before streaming began.
    decoded: Vec<u8>,
    /// Content-Length bytes still to read, or the chunk decoder.
    rest: Rest,
}

enum Rest {
    Length(u64),
    Chunked(Decoder),
}

impl Body {
    fn held<'b>(&'b self, buf: &'b [u8]) -> Option<&'b [u8]> {
        match self {
            Body::Empty => Some(&[]),
            Body::InBuf(r) => buf.get(r.clone()),
            Body::Decoded(v) => Some(v),
            Body::Streaming(_) => None,
        }
    }

    /// How the body goes to the backend.
    fn framing(&self, buf: &[u8]) -> Framing {
        match self {
            Body::Streaming(u) => match u.rest {
                Rest::Length(left) => {
                    Framing::Length(left + (u.prefix_end.saturating_sub(u.at)) as u64)
                }
                Rest::Chunked(_) => Framing::Chunked,
            },
            held => match held.held(buf).map_or(0, <[u8]>::len) {
                0 => Framing::None,
                n => Framing::Length(n as u64),
            },
        }
    }
}

/// An HTTP/1 request head as the hash key sees it.
struct H1Key<'a> {
    head: &'a RequestHead,
    buf: &'a [u8],
    client: &'a [u8],
}

impl super::key::KeySource for H1Key<'_> {
    fn client(&self) -> &[u8] {
        self.client
    }

    fn target(&self) -> &[u8] {
        self.head.target.of(self.buf)
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.head
            .headers
            .iter()
            .find(|h| h.name.of(self.buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| h.value.of(self.buf))
    }

    fn cookies(&self) -> impl Iterator<Item = &[u8]> {
        self.head
            .headers
            .iter()
            .filter(|h| h.known == Known::Cookie)
            .map(|h| h.value.of(self.buf))
    }
}

/// The response of one successful attempt.
enum Answer {
    /// The connection, and whether the whole request body went.
    Own(Box<BackendConn>, bool),
    H2(http::Response<crate::upstream::UpBody>, bool),
}

impl Proxy {
    /// Serves one HTTP/1 request whose head `head` is at the start of `c.buf`.
    pub async fn serve_h1(&self, c: &mut Client<'_>, head: &RequestHead) -> After {
        let start = Instant::now();
        let log = self.access_log.then(|| {
            let mut e = access_log::Entry::new(
                c.addr,
                head.method.clone(),
                head.target.of(c.buf),
                match head.version {
                    Version::Http10 => http::Version::HTTP_10,
                    Version::Http11 => http::Version::HTTP_11,
                },
            );
            let buf = &*c.buf;
            e.headers(
                head.headers
                    .iter()
                    .map(|h| (h.name.of(buf), h.value.of(buf))),
            );
            e
        });
        let mut done = Done {
            start,
            log,
            bytes: 0,
            backend: None,
            status: 0,
            upstream: None,
        };
        let after = match self.forward_h1(c, head, &mut done).await {
            Ok(after) => after,
            Err(e) => {
                tracing::debug!(error = ?e, "answered locally");
                if self.record {
                    self.health
                        .global()
                        .count_local(e.reason(), e.status().as_u16());
                }
                let (status, text, close) = e.text();
                // Closing also when the request's body was not read to its end: its
                // bytes would be taken for the next request.
                let close = close || c.closing || !head.keep_alive() || c.next == usize::MAX;
                c.out.clear();
                encode::local_response_with(
                    c.out,
                    status,
                    text.as_bytes(),
                    close,
                    &e.extra_headers(),
                );
                done.status = status;
                done.bytes = text.len() as u64;
                let keep = !close;
                let written = write_timed(c.io, c.out, &[], self.config.timeouts.client_idle).await;
                if keep && written {
                    After::Next(usize::MAX)
                } else {
                    After::Close
                }
            }
        };
        self.finish(done);
        after
    }

    fn finish(&self, done: Done) {
        let took = done.start.elapsed();
        if self.record {
            if let Some(i) = done.backend {
                self.health.stats(i).observe(took);
            }
        }
        if let Some(mut e) = done.log {
            e.status = done.status;
            e.upstream = done.upstream;
            if let Some(i) = done.backend {
                e.backend(self.health.address(i), self.health.name(i));
            }
            access_log::write(&e, done.bytes, took);
        }
    }

    async fn forward_h1(
        &self,
        c: &mut Client<'_>,
        head: &RequestHead,
        done: &mut Done,
    ) -> Result<After, ProxyError> {
        if head.framing == Framing::None {
            c.next = head.len;
        }
        if let Some(port) = self.redirect_https(c.listener) {
            match super::redirect::location(head, c.buf, port) {
                Some(Ok(to)) => return Err(ProxyError::RedirectHttps(Box::new(to))),
                Some(Err(why)) => return Err(ProxyError::BadRequest(why)),
                None => {} // an ACME challenge: proxied
            }
        }
        let tunnel = policy(head, c.buf)?;
        if let Some(e) = self
            .rate_limited(&H1Key {
                head,
                buf: c.buf,
                client: c.addr,
            })
            .await
        {
            return Err(e);
        }
        let idle = self.config.timeouts.client_idle;
        let mut body = read_body(c, head, idle).await?;
        let sticky = if self.strategy.is_sticky() {
            head.headers
                .iter()
                .filter(|h| h.known == Known::Cookie)
                .find_map(|h| {
                    super::find_cookie_in(h.value.of(c.buf), self.config.sticky_cookie.as_bytes())
                })
        } else {
            None
        };
        self.count_for_budget();
        let key = self.hash_key.as_ref().and_then(|k| {
            super::key::hash(
                k,
                &H1Key {
                    head,
                    buf: c.buf,
                    client: c.addr,
                },
            )
        });
        let replay = Replay::of(&head.method, body.held(c.buf).is_some());
        let mut tried = Tried::default();
        let mut attempts = 0u32;
        let mut last = ProxyError::NoHealthyBackend;
        let mut streamed_out = false;
        loop {
            let (pick, fail_open, in_flight) =
                match self.pick_with_room(&tried, sticky, key, attempts).await {
                    Ok(p) => p,
                    Err(Some(e)) => return Err(e),
                    Err(None) => return Err(last),
                };
            tried.insert(pick.index);
            if streamed_out {
                // A streamed body went (partly) to the last backend: it cannot go again.
                return Err(last);
            }
            if attempts > 0 && self.record {
                let retries = &self.health.global().retries;
                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            attempts += 1;
            let sent = self.strategy.wants_latency().then(Instant::now);
            let mut result = self
                .attempt_h1(c, head, &mut body, pick.index, tunnel, false)
                .await;
            if let Err(f) = &result {
                if f.retry_fresh(replay) {
                    tracing::debug!(backend = %self.health.address(pick.index), "pooled connection was stale; retrying on a fresh one");
                    result = self
                        .attempt_h1(c, head, &mut body, pick.index, tunnel, true)
                        .await;
                }
            }
            match result {
                Ok(answer) => {
                    if let Some(t) = sent {
                        self.observe_latency(pick.index, t.elapsed());
                    }
                    done.backend = Some(pick.index);
                    return self
                        .relay_h1(c, head, &body, answer, pick, tunnel, in_flight, done)
                        .await;
                }
                Err(f) => {
                    if let Some(e) = f.client {
                        return Err(e);
                    }
                    self.attempt_failed(pick.index, attempts, &f);
                    streamed_out |= f.written && matches!(body, Body::Streaming(_));
                    let retry = !fail_open
                        && f.may_retry(replay, attempts, self.config.retries)
                        && self.budget_allows_retry();
                    last = if fail_open {
                        ProxyError::NoHealthyBackend
                    } else {
                        f.error
                    };
                    if !retry {
                        return Err(last);
                    }
                }
            }
        }
    }

    /// One attempt on backend `index`: connection, request out, response head in.
    async fn attempt_h1(
        &self,
        c: &mut Client<'_>,
        head: &RequestHead,
        body: &mut Body,
        index: usize,
        tunnel: bool,
        fresh: bool,
    ) -> Result<Answer, Failure> {
        let backend = self.config.backends.get(index);
        let slot = &self.slots[index];
        let link = if fresh {
            self.upstreams
                .link_fresh(backend, slot.tls(), &slot.pool, c.origin)
                .await
        } else {
            self.upstreams
                .link(backend, slot.tls(), &slot.pool, tunnel, c.origin)
                .await
        };
        let (link, reused) = link.map_err(|e| Failure::upstream(e, false, false))?;
        c.out.clear();
        let edits = RequestEdits {
            client: c.addr,
            proto: c.proto,
            default_host: slot.host.as_bytes(),
            tunnel,
            framing: body.framing(c.buf),
        };
        encode::request_head(c.out, c.buf, head, &edits);
        let mut conn = match link {
            Link::Own(conn) => Box::new(conn),
            Link::H2(h2) => return self.attempt_h2(c, backend, h2, body, reused).await,
        };
        let t = &self.config.timeouts;
        // The head and a held body in one write.
        let held = body.held(c.buf);
        let first: &[u8] = match (&held, &*body) {
            (Some(b), _) => b,
            (None, Body::Streaming(u)) if !u.decoded.is_empty() => &[],
            (None, Body::Streaming(u)) => match u.rest {
                Rest::Length(_) => c.buf.get(u.at..u.prefix_end).unwrap_or_default(),
                Rest::Chunked(_) => &[],
            },
            _ => &[],
        };
        let first_len = first.len();
        let mut bufs = [IoSlice::new(c.out), IoSlice::new(first)];
        let write = write_all_vectored(&mut conn.io, &mut bufs);
        match tokio::time::timeout(t.backend_response, write).await {
            Ok(Ok(())) => {}
            Ok(Err((e, written))) => {
                return Err(Failure::closed(reused, written, false, Some(e.to_string())));
            }
            Err(_) => return Err(Failure::timed_out(reused)),
        }
        let mut upload_done = true;
        if let Body::Streaming(u) = body {
            if let Rest::Length(_) = u.rest {
                u.at += first_len;
            }
            match self.upload(c, &mut conn, u).await {
                Ok(complete) => upload_done = complete,
                Err(e) => return Err(Failure::client(e)),
            }
        }
        let to_head = head.method == Method::HEAD;
        let deadline = Instant::now() + t.backend_response;
        match within(&mut c.timer, deadline, conn.read_head(to_head)).await {
            Some(Ok(())) => Ok(Answer::Own(conn, upload_done)),
            Some(Err(RecvError::Closed { any, cause })) => Err(Failure::closed(
                reused,
                true,
                any,
                cause.map(|e| e.to_string()),
            )),
            Some(Err(RecvError::Malformed(why))) => Err(Failure::bad_response(reused, why)),
            None => Err(Failure::timed_out(reused)),
        }
    }

    /// Streams the rest of a long request body to the backend. True when all of it
    /// went; false when the backend stopped taking it (it may have answered early).
    async fn upload(
        &self,
        c: &mut Client<'_>,
        conn: &mut BackendConn,
        u: &mut Upload,
    ) -> Result<bool, ProxyError> {
        let idle = self.config.timeouts.client_idle;
        let stall = self.config.timeouts.backend_response;
        let mut size = [0u8; 18];
        if !u.decoded.is_empty() {
            let line = chunked::size_line(u.decoded.len(), &mut size);
            let mut bufs = [
                IoSlice::new(line),
                IoSlice::new(&u.decoded),
                IoSlice::new(b"\r\n"),
            ];
            if !matches!(
                tokio::time::timeout(stall, write_all_vectored(&mut conn.io, &mut bufs)).await,
                Ok(Ok(()))
            ) {
                return Ok(false);
            }
            u.decoded = Vec::new();
        }
        loop {
            // What is in the buffer goes first.
            let pending = c.buf.len().saturating_sub(u.at);
            match &mut u.rest {
                Rest::Length(0) => {
                    c.next = u.at;
                    return Ok(true);
                }
                Rest::Length(left) => {
                    if pending == 0 {
                        c.buf.truncate(u.at.min(c.buf.len()));
                        u.at = c.buf.len();
                        match more_or_answer(c, conn, idle).await? {
                            More::Client => continue,
                            More::Backend => return Ok(false),
                        }
                    }
                    let n = pending.min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let chunk = &c.buf[u.at..u.at + n];
                    let w = tokio::time::timeout(stall, conn.io.write_all(chunk)).await;
                    if !matches!(w, Ok(Ok(()))) {
                        return Ok(false);
                    }
                    *left -= n as u64;
                    u.at += n;
                    // Reuse the buffer's room: drop what was sent.
                    if u.at == c.buf.len() && *left > 0 {
                        c.buf.truncate(0);
                        u.at = 0;
                    }
                }
                Rest::Chunked(dec) => {
                    let (used, step) = dec
                        .decode(c.buf.get(u.at..).unwrap_or_default())
                        .map_err(|_| ProxyError::BadBody)?;
                    let start = u.at;
                    u.at += used;
                    match step {
                        Step::Data(r) => {
                            let data = &c.buf[start + r.start..start + r.end];
                            let line = chunked::size_line(data.len(), &mut size);
                            let mut bufs = [
                                IoSlice::new(line),
                                IoSlice::new(data),
                                IoSlice::new(b"\r\n"),
                            ];
                            let w = tokio::time::timeout(
                                stall,
                                write_all_vectored(&mut conn.io, &mut bufs),
                            )
                            .await;
                            if !matches!(w, Ok(Ok(()))) {
                                return Ok(false);
                            }
                        }
                        Step::Done => {
                            c.next = u.at;
                            let mut last = [IoSlice::new(chunked::LAST_CHUNK)];
                            let w = tokio::time::timeout(
                                stall,
                                write_all_vectored(&mut conn.io, &mut last),
                            )
                            .await;
                            return Ok(matches!(w, Ok(Ok(()))));
                        }
                        Step::NeedMore => {
                            c.buf.truncate(u.at.min(c.buf.len()));
                            if u.at == c.buf.len() {
                                c.buf.clear();
                                u.at = 0;
                            }
                            if more_or_answer(c, conn, idle).await? == More::Backend {
                                return Ok(false);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sends the request on the backend's HTTP/2 connection.
    async fn attempt_h2(
        &self,
        c: &mut Client<'_>,
        backend: &crate::backend::Backend,
        h2: crate::upstream::H2Sender,
        body: &mut Body,
        reused: bool,
    ) -> Result<Answer, Failure> {
        let Some(held) = body.held(c.buf) else {
            let Body::Streaming(u) = body else {
                return Err(Failure::client(ProxyError::BadBody));
            };
            return self.attempt_h2_streaming(c, backend, h2, u, reused).await;
        };
        let body = match held.len() {
            0 => ReqBody::Empty,
            _ => ReqBody::Full(Some(Bytes::copy_from_slice(held))),
        };
        let Some(req) = to_http_request(c.out, body) else {
            return Err(Failure::client(ProxyError::BadRequest(
                "request cannot be sent over HTTP/2",
            )));
        };
        let upload = super::body::Upload::default();
        let send = crate::upstream::Upstreams::send_h2(backend, h2, req, &upload, reused);
        match tokio::time::timeout(self.config.timeouts.backend_response, send).await {
            Ok(Ok(x)) => Ok(Answer::H2(x.response, true)),
            Ok(Err(f)) => Err(Failure::upstream(f.error, f.request.is_none(), reused)),
            Err(_) => Err(Failure::timed_out(reused)),
        }
    }

    /// A long upload to an HTTP/2 backend: the body goes through a channel that this
    /// task fills from the client while hyper's connection task sends it, and the
    /// response may come before the upload is done.
    async fn attempt_h2_streaming(
        &self,
        c: &mut Client<'_>,
        backend: &crate::backend::Backend,
        h2: crate::upstream::H2Sender,
        u: &mut Upload,
        reused: bool,
    ) -> Result<Answer, Failure> {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let Some(req) = to_http_request(c.out, ReqBody::Channel(rx)) else {
            return Err(Failure::client(ProxyError::BadRequest(
                "request cannot be sent over HTTP/2",
            )));
        };
        let upload = super::body::Upload::default();
        let t = &self.config.timeouts;
        let (result, upload_done) = {
            let send = crate::upstream::Upstreams::send_h2(backend, h2, req, &upload, reused);
            let pump = self.pump(c, u, tx);
            tokio::pin!(send, pump);
            let mut pumping = true;
            let mut upload_done = false;
            let mut deadline = None;
            let result = loop {
                let until =
                    deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
                tokio::select! {
                    r = &mut send => break Ok(r),
                    p = &mut pump, if pumping => {
                        pumping = false;
                        match p {
                            Ok(complete) => upload_done = complete,
                            Err(e) => return Err(Failure::client(e)),
                        }
                        deadline = Some(Instant::now() + t.backend_response);
                    }
                    _ = tokio::time::sleep_until(until) => break Err(()),
                }
            };
            (result, upload_done)
        };
        match result {
            Ok(Ok(x)) => Ok(Answer::H2(x.response, upload_done)),
            Ok(Err(f)) => Err(Failure::upstream(f.error, f.request.is_none(), reused)),
            Err(()) => Err(Failure::timed_out(reused)),
        }
    }

    /// Reads the rest of a long body from the client into `tx`. True when all of it
    /// went; false when the backend stopped taking it.
    async fn pump(
        &self,
        c: &mut Client<'_>,
        u: &mut Upload,
        tx: tokio::sync::mpsc::Sender<super::body::Piece>,
    ) -> Result<bool, ProxyError> {
        use super::body::Piece;
        let idle = self.config.timeouts.client_idle;
        let stall = self.config.timeouts.backend_response;
        let send = |piece: Piece| {
            let tx = tx.clone();
            async move {
                matches!(
                    tokio::time::timeout(stall, tx.send(piece)).await,
                    Ok(Ok(()))
                )
            }
        };
        if !u.decoded.is_empty() {
            let first = Bytes::from(std::mem::take(&mut u.decoded));
            if !send(Piece::Data(first)).await {
                return Ok(false);
            }
        }
        if let Rest::Length(_) = u.rest {
            // What came with the head (`left` counts only what is still to be read).
            let prefix = c.buf.get(u.at..u.prefix_end).unwrap_or_default();
            if !prefix.is_empty() {
                let data = Bytes::copy_from_slice(prefix);
                u.at = u.prefix_end;
                if !send(Piece::Data(data)).await {
                    return Ok(false);
                }
            }
        }
        loop {
            let pending = c.buf.len().saturating_sub(u.at);
            match &mut u.rest {
                Rest::Length(0) => {
                    c.next = u.at;
                    return Ok(send(Piece::End).await);
                }
                Rest::Length(left) => {
                    if pending == 0 {
                        c.buf.truncate(u.at.min(c.buf.len()));
                        if u.at >= c.buf.len() {
                            c.buf.clear();
                            u.at = 0;
                        }
                        if !read_client(c, idle).await? {
                            return Err(ProxyError::BadBody);
                        }
                        continue;
                    }
                    let n = pending.min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let data = Bytes::copy_from_slice(&c.buf[u.at..u.at + n]);
                    *left -= n as u64;
                    u.at += n;
                    if !send(Piece::Data(data)).await {
                        return Ok(false);
                    }
                }
                Rest::Chunked(dec) => {
                    let (used, step) = dec
                        .decode(c.buf.get(u.at..).unwrap_or_default())
                        .map_err(|_| ProxyError::BadBody)?;
                    let start = u.at;
                    u.at += used;
                    match step {
                        Step::Data(r) => {
                            let data =
                                Bytes::copy_from_slice(&c.buf[start + r.start..start + r.end]);
                            if !send(Piece::Data(data)).await {
                                return Ok(false);
                            }
                        }
                        Step::Done => {
                            c.next = u.at;
                            return Ok(send(Piece::End).await);
                        }
                        Step::NeedMore => {
                            if u.at >= c.buf.len() {
                                c.buf.clear();
                                u.at = 0;
                            }
                            if !read_client(c, idle).await? {
                                return Err(ProxyError::BadBody);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Relays a response to the client (or starts the tunnel a 101 opens).
    #[allow(clippy::too_many_arguments)]
    async fn relay_h1(
        &self,
        c: &mut Client<'_>,
        head: &RequestHead,
        body: &Body,
        answer: Answer,
        pick: Pick,
        tunnel: bool,
        in_flight: InFlightGuard,
        done: &mut Done,
    ) -> Result<After, ProxyError> {
        let slot = &self.slots[pick.index];
        let cookie = pick.set_cookie.then(|| slot.cookie.as_bytes());
        let (mut conn, upload_done) = match answer {
            Answer::Own(conn, upload_done) => (conn, upload_done),
            Answer::H2(resp, upload_done) => {
                let status = resp.status().as_u16();
                self.record_status(pick.index, status);
                done.status = status;
                done.upstream = Some((status, done.start.elapsed()));
                return self
                    .relay_h2(c, head, resp, cookie, in_flight, done, upload_done)
                    .await;
            }
        };
        let status = conn.head.status;
        done.upstream = Some((status, done.start.elapsed()));
        if status == 101 {
            if !tunnel {
                tracing::warn!(backend = %self.health.address(pick.index), "backend switched protocols unasked");
                return Err(ProxyError::UpgradeNotSupported);
            }
            self.record_status(pick.index, status);
            done.status = 101;
            return Ok(self.tunnel(c, head, conn, in_flight).await);
        }
        // A chunked body whose first chunk line is already here and broken: nothing has
        // gone to the client yet, so it gets a 502.
        if conn.head.framing == Framing::Chunked {
            let mut probe = Decoder::new(64 * 1024);
            let after_head = conn.pending().get(conn.head.len..).unwrap_or_default();
            if probe.decode(after_head).is_err() {
                tracing::warn!(backend = %self.health.address(pick.index), "malformed chunked response");
                self.health
                    .record_failure(pick.index, Source::Request, Reason::BadResponse);
                return Err(ProxyError::BadGateway);
            }
        }
        self.record_status(pick.index, status);
        let client_11 = head.version == Version::Http11;
        let framing = match conn.head.framing {
            Framing::None | Framing::Length(_) => OutFraming::AsIs,
            Framing::Chunked | Framing::UntilClose if client_11 => OutFraming::Chunked,
            Framing::Chunked | Framing::UntilClose => OutFraming::Close,
        };
        let body_done_reading = matches!(body, Body::Streaming(_)) && !upload_done;
        let close = c.closing || !head.keep_alive() || body_done_reading;
        c.out.clear();
        let edits = ResponseEdits {
            framing,
            client: head.version,
            close,
            set_cookie: cookie,
            tunnel: false,
        };
        encode::response_head(c.out, conn.pending(), &conn.head, &edits);
        let head_len = conn.head.len;
        conn.consume(head_len);
        done.status = status;
        let copied = self.copy_body(c, &mut conn, framing, done).await;
        drop(in_flight);
        let backend_clean = copied == Copied::Clean;
        // A connection dialed for an upgrade the backend refused is not pooled.
        if backend_clean
            && !tunnel
            && conn.head.keep_alive()
            && upload_done
            && conn.pending().is_empty()
        {
            slot.pool.checkin_own(*conn);
        }
        let whole = matches!(copied, Copied::Clean | Copied::CleanClosed);
        if !whole || close || framing == OutFraming::Close {
            return Ok(After::Close);
        }
        Ok(After::Next(usize::MAX))
    }

    fn record_status(&self, index: usize, status: u16) {
        if self.config.health.passive_5xx && (500..600).contains(&status) {
            self.health
                .record_failure(index, Source::Request, Reason::Status5xx);
        } else {
            self.health.record_success(index, Source::Request);
        }
        if self.record {
            self.health.stats(index).count_response(status);
        }
    }

    /// Writes the response head (in `c.out`) and copies the body from the backend.
    async fn copy_body(
        &self,
        c: &mut Client<'_>,
        conn: &mut BackendConn,
        framing: OutFraming,
        done: &mut Done,
    ) -> Copied {
        let idle = self.config.timeouts.client_idle;
        let stall = self.config.timeouts.backend_response;
        let mut size = [0u8; 18];
        let mut head_sent = false;
        match conn.head.framing {
            Framing::None => match write_timed(c.io, c.out, &[], idle).await {
                true => Copied::Clean,
                false => Copied::ClientGone,
            },
            Framing::Length(mut left) => loop {
                let n = conn
                    .pending()
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                if n > 0 || !head_sent {
                    let head: &[u8] = if head_sent { &[] } else { c.out };
                    if !write_timed(c.io, head, &conn.pending()[..n], idle).await {
                        return Copied::ClientGone;
                    }
                    head_sent = true;
                    done.bytes += n as u64;
                    conn.consume(n);
                    left -= n as u64;
                }
                if left == 0 {
                    return Copied::Clean;
                }
                match tokio::time::timeout(stall, conn.read_more()).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Copied::BackendFailed,
                }
            },
            Framing::Chunked => {
                let mut dec = Decoder::new(64 * 1024);
                loop {
                    let (used, step) = match dec.decode(conn.pending()) {
                        Ok(x) => x,
                        Err(_) => return Copied::BackendFailed,
                    };
                    match step {
                        Step::Data(r) => {
                            let data = &conn.pending()[r.clone()];
                            let ok = match framing {
                                OutFraming::Chunked => {
                                    let line = chunked::size_line(data.len(), &mut size);
                                    let head: &[u8] = if head_sent { &[] } else { c.out };
                                    write_parts(c.io, &[head, line, data, b"\r\n"], idle).await
                                }
                                _ => {
                                    let head: &[u8] = if head_sent { &[] } else { c.out };
                                    write_timed(c.io, head, data, idle).await
                                }
                            };
                            if !ok {
                                return Copied::ClientGone;
                            }
                            head_sent = true;
                            done.bytes += data.len() as u64;
                            conn.consume(used);
                        }
                        Step::Done => {
                            conn.consume(used);
                            let head: &[u8] = if head_sent { &[] } else { c.out };
                            let last: &[u8] = match framing {
                                OutFraming::Chunked => chunked::LAST_CHUNK,
                                _ => &[],
                            };
                            return match write_timed(c.io, head, last, idle).await {
                                true => Copied::Clean,
                                false => Copied::ClientGone,
                            };
                        }
                        Step::NeedMore => {
                            conn.consume(used);
                            if !head_sent {
                                // The head goes now: the first chunk may take a while.
                                if !write_timed(c.io, c.out, &[], idle).await {
                                    return Copied::ClientGone;
                                }
                                head_sent = true;
                            }
                            match tokio::time::timeout(stall, conn.read_more()).await {
                                Ok(Ok(n)) if n > 0 => {}
                                _ => return Copied::BackendFailed,
                            }
                        }
                    }
                }
            }
            Framing::UntilClose => loop {
                let data = conn.pending();
                let head: &[u8] = if head_sent { &[] } else { c.out };
                if !data.is_empty() || !head_sent {
                    let ok = match (framing, data.is_empty()) {
                        (OutFraming::Chunked, false) => {
                            let line = chunked::size_line(data.len(), &mut size);
                            write_parts(c.io, &[head, line, data, b"\r\n"], idle).await
                        }
                        _ => write_timed(c.io, head, data, idle).await,
                    };
                    if !ok {
                        return Copied::ClientGone;
                    }
                    head_sent = true;
                    done.bytes += data.len() as u64;
                    let n = data.len();
                    conn.consume(n);
                }
                match tokio::time::timeout(stall, conn.read_more()).await {
                    Ok(Ok(0)) => {
                        let last: &[u8] = match framing {
                            OutFraming::Chunked => chunked::LAST_CHUNK,
                            _ => &[],
                        };
                        if !write_timed(c.io, &[], last, idle).await {
                            return Copied::ClientGone;
                        }
                        // The backend closed: the connection is not reusable (Clean
                        // here only means the body is whole).
                        return Copied::CleanClosed;
                    }
                    Ok(Ok(_)) => {}
                    _ => return Copied::BackendFailed,
                }
            },
        }
    }

    /// Relays an HTTP/2 backend's response to the HTTP/1 client.
    #[allow(clippy::too_many_arguments)]
    async fn relay_h2(
        &self,
        c: &mut Client<'_>,
        head: &RequestHead,
        resp: http::Response<crate::upstream::UpBody>,
        cookie: Option<&[u8]>,
        in_flight: InFlightGuard,
        done: &mut Done,
        upload_done: bool,
    ) -> Result<After, ProxyError> {
        let idle = self.config.timeouts.client_idle;
        let stall = self.config.timeouts.backend_response;
        let (mut parts, body) = resp.into_parts();
        let crate::upstream::UpBody::H2(mut incoming) = body else {
            return Err(ProxyError::BadGateway);
        };
        super::headers::rewrite_response(&mut parts.headers);
        let no_body = head.method == Method::HEAD
            || parts.status.is_informational()
            || parts.status == http::StatusCode::NO_CONTENT
            || parts.status == http::StatusCode::NOT_MODIFIED;
        let length = parts.headers.contains_key(http::header::CONTENT_LENGTH);
        let client_11 = head.version == Version::Http11;
        let framing = if no_body || length {
            OutFraming::AsIs
        } else if client_11 {
            OutFraming::Chunked
        } else {
            OutFraming::Close
        };
        let close = c.closing || !head.keep_alive() || framing == OutFraming::Close || !upload_done;
        c.out.clear();
        write_http_head(c.out, &parts, cookie, framing, head.version, close);
        if !write_timed(c.io, c.out, &[], idle).await {
            return Ok(After::Close);
        }
        if !no_body {
            let mut size = [0u8; 18];
            loop {
                let frame = match tokio::time::timeout(stall, incoming.frame()).await {
                    Ok(Some(Ok(f))) => f,
                    Ok(None) => break,
                    _ => return Ok(After::Close),
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                done.bytes += data.len() as u64;
                let ok = match framing {
                    OutFraming::Chunked => {
                        let line = chunked::size_line(data.len(), &mut size);
                        write_parts(c.io, &[line, &data, b"\r\n"], idle).await
                    }
                    _ => write_timed(c.io, &[], &data, idle).await,
                };
                if !ok {
                    return Ok(After::Close);
                }
            }
            if framing == OutFraming::Chunked
                && !write_timed(c.io, &[], chunked::LAST_CHUNK, idle).await
            {
                return Ok(After::Close);
            }
        }
        drop(in_flight);
        Ok(if close {
            After::Close
        } else {
            After::Next(usize::MAX)
        })
    }

    /// Answers the client's upgrade with the backend's 101 and copies bytes both ways
    /// until either side closes or nothing moves for `client_idle`.
    async fn tunnel(
        &self,
        c: &mut Client<'_>,
        head: &RequestHead,
        mut conn: Box<BackendConn>,
        in_flight: InFlightGuard,
    ) -> After {
        c.out.clear();
        let edits = ResponseEdits {
            framing: OutFraming::AsIs,
            client: head.version,
            close: false,
            set_cookie: None,
            tunnel: true,
        };
        encode::response_head(c.out, conn.pending(), &conn.head, &edits);
        let head_len = conn.head.len;
        conn.consume(head_len);
        let idle = self.config.timeouts.client_idle;
        // The 101 and whatever the backend already sent past it.
        if !write_timed(c.io, c.out, conn.pending(), idle).await {
            return After::Close;
        }
        let n = conn.pending().len();
        conn.consume(n);
        // Bytes the client sent right behind its request head belong to the tunnel.
        let from_client = match c.next {
            usize::MAX => &[][..],
            next => c.buf.get(next..).unwrap_or_default(),
        };
        let mut first = [IoSlice::new(from_client)];
        if !from_client.is_empty()
            && !matches!(
                tokio::time::timeout(idle, write_all_vectored(&mut conn.io, &mut first)).await,
                Ok(Ok(()))
            )
        {
            return After::Close;
        }
        let _held = (in_flight, Rc::clone(c.open));
        super::upgrade::splice(c.io, &mut conn.io, idle).await;
        After::Close
    }
}

/// End-of-request bookkeeping.
struct Done {
    start: Instant,
    log: Option<access_log::Entry>,
    bytes: u64,
    backend: Option<usize>,
    status: u16,
    /// The backend's status and time to its response head (for the access log).
    upstream: Option<(u16, std::time::Duration)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copied {
    /// The whole body went to the client; the backend connection may be reused.
    Clean,
    /// The whole body went; the backend closed its connection to end it.
    CleanClosed,
    /// The client stopped taking bytes.
    ClientGone,
    /// The backend failed mid-body: the client's response is cut short.
    BackendFailed,
}

/// Policy on a parsed head: what we refuse before any backend, and whether the
/// request opens a tunnel (WebSocket).
fn policy(head: &RequestHead, buf: &[u8]) -> Result<bool, ProxyError> {
    for h in head.headers.iter().filter(|h| h.known == Known::Expect) {
        if !h
            .value
            .of(buf)
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
        {
            return Err(ProxyError::ExpectationFailed);
        }
    }
    if head.method == Method::CONNECT {
        return Err(ProxyError::MethodNotSupported(
            "CONNECT is not supported by this proxy",
        ));
    }
    let Some(upgrade) = head.get(buf, Known::Upgrade) else {
        return Ok(false);
    };
    if !head.connection.upgrade || head.version != Version::Http11 {
        return Ok(false);
    }
    super::upgrade::requested(upgrade)
}

/// Reads the body up to the replay limit: held whole if it ends within it.
async fn read_body(
    c: &mut Client<'_>,
    head: &RequestHead,
    idle: Duration,
) -> Result<Body, ProxyError> {
    let expects =
        head.version == Version::Http11 && head.headers.iter().any(|h| h.known == Known::Expect);
    match head.framing {
        Framing::None | Framing::UntilClose => Ok(Body::Empty),
        Framing::Length(n) => {
            let want = head.len as u64 + n;
            if expects && (c.buf.len() as u64) < want {
                send_continue(c, idle).await?;
            }
            if n as usize > REPLAY_LIMIT {
                let came = ((c.buf.len() - head.len) as u64).min(n);
                return Ok(Body::Streaming(Box::new(Upload {
                    at: head.len,
                    prefix_end: head.len + came as usize,
                    decoded: Vec::new(),
                    rest: Rest::Length(n - came),
                })));
            }
            while (c.buf.len() as u64) < want {
                if !read_client(c, idle).await? {
                    return Err(ProxyError::BadBody);
                }
            }
            c.next = want as usize;
            Ok(Body::InBuf(head.len..want as usize))
        }
        Framing::Chunked => {
            if expects && c.buf.len() == head.len {
                send_continue(c, idle).await?;
            }
            let mut dec = Decoder::new(64 * 1024);
            let mut decoded = Vec::new();
            let mut at = head.len;
            loop {
                let (used, step) = dec
                    .decode(c.buf.get(at..).unwrap_or_default())
                    .map_err(|_| ProxyError::BadBody)?;
                match step {
                    Step::Data(r) => {
                        decoded.extend_from_slice(&c.buf[at + r.start..at + r.end]);
                        at += used;
                        if decoded.len() > REPLAY_LIMIT {
                            return Ok(Body::Streaming(Box::new(Upload {
                                at,
                                prefix_end: at,
                                decoded,
                                rest: Rest::Chunked(dec),
                            })));
                        }
                    }
                    Step::Done => {
                        at += used;
                        // The bytes the chunks took in the buffer are used up: the
                        // next request starts after them.
                        c.buf.drain(head.len..at);
                        c.next = head.len;
                        return Ok(Body::Decoded(decoded));
                    }
                    Step::NeedMore => {
                        // Every byte after the head is used (copied out, or framing):
                        // give the room back, so chunk framing cannot pile up.
                        c.buf.truncate(head.len);
                        at = head.len;
                        if !read_client(c, idle).await? {
                            return Err(ProxyError::BadBody);
                        }
                    }
                }
            }
        }
    }
}

/// What came first while an upload waited for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum More {
    /// More of the body.
    Client,
    /// The backend answered (or closed) before taking the whole body.
    Backend,
}

/// Waits for more of the client's body, or for the backend to answer early.
async fn more_or_answer(
    c: &mut Client<'_>,
    conn: &mut BackendConn,
    idle: Duration,
) -> Result<More, ProxyError> {
    tokio::select! {
        r = read_client(c, idle) => match r? {
            true => Ok(More::Client),
            false => Err(ProxyError::BadBody),
        },
        _ = conn.read_more() => Ok(More::Backend),
    }
}

async fn send_continue(c: &mut Client<'_>, idle: Duration) -> Result<(), ProxyError> {
    match tokio::time::timeout(idle, c.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(ProxyError::ClientBodyTimeout),
    }
}

/// Reads more of the client's bytes; false at end of stream.
async fn read_client(c: &mut Client<'_>, idle: Duration) -> Result<bool, ProxyError> {
    c.buf.reserve(16 * 1024);
    match tokio::time::timeout(idle, c.io.read_buf(c.buf)).await {
        Ok(Ok(0)) => Ok(false),
        Ok(Ok(_)) => Ok(true),
        Ok(Err(_)) => Err(ProxyError::BadBody),
        Err(_) => Err(ProxyError::ClientBodyTimeout),
    }
}

/// Writes `head` then `body` to the client, bounded by the write-stall clock.
async fn write_timed(io: &mut ClientStream, head: &[u8], body: &[u8], idle: Duration) -> bool {
    write_parts(io, &[head, body], idle).await
}

async fn write_parts(io: &mut ClientStream, parts: &[&[u8]], idle: Duration) -> bool {
    let mut slices: [IoSlice<'_>; 4] = [IoSlice::new(&[]); 4];
    for (s, p) in slices.iter_mut().zip(parts) {
        *s = IoSlice::new(p);
    }
    let n = parts.len().min(4);
    let write = async {
        write_all_vectored(io, &mut slices[..n])
            .await
            .map_err(|(e, _)| e)?;
        io.flush().await
    };
    matches!(tokio::time::timeout(idle, write).await, Ok(Ok(())))
}

/// Serialises an `http` response head for an HTTP/1 client.
fn write_http_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    cookie: Option<&[u8]>,
    framing: OutFraming,
    client: Version,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(c) = cookie {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        OutFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        OutFraming::Close => {}
        OutFraming::AsIs => {}
    }
    if close || framing == OutFraming::Close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if client == Version::Http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Rebuilds an HTTP/1.1 head we wrote (`head`) as an `http::Request` for an HTTP/2
/// backend.
fn to_http_request(head: &[u8], body: ReqBody) -> Option<http::Request<ReqBody>> {
    let mut headers = [httparse::EMPTY_HEADER; crate::http1::request::MAX_HEADERS + 8];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let mut b = http::Request::builder()
        .method(req.method?)
        .uri(req.path?)
        .version(http::Version::HTTP_11);
    for h in req.headers.iter() {
        let known = Known::of(h.name.as_bytes());
        if known == Known::TransferEncoding || known == Known::ContentLength {
            continue;
        }
        b = b.header(h.name, h.value);
    }
    b.body(body).ok()
}
