//! Our own HTTP/1.1 codec: one parse per message decides validation and framing.
//!
//! A request smuggler wins when two parsers disagree on where a message ends, so there
//! is exactly one parser for each direction: [`request::parse`] for client heads and
//! [`response::parse`] for backend heads, both on `httparse`, both deciding the body's
//! framing ([`Framing`]) in one place ([`framing`]). Bodies framed by chunked coding go
//! through [`chunked::Decoder`]. Heads are kept as the bytes that arrived plus the
//! offsets of each line, so forwarding ([`encode`]) copies the header lines as sent
//! (name case and order kept) and edits only what a proxy must: hop-by-hop headers out,
//! X-Forwarded-For, X-Forwarded-Proto and Via in.
//!
//! This module is mechanism: it knows HTTP/1.1 and nothing of backends, config or
//! health, and it never allocates while parsing (the caller owns the buffers).

pub mod chunked;
pub mod encode;
pub mod framing;
pub mod request;
pub mod response;

#[cfg(test)]
mod differential;

/// A byte range of a head, relative to the start of the buffer it was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes of `buf` this span covers.
    #[inline]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The span of `part`, a subslice of `buf`.
    #[inline]
    fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }
}

/// Headers the codec itself cares about, found once per line at parse time so that
/// later decisions are a compare, not a string match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Known {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    Via,
    Cookie,
}

impl Known {
    /// Classifies a header name (ASCII case-insensitive).
    pub fn of(name: &[u8]) -> Known {
        let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
        match name.len() {
            2 if is(b"te") => Known::Te,
            3 if is(b"via") => Known::Via,
            4 if is(b"host") => Known::Host,
            6 if is(b"expect") => Known::Expect,
            6 if is(b"cookie") => Known::Cookie,
            7 if is(b"trailer") => Known::Trailer,
            7 if is(b"upgrade") => Known::Upgrade,
            10 if is(b"connection") => Known::Connection,
            10 if is(b"keep-alive") => Known::KeepAlive,
            14 if is(b"content-length") => Known::ContentLength,
            15 if is(b"x-forwarded-for") => Known::XForwardedFor,
            16 if is(b"proxy-connection") => Known::ProxyConnection,
            17 if is(b"transfer-encoding") => Known::TransferEncoding,
            17 if is(b"x-forwarded-proto") => Known::XForwardedProto,
            _ => Known::Other,
        }
    }

    /// Hop-by-hop by definition (RFC 9110 7.6.1), whatever `Connection` says.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Known::Connection
                | Known::KeepAlive
                | Known::ProxyConnection
                | Known::Te
                | Known::Trailer
                | Known::TransferEncoding
                | Known::Upgrade
        )
    }
}

/// One header line of a parsed head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: Span,
    pub value: Span,
    pub known: Known,
    /// Named by a `Connection` header: hop-by-hop for this message.
    pub named_by_connection: bool,
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// The HTTP/1 minor version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    fn from_minor(minor: u8) -> Version {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
}

/// Records httparse's `parsed` headers (slices of `buf`) as spans in `out`, each with
/// its kind; then reads the `Connection` tokens (marking the headers they name).
fn fill_headers(
    buf: &[u8],
    parsed: &[httparse::Header<'_>],
    out: &mut Vec<Header>,
) -> ConnectionTokens {
    out.clear();
    out.extend(parsed.iter().map(|h| Header {
        name: Span::within(buf, h.name.as_bytes()),
        value: Span::within(buf, h.value),
        known: Known::of(h.name.as_bytes()),
        named_by_connection: false,
    }));
    connection_tokens(buf, out)
}

/// What the `Connection` header(s) of a message said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Some token names another header (marked `named_by_connection`).
    pub names_headers: bool,
}

/// Reads the `Connection` headers of `headers` and marks the headers they name.
fn connection_tokens(buf: &[u8], headers: &mut [Header]) -> ConnectionTokens {
    let mut t = ConnectionTokens::default();
    for i in 0..headers.len() {
        if headers[i].known != Known::Connection {
            continue;
        }
        let value = headers[i].value.of(buf);
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            if token.eq_ignore_ascii_case(b"close") {
                t.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                t.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                t.upgrade = true;
            } else {
                for h in headers.iter_mut() {
                    // `Connection: host` must never strip the target's host, nor
                    // `Connection: content-length` a message's framing.
                    let kept = matches!(h.known, Known::Host | Known::ContentLength);
                    if !kept && h.name.of(buf).eq_ignore_ascii_case(token) {
                        h.named_by_connection = true;
                        t.names_headers = true;
                    }
                }
            }
        }
    }
    t
}

/// `buf` without the empty lines (CRLF or LF) it starts with, which a head may follow.
fn skip_empty_lines(mut buf: &[u8]) -> &[u8] {
    loop {
        match buf {
            [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] => buf = rest,
            _ => return buf,
        }
    }
}

/// Finds the end of a head: the index just past the first empty line that ends after
/// `from` (every end up to `from` is known not to be the head's). Bare LF line ends
/// count, as httparse accepts them.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from.saturating_sub(3);
    while let Some(p) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let lf = i + p;
        let end = match buf.get(lf + 1) {
            Some(b'\n') => Some(lf + 2),
            Some(b'\r') if buf.get(lf + 2) == Some(&b'\n') => Some(lf + 3),
            _ => None,
        };
        match end {
            Some(end) if end > from => return Some(end),
            _ => i = lf + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_with_crlf_and_bare_lf() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nxx", 0),
            Some(24)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nA: b\n\nxx", 0), Some(21));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r", 0), None);
        // Resuming a scan finds an end split across reads.
        let buf = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        assert_eq!(find_head_end(buf, 23), Some(24));
        assert_eq!(
            find_head_end(b"\r\n\r\n", 4),
            None,
            "ends at or before `from` are old"
        );
    }

    #[test]
    fn known_names() {
        assert_eq!(Known::of(b"Content-LENGTH"), Known::ContentLength);
        assert_eq!(Known::of(b"x-forwarded-proto"), Known::XForwardedProto);
        assert_eq!(Known::of(b"content-lengthx"), Known::Other);
        assert!(Known::of(b"Upgrade").is_hop_by_hop());
        assert!(!Known::of(b"Host").is_hop_by_hop());
    }
}
