//! Checks on a parsed request head before any backend is involved.
//!
//! hyper (httparse) already refuses what cannot be parsed: obs-fold, control bytes in
//! values, spaces in names, a whitespace-led first header line, invalid or differing
//! Content-Lengths, and a Transfer-Encoding whose last coding is not chunked. Those get
//! hyper's own 400/414/431. This guard adds the rules hyper leaves to us: the Host
//! header (exactly one in HTTP/1.1; `:authority` or `Host` in HTTP/2), our limits on the
//! request line and the header section (414/431 with a text body), transfer codings we
//! do not implement (501), methods we do not proxy, and `Expect` values other than
//! `100-continue`.

use http::header::{self, HeaderMap};
use http::{Method, Request, Version};

use super::error_response::ProxyError;
use crate::config::Limits;

/// Accepts the request head or says why not.
pub fn check<B>(req: &Request<B>, limits: &Limits) -> Result<(), ProxyError> {
    let target_len = match req.uri().path_and_query() {
        Some(pq) if req.uri().authority().is_none() => pq.as_str().len(),
        _ => req.uri().to_string().len(),
    };
    // "METHOD SP target SP HTTP/1.1"
    if req.method().as_str().len() + target_len + 10 > limits.request_line {
        return Err(ProxyError::UriTooLong);
    }
    let headers = req.headers();
    if headers.len() > limits.headers {
        return Err(ProxyError::HeadersTooLarge);
    }
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if size > limits.header_section {
        return Err(ProxyError::HeadersTooLarge);
    }
    check_host(headers, req.version(), req.uri().authority().is_some())?;
    if let Some(te) = single(headers, &header::TRANSFER_ENCODING)? {
        // hyper guarantees the last coding is chunked; any other coding before it
        // (gzip, chunked) is one we would have to pass on and cannot re-frame.
        if !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::UnsupportedTransferCoding);
        }
    }
    for expect in headers.get_all(header::EXPECT) {
        if !expect
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
        {
            return Err(ProxyError::ExpectationFailed);
        }
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotSupported(
            "CONNECT is not supported by this proxy",
        ));
    }
    Ok(())
}

fn check_host(
    headers: &HeaderMap,
    version: Version,
    has_authority: bool,
) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_2 && !has_authority => Err(ProxyError::BadRequest(
            "HTTP/2 request without :authority or Host",
        )),
        (None, _) if version == Version::HTTP_11 => Err(ProxyError::BadRequest(
            "missing Host header (required in HTTP/1.1)",
        )),
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("more than one Host header")),
        (Some(h), None) if h.is_empty() && version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("empty Host header"))
        }
        (Some(h), None) if h.is_empty() && version == Version::HTTP_2 && !has_authority => Err(
            ProxyError::BadRequest("HTTP/2 request without :authority and with an empty Host"),
        ),
        _ => Ok(()),
    }
}

/// The header's only value; several lines of a header that must be single are a 400.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &header::HeaderName,
) -> Result<Option<&'a header::HeaderValue>, ProxyError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v)),
        (Some(_), Some(_)) => Err(ProxyError::UnsupportedTransferCoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            request_line: 64,
            header_section: 200,
            headers: 5,
            connections_per_client: 0,
        }
    }

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn accepts_a_plain_request() {
        assert!(check(&req("/", &[("host", "a")]), &limits()).is_ok());
    }

    #[test]
    fn rejects_what_hyper_lets_through() {
        let l = limits();
        let cases: Vec<(Request<()>, u16)> = vec![
            (req("/", &[]), 400),
            (req("/", &[("host", "a"), ("host", "b")]), 400),
            (req(&format!("/{}", "a".repeat(60)), &[("host", "a")]), 414),
            (req("/", &[("host", "a"), ("x", &"v".repeat(200))]), 431),
            (
                req(
                    "/",
                    &[
                        ("host", "a"),
                        ("a", "1"),
                        ("b", "1"),
                        ("c", "1"),
                        ("d", "1"),
                        ("e", "1"),
                    ],
                ),
                431,
            ),
            (
                req(
                    "/",
                    &[("host", "a"), ("transfer-encoding", "gzip, chunked")],
                ),
                501,
            ),
            (req("/", &[("host", "a"), ("expect", "magic")]), 417),
        ];
        for (r, code) in cases {
            let got = check(&r, &l).err().map(|e| e.status().as_u16());
            assert_eq!(got, Some(code), "{r:?}");
        }
    }

    #[test]
    fn http10_may_omit_host() {
        let mut r = req("/", &[]);
        *r.version_mut() = Version::HTTP_10;
        assert!(check(&r, &limits()).is_ok());
    }

    #[test]
    fn http2_needs_authority_or_host() {
        let mut r = req("/", &[]);
        *r.version_mut() = Version::HTTP_2;
        let got = check(&r, &limits()).err().map(|e| e.status().as_u16());
        assert_eq!(got, Some(400));
        *r.uri_mut() = "https://example.com/".parse().unwrap();
        assert!(check(&r, &limits()).is_ok());
        let mut r = req("/", &[("host", "example.com")]);
        *r.version_mut() = Version::HTTP_2;
        assert!(check(&r, &limits()).is_ok());
        let mut r = req("/", &[("host", "")]);
        *r.version_mut() = Version::HTTP_2;
        let got = check(&r, &limits()).err().map(|e| e.status().as_u16());
        assert_eq!(got, Some(400));
    }
}
