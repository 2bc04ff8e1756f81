//! Differential tests of the request parser: the same byte streams must give the same
//! request boundaries and bodies, or be refused by both sides.
//!
//! Our codec is driven as a connection drives it ([`Conn`]): [`request::parse`] with its
//! `scanned` resume, then the body by [`Framing::Length`] or [`chunked::Decoder`], then
//! the next pipelined request, with the bytes arriving in two writes split at every
//! position, and one byte at a time. It is compared with two others:
//!
//! - [`reference`]: whole-buffer and non-incremental, RFC 9112 framing written out
//!   plainly on top of httparse. It states the codec's own bounds (19 digits of
//!   Content-Length, 16 hex digits of chunk size, both at most 2^62; 4096 bytes of
//!   chunk extension; the trailer section's size) and must agree exactly: the same
//!   requests, the same end, the same status.
//! - hyper's HTTP/1 server ([`hyper_run`]), configured as the worker configures it
//!   (but for `half_close`: each stream ends in a half-close). For every stream both
//!   accept, the requests must be identical; a stream may be refused by one side and
//!   not the other only when it falls in one of the [`DELIBERATE`] categories, each
//!   with its reason (mostly where our codec is stricter on purpose). Any other
//!   difference fails.
//!
//! The reference reads a stream that ends in nothing but empty lines as ending between
//! messages (RFC 9112 2.2: they are ignored), as hyper does; so does [`Conn`].

use std::cell::RefCell;
use std::rc::Rc;

use super::Framing;
use super::chunked::{self, Decoder, Step};
use super::framing::MAX_CONTENT_LENGTH;
use super::request::{self, Limits, RequestHead, Status};

/// Limits well above every stream here, so that only framing decides (the limits have
/// unit tests of their own). 100 header lines is hyper's default and the worker's.
const LIMITS: Limits = Limits {
    request_line: 16 * 1024,
    header_section: 64 * 1024,
    headers: 100,
};

/// The trailer section's bound given to [`Decoder::new`] (hyper's is 16 KiB).
const MAX_TRAILERS: usize = 8 * 1024;

/// One request as a server saw it.
#[derive(Clone, PartialEq, Eq)]
struct Req {
    method: String,
    target: Vec<u8>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} body {:?}",
            self.method,
            String::from_utf8_lossy(&self.target),
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// At a message boundary.
    Clean,
    /// A request did not keep the connection alive: what follows it is not read.
    Closed,
    /// Inside a message.
    Incomplete,
    /// Refused with this status (0: hyper closed the connection without one).
    Refused(u16),
}

impl End {
    fn accepted(self) -> bool {
        matches!(self, End::Clean | End::Closed)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    reqs: Vec<Req>,
    end: End,
    /// Where the last accepted request ended: where a refusal stands.
    consumed: usize,
}

// ---------------------------------------------------------------------------------
// Our codec, driven as a connection drives it.

enum BodyState {
    Head,
    Length(u64),
    Chunked(Decoder),
}

struct Conn {
    buf: Vec<u8>,
    scanned: usize,
    head: RequestHead,
    state: BodyState,
    current: Option<Req>,
    keep_alive: bool,
    reqs: Vec<Req>,
    /// Bytes taken from the stream.
    consumed: usize,
    /// Where the last whole request ended.
    done_at: usize,
    end: Option<End>,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            buf: Vec::new(),
            scanned: 0,
            head: RequestHead::default(),
            state: BodyState::Head,
            current: None,
            keep_alive: true,
            reqs: Vec::new(),
            consumed: 0,
            done_at: 0,
            end: None,
        }
    }

    /// Bytes arrived.
    fn feed(&mut self, bytes: &[u8]) {
        if self.end.is_some() {
            return;
        }
        self.buf.extend_from_slice(bytes);
        self.run();
    }

    fn run(&mut self) {
        while self.end.is_none() {
            match &mut self.state {
                BodyState::Head => {
                    if self.buf.is_empty() {
                        return;
                    }
                    match request::parse(&self.buf, self.scanned, &LIMITS, &mut self.head) {
                        Err(e) => self.end = Some(End::Refused(e.status())),
                        Ok(Status::Partial { scanned }) => {
                            assert!(scanned >= self.scanned, "the scan went back");
                            self.scanned = scanned;
                            return;
                        }
                        Ok(Status::Complete) => {
                            let h = &self.head;
                            self.current = Some(Req {
                                method: h.method.as_str().to_owned(),
                                target: h.target.of(&self.buf).to_vec(),
                                body: Vec::new(),
                            });
                            self.keep_alive = h.keep_alive();
                            let (len, framing) = (h.len, h.framing);
                            self.buf.drain(..len);
                            self.consumed += len;
                            self.scanned = 0;
                            match framing {
                                Framing::None => self.message_done(),
                                Framing::Length(n) => self.state = BodyState::Length(n),
                                Framing::Chunked => {
                                    self.state = BodyState::Chunked(Decoder::new(MAX_TRAILERS))
                                }
                                Framing::UntilClose => panic!("a request framed by close"),
                            }
                        }
                    }
                }
                BodyState::Length(left) => {
                    if self.buf.is_empty() {
                        return;
                    }
                    let n = (*left).min(self.buf.len() as u64);
                    *left -= n;
                    let done = *left == 0;
                    let body = self.buf.drain(..n as usize);
                    self.current.as_mut().unwrap().body.extend(body);
                    self.consumed += n as usize;
                    if done {
                        self.message_done();
                    }
                }
                BodyState::Chunked(decoder) => match decoder.decode(&self.buf) {
                    Err(_) => self.end = Some(End::Refused(400)),
                    Ok((used, step)) => {
                        if let Step::Data(r) = &step {
                            let data = &self.buf[r.clone()];
                            self.current.as_mut().unwrap().body.extend_from_slice(data);
                        }
                        self.buf.drain(..used);
                        self.consumed += used;
                        match step {
                            Step::Data(_) => {}
                            Step::Done => self.message_done(),
                            Step::NeedMore => {
                                assert!(self.buf.is_empty(), "NeedMore left bytes unused");
                                return;
                            }
                        }
                    }
                },
            }
        }
    }

    fn message_done(&mut self) {
        self.reqs.push(self.current.take().unwrap());
        self.done_at = self.consumed;
        self.state = BodyState::Head;
        if !self.keep_alive {
            self.end = Some(End::Closed);
        }
    }

    /// The stream ended.
    fn finish(self) -> Outcome {
        let end = self.end.unwrap_or(match self.state {
            BodyState::Head if only_empty_lines(&self.buf) => End::Clean,
            _ => End::Incomplete,
        });
        Outcome {
            reqs: self.reqs,
            end,
            consumed: self.done_at,
        }
    }
}

