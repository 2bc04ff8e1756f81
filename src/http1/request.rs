//! Client request heads: parsed once, validated, framed.
//!
//! [`parse`] looks for the end of the head first (a cheap scan that resumes where the
//! last one stopped, so a head trickling in is not re-parsed per byte), enforces the
//! size limits even on a partial head (414 for a request line, 431 for the header
//! section, without waiting for the rest), then runs `httparse` once over the whole
//! head and decides the body's framing. Every way a head can be refused maps to a
//! status and a one-line reason ([`RequestError`]); the caller answers with them and
//! closes, and nothing reaches a backend.

use std::mem::MaybeUninit;

use super::framing::{self, Coding, LengthError};
use super::{ConnectionTokens, Framing, Header, Known, Span, Version, skip_empty_lines};

/// Size limits on a request head (the contract's `limits:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, CRLF excluded.
    pub request_line: usize,
    /// Largest header section (all header lines with their line ends).
    pub header_section: usize,
    /// Most header lines.
    pub headers: usize,
}

/// The most header lines any config can allow (`limits.headers` is at most 1000).
pub const MAX_HEADERS: usize = 1000;

/// Why a request head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// 400: malformed or ambiguous.
    Bad(&'static str),
    /// 414: the request line is over the limit.
    LineTooLong,
    /// 431: the header section is over the limit (bytes or lines).
    HeadTooLarge,
    /// 501: a transfer coding other than `chunked`.
    UnsupportedCoding,
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Bad(_) => 400,
            RequestError::LineTooLong => 414,
            RequestError::HeadTooLarge => 431,
            RequestError::UnsupportedCoding => 501,
        }
    }

    /// The one-line reason for the text body.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::Bad(why) => why,
            RequestError::LineTooLong => "request target too long",
            RequestError::HeadTooLarge => "request header section too large",
            RequestError::UnsupportedCoding => "transfer coding not supported (only chunked is)",
        }
    }
}

/// How the request names its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/path?query` (forwarded as is).
    Origin,
    /// `*` (OPTIONS).
    Asterisk,
    /// `http://authority/path`: forwarded as `path` with `Host: authority`.
    Absolute { authority: Span, path: Span },
    /// `host:port` (CONNECT).
    Authority,
}

/// A parsed request head. Spans refer to the buffer it was parsed from.
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: http::Method,
    pub method_span: Span,
    pub target: Span,
    pub form: Target,
    pub version: Version,
    pub headers: Vec<Header>,
    /// Bytes of the head, empty line included: the body starts here.
    pub len: usize,
    pub framing: Framing,
    pub connection: ConnectionTokens,
    /// Index in `headers` of the Host line.
    pub host: Option<usize>,
}

impl Default for RequestHead {
    fn default() -> RequestHead {
        RequestHead {
            method: http::Method::GET,
            method_span: Span::default(),
            target: Span::default(),
            form: Target::Origin,
            version: Version::Http11,
            headers: Vec::new(),
            len: 0,
            framing: Framing::None,
            connection: ConnectionTokens::default(),
            host: None,
        }
    }
}

impl RequestHead {
    /// Whether the client lets the connection carry another request after this one.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.connection.close,
            Version::Http10 => self.connection.keep_alive && !self.connection.close,
        }
    }

    /// The value of the first header of kind `known`.
    pub fn get<'a>(&self, buf: &'a [u8], known: Known) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.known == known)
            .map(|h| h.value.of(buf))
    }
}

/// The result of looking at the bytes read so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The head is complete: `head` holds it.
    Complete,
    /// More bytes are needed; nothing before `scanned` ends the head.
    Partial { scanned: usize },
}

/// Parses the request head at the start of `buf` into `head` (reusing its storage).
/// `scanned` is what an earlier call on a shorter `buf` returned (0 at first).
pub fn parse(
    buf: &[u8],
    scanned: usize,
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<Status, RequestError> {
    // Most heads arrive whole in one read: parse at once, and scan for the end (so a
    // head that trickles in is not parsed again per read) only when it did not.
    // Anything but a whole good head is decided by the scan below, on the head's bytes
    // alone, so that the answer is the same whatever the reads it came in.
    if scanned == 0 && matches!(parse_complete(buf, false, limits, head), Ok(true)) {
        return Ok(Status::Complete);
    }
    let mut from = scanned;
    loop {
        let Some(end) = super::find_head_end(buf, from) else {
            check_partial(buf, limits)?;
            return Ok(Status::Partial { scanned: buf.len() });
        };
        match parse_complete(&buf[..end], true, limits, head)? {
            true => return Ok(Status::Complete),
            // Only empty lines so far (they may precede a request line).
            false => from = end,
        }
    }
}

/// Refuses a partial head that is already over a limit.
fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), RequestError> {
    let body = skip_empty_lines(buf);
    let line_end = body.iter().position(|&b| b == b'\n');
    let line_len = line_end.unwrap_or(body.len());
    if line_len > limits.request_line + 1 {
        return Err(RequestError::LineTooLong);
    }
    if line_end.is_some() && body.len() - line_len > limits.header_section + 2 {
        return Err(RequestError::HeadTooLarge);
    }
    Ok(())
}

