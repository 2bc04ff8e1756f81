//! Heads on their way out: forwarded heads as edited bytes, and our own answers.
//!
//! A forwarded head keeps each end-to-end header line as it arrived (name case, order,
//! value bytes, obs-text included); only line ends are normalised to CRLF. What a
//! proxy must change is changed in place where the header already is: the hop-by-hop
//! set and the headers `Connection` names are dropped, several `X-Forwarded-For` or
//! `Via` lines become one joined line with our value appended, `Host` follows an
//! absolute-form target, and `Content-Length` is written once in canonical form. Our
//! own headers come last, then the framing header of the body as we send it.

use super::request::{RequestHead, Target};
use super::response::ResponseHead;
use super::{Framing, Header, Known, Version};

/// Our `Via` entry.
pub const VIA: &[u8] = b"1.1 switchyard";

/// What the proxy changes in a request head.
#[derive(Clone, Copy, Debug)]
pub struct RequestEdits<'a> {
    /// The client's address, appended to X-Forwarded-For.
    pub client: &'a [u8],
    /// `http` or `https`: X-Forwarded-Proto.
    pub proto: &'a [u8],
    /// Host for a request that has none (HTTP/1.0): the backend's address.
    pub default_host: &'a [u8],
    /// The request becomes a tunnel: `Upgrade` and `Connection: upgrade` go through.
    pub tunnel: bool,
    /// How the body goes out: a chunked body held whole goes with a Content-Length,
    /// a streamed one stays chunked (re-framed by us).
    pub framing: Framing,
}