/// Our codec over `stream` in the given writes.
fn ours<'a>(writes: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut c = Conn::new();
    for w in writes {
        c.feed(w);
    }
    c.finish()
}

/// Nothing but empty lines, which a server ignores before a request line (RFC 9112
/// 2.2): a stream ending in them ends between messages.
fn only_empty_lines(mut s: &[u8]) -> bool {
    loop {
        match s {
            [] => return true,
            [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] => s = rest,
            _ => return false,
        }
    }
}

// ---------------------------------------------------------------------------------
// The reference: the whole stream at once, RFC 9112 written out plainly.

/// The lines of `s` up to its first empty line: the head's length, or None if the
/// stream ends first. Empty lines before the request line are skipped (RFC 9112 2.2).
fn head_len(s: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut seen_request_line = false;
    while let Some(lf) = s[at..].iter().position(|&b| b == b'\n') {
        let line = &s[at..at + lf];
        let empty = line.is_empty() || line == b"\r";
        at += lf + 1;
        if empty && seen_request_line {
            return Some(at);
        }
        seen_request_line |= !empty;
    }
    None
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// The elements of a comma-separated list across every `name` field.
fn list<'a>(headers: &[httparse::Header<'a>], name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
        .collect()
}

fn has(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case(name))
}

enum RefBody {
    None,
    Length(u64),
    Chunked,
}

/// The framing of a request head (RFC 9112 6.1-6.3), or the status refusing it.
fn ref_framing(version: u8, headers: &[httparse::Header<'_>]) -> Result<RefBody, u16> {
    if has(headers, "transfer-encoding") {
        // 6.1: a server MAY reject a request with both, and Transfer-Encoding in
        // HTTP/1.0 cannot be trusted to have been understood.
        if version == 0 || has(headers, "content-length") {
            return Err(400);
        }
        let codings: Vec<&[u8]> = list(headers, "transfer-encoding")
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect();
        let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        // 6.3: chunked must be the final coding, and 7: applied only once.
        let is_chunked = codings.last().is_some_and(|c| chunked(c));
        if !is_chunked || codings.iter().filter(|c| chunked(c)).count() != 1 {
            return Err(400);
        }
        // 6.1: a coding the server does not understand is a 501.
        return if codings.len() == 1 {
            Ok(RefBody::Chunked)
        } else {
            Err(501)
        };
    }
    if has(headers, "content-length") {
        // 8.6 of RFC 9110: 1*DIGIT, and a list of identical values may be taken as one.
        let mut length = None;
        for v in list(headers, "content-length") {
            // Leading zeros do not count against the 19 digits.
            let digits = match v.iter().position(|&d| d != b'0') {
                Some(p) => &v[p..],
                None => &v[v.len().saturating_sub(1)..],
            };
            if v.is_empty() || digits.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(400);
            }
            let n: u64 = std::str::from_utf8(digits).unwrap().parse().unwrap();
            if n > MAX_CONTENT_LENGTH || length.is_some_and(|m| m != n) {
                return Err(400);
            }
            length = Some(n);
        }
        return Ok(match length {
            Some(0) | None => RefBody::None,
            Some(n) => RefBody::Length(n),
        });
    }
    Ok(RefBody::None)
}

/// The line of `s` that starts at `at`, without its end, and whether it has one. A line
/// of chunked framing must end in CRLF: a bare LF, or a CR not before the LF, is an error.
fn crlf_line(s: &[u8], at: usize) -> Result<(&[u8], bool), ()> {
    let rest = &s[at..];
    let (line, ended) = match rest.iter().position(|&b| b == b'\n') {
        Some(lf) => (&rest[..lf], true),
        None => (rest, false),
    };
    let line = match (ended, line.strip_suffix(b"\r")) {
        (true, Some(l)) => l,
        (true, None) => return Err(()),
        // A line still arriving may end in the CR of its CRLF.
        (false, l) => l.unwrap_or(line),
    };
    if line.contains(&b'\r') {
        return Err(());
    }
    Ok((line, ended))
}

