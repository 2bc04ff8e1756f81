//! Header rules of a proxy: hop-by-hop removal, X-Forwarded-For/-Proto, Via.
//!
//! Both directions drop `Connection`, every header it names, and the fixed hop-by-hop
//! set (Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade); hyper
//! re-frames bodies itself. Requests get the client's address appended to
//! `X-Forwarded-For` (several lines are joined into one), `X-Forwarded-Proto`
//! overwritten, and `Via: 1.1 switchyard` appended; responses get the same `Via`.
//! Everything else passes in order, values byte for byte (obs-text included).
//! Constant values are built once; the common case (no Via, no XFF, no Connection)
//! allocates nothing here.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const VIA_VALUE: &str = "1.1 switchyard";
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes `Connection`, the headers it names (never `Host`), and the fixed hop-by-hop
/// set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names (enum compares for
    // the standard ones) instead of a hash lookup per name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let mut named: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(header::CONNECTION) {
            for token in v.as_bytes().split(|&b| b == b',') {
                let t = token.trim_ascii();
                if t.is_empty()
                    || t.eq_ignore_ascii_case(b"close")
                    || t.eq_ignore_ascii_case(b"keep-alive")
                {
                    continue;
                }
                match HeaderName::from_bytes(t) {
                    // `Connection: host` must not strip the request's target host.
                    Ok(name) if name != header::HOST => named.push(name),
                    _ => {}
                }
            }
        }
        headers.remove(header::CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Appends `value` to the header's existing values, joined into one line, or sets it.
fn append_joined(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        headers.insert(name.clone(), value.clone());
        return;
    };
    let mut joined = BytesMut::with_capacity(first.len() + value.len() + 16);
    joined.extend_from_slice(first.as_bytes());
    for v in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    if !joined.is_empty() {
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value.as_bytes());
    // Existing values were valid header bytes; so is the joined line.
    match HeaderValue::from_maybe_shared(joined.freeze()) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        Err(_) => {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Rewrites a request's headers for the backend. `client` is the client's address as a
/// header value, `proto` the scheme it used.
pub fn rewrite_request(headers: &mut HeaderMap, client: &HeaderValue, proto: &HeaderValue) {
    strip_hop_by_hop(headers);
    // The interim 100 was already answered to the client by the server side.
    headers.remove(header::EXPECT);
    append_joined(headers, &X_FORWARDED_FOR, client);
    headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
    append_joined(headers, &header::VIA, &HeaderValue::from_static(VIA_VALUE));
}

/// Rewrites a backend response's headers for the client.
pub fn rewrite_response(headers: &mut HeaderMap) {
    // A response framed by Transfer-Encoding was decoded by that framing; a
    // Content-Length beside it is wrong (RFC 9112 6.3) and would cut the relayed body.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(headers);
    append_joined(headers, &header::VIA, &HeaderValue::from_static(VIA_VALUE));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "3");
    }

    #[test]
    fn request_gets_forwarding_headers() {
        let client = HeaderValue::from_static("10.0.0.9");
        let proto = HeaderValue::from_static("http");
        let mut h = map(&[("x-forwarded-proto", "https"), ("host", "example")]);
        rewrite_request(&mut h, &client, &proto);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["via"], "1.1 switchyard");
        assert_eq!(h["host"], "example");

        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("via", "1.0 fred"),
        ]);
        rewrite_request(&mut h, &client, &proto);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h["via"], "1.0 fred, 1.1 switchyard");
    }

    #[test]
    fn connection_cannot_strip_host() {
        let mut h = map(&[("host", "a"), ("connection", "host, x-a"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["host"], "a");
        assert!(h.get("x-a").is_none());
    }

    #[test]
    fn chunked_response_loses_a_conflicting_length() {
        let mut h = map(&[("transfer-encoding", "chunked"), ("content-length", "3")]);
        rewrite_response(&mut h);
        assert!(h.get("content-length").is_none() && h.get("transfer-encoding").is_none());
    }

    #[test]
    fn response_gets_via_and_loses_hop_by_hop() {
        let mut h = map(&[("connection", "close"), ("content-length", "3")]);
        rewrite_response(&mut h);
        assert!(h.get("connection").is_none());
        assert_eq!(h["via"], "1.1 switchyard");
        assert_eq!(h["content-length"], "3");
    }
}