/// Writes the head `head` (parsed from `buf`) as it goes to a backend: HTTP/1.1,
/// origin-form target, edited headers, and the framing of the body as we send it
/// (`edits.framing`).
pub fn request_head(out: &mut Vec<u8>, buf: &[u8], head: &RequestHead, edits: &RequestEdits) {
    out.extend_from_slice(head.method_span.of(buf));
    out.push(b' ');
    let authority = match head.form {
        Target::Absolute { authority, path } => {
            let path = path.of(buf);
            if path.first() != Some(&b'/') {
                out.push(b'/');
            }
            out.extend_from_slice(path);
            Some(authority.of(buf))
        }
        _ => {
            out.extend_from_slice(head.target.of(buf));
            None
        }
    };
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let (mut xff, mut via, mut host, mut length) = (false, false, false, false);
    for h in &head.headers {
        if h.named_by_connection || h.known.is_hop_by_hop() {
            if edits.tunnel && h.known == Known::Upgrade {
                copy_line(out, buf, h);
            }
            continue;
        }
        match h.known {
            // Answered here (100-continue), and replaced (X-Forwarded-Proto).
            Known::Expect | Known::XForwardedProto => {}
            Known::XForwardedFor if !xff => {
                xff = true;
                joined(out, buf, &head.headers, h, edits.client);
            }
            Known::Via if !via => {
                via = true;
                joined(out, buf, &head.headers, h, VIA);
            }
            Known::XForwardedFor | Known::Via => {}
            Known::Host => {
                host = true;
                match authority {
                    Some(a) => line(out, h.name.of(buf), a),
                    // HTTP/1.0 may send it empty; the HTTP/1.1 we send may not.
                    None if h.value.is_empty() => line(out, h.name.of(buf), edits.default_host),
                    None => copy_line(out, buf, h),
                }
            }
            Known::ContentLength => {
                if let (Framing::Length(n), false) = (edits.framing, length) {
                    length = true;
                    line(out, h.name.of(buf), itoa(n, &mut [0; 20]));
                }
            }
            _ => copy_line(out, buf, h),
        }
    }
    if !host {
        line(out, b"Host", authority.unwrap_or(edits.default_host));
    }
    if !xff {
        line(out, b"X-Forwarded-For", edits.client);
    }
    line(out, b"X-Forwarded-Proto", edits.proto);
    if !via {
        line(out, b"Via", VIA);
    }
    match edits.framing {
        Framing::Chunked => line(out, b"Transfer-Encoding", b"chunked"),
        Framing::Length(n) if !length => line(out, b"Content-Length", itoa(n, &mut [0; 20])),
        _ => {}
    }
    if edits.tunnel {
        line(out, b"Connection", b"upgrade");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body goes to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFraming {
    /// No body (HEAD, 1xx, 204, 304), or the Content-Length the backend sent.
    AsIs,
    /// Re-framed as chunked (a chunked or close-delimited body to an HTTP/1.1 client).
    Chunked,
    /// Delimited by closing the connection (such a body to an HTTP/1.0 client).
    Close,
}

/// What the proxy changes in a response head.
#[derive(Clone, Copy, Debug)]
pub struct ResponseEdits<'a> {
    pub framing: OutFraming,
    /// The client's HTTP version: a 1.0 client kept alive is told so.
    pub client: Version,
    /// The connection closes after this response.
    pub close: bool,
    /// `Set-Cookie` value to add (sticky sessions).
    pub set_cookie: Option<&'a [u8]>,
    /// A 101 that becomes a tunnel: `Upgrade` and `Connection: upgrade` go through.
    pub tunnel: bool,
}

/// Writes the backend's response head `head` (parsed from `buf`) as it goes to the
/// client.
pub fn response_head(out: &mut Vec<u8>, buf: &[u8], head: &ResponseHead, edits: &ResponseEdits) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa(u64::from(head.status), &mut [0; 20]));
    out.push(b' ');
    out.extend_from_slice(head.reason.of(buf));
    out.extend_from_slice(b"\r\n");
    let (mut via, mut length) = (false, false);
    for h in &head.headers {
        if h.named_by_connection || h.known.is_hop_by_hop() {
            if edits.tunnel && h.known == Known::Upgrade {
                copy_line(out, buf, h);
            }
            continue;
        }
        match h.known {
            Known::Via if !via => {
                via = true;
                joined(out, buf, &head.headers, h, VIA);
            }
            Known::Via => {}
            // Framed by Transfer-Encoding: a Content-Length beside it is wrong (RFC
            // 9112 6.3) and would cut the relayed body.
            Known::ContentLength if head.framing == Framing::Chunked => {}
            // One line, in canonical form when it frames the body (several equal
            // values, leading zeros), as sent when it does not (HEAD, 304).
            Known::ContentLength if !length => {
                length = true;
                match head.framing {
                    Framing::Length(n) => line(out, h.name.of(buf), itoa(n, &mut [0; 20])),
                    _ => copy_line(out, buf, h),
                }
            }
            Known::ContentLength => {}
            _ => copy_line(out, buf, h),
        }
    }
    if !via {
        line(out, b"Via", VIA);
    }
    if let Some(cookie) = edits.set_cookie {
        line(out, b"Set-Cookie", cookie);
    }
    if edits.framing == OutFraming::Chunked {
        line(out, b"Transfer-Encoding", b"chunked");
    }
    if edits.tunnel {
        line(out, b"Connection", b"upgrade");
    } else if edits.close || edits.framing == OutFraming::Close {
        line(out, b"Connection", b"close");
    } else if edits.client == Version::Http10 {
        line(out, b"Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a response the balancer makes itself: `status`, a `text/plain` body of
/// `text`, our Via, and `Connection: close` when `close`.
pub fn local_response(out: &mut Vec<u8>, status: u16, text: &[u8], close: bool) {
    local_response_with(out, status, text, close, &[]);
}

/// [`local_response`] with extra header lines (`Retry-After` and friends).
pub fn local_response_with(
    out: &mut Vec<u8>,
    status: u16,
    text: &[u8],
    close: bool,
    extra: &[(&str, String)],
) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa(u64::from(status), &mut [0; 20]));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    line(out, b"Content-Type", b"text/plain; charset=utf-8");
    line(
        out,
        b"Content-Length",
        itoa(text.len() as u64, &mut [0; 20]),
    );
    line(out, b"Via", VIA);
    for (name, value) in extra {
        line(out, name.as_bytes(), value.as_bytes());
    }
    if close {
        line(out, b"Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text);
}

/// `name: value\r\n`.
fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The header line as it arrived, its line end made CRLF.
fn copy_line(out: &mut Vec<u8>, buf: &[u8], h: &Header) {
    if h.value.is_empty() {
        out.extend_from_slice(h.name.of(buf));
        out.extend_from_slice(b":\r\n");
        return;
    }
    out.extend_from_slice(
        buf.get(h.name.start as usize..h.value.end as usize)
            .unwrap_or_default(),
    );
    out.extend_from_slice(b"\r\n");
}

/// One line for every header of `first`'s kind: their values joined by ", ", then
/// `ours` (X-Forwarded-For and Via: the contract's "appended, one joined line").
fn joined(out: &mut Vec<u8>, buf: &[u8], all: &[Header], first: &Header, ours: &[u8]) {
    out.extend_from_slice(first.name.of(buf));
    out.extend_from_slice(b": ");
    for h in all.iter().filter(|h| h.known == first.known) {
        let v = h.value.of(buf);
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(ours);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, in `buf`.
pub fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    use super::super::request::{self, Limits};
    use super::super::response;
    use super::*;

    const LIMITS: Limits = Limits {
        request_line: 8192,
        header_section: 65536,
        headers: 100,
    };

    fn forward_bytes(buf: &[u8], tunnel: bool) -> Vec<u8> {
        let mut head = RequestHead::default();
        let s = request::parse(buf, 0, &LIMITS, &mut head).unwrap();
        assert_eq!(s, request::Status::Complete);
        let mut out = vec![];
        let edits = RequestEdits {
            client: b"10.0.0.9",
            proto: b"http",
            default_host: b"backend:80",
            tunnel,
            framing: head.framing,
        };
        request_head(&mut out, buf, &head, &edits);
        out
    }

    fn forward(text: &str, tunnel: bool) -> String {
        String::from_utf8(forward_bytes(text.as_bytes(), tunnel)).unwrap()
    }

    #[test]
    fn request_keeps_lines_and_edits_the_rest() {
        let got = forward_bytes(
            b"POST /p?q HTTP/1.1\r\nHost: h\r\nX-Mixed-Case: A\x80b\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.1.1.1\r\nVia: 1.0 fred\r\nx-forwarded-for: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n",
            false,
        );
        let want: &[u8] = b"POST /p?q HTTP/1.1\r\nHost: h\r\nX-Mixed-Case: A\x80b\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\nVia: 1.0 fred, 1.1 switchyard\r\nX-Forwarded-Proto: http\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&got));
    }

    #[test]
    fn plain_request_gains_our_headers() {
        let got = forward("GET / HTTP/1.1\nhost: h\nContent-Length: 3\n\n", false);
        assert_eq!(
            got,
            "GET / HTTP/1.1\r\nhost: h\r\nContent-Length: 3\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nVia: 1.1 switchyard\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_and_http10() {
        let got = forward(
            "GET http://u@example.com:81?x HTTP/1.1\r\nHost: other\r\n\r\n",
            false,
        );
        assert!(
            got.starts_with("GET /?x HTTP/1.1\r\nHost: example.com:81\r\n"),
            "{got}"
        );
        let got = forward("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false);
        assert!(got.contains("\r\nHost: backend:80\r\n"), "{got}");
        assert!(!got.contains("onnection"), "{got}");
        let got = forward("GET / HTTP/1.0\r\nhost:\r\n\r\n", false);
        assert!(got.contains("\r\nhost: backend:80\r\n"), "{got}");
    }

    #[test]
    fn tunnel_keeps_upgrade() {
        let got = forward(
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            true,
        );
        assert!(got.contains("\r\nUpgrade: websocket\r\n"), "{got}");
        assert!(got.ends_with("Connection: upgrade\r\n\r\n"), "{got}");
    }

    #[test]
    fn response_edits() {
        let buf = b"HTTP/1.1 200 Fine\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nX-Case: v\r\nConnection: close\r\n\r\n";
        let mut head = response::ResponseHead::default();
        response::parse(buf, 0, false, &mut head).unwrap();
        let mut out = vec![];
        let edits = ResponseEdits {
            framing: OutFraming::Chunked,
            client: Version::Http11,
            close: false,
            set_cookie: Some(b"C=1; Path=/"),
            tunnel: false,
        };
        response_head(&mut out, buf, &head, &edits);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 Fine\r\nX-Case: v\r\nVia: 1.1 switchyard\r\nSet-Cookie: C=1; Path=/\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn local_responses_have_a_text_body() {
        let mut out = vec![];
        local_response(&mut out, 400, b"400 Bad Request: nope\n", true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("Content-Length: 22\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n400 Bad Request: nope\n"), "{text}");
    }
}