/// A chunk-size line (RFC 9112 7.1): 1*HEXDIG [ BWS chunk-ext ], or a beginning of one
/// if `ended` is false. Extensions are skipped to the line end (no NUL in them), as
/// every implementation here does, within the codec's bound.
fn chunk_size(line: &[u8], ended: bool) -> Result<u64, ()> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > 16 || (digits == 0 && (ended || !line.is_empty())) {
        return Err(());
    }
    let size = match digits {
        0 => 0,
        _ => u64::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap(), 16).unwrap(),
    };
    if size > chunked::MAX_CHUNK {
        return Err(());
    }
    match line[digits..].trim_ascii_start() {
        [] => Ok(size),
        [b';', ext @ ..] if ext.len() <= chunked::MAX_EXTENSION && !ext.contains(&0) => Ok(size),
        _ => Err(()),
    }
}

/// A trailer field line (RFC 9112 7.1.2, 5): token ":" OWS value, no control bytes.
/// Or a beginning of one when `ended` is false.
fn trailer_line(line: &[u8], ended: bool) -> bool {
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let value_ok = |v: &[u8]| {
        v.iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
    };
    match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            colon > 0 && line[..colon].iter().all(is_token) && value_ok(&line[colon + 1..])
        }
        None => !ended && line.iter().all(is_token),
    }
}

/// A chunked body at the start of `s`: Ok(Some((data, length))) when it is all there,
/// Ok(None) when the stream ends inside it, Err when it is malformed.
fn dechunk(s: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ()> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let (line, ended) = crlf_line(s, at)?;
        let size = chunk_size(line, ended)?;
        if !ended {
            return Ok(None);
        }
        at += line.len() + 2;
        if size == 0 {
            break;
        }
        let size = size as usize;
        let Some(chunk) = s.get(at..at + size) else {
            return Ok(None);
        };
        data.extend_from_slice(chunk);
        at += size;
        let after = &s[at..s.len().min(at + 2)];
        if !b"\r\n".starts_with(after) {
            return Err(());
        }
        if after.len() < 2 {
            return Ok(None);
        }
        at += 2;
    }
    // trailer-section CRLF: field lines, then an empty line.
    let mut trailers = 0;
    loop {
        let (line, ended) = crlf_line(s, at)?;
        if !(trailer_line(line, ended) || line.is_empty() && ended) {
            return Err(());
        }
        // The section's size: its field lines with their LFs (not the CRs), as the
        // codec counts it.
        if !(line.is_empty() && ended) {
            trailers += line.len() + usize::from(ended);
            if trailers > MAX_TRAILERS {
                return Err(());
            }
        }
        if !ended {
            return Ok(None);
        }
        at += line.len() + 2;
        if line.is_empty() {
            return Ok(Some((data, at)));
        }
    }
}

/// RFC 9112 3.2: a request target is origin-form, absolute-form (a proxy serves http
/// and https, and such a URI needs a host: RFC 9110 4.2.1), asterisk-form, or
/// authority-form for CONNECT alone.
fn target_form_ok(method: &[u8], target: &[u8]) -> bool {
    let lower = target.to_ascii_lowercase();
    let after_scheme = lower
        .strip_prefix(b"http://")
        .or_else(|| lower.strip_prefix(b"https://"));
    if let Some(rest) = after_scheme {
        let authority = rest
            .split(|&b| b == b'/' || b == b'?' || b == b'#')
            .next()
            .unwrap();
        let host = authority.rsplit(|&b| b == b'@').next().unwrap();
        return !host.is_empty() && !host.starts_with(b":");
    }
    target.starts_with(b"/") || target == b"*" || method == b"CONNECT"
}

/// The reference's reading of a whole stream.
fn reference(stream: &[u8]) -> Outcome {
    let mut reqs = Vec::new();
    let mut at = 0;
    let end = |reqs, end, at| Outcome {
        reqs,
        end,
        consumed: at,
    };
    loop {
        let rest = &stream[at..];
        if only_empty_lines(rest) {
            return end(reqs, End::Clean, at);
        }
        let Some(len) = head_len(rest) else {
            return end(reqs, End::Incomplete, at);
        };
        let mut slots = [httparse::EMPTY_HEADER; LIMITS.headers];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(&rest[..len]) {
            Ok(httparse::Status::Complete(n)) => assert_eq!(n, len, "{rest:?}"),
            Ok(httparse::Status::Partial) => panic!("a whole head is partial: {rest:?}"),
            Err(httparse::Error::TooManyHeaders) => return end(reqs, End::Refused(431), at),
            Err(_) => return end(reqs, End::Refused(400), at),
        }
        let method = req.method.unwrap();
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            return end(reqs, End::Refused(400), at);
        }
        let target = req.path.unwrap().as_bytes();
        if !target_form_ok(method.as_bytes(), target) {
            return end(reqs, End::Refused(400), at);
        }
        let version = req.version.unwrap();
        let body = match ref_framing(version, req.headers) {
            Ok(b) => b,
            Err(status) => return end(reqs, End::Refused(status), at),
        };
        // RFC 9112 3.2: exactly one Host in HTTP/1.1, and never two.
        let hosts: Vec<&[u8]> = (req.headers.iter())
            .filter(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value)
            .collect();
        if hosts.len() > 1 || (version == 1 && hosts.first().is_none_or(|h| h.is_empty())) {
            return end(reqs, End::Refused(400), at);
        }
        // RFC 9112 9.3: persistence.
        let tokens = list(req.headers, "connection");
        let token = |t: &[u8]| tokens.iter().any(|x| x.eq_ignore_ascii_case(t));
        let keep_alive = !token(b"close") && (version == 1 || token(b"keep-alive"));
        let mut r = Req {
            method: method.to_owned(),
            target: target.to_vec(),
            body: Vec::new(),
        };
        let body_at = at + len;
        let body_len = match body {
            RefBody::None => 0,
            RefBody::Length(n) => {
                let n = n as usize;
                let Some(b) = stream.get(body_at..body_at.saturating_add(n)) else {
                    return end(reqs, End::Incomplete, at);
                };
                r.body = b.to_vec();
                n
            }
            RefBody::Chunked => match dechunk(&stream[body_at..]) {
                Ok(Some((data, n))) => {
                    r.body = data;
                    n
                }
                Ok(None) => return end(reqs, End::Incomplete, at),
                Err(()) => return end(reqs, End::Refused(400), at),
            },
        };
        reqs.push(r);
        at = body_at + body_len;
        if !keep_alive {
            return end(reqs, End::Closed, at);
        }
    }
}

