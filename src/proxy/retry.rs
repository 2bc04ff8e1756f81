//! What one failed attempt was, and what may follow it: [`Failure`].
//!
//! Both request paths (HTTP/1 clients in `h1`, HTTP/2 clients in `mod.rs`) run one
//! loop over attempts, and both read the same type to decide, after Pingora's
//! `RetryType`/`decide_reuse`: the error itself says what happened (was anything
//! written, was the connection reused, did any response byte come, did the clock run
//! out), so the loop is short and the rule lives here alone.
//!
//! The rule protects the backends from seeing a request twice when that could matter:
//! - a request that was **never written** (connect refused or timed out, or the
//!   connection handed it back unsent) may go to another backend whatever its method:
//!   nothing of it reached anyone;
//! - a request that was **written but got no response** (reset, closed, garbage) may
//!   go again only if its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT,
//!   DELETE) and its body was held whole (at most the 64 KiB replay buffer), so a POST
//!   body is never sent twice;
//! - a request whose backend did not answer within `backend_response` is **not**
//!   retried: the backend may still be working on it, and a slow backend is usually a
//!   loaded one that a copy would load further;
//! - a **stale** pooled connection (the backend closed it while it sat idle, and
//!   nothing came back) is the usual keep-alive race, not the backend's fault: the same
//!   backend gets one more try on a fresh connection under the rule above, and no
//!   failure is recorded against it unless that try fails too;
//! - at most `retries` extra attempts, never the same backend twice (the `Tried` set).

use http::Method;

use super::error_response::ProxyError;
use crate::health::Reason;
use crate::upstream::UpstreamError;

/// A failed attempt, with what decides whether another may follow.
#[derive(Debug)]
pub struct Failure {
    /// What the client gets if no other attempt follows.
    pub error: ProxyError,
    /// What the breaker records.
    pub reason: Reason,
    /// Some request byte reached the backend's socket.
    pub written: bool,
    /// The connection came from the pool.
    pub reused: bool,
    /// Some response byte came back.
    pub answered: bool,
    /// The backend did not answer within `backend_response`.
    pub timed_out: bool,
    /// The client side failed (its body): answer this, no retry, no blame.
    pub client: Option<ProxyError>,
    /// The underlying io, TLS or parse error, for the log.
    pub cause: Option<String>,
}

/// What the request allows, for [`Failure::may_retry`].
#[derive(Clone, Copy, Debug)]
pub struct Replay {
    /// GET, HEAD, OPTIONS, TRACE, PUT or DELETE.
    pub idempotent: bool,
    /// The whole body is held, so it can be sent again.
    pub held: bool,
}

impl Replay {
    pub fn of(method: &Method, held: bool) -> Replay {
        Replay {
            idempotent: is_idempotent(method),
            held,
        }
    }
}

impl Failure {
    fn new(error: ProxyError, reason: Reason) -> Failure {
        Failure {
            error,
            reason,
            written: false,
            reused: false,
            answered: false,
            timed_out: false,
            client: None,
            cause: None,
        }
    }

    /// An upstream error; `written` says whether any of the request went.
    pub fn upstream(e: UpstreamError, written: bool, reused: bool) -> Failure {
        let mut f = match e {
            UpstreamError::Connect(e) => {
                let mut f = Failure::new(ProxyError::ConnectFailed, Reason::ConnectRefused);
                f.cause = Some(e.to_string());
                f
            }
            UpstreamError::ConnectTimeout => {
                Failure::new(ProxyError::Timeout, Reason::ConnectTimeout)
            }
            UpstreamError::Tls(why) => {
                let mut f = Failure::new(ProxyError::TlsFailed(why.clone()), Reason::Tls);
                f.cause = Some(why);
                f
            }
            UpstreamError::Send(e) => {
                let reason = if e.bad_response {
                    Reason::BadResponse
                } else {
                    Reason::Reset
                };
                let mut f = Failure::new(ProxyError::BadGateway, reason);
                f.answered = e.bad_response;
                f.cause = Some(e.cause);
                f
            }
        };
        f.written = written;
        f.reused = reused;
        f
    }

