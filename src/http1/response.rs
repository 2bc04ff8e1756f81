//! Backend response heads: parsed once, framed by the same rules as requests.
//!
//! A backend is trusted to answer, not to frame well: a head httparse refuses, one over
//! [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines, differing or invalid Content-Lengths,
//! and any transfer coding but a lone `chunked` (which we would re-frame and so
//! mislabel: `gzip, chunked` relayed as plain chunked hands the client gzip bytes) are
//! all [`ResponseError`]s, which the proxy turns into a 502. A response with no
//! framing runs until the backend closes (RFC 9112 6.3).

use std::mem::MaybeUninit;

use super::framing::{self, Coding, LengthError};
use super::{ConnectionTokens, Framing, Header, Known, Span, Version};

/// The largest response head accepted.
pub const MAX_HEAD: usize = 256 * 1024;
/// The most header lines in a response head.
pub const MAX_HEADERS: usize = 256;

/// Why a response head cannot be relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseError(pub &'static str);

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ResponseError {}

/// A parsed response head. Spans refer to the buffer it was parsed from.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Span,
    pub version: Version,
    pub headers: Vec<Header>,
    /// Bytes of the head: the body starts here.
    pub len: usize,
    pub framing: Framing,
    pub connection: ConnectionTokens,
    /// Framed, but in a way that leaves the connection's state in doubt
    /// (Content-Length beside Transfer-Encoding, Transfer-Encoding in HTTP/1.0): the
    /// body is relayed, then the connection closes (RFC 9112 6.1, 6.3).
    pub faulty: bool,
}

impl Default for ResponseHead {
    fn default() -> ResponseHead {
        ResponseHead {
            status: 0,
            reason: Span::default(),
            version: Version::Http11,
            headers: Vec::new(),
            len: 0,
            framing: Framing::None,
            connection: ConnectionTokens::default(),
            faulty: false,
        }
    }
}

impl ResponseHead {
    /// Whether the backend connection may carry another request after this response.
    pub fn keep_alive(&self) -> bool {
        let asked = match self.version {
            Version::Http11 => !self.connection.close,
            Version::Http10 => self.connection.keep_alive && !self.connection.close,
        };
        asked && !self.faulty && self.framing != Framing::UntilClose
    }

    /// True for 1xx other than 101: an interim response, the real one follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// What the bytes so far hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Complete,
    /// More bytes are needed; nothing before `scanned` ends the head.
    Partial {
        scanned: usize,
    },
}

/// Parses the response head at the start of `buf` into `head`. `to_head` is true when
/// the request was HEAD (the response then has no body, whatever it says).
pub fn parse(
    buf: &[u8],
    scanned: usize,
    to_head: bool,
    head: &mut ResponseHead,
) -> Result<Status, ResponseError> {
    // Most heads arrive whole: parse at once; scan for the end (so a head that
    // trickles in is not parsed again per read) only when it did not.
    // Anything else is decided by the scan below, on the head's bytes alone, so that
    // the answer is the same whatever the reads it came in.
    if scanned == 0 && buf.len() >= 5 {
        if let Ok(Some(status)) = parse_head(buf, to_head, head) {
            return Ok(status);
        }
    }
    // Empty lines may come before the status line (a backend's stray CRLF after the
    // last body): httparse skips them, and so do the scan and the check for garbage,
    // so that a head reads the same whole or in pieces.
    let start = super::skip_empty_lines(buf);
    let skipped = buf.len() - start.len();
    let Some(end) = super::find_head_end(buf, scanned.max(skipped)) else {
        if buf.len() > MAX_HEAD {
            return Err(ResponseError("response head too large"));
        }
        if start.len() >= 5 && !start.starts_with(b"HTTP/") {
            // Not HTTP at all (an HTTP/0.9-style reply, say): no need to wait for more.
            return Err(ResponseError("malformed response head"));
        }
        return Ok(Status::Partial { scanned: buf.len() });
    };
    if end > MAX_HEAD {
        return Err(ResponseError("response head too large"));
    }
    match parse_head(&buf[..end], to_head, head)? {
        Some(status) => Ok(status),
        None => Err(ResponseError("malformed response head")),
    }
}