// ---------------------------------------------------------------------------------
// hyper's HTTP/1 server.

/// What hyper made of a stream: the requests its service saw whole (body collected),
/// and how the connection ended.
fn hyper_run(rt: &tokio::runtime::Runtime, stream: &[u8]) -> Outcome {
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let seen = Rc::new(RefCell::new(Vec::new()));
    let service = {
        let seen = seen.clone();
        hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let method = req.method().as_str().to_owned();
                let target = req.uri().to_string().into_bytes();
                let body = req.into_body().collect().await?.to_bytes().to_vec();
                seen.borrow_mut().push(Req {
                    method,
                    target,
                    body,
                });
                Ok::<_, hyper::Error>(http::Response::new(Empty::<bytes::Bytes>::new()))
            }
        })
    };
    let input = stream.to_vec();
    let (result, out) = rt.block_on(async move {
        let (client, server) = tokio::io::duplex(1 << 20);
        // As src/server/worker.rs configures it, but for half_close: the stream's end
        // is a half-close, and without it hyper drops requests it has read whole.
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .keep_alive(true)
            .half_close(true)
            .header_read_timeout(None)
            .max_headers(LIMITS.headers);
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async move {
            let _ = wr.write_all(&input).await;
            let _ = wr.shutdown().await;
        };
        let read = async move {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let all = async { tokio::join!(conn, write, read) };
        let (result, (), out) = tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("hyper did not finish");
        (result, out)
    });
    // The responses hyper wrote: ours are 200s; anything else is its own refusal.
    let mut status = None;
    let mut at = 0;
    while at < out.len() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&out[at..]) {
            Ok(httparse::Status::Complete(n)) => at += n,
            other => panic!("hyper wrote {other:?}: {:?}", String::from_utf8_lossy(&out)),
        }
        let code = resp.code.unwrap();
        // 100 Continue, for `Expect: 100-continue`.
        if code != 200 && code != 100 {
            status = Some(code);
            break;
        }
    }
    let reqs = std::mem::take(&mut *seen.borrow_mut());
    let end = match (status, result) {
        (Some(s), _) => End::Refused(s),
        (None, Err(_)) => End::Refused(0),
        (None, Ok(())) => End::Clean,
    };
    Outcome {
        reqs,
        end,
        consumed: 0,
    }
}

// ---------------------------------------------------------------------------------
// Where our codec is stricter than hyper, on purpose.

/// Which side refuses what the other accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stricter {
    Ours,
    Hyper,
}

/// A category of streams that may be read differently by our codec and by hyper.
struct Deliberate {
    name: &'static str,
    stricter: Stricter,
    /// Whether a stream falls in the category.
    applies: fn(&[u8]) -> bool,
}