    /// The connection closed or failed before a response: `answered` when some bytes
    /// of one had come.
    pub fn closed(reused: bool, written: bool, answered: bool, cause: Option<String>) -> Failure {
        let mut f = Failure::new(ProxyError::BadGateway, Reason::Reset);
        f.reused = reused;
        f.written = written;
        f.answered = answered;
        f.cause = cause;
        f
    }

    /// What came back is not a response we can relay.
    pub fn bad_response(reused: bool, why: &str) -> Failure {
        let mut f = Failure::new(ProxyError::BadGateway, Reason::BadResponse);
        f.reused = reused;
        f.written = true;
        f.answered = true;
        f.cause = Some(why.to_owned());
        f
    }

    /// No answer (or no progress writing) within `backend_response`.
    pub fn timed_out(reused: bool) -> Failure {
        let mut f = Failure::new(ProxyError::Timeout, Reason::Timeout);
        f.reused = reused;
        f.written = true;
        f.timed_out = true;
        f
    }

    /// The client's side failed (a malformed or stalled body).
    pub fn client(error: ProxyError) -> Failure {
        let mut f = Failure::new(ProxyError::BadGateway, Reason::None);
        f.written = true;
        f.client = Some(error);
        f
    }

    /// A pooled connection the backend had closed while it was idle: nothing came
    /// back, the usual keep-alive race rather than a backend failure.
    pub fn stale(&self) -> bool {
        self.reused && !self.answered && !self.timed_out && self.client.is_none()
    }

    /// Whether the same backend gets one more try on a fresh connection.
    pub fn retry_fresh(&self, replay: Replay) -> bool {
        self.stale() && (!self.written || (replay.idempotent && replay.held))
    }

    /// Whether the request may go to another backend, `attempts` having been made
    /// with `retries` extra ones allowed.
    pub fn may_retry(&self, replay: Replay, attempts: u32, retries: u32) -> bool {
        if attempts > retries || self.client.is_some() || self.timed_out {
            return false;
        }
        !self.written || (replay.idempotent && replay.held)
    }
}

pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Failure {
        Failure::upstream(
            UpstreamError::Connect(std::io::ErrorKind::ConnectionRefused.into()),
            false,
            false,
        )
    }

    fn reset(reused: bool) -> Failure {
        Failure::closed(reused, true, false, None)
    }

    #[test]
    fn policy() {
        let get = Replay::of(&Method::GET, true);
        let streamed_get = Replay::of(&Method::GET, false);
        let post = Replay::of(&Method::POST, true);
        assert!(refused().may_retry(post, 1, 2), "nothing was written");
        assert!(reset(false).may_retry(get, 1, 2));
        assert!(
            !reset(false).may_retry(streamed_get, 1, 2),
            "streamed body cannot be replayed"
        );
        assert!(
            !reset(false).may_retry(post, 1, 2),
            "POST is never sent twice"
        );
        assert!(!Failure::timed_out(false).may_retry(get, 1, 2));
        assert!(refused().may_retry(get, 2, 2), "two extra attempts allowed");
        assert!(!refused().may_retry(get, 3, 2), "budget spent");
        assert!(!refused().may_retry(get, 1, 0), "retries: 0");
        assert!(
            !Failure::client(ProxyError::BadBody).may_retry(get, 1, 2),
            "the client's fault is answered, not retried"
        );
    }

    #[test]
    fn stale_connections() {
        let get = Replay::of(&Method::GET, true);
        let post = Replay::of(&Method::POST, true);
        assert!(reset(true).retry_fresh(get));
        assert!(
            !reset(false).retry_fresh(get),
            "a fresh connection is not stale"
        );
        assert!(
            !reset(true).retry_fresh(post),
            "a written POST is not sent twice"
        );
        assert!(
            Failure::closed(true, false, false, None).retry_fresh(post),
            "an unwritten POST may go on a fresh connection"
        );
        assert!(
            !Failure::closed(true, true, true, None).retry_fresh(get),
            "part of a response came: the backend got the request"
        );
        assert!(!Failure::bad_response(true, "garbage").retry_fresh(get));
        assert!(!Failure::timed_out(true).retry_fresh(get));
    }
}