/// Runs httparse over `buf`: `None` when the head is not all there.
fn parse_head(
    buf: &[u8],
    to_head: bool,
    head: &mut ResponseHead,
) -> Result<Option<Status>, ResponseError> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Err(ResponseError("response head too large"));
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ResponseError("too many response header lines"));
        }
        Err(_) => return Err(ResponseError("malformed response head")),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(ResponseError("malformed status line"));
    };
    if !(100..=999).contains(&status) {
        return Err(ResponseError("malformed status code"));
    }
    head.status = status;
    head.reason = resp
        .reason
        .map_or(Span::default(), |r| Span::within(buf, r.as_bytes()));
    head.version = Version::from_minor(minor);
    head.len = parsed;
    head.connection = super::fill_headers(buf, resp.headers, &mut head.headers);
    head.framing = response_framing(buf, head, to_head)?;
    let te = head
        .headers
        .iter()
        .any(|h| h.known == Known::TransferEncoding);
    let cl = head.headers.iter().any(|h| h.known == Known::ContentLength);
    head.faulty = te && (cl || head.version == Version::Http10);
    Ok(Some(Status::Complete))
}

/// The body's framing, by RFC 9112 6.3 for responses.
fn response_framing(
    buf: &[u8],
    head: &ResponseHead,
    to_head: bool,
) -> Result<Framing, ResponseError> {
    if to_head || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(Framing::None);
    }
    match framing::transfer_coding(buf, &head.headers) {
        Coding::Chunked => return Ok(Framing::Chunked),
        Coding::ChunkedAfterOthers | Coding::NotChunkedLast => {
            return Err(ResponseError(
                "backend used a transfer coding other than chunked",
            ));
        }
        Coding::Absent => {}
    }
    match framing::content_length(buf, &head.headers) {
        Ok(Some(n)) => Ok(Framing::Length(n)),
        Ok(None) => Ok(Framing::UntilClose),
        Err(LengthError::Invalid) => Err(ResponseError("invalid Content-Length from backend")),
        Err(LengthError::Differing) => Err(ResponseError("differing Content-Lengths from backend")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8], to_head: bool) -> Result<ResponseHead, ResponseError> {
        let mut head = ResponseHead::default();
        match parse(bytes, 0, to_head, &mut head)? {
            Status::Complete => Ok(head),
            Status::Partial { .. } => Err(ResponseError("partial")),
        }
    }

    #[test]
    fn framing_of_responses() {
        let f = |text: &str, to_head: bool| parse_all(text.as_bytes(), to_head).map(|h| h.framing);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false),
            Ok(Framing::Length(3))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
            Ok(Framing::None)
        );
        assert_eq!(
            f(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            Ok(Framing::None)
        );
        assert_eq!(f("HTTP/1.0 200 OK\r\n\r\n", false), Ok(Framing::UntilClose));
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            Ok(Framing::Chunked)
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
            "hello world\r\n\r\n",
        ] {
            assert!(f(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_refused_without_waiting() {
        let mut head = ResponseHead::default();
        assert!(parse(b"SSH-2.0-OpenSSH", 0, false, &mut head).is_err());
        assert_eq!(
            parse(b"HTTP/1.1 200", 0, false, &mut head),
            Ok(Status::Partial { scanned: 12 })
        );
    }

    #[test]
    fn leading_empty_lines_are_read_alike_whole_or_in_pieces() {
        let full = b"\r\n\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_all(full, false).unwrap().status, 204);
        let mut head = ResponseHead::default();
        let mut scanned = 0;
        for n in 0..full.len() {
            match parse(&full[..n], scanned, false, &mut head) {
                Ok(Status::Partial { scanned: s }) => scanned = s,
                other => panic!("{n} bytes: {other:?}"),
            }
        }
        assert_eq!(parse(full, scanned, false, &mut head), Ok(Status::Complete));
        assert_eq!(head.status, 204);
        assert!(parse(b"\r\nSSH-2.0", 0, false, &mut head).is_err());
    }

    #[test]
    fn keep_alive_and_interim() {
        let h = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert!(h.keep_alive());
        let h = parse_all(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert!(!h.keep_alive(), "delimited by close");
        let h = parse_all(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(h.keep_alive());
        let h = parse_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!h.keep_alive(), "faulty framing: close after the body");
        let h = parse_all(b"HTTP/1.1 100 Continue\r\n\r\n", false).unwrap();
        assert!(h.is_interim());
        assert_eq!(h.framing, Framing::None);
    }
}