/// The categories, each with the reason it is deliberate. A difference outside them
/// fails the test; inside one, the stricter side must refuse where the other accepts,
/// having accepted the same requests before.
///
/// Most are places where our codec is stricter. The few where hyper is stricter are
/// ones where RFC 9110/9112 lets a recipient accept, and where what we forward is
/// unambiguous because we write it ourselves.
const DELIBERATE: &[Deliberate] = &[
    // RFC 9112 6.1: a server MAY reject a request with both, and must close after it
    // if it does not. Two readings of one message's length are what request
    // smuggling exploits, so we refuse (400); hyper frames by Transfer-Encoding and
    // closes after the response.
    Deliberate {
        name: "Content-Length together with Transfer-Encoding",
        stricter: Stricter::Ours,
        applies: |s| {
            heads(s).any(|h| {
                !fields(&h, "content-length").is_empty()
                    && !fields(&h, "transfer-encoding").is_empty()
            })
        },
    },
    // RFC 9112 6.1: a coding the server does not understand is a 501. hyper removes
    // the chunked coding and hands on the rest (`gzip, chunked`) as if it were plain;
    // we would forward it re-framed and mislabelled, so we refuse.
    Deliberate {
        name: "a transfer coding before chunked",
        stricter: Stricter::Ours,
        applies: |s| {
            heads(s).any(|h| {
                codings(&h)
                    .iter()
                    .any(|c| !c.eq_ignore_ascii_case(b"chunked"))
            })
        },
    },
    // RFC 9112 7: chunked is applied at most once. hyper looks only at the final
    // element of the last Transfer-Encoding line.
    Deliberate {
        name: "chunked applied twice",
        stricter: Stricter::Ours,
        applies: |s| {
            heads(s).any(|h| {
                codings(&h)
                    .iter()
                    .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
                    .count()
                    > 1
            })
        },
    },
    // RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host,
    // and to any request with more than one. hyper does not look at Host.
    Deliberate {
        name: "Host missing, empty or repeated",
        stricter: Stricter::Ours,
        applies: |s| {
            heads(s).any(|h| {
                let hosts = fields(&h, "host");
                let http11 = h.first().is_some_and(|l| l.ends_with(b"HTTP/1.1"));
                hosts.len() > 1 || (http11 && hosts.first().is_none_or(|v| v.is_empty()))
            })
        },
    },
    // The codec's bound on Content-Length (src/http1/framing.rs): 19 digits (leading
    // zeros not counted), 2^62, so
    // that no arithmetic on it can overflow. hyper takes any u64 (leading zeros too).
    Deliberate {
        name: "Content-Length over 19 digits or 2^62",
        stricter: Stricter::Ours,
        applies: |s| {
            heads(s).any(|h| {
                fields(&h, "content-length")
                    .iter()
                    .flat_map(|v| v.split(|&b| b == b','))
                    .any(|v| {
                        let v = v.trim_ascii();
                        let digits = match v.iter().position(|&d| d != b'0') {
                            Some(p) => &v[p..],
                            None => &v[v.len().saturating_sub(1)..],
                        };
                        digits.len() > 19
                            || std::str::from_utf8(v)
                                .ok()
                                .and_then(|v| v.parse::<u64>().ok())
                                .is_some_and(|n| n > MAX_CONTENT_LENGTH)
                    })
            })
        },
    },
    // The codec's bound on a chunk size (src/http1/chunked.rs): 16 hex digits, 2^62.
    // hyper takes any u64, however many leading zeros.
    Deliberate {
        name: "chunk size over 16 hex digits or 2^62",
        stricter: Stricter::Ours,
        applies: |s| {
            lines(s).any(|l| {
                let d = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                d > 16
                    || (d > 15
                        && u64::from_str_radix(std::str::from_utf8(&l[..d]).unwrap(), 16)
                            .is_ok_and(|n| n > chunked::MAX_CHUNK))
            })
        },
    },
    // The codec bounds chunk extensions per size line (4096 bytes); hyper bounds them
    // per body (16 KiB).
    Deliberate {
        name: "a chunk extension over 4096 bytes",
        stricter: Stricter::Ours,
        applies: |s| {
            lines(s).any(|l| {
                l.len() > chunked::MAX_EXTENSION
                    && l.first().is_some_and(u8::is_ascii_hexdigit)
                    && l.contains(&b';')
            })
        },
    },
    // A NUL in a chunk extension: no valid extension has one (RFC 9112 7.1.1), and NUL
    // is where C parsers stop reading a line. hyper skips any byte but CR and LF.
    Deliberate {
        name: "NUL in a chunk extension",
        stricter: Stricter::Ours,
        applies: |s| {
            lines(s).any(|l| {
                l.first().is_some_and(u8::is_ascii_hexdigit) && l.contains(&b';') && l.contains(&0)
            })
        },
    },
    // RFC 9112 3.2.3: authority-form is only for CONNECT, and a target must take one
    // of the four forms (a proxy serves http and https absolute-form, and RFC 9110
    // 4.2.1 makes an http URI without a host invalid). hyper takes whatever
    // `http::Uri` parses, `GET example.com:80`, `GET ftp://x/` and `GET http://:80/`
    // included, and we would forward it as it came (the last with an empty Host).
    Deliberate {
        name: "a target of no form we serve (authority-form outside CONNECT, another scheme, no host)",
        stricter: Stricter::Ours,
        applies: |s| request_lines(s).any(|(method, target)| !target_form_ok(method, target)),
    },
    // Every line of chunked framing ends in CRLF for us, the trailer section's too.
    // hyper reads a trailer line to its CR, bare LFs inside it included, and takes a
    // bare LF straight after the last chunk as the start of a trailer (so
    // `0\r\n\nGET /...` is one body to hyper, with the next request in its trailers).
    Deliberate {
        name: "a bare LF in the trailer section",
        stricter: Stricter::Ours,
        applies: |s| {
            s.windows(3).enumerate().any(|(i, w)| {
                w == b"0\r\n"
                    && (i == 0 || s[i - 1] == b'\n')
                    && s[i + 3..]
                        .iter()
                        .enumerate()
                        .any(|(j, &b)| b == b'\n' && s[i + 3 + j - 1] != b'\r')
            })
        },
    },
    // RFC 9110 8.6: a recipient MAY take `Content-Length: 42, 42` (the same value as a
    // list, on one line or several) as 42. Our framing reads lists so (the same code
    // reads backends' responses, where hyper's client does too); hyper's server wants
    // one number per line. We forward one canonical Content-Length, so the backend
    // never sees the list.
    Deliberate {
        name: "Content-Length as a list of the same value",
        stricter: Stricter::Hyper,
        applies: |s| {
            heads(s).any(|h| {
                fields(&h, "content-length")
                    .iter()
                    .any(|v| v.contains(&b','))
            })
        },
    },
    // RFC 9110 5.6.1: a recipient MUST accept empty list elements (`, chunked,`).
    // hyper looks at the text after the last comma alone, so it finds no chunked
    // there and refuses. We forward our own `Transfer-Encoding: chunked`.
    Deliberate {
        name: "empty elements in the Transfer-Encoding list",
        stricter: Stricter::Hyper,
        applies: |s| {
            heads(s).any(|h| {
                fields(&h, "transfer-encoding")
                    .iter()
                    .any(|v| v.split(|&b| b == b',').any(|e| e.trim_ascii().is_empty()))
            })
        },
    },
];