/// How many bytes of `buf` are complete empty lines (CRLF or LF) before anything else.
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.len() - skip_empty_lines(buf).len()
}

/// Parses the head at the start of `buf` (which ends with its empty line when
/// `ends_at_head`). False when it is not all there, or `buf` held only empty lines.
fn parse_complete(
    buf: &[u8],
    ends_at_head: bool,
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<bool, RequestError> {
    let rest = skip_empty_lines(buf);
    if rest.is_empty() {
        return Ok(false);
    }
    let line_len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = rest[..line_len]
        .strip_suffix(b"\r")
        .unwrap_or(&rest[..line_len]);
    if line.len() > limits.request_line {
        return Err(RequestError::LineTooLong);
    }
    // The limits first, as for a partial head (`buf` is the head and nothing more).
    if ends_at_head && rest.len() - line_len - 1 > limits.header_section + 2 {
        return Err(RequestError::HeadTooLarge);
    }
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS + 1];
    let slots = &mut storage[..(limits.headers + 1).min(MAX_HEADERS + 1)];
    let mut req = httparse::Request::new(&mut []);
    let parsed = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        // Not all here yet (or, after a scan found an end, leading empty lines only).
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(e) => return Err(classify(e, line, rest)),
    };
    let section = parsed.saturating_sub(buf.len() - rest.len() + line_len + 1);
    if section > limits.header_section + 2 {
        return Err(RequestError::HeadTooLarge);
    }
    if req.headers.len() > limits.headers {
        return Err(RequestError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Bad("malformed request line"));
    };
    head.method = http::Method::from_bytes(method.as_bytes())
        .map_err(|_| RequestError::Bad("malformed request method"))?;
    head.method_span = Span::within(buf, method.as_bytes());
    head.target = Span::within(buf, target.as_bytes());
    head.form = target_form(buf, head.target);
    // RFC 9112 3.2.3: authority-form is for CONNECT alone. For any other method a
    // target that is not origin-form, absolute-form or `*` is no target at all.
    if head.form == Target::Authority && head.method != http::Method::CONNECT {
        return Err(RequestError::Bad("malformed request target"));
    }
    // RFC 9110 4.2.1: an http(s) URI needs a host (and it becomes the Host we send).
    if let Target::Absolute { authority, .. } = head.form {
        let a = authority.of(buf);
        if matches!(a.first(), None | Some(b':')) || !a.iter().all(|&b| is_host_byte(b)) {
            return Err(RequestError::Bad("malformed request target"));
        }
    }
    head.version = Version::from_minor(minor);
    head.len = parsed;
    head.connection = super::fill_headers(buf, req.headers, &mut head.headers);
    head.framing = request_framing(buf, head)?;
    head.host = check_host(buf, head)?;
    Ok(true)
}

