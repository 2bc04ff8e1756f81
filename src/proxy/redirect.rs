//! `redirect_https`: where a plain-HTTP request is sent instead of a backend.
//!
//! The answer is a 308 (method and body kept, unlike 301) to the same host and target
//! on the first TLS listener's port, as nginx's `return 308 https://$host$request_uri`.
//! ACME HTTP-01 challenges (`/.well-known/acme-challenge/TOKEN`, the token one
//! base64url word and nothing after it) are not redirected: a certificate authority
//! validating the site's name must reach the backend that answers them over plain
//! HTTP; any other path under that prefix (`../`, `%2e`) is redirected like the rest. The host comes from the request (absolute-form
//! authority, else Host) and is checked to be a host name or an IP literal, so
//! nothing the client wrote can bend the `Location` elsewhere.

use crate::http1::request::{RequestHead, Target};

/// The path prefix of ACME HTTP-01 challenges (RFC 8555 8.3), proxied as usual.
const ACME: &[u8] = b"/.well-known/acme-challenge/";

/// Why a request cannot be redirected (answered 400).
pub const NO_HOST: &str = "no valid Host to redirect to HTTPS";

/// The `Location` for `head` (parsed from `buf`) on HTTPS port `port`, or `None` for
/// a request that is proxied as usual (an ACME challenge).
pub fn location(head: &RequestHead, buf: &[u8], port: u16) -> Option<Result<String, &'static str>> {
    let (authority, path) = match head.form {
        Target::Absolute { authority, path } => (Some(authority.of(buf)), path.of(buf)),
        Target::Origin => (None, head.target.of(buf)),
        Target::Asterisk | Target::Authority => (None, &b"/"[..]),
    };
    if is_acme_challenge(path) {
        return None;
    }
    let host = authority.or_else(|| {
        head.host
            .and_then(|i| head.headers.get(i))
            .map(|h| h.value.of(buf))
    });
    Some(build(host, path, port))
}

fn build(host: Option<&[u8]>, path: &[u8], port: u16) -> Result<String, &'static str> {
    let host = host
        .map(strip_port)
        .filter(|h| valid_host(h))
        .ok_or(NO_HOST)?;
    let path = match path.first() {
        Some(b'/') => path,
        _ => b"/",
    };
    // The host is ASCII by the check; the target may hold bytes outside visible ASCII
    // (the parser lets obs-text through), which go out percent-encoded.
    let mut to = String::with_capacity(16 + host.len() + path.len());
    to.push_str("https://");
    to.extend(host.iter().map(|&b| char::from(b)));
    if port != 443 {
        to.push(':');
        to.push_str(&port.to_string());
    }
    for &b in path {
        if b.is_ascii_graphic() {
            to.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            to.push('%');
            to.push(char::from(HEX[usize::from(b >> 4)]));
            to.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    Ok(to)
}

/// `/.well-known/acme-challenge/` and one token of base64url characters (RFC 8555
/// 8.3), with no query and no further segment.
fn is_acme_challenge(path: &[u8]) -> bool {
    path.strip_prefix(ACME).is_some_and(|token| {
        !token.is_empty()
            && token
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// `example.com:80` -> `example.com`, `[::1]:80` -> `[::1]`.
fn strip_port(host: &[u8]) -> &[u8] {
    let host = host.trim_ascii();
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// A registered name or IPv4 address (letters, digits, `-`, `.`, `_`), or an IPv6
/// literal in brackets.
fn valid_host(h: &[u8]) -> bool {
    if let Some(inner) = h.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) {
        return std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !h.is_empty()
        && h.len() <= 253
        && h.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_and_target_on_the_tls_port() {
        let ok = |host: &str, path: &str, port| build(Some(host.as_bytes()), path.as_bytes(), port);
        assert_eq!(
            ok("example.com", "/a?b=1", 443).unwrap(),
            "https://example.com/a?b=1"
        );
        assert_eq!(
            ok("example.com:80", "/", 8443).unwrap(),
            "https://example.com:8443/"
        );
        assert_eq!(ok("[::1]:8080", "/x", 443).unwrap(), "https://[::1]/x");
        assert_eq!(ok("10.0.0.1", "*", 443).unwrap(), "https://10.0.0.1/");
        for bad in ["", "a b", "evil.com/x", "a@b", "[zz]", "x\"y", "[::1"] {
            assert_eq!(ok(bad, "/", 443), Err(NO_HOST), "{bad:?}");
        }
        assert_eq!(build(None, b"/", 443), Err(NO_HOST));
        // Bytes outside visible ASCII in the target go out percent-encoded.
        let r = build(Some(b"a.test"), b"/caf\xc3\xa9 x\x7f", 443);
        assert_eq!(r.unwrap(), "https://a.test/caf%C3%A9%20x%7F");
    }

    #[test]
    fn parsed_requests_and_acme() {
        let limits = crate::http1::request::Limits {
            request_line: 8192,
            header_section: 8192,
            headers: 100,
        };
        let go = |text: &str| {
            let mut head = RequestHead::default();
            let st = crate::http1::request::parse(text.as_bytes(), 0, &limits, &mut head);
            assert!(
                matches!(st, Ok(crate::http1::request::Status::Complete)),
                "{text:?}"
            );
            location(&head, text.as_bytes(), 443)
        };
        let r = go("GET /p?q HTTP/1.1\r\nHost: site.test:80\r\n\r\n");
        assert_eq!(r, Some(Ok("https://site.test/p?q".into())));
        let r = go("GET http://other.test/z HTTP/1.1\r\nHost: other.test\r\n\r\n");
        assert_eq!(r, Some(Ok("https://other.test/z".into())));
        let r = go("GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: site.test\r\n\r\n");
        assert_eq!(r, None);
        for sneaky in [
            "/.well-known/acme-challenge/../../admin",
            "/.well-known/acme-challenge/%2e%2e/x",
            "/.well-known/acme-challenge/tok?x=1",
            "/.well-known/acme-challenge/",
        ] {
            let r = go(&format!("GET {sneaky} HTTP/1.1\r\nHost: site.test\r\n\r\n"));
            assert!(matches!(r, Some(Ok(_))), "{sneaky}: {r:?}");
        }
        let r = go("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(r, Some(Err(NO_HOST)));
    }
}