/// The request lines of a stream (every line of three words whose last is an HTTP
/// version): method and target.
fn request_lines(s: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    lines(s).filter_map(|l| {
        let mut words = l.split(|&b| b == b' ');
        let (m, t, v) = (words.next()?, words.next()?, words.next()?);
        (words.next().is_none() && v.starts_with(b"HTTP/")).then_some((m, t))
    })
}

/// The lines of a stream, line ends (LF or CRLF) removed.
fn lines(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The stream's runs of non-empty lines: every head (and some body lines).
fn heads(s: &[u8]) -> impl Iterator<Item = Vec<&[u8]>> {
    let mut all: Vec<Vec<&[u8]>> = vec![vec![]];
    for l in lines(s) {
        if l.is_empty() {
            all.push(vec![]);
        } else {
            all.last_mut().unwrap().push(l);
        }
    }
    all.into_iter().filter(|h| !h.is_empty())
}

/// The values of the `name` fields of a head.
fn fields<'a>(head: &[&'a [u8]], name: &str) -> Vec<&'a [u8]> {
    head.iter()
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            l[..colon]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| l[colon + 1..].trim_ascii())
        })
        .collect()
}

/// The transfer codings of a head, across its lines.
fn codings<'a>(head: &[&'a [u8]]) -> Vec<&'a [u8]> {
    fields(head, "transfer-encoding")
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty())
        .collect()
}

/// A request target as hyper records it (through `http::Uri`, which lower-cases the
/// scheme, gives an empty absolute path as `/` and drops a `#fragment`): the same
/// target in hyper's spelling. (Our codec keeps the bytes as sent, fragment included.)
fn as_hyper_records(target: &[u8]) -> Vec<u8> {
    match http::Uri::try_from(target) {
        Ok(u) => u.to_string().into_bytes(),
        Err(_) => target.to_vec(),
    }
}

/// Whether `ours` and `hyper` may differ on `stream`: the reason, or an error saying
/// how they differ.
fn judge(stream: &[u8], ours: &Outcome, hyper: &Outcome) -> Result<Option<&'static str>, String> {
    let ours_reqs: Vec<Req> = (ours.reqs.iter())
        .map(|r| Req {
            target: as_hyper_records(&r.target),
            ..r.clone()
        })
        .collect();
    if ours_reqs == hyper.reqs && ours.end.accepted() == hyper.end.accepted() {
        return Ok(None);
    }
    // The stricter side refused, after the same requests as the other side saw.
    let fits = |d: &Deliberate| {
        let (strict, strict_end, lax) = match d.stricter {
            Stricter::Ours => (&ours_reqs, ours.end, &hyper.reqs),
            Stricter::Hyper => (&hyper.reqs, hyper.end, &ours_reqs),
        };
        !strict_end.accepted()
            && lax.len() >= strict.len()
            && lax[..strict.len()] == strict[..]
            && (d.applies)(stream)
    };
    match DELIBERATE.iter().find(|d| fits(d)) {
        Some(d) => Ok(Some(d.name)),
        None => Err(format!(
            "ours: {ours_reqs:?} {:?}\nhyper: {:?} {:?}",
            ours.end, hyper.reqs, hyper.end
        )),
    }
}

// ---------------------------------------------------------------------------------
// The streams.