/// Says what is wrong with a head httparse refused, in words an operator can act on.
fn classify(e: httparse::Error, request_line: &[u8], rest: &[u8]) -> RequestError {
    use httparse::Error as E;
    match e {
        E::TooManyHeaders => RequestError::HeadTooLarge,
        E::Version if request_line.starts_with(b"PRI * HTTP/2.0") => {
            RequestError::Bad("HTTP/2 connection preface on an HTTP/1 port")
        }
        E::Version => RequestError::Bad("malformed or unsupported HTTP version"),
        E::Token => RequestError::Bad("malformed request line"),
        E::NewLine => RequestError::Bad("malformed line ending"),
        E::Status => RequestError::Bad("malformed request line"),
        E::HeaderValue => RequestError::Bad("invalid byte in a header value (NUL, CR or control)"),
        E::HeaderName => {
            // Find the first header line whose name is not a token.
            let after_line = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(&[][..], |p| &rest[p + 1..]);
            for line in after_line.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                match line.first() {
                    Some(b' ' | b'\t') => {
                        return RequestError::Bad(
                            "header line starts with whitespace (obs-fold is not allowed)",
                        );
                    }
                    None => break,
                    _ => {}
                }
                let name_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let name = &line[..name_end];
                if name.iter().any(|&b| b == b' ' || b == b'\t') {
                    return RequestError::Bad("whitespace in a header name");
                }
                if name_end == line.len() {
                    return RequestError::Bad("header line without a colon");
                }
                if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
                    return RequestError::Bad("invalid byte in a header name");
                }
            }
            RequestError::Bad("invalid header name")
        }
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Classifies the request target.
fn target_form(buf: &[u8], target: Span) -> Target {
    let t = target.of(buf);
    if t == b"*" {
        return Target::Asterisk;
    }
    if t.first() == Some(&b'/') {
        return Target::Origin;
    }
    let scheme_len = if t.len() >= 7 && t[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if t.len() >= 8 && t[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return Target::Authority;
    };
    let after = &t[scheme_len..];
    let auth_len = after
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(after.len());
    let authority = &after[..auth_len];
    // Never forward userinfo (`user:pw@host`) as part of Host.
    let host = authority
        .iter()
        .rposition(|&b| b == b'@')
        .map_or(authority, |at| &authority[at + 1..]);
    Target::Absolute {
        authority: Span::within(buf, host),
        path: Span::within(buf, &after[auth_len..]),
    }
}

/// The body's framing, by RFC 9112 6.1-6.3 for requests.
fn request_framing(buf: &[u8], head: &RequestHead) -> Result<Framing, RequestError> {
    let coding = framing::transfer_coding(buf, &head.headers);
    let length = framing::content_length(buf, &head.headers);
    if coding != Coding::Absent {
        if head.version == Version::Http10 {
            return Err(RequestError::Bad(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if head.headers.iter().any(|h| h.known == Known::ContentLength) {
            return Err(RequestError::Bad(
                "Content-Length together with Transfer-Encoding is ambiguous",
            ));
        }
    }
    match coding {
        Coding::Chunked => Ok(Framing::Chunked),
        Coding::ChunkedAfterOthers => Err(RequestError::UnsupportedCoding),
        Coding::NotChunkedLast => Err(RequestError::Bad(
            "Transfer-Encoding whose final coding is not chunked",
        )),
        Coding::Absent => match length {
            Ok(None) | Ok(Some(0)) => Ok(Framing::None),
            Ok(Some(n)) => Ok(Framing::Length(n)),
            Err(LengthError::Invalid) => Err(RequestError::Bad("invalid Content-Length")),
            Err(LengthError::Differing) => Err(RequestError::Bad("differing Content-Lengths")),
        },
    }
}

/// HTTP/1.1 needs exactly one non-empty Host; no version may send two.
fn check_host(buf: &[u8], head: &RequestHead) -> Result<Option<usize>, RequestError> {
    let mut found = None;
    for (i, h) in head.headers.iter().enumerate() {
        if h.known == Known::Host {
            if found.is_some() {
                return Err(RequestError::Bad("more than one Host header"));
            }
            found = Some(i);
        }
    }
    if head.version == Version::Http11 {
        match found {
            None => {
                return Err(RequestError::Bad(
                    "missing Host header (required in HTTP/1.1)",
                ));
            }
            Some(i) if head.headers[i].value.of(buf).is_empty() => {
                return Err(RequestError::Bad("empty Host header"));
            }
            _ => {}
        }
    }
    if let Some(i) = found {
        if !head.headers[i]
            .value
            .of(buf)
            .iter()
            .all(|&b| is_host_byte(b))
        {
            return Err(RequestError::Bad("invalid Host header"));
        }
    }
    Ok(found)
}

/// A byte of `uri-host [ ":" port ]` (RFC 3986: reg-name, IP literals, percent
/// escapes).
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_line: 64,
        header_section: 256,
        headers: 8,
    };

    fn parse_all(bytes: &[u8]) -> Result<(Status, RequestHead), RequestError> {
        let mut head = RequestHead::default();
        parse(bytes, 0, &LIMITS, &mut head).map(|s| (s, head))
    }

    fn refused(bytes: &str) -> (u16, &'static str) {
        let e = parse_all(bytes.as_bytes()).expect_err(bytes);
        (e.status(), e.reason())
    }

    #[test]
    fn a_plain_request() {
        let b = b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-Custom-Case: v\r\n\r\nrest";
        let (s, h) = parse_all(b).unwrap();
        assert_eq!(s, Status::Complete);
        assert_eq!(h.method, http::Method::GET);
        assert_eq!(h.target.of(b), b"/a?b");
        assert_eq!(h.len, b.len() - 4);
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[1].name.of(b), b"X-Custom-Case");
        assert_eq!(h.headers[1].value.of(b), b"v");
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive());
        assert_eq!(h.host, Some(0));
    }

    #[test]
    fn partial_heads_resume_their_scan() {
        let full = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let mut head = RequestHead::default();
        let mut scanned = 0;
        for n in 1..full.len() - 3 {
            match parse(&full[..n], scanned, &LIMITS, &mut head).unwrap() {
                Status::Partial { scanned: s } => scanned = s,
                Status::Complete => panic!("complete at {n}"),
            }
        }
        let s = parse(&full[..full.len() - 3], scanned, &LIMITS, &mut head).unwrap();
        assert_eq!(s, Status::Complete);
        assert_eq!(head.framing, Framing::Length(3));
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let b = b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (s, h) = parse_all(b).unwrap();
        assert_eq!(s, Status::Complete);
        assert_eq!(h.len, b.len());
        assert!(matches!(
            parse_all(b"\r\n\r\n").unwrap().0,
            Status::Partial { .. }
        ));
    }

    #[test]
    fn framing_rules() {
        let framing = |h: &str| {
            let text = format!("POST / HTTP/1.1\r\nHost: x\r\n{h}\r\n");
            parse_all(text.as_bytes()).map(|(_, h)| h.framing)
        };
        assert_eq!(framing("Content-Length: 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(framing("Content-Length: 0\r\n"), Ok(Framing::None));
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing("Transfer-Encoding: gzip, chunked\r\n"),
            Err(RequestError::UnsupportedCoding)
        );
        for bad in [
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: -5\r\n",
            "Content-Length: 5x\r\n",
        ] {
            assert_eq!(framing(bad).map_err(|e| e.status()), Err(400), "{bad:?}");
        }
        let text = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(text).0, 400);
    }

    #[test]
    fn malformed_heads_get_a_reason() {
        let cases = [
            (
                "GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n",
                "obs-fold",
            ),
            ("GET / HTTP/1.1\r\n Host: x\r\n\r\n", "whitespace"),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nA b: c\r\n\r\n",
                "whitespace in a header name",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nA: b\0c\r\n\r\n",
                "header value",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n",
                "header value",
            ),
            ("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", "request line"),
            ("GET / HTTP/1.1\r\n\r\n", "missing Host"),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                "more than one Host",
            ),
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", "empty Host"),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "invalid Host"),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "invalid Host"),
            (
                "GET http://a\"b<c>/p HTTP/1.1\r\nHost: x\r\n\r\n",
                "malformed request target",
            ),
            (
                "GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n",
                "malformed request target",
            ),
            ("GET / HTTP/3.0\r\nHost: x\r\n\r\n", "version"),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2"),
        ];
        for (text, why) in cases {
            let (status, reason) = refused(text);
            assert_eq!(status, 400, "{text:?}");
            assert!(reason.contains(why), "{text:?}: {reason}");
        }
    }

    #[test]
    fn limits_apply_to_partial_heads() {
        let long = format!("GET /{} HTTP/1.1", "a".repeat(80));
        assert_eq!(refused(&long).0, 414, "no line end yet");
        assert_eq!(refused(&format!("{long}\r\nHost: x\r\n\r\n")).0, 414);
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nA: {}", "v".repeat(300));
        assert_eq!(refused(&big).0, 431, "no head end yet");
        let many: String = (0..9).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")).0,
            431
        );
    }

    #[test]
    fn targets() {
        let b = b"GET http://user:pw@example.com:8080/p?q HTTP/1.1\r\nHost: y\r\n\r\n";
        let (_, h) = parse_all(b).unwrap();
        let Target::Absolute { authority, path } = h.form else {
            panic!("{:?}", h.form)
        };
        assert_eq!(authority.of(b), b"example.com:8080");
        assert_eq!(path.of(b), b"/p?q");
        let b = b"OPTIONS * HTTP/1.1\r\nHost: y\r\n\r\n";
        assert_eq!(parse_all(b).unwrap().1.form, Target::Asterisk);
        let b = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        assert_eq!(parse_all(b).unwrap().1.form, Target::Authority);
        // Authority-form is for CONNECT only: for other methods it is no target.
        // So is an absolute-form target without a host.
        for t in [
            "?x",
            "example.com:80",
            "ftp://example.com/",
            "a",
            "http:///p",
            "http://",
            "https://u:p@/p",
            "http://:80/p",
        ] {
            let text = format!("GET {t} HTTP/1.1\r\nHost: y\r\n\r\n");
            assert_eq!(refused(&text), (400, "malformed request target"), "{t}");
        }
    }

    #[test]
    fn connection_tokens_name_headers() {
        let b = b"GET / HTTP/1.0\r\nConnection: Keep-Alive, X-A, host\r\nX-A: 1\r\nHost: h\r\n\r\n";
        let (_, h) = parse_all(b).unwrap();
        assert!(h.keep_alive());
        assert!(h.headers[1].named_by_connection);
        assert!(
            !h.headers[2].named_by_connection,
            "Host is never hop-by-hop"
        );
        let b = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        assert!(!parse_all(b).unwrap().1.keep_alive());
    }
}
