//! The one place where failures become responses.
//!
//! Every answer the balancer writes itself (as opposed to relaying a backend's) comes
//! from [`respond`]: a status, a short `text/plain` body saying what went wrong, and
//! `Connection: close` when the client connection cannot safely carry another request
//! (malformed framing, a body we did not read to its end).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::headers::VIA_VALUE;
use crate::metrics::LocalReason;
use crate::server::conn_io::ConnState;

/// Everything that can end a request before (or instead of) a backend's response.
#[derive(Debug)]
pub enum ProxyError {
    /// Malformed or ambiguous request: 400, connection closed.
    BadRequest(&'static str),
    /// Request line over `limits.request_line`: 414.
    UriTooLong,
    /// Header section over `limits.header_section` or `limits.headers`: 431.
    HeadersTooLarge,
    /// A transfer coding we do not implement: 501, connection closed.
    UnsupportedTransferCoding,
    /// A method we do not proxy (CONNECT): 405... reported as 501 Not Implemented.
    MethodNotSupported(&'static str),
    /// `Expect` with something other than `100-continue`: 417.
    ExpectationFailed,
    /// The client's body was malformed (bad chunk size, cut short): 400, closed.
    BadBody,
    /// The client stopped sending its body: 408, closed.
    ClientBodyTimeout,
    /// No backend is eligible: 503.
    NoHealthyBackend,
    /// The backend refused or could not be reached: 502.
    ConnectFailed,
    /// The backend failed mid-exchange or answered garbage: 502.
    BadGateway,
    /// Dialing or the backend's first response byte took too long: 504.
    Timeout,
    /// The backend answered 101 Switching Protocols to a request that asked for no
    /// upgrade (a tunnel nobody can use): 502.
    UpgradeNotSupported,
    /// TLS to the backend failed (the reason says how, e.g. the verification error): 502.
    TlsFailed(String),
    /// An `Upgrade` to a protocol other than WebSocket: 501.
    UpgradeRefused,
    /// The request head did not arrive within `client_header`: 408, closed.
    HeadTimeout,
    /// Refused by a rate limit: 429 (boxed: the common variants stay small).
    RateLimited(Box<Limited>),
    /// A `scope: redis` limit could not decide and `redis.on_error` is `deny`: 503.
    RateLimiterUnavailable,
    /// Every eligible backend is at `max_connections` and the queue is full: 503.
    QueueFull,
    /// It waited `queue.timeout` for a backend under `max_connections`: 503.
    QueueTimeout,
    /// Not an error: a `redirect_https` listener sends the client here (308, with
    /// this `Location`).
    RedirectHttps(Box<String>),
}

/// What a 429 says about the limit that refused it.
#[derive(Debug)]
pub struct Limited {
    pub name: String,
    /// Whole seconds until a request would be allowed (at least 1).
    pub retry_after_s: u64,
    /// The limit's quota per window, for `RateLimit-Policy`.
    pub quota: u64,
    pub window_s: u64,
}

impl ProxyError {
    fn parts(&self) -> (StatusCode, &'static str, bool) {
        use ProxyError::*;
        match self {
            BadRequest(why) => (StatusCode::BAD_REQUEST, why, true),
            UriTooLong => (StatusCode::URI_TOO_LONG, "request target too long", true),
            HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request header section too large",
                true,
            ),
            UnsupportedTransferCoding => (
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding not supported (only chunked is)",
                true,
            ),
            MethodNotSupported(why) => (StatusCode::NOT_IMPLEMENTED, why, false),
            ExpectationFailed => (
                StatusCode::EXPECTATION_FAILED,
                "only 'Expect: 100-continue' is supported",
                false,
            ),
            BadBody => (StatusCode::BAD_REQUEST, "malformed request body", true),
            ClientBodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
                true,
            ),
            NoHealthyBackend => (StatusCode::SERVICE_UNAVAILABLE, "no healthy backend", false),
            ConnectFailed => (StatusCode::BAD_GATEWAY, "backend unreachable", false),
            BadGateway => (StatusCode::BAD_GATEWAY, "backend failed to answer", false),
            Timeout => (StatusCode::GATEWAY_TIMEOUT, "backend timed out", false),
            UpgradeNotSupported => (
                StatusCode::BAD_GATEWAY,
                "backend switched protocols (an upgrade nobody asked for)",
                false,
            ),
            TlsFailed(_) => (StatusCode::BAD_GATEWAY, "TLS to the backend failed", false),
            UpgradeRefused => (
                StatusCode::NOT_IMPLEMENTED,
                "only upgrades to websocket are proxied",
                false,
            ),
            HeadTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request head not received in time",
                true,
            ),
            RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "over the rate limit", false),
            RateLimiterUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the rate limiter (Redis) did not answer in time",
                false,
            ),
            QueueFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                "every backend is at max_connections and the queue is full",
                false,
            ),
            QueueTimeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no backend under max_connections within queue.timeout",
                false,
            ),
            RedirectHttps(_) => (
                StatusCode::PERMANENT_REDIRECT,
                "this site is served over HTTPS",
                false,
            ),
        }
    }

    /// Header lines besides the usual ones: `Retry-After` and the IETF draft's
    /// `RateLimit-Policy` / `RateLimit` for a 429.
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            ProxyError::RateLimited(l) => vec![
                ("Retry-After", l.retry_after_s.to_string()),
                (
                    "RateLimit-Policy",
                    format!("\"{}\";q={};w={}", l.name, l.quota, l.window_s),
                ),
                (
                    "RateLimit",
                    format!("\"{}\";r=0;t={}", l.name, l.retry_after_s),
                ),
            ],
            ProxyError::RedirectHttps(to) => vec![("Location", to.to_string())],
            _ => Vec::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// Status, the one-line text body, and whether the connection must close.
    pub fn text(&self) -> (u16, String, bool) {
        let (status, why, close) = self.parts();
        let reason = status.canonical_reason().unwrap_or("");
        let text = match self {
            // Say which check failed: an operator fixes trust from this line.
            ProxyError::TlsFailed(detail) => {
                format!("{} {reason}: {why}: {detail}\n", status.as_u16())
            }
            ProxyError::RateLimited(l) => format!(
                "{} {reason}: {why} '{}'; retry after {} s\n",
                status.as_u16(),
                l.name,
                l.retry_after_s
            ),
            ProxyError::RedirectHttps(to) => {
                format!("{} {reason}: {why}: {to}\n", status.as_u16())
            }
            _ => format!("{} {reason}: {why}\n", status.as_u16()),
        };
        (status.as_u16(), text, close)
    }

    /// The `reason` label of `switchyard_local_responses_total`.
    pub fn reason(&self) -> LocalReason {
        use ProxyError::*;
        match self {
            BadRequest(_) => LocalReason::BadRequest,
            UriTooLong => LocalReason::UriTooLong,
            HeadersTooLarge => LocalReason::HeadersTooLarge,
            UnsupportedTransferCoding => LocalReason::UnsupportedTransferCoding,
            MethodNotSupported(_) => LocalReason::MethodNotSupported,
            ExpectationFailed => LocalReason::ExpectationFailed,
            BadBody => LocalReason::BadBody,
            ClientBodyTimeout => LocalReason::ClientBodyTimeout,
            NoHealthyBackend => LocalReason::NoHealthyBackend,
            ConnectFailed => LocalReason::ConnectFailed,
            BadGateway => LocalReason::BadGateway,
            Timeout => LocalReason::Timeout,
            UpgradeNotSupported => LocalReason::UpgradeNotSupported,
            TlsFailed(_) => LocalReason::TlsFailed,
            UpgradeRefused => LocalReason::UpgradeNotSupported,
            HeadTimeout => LocalReason::HeadTimeout,
            RateLimited(_) => LocalReason::RateLimited,
            RateLimiterUnavailable => LocalReason::RateLimiterUnavailable,
            QueueFull => LocalReason::QueueFull,
            QueueTimeout => LocalReason::QueueTimeout,
            RedirectHttps(_) => LocalReason::RedirectHttps,
        }
    }

    /// The answer to a request head our codec refused.
    pub fn from_head(e: crate::http1::request::RequestError) -> ProxyError {
        use crate::http1::request::RequestError as E;
        match e {
            E::Bad(why) => ProxyError::BadRequest(why),
            E::LineTooLong => ProxyError::UriTooLong,
            E::HeadTooLarge => ProxyError::HeadersTooLarge,
            E::UnsupportedCoding => ProxyError::UnsupportedTransferCoding,
        }
    }
}

/// Builds the response for `err`.
pub fn respond(err: &ProxyError, clock: Option<std::rc::Rc<ConnState>>) -> Response<ProxyBody> {
    let (_, text, close) = err.text();
    let status = err.status();
    let mut resp = Response::new(ProxyBody::local(Bytes::from(text), clock));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::VIA, HeaderValue::from_static(VIA_VALUE));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    for (name, value) in err.extra_headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}