/// Byte streams, each with what it is about.
fn streams() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut add = |name: &'static str, s: &[u8]| v.push((name, s.to_vec()));

    // Plain requests and pipelines of mixed framings.
    add("one GET", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    add(
        "GET with query",
        b"GET /p/q?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
    );
    add(
        "pipelined GET, CL, chunked",
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    add(
        "pipelined chunked, chunked, GET",
        b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n2\r\n56\r\n0\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: a\r\ntransfer-encoding: CHUNKED\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "pipelined CL, CL 0, GET",
        b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz\
          POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "body that looks like a request",
        b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 27\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "chunk data that looks like framing",
        b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n0\r\n\r\n\r\n0\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add("Content-Length with list of equal values", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    add(
        "Content-Length with leading zeros",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0003\r\n\r\nabc",
    );
    add(
        "Content-Length with spaces around",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:   2  \r\n\r\nab",
    );
    add("extension method", b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n");
    add("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    add("many headers", b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nA: 4\r\nX-Long-Name-Here: v v v\r\n\r\n");
    add(
        "empty header value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nY:    \r\n\r\n",
    );
    add(
        "obs-text in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9 \xff\r\n\r\n",
    );
    add(
        "tab in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n",
    );

    // Chunk extensions and trailers.
    add(
        "chunk extensions",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          3;name=value\r\nabc\r\n2;a;b=\"q;uoted\"\r\nde\r\n1 ;x\r\nf\r\n0;last\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "whitespace after chunk size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 \t\r\nabc\r\n0  \r\n\r\n",
    );
    add(
        "trailers",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          2\r\nhi\r\n0\r\nX-Trailer: 1\r\nOther: two words\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "trailer with empty value",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX:\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "trailer that is a request line",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET /smuggled HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "trailer line without colon",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnocolon\r\n\r\n",
    );
    add(
        "trailer with obs-fold",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n",
    );
    add(
        "trailer with NUL",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\0b\r\n\r\n",
    );
    add(
        "trailer with bare CR",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\rb\r\n\r\n",
    );
    add(
        "chunk extension with NUL",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\0\r\nx\r\n0\r\n\r\n",
    );
    add(
        "chunk extension with bare CR",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\nx\r\n0\r\n\r\n",
    );
    let long_ext = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
        "e".repeat(chunked::MAX_EXTENSION + 1)
    );
    add("chunk extension over the bound", long_ext.as_bytes());
    let ok_ext = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
        "e".repeat(chunked::MAX_EXTENSION)
    );
    add("chunk extension at the bound", ok_ext.as_bytes());

    // Bare LF line ends.
    add("bare LF head", b"GET / HTTP/1.1\nHost: a\n\n");
    add("bare LF head, pipelined", b"GET /1 HTTP/1.1\nHost: a\n\nGET /2 HTTP/1.1\r\nHost: a\n\r\nGET /3 HTTP/1.1\nHost: a\r\n\n");
    add(
        "bare LF head with CL",
        b"POST / HTTP/1.1\nHost: a\nContent-Length: 2\n\nhiGET / HTTP/1.1\nHost: a\n\n",
    );
    add(
        "bare LF after chunk size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    );
    add(
        "bare LF after chunk data",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
    );
    add(
        "bare LF after last chunk",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n",
    );
    add(
        "bare LF ending the body",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n",
    );
    add(
        "bare LF ending the body, request after",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "bare LF in a trailer",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n",
    );
    add(
        "bare LF in a chunk extension",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nx\r\n0\r\n\r\n",
    );
    add(
        "chunk size line ended by CR CR LF",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\r\nx\r\n0\r\n\r\n",
    );
    add("CR CR LF in a head", b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n");
    add(
        "bare CR line ends in a head",
        b"GET / HTTP/1.1\rHost: a\r\r",
    );

    // obs-fold, NUL, bare CR and spaces where they may not be.
    add(
        "obs-fold",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    );
    add(
        "obs-fold with tab",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n",
    );
    add(
        "obs-fold of Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 3\r\n\r\nabc",
    );
    add(
        "whitespace before the first header",
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    );
    add(
        "NUL in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
    );
    add(
        "NUL in a name",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\0Y: b\r\n\r\n",
    );
    add(
        "NUL in the target",
        b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "bare CR in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
    );
    add(
        "bare CR in the request line",
        b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "space in a header name",
        b"GET / HTTP/1.1\r\nHost: a\r\nX Y: b\r\n\r\n",
    );
    add(
        "space before the colon",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc",
    );
    add(
        "Transfer-Encoding with space before colon",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    );
    add(
        "header line without colon",
        b"GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n",
    );
    add(
        "empty header name",
        b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",
    );
    add(
        "two spaces in the request line",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "tab in the request line",
        b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add("bad method token", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n");
    add("lower-case method", b"get / HTTP/1.1\r\nHost: a\r\n\r\n");
    add("bad version", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n");
    add("HTTP/2 version", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n");
    add("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    add("HTTP/0.9 request", b"GET /\r\n\r\n");
    add(
        "garbage",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    );
    add(
        "valid then obs-fold",
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    );
    add("valid then NUL", b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nxGET /2 HTTP/1.1\r\nHost: a\r\nX: \0\r\n\r\n");

    // Huge and overflowing sizes.
    add(
        "Content-Length 2^62",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4611686018427387904\r\n\r\nabc",
    );
    add(
        "Content-Length 2^62 + 1",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4611686018427387905\r\n\r\nabc",
    );
    add(
        "Content-Length u64 max",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\nabc",
    );
    add(
        "Content-Length over u64",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\nabc",
    );
    add("Content-Length of 40 digits", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000000000000000000000000\r\n\r\n");
    add(
        "Content-Length 20 digits, leading zeros",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000003\r\n\r\nabc",
    );
    add(
        "Content-Length with plus",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    );
    add(
        "negative Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    );
    add(
        "hex Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc",
    );
    add(
        "empty Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
    );
    add(
        "Content-Length with trailing comma",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3,\r\n\r\nabc",
    );
    add(
        "Content-Length with a space inside",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\nabcdefghijkl",
    );
    add(
        "body shorter than Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
    );
    add(
        "chunk size 2^62",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4000000000000000\r\nabc",
    );
    add(
        "chunk size 2^62 + 1",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4000000000000001\r\nabc",
    );
    add(
        "chunk size u64 max",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
    );
    add(
        "chunk size over u64",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nabc",
    );
    add("chunk size of 17 digits, leading zero", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000003\r\nabc\r\n0\r\n\r\n");
    add("chunk size 16 digits, leading zeros", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000003\r\nabc\r\n0\r\n\r\n");
    add("chunk size that wraps to 3", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n");
    add(
        "negative chunk size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    );
    add(
        "chunk size with 0x",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    );
    add(
        "empty chunk size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n",
    );
    add(
        "chunk longer than said",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
    );
    add(
        "chunked body cut short",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    );
    add(
        "chunked body without its end",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n",
    );

    // Content-Length and Transfer-Encoding, together and apart.
    add("CL then TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    add("TE then CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    add(
        "CL+TE smuggling a request",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add("CL+TE with invalid CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n0\r\n\r\n");
    add(
        "differing CLs",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
    add(
        "differing CLs in one line",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
    );
    add("gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    add("gzip then chunked on two lines", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    add("chunked then gzip on two lines", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    add("chunked, gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    add("chunked, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    add("chunked on two lines", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    add("identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc");
    add(
        "identity alone",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\nabc",
    );
    add(
        "empty Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
    );
    add(
        "TE with empty elements",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked,\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    );
    add(
        "chunked with parameter",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
    );
    add(
        "chunked with a typo",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunk\r\n\r\n0\r\n\r\n",
    );
    add(
        "xchunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    );
    add("CL on a GET", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");

    // Leading empty lines.
    add(
        "leading CRLFs",
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add("leading LFs", b"\n\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    add("CRLF after a body", b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    add("leading lone CR", b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    add("leading space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    add("empty lines only", b"\r\n\r\n\n");

    // HTTP/1.0.
    add(
        "HTTP/1.0 without Host",
        b"GET / HTTP/1.0\r\n\r\nGET /not-read HTTP/1.0\r\n\r\n",
    );
    add("HTTP/1.0 keep-alive pipelined", b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nPOST /2 HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.0\r\n\r\nGET /not-read HTTP/1.0\r\n\r\n");
    add(
        "HTTP/1.0 with chunked",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    add("HTTP/1.0 keep-alive with chunked", b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    add(
        "HTTP/1.0 with CL",
        b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    );
    add(
        "HTTP/1.0 with two Hosts",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    );
    add("HTTP/1.1 Connection: close", b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /not-read HTTP/1.1\r\nHost: a\r\n\r\n");
    add("close among other tokens", b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: x-foo, CLOSE\r\nX-Foo: 1\r\n\r\nGET /not-read HTTP/1.1\r\n\r\n");
    add("close then keep-alive", b"GET /1 HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\nGET /not-read HTTP/1.0\r\n\r\n");

    // Host.
    add("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n");
    add(
        "HTTP/1.1 with empty Host",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    );
    add("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    add(
        "valid then no Host",
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
    );

    // Absolute-form and other targets.
    add(
        "absolute-form",
        b"GET http://example.com/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    add(
        "absolute-form without path",
        b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    add(
        "absolute-form https with port",
        b"GET https://example.com:8443/x HTTP/1.1\r\nHost: other\r\n\r\n",
    );
    add(
        "absolute-form with userinfo",
        b"GET http://u:p@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    add(
        "absolute-form, upper-case scheme",
        b"GET HTTP://EXAMPLE.com/A HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    add("absolute-form, pipelined with CL", b"POST http://a/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET http://a/2 HTTP/1.1\r\nHost: a\r\n\r\n");
    add("query-only target", b"GET ?x HTTP/1.1\r\nHost: a\r\n\r\n");
    add(
        "target with percent and brackets",
        b"GET /a%2Fb/[x]/c;p=1 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "target with a fragment",
        b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "UTF-8 target",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "target not UTF-8",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "authority-form on GET",
        b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add("bare word target", b"GET a HTTP/1.1\r\nHost: a\r\n\r\n");
    add("asterisk on GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n");
    add(
        "absolute-form without a host",
        b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "absolute-form with a port only",
        b"GET http://:80/x HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "ftp scheme",
        b"GET ftp://example.com/x HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "valid then bad target",
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET ?x HTTP/1.1\r\nHost: a\r\n\r\n",
    );

    // More mixes.
    add(
        "Expect: 100-continue, pipelined",
        b"POST /1 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi\
          GET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "close after a chunked body",
        b"POST /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n\
          GET /not-read HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    add(
        "NUL and CRLF in chunk data",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\na\0\r\nb\r\n0\r\n\r\n",
    );
    add(
        "chunked with odd case and tab",
        b"POST / HTTP/1.1\r\nHost: a\r\ntRANSFER-eNCODING:\tChunked\r\n\r\nb\r\n0123456789a\r\n0\r\n\r\n",
    );
    add(
        "chunked, then an empty Transfer-Encoding line",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    );
    add(
        "HTTP/1.1 keep-alive, HTTP/1.0 keep-alive with CL, HTTP/1.1 chunked",
        b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n\
          POST /2 HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx\
          POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nyz\r\n0\r\n\r\n",
    );

    // Header counts: 100 lines are allowed, 101 are not (hyper's default, and ours here).
    let count = |n: usize| {
        let mut s = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..n {
            s.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        s.extend_from_slice(b"\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
        s
    };
    add("100 header lines", &count(100));
    add("101 header lines", &count(101));
    v
}

/// Every way of delivering `stream` a test uses: whole, split in two at every
/// position, and one byte at a time.
fn deliveries(stream: &[u8]) -> impl Iterator<Item = (String, Vec<&[u8]>)> {
    let splits = (0..=stream.len()).map(move |at| {
        let (a, b) = stream.split_at(at);
        (format!("split at {at}"), vec![a, b])
    });
    let bytes = std::iter::once(("one byte at a time".to_owned(), stream.chunks(1).collect()));
    splits.chain(bytes)
}

fn show(s: &[u8]) -> String {
    let text = String::from_utf8_lossy(s);
    if text.len() > 300 {
        format!("{:?}...", &text[..300])
    } else {
        format!("{text:?}")
    }
}

#[test]
fn codec_agrees_with_the_reference_at_every_split() {
    let mut failures = Vec::new();
    for (name, stream) in streams() {
        let expected = reference(&stream);
        for (how, writes) in deliveries(&stream) {
            let got = ours(writes);
            if got != expected {
                failures.push(format!(
                    "{name} ({how}): {}\n  ours:      {got:?}\n  reference: {expected:?}",
                    show(&stream)
                ));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn codec_agrees_with_hyper_or_is_deliberately_stricter() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();
    let mut allowed = Vec::new();
    for (name, stream) in streams() {
        let ours = ours([&stream[..]]);
        let hyper = hyper_run(&rt, &stream);
        match judge(&stream, &ours, &hyper) {
            Ok(None) => {}
            Ok(Some(why)) => allowed.push(format!("{name}: {why}")),
            Err(e) => failures.push(format!("{name}: {}\n{e}", show(&stream))),
        }
    }
    eprintln!(
        "differences from hyper by design:\n  {}",
        allowed.join("\n  ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
