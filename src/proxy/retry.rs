//! When a failed attempt may be tried again on another backend.
//!
//! The rule protects the backends from seeing a request twice when that could matter:
//! - a request that was **never written** (connect refused or timed out, or hyper
//!   handed it back unsent) may go to another backend whatever its method: nothing of
//!   it reached anyone;
//! - a request that was **written but got no response** (reset, closed, garbage) may
//!   go again only if its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT,
//!   DELETE) and its body was held whole (at most the 64 KiB replay buffer), so a POST
//!   body is never sent twice;
//! - a request whose backend did not answer within `backend_response` is **not**
//!   retried: the backend may still be working on it, and a slow backend is usually a
//!   loaded one that a copy would load further;
//! - at most `retries` extra attempts, never the same backend twice (the `Tried` set).

use http::Method;

/// What happened to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptFailure {
    /// Nothing was written to the backend.
    NotSent,
    /// The request was (maybe partly) written; no response came.
    SentNoResponse,
    /// The backend did not answer in time.
    TimedOut,
}

/// Whether the request may go to another backend after `failure`.
pub fn may_retry(
    failure: AttemptFailure,
    method: &Method,
    body_replayable: bool,
    attempts_made: u32,
    retries: u32,
) -> bool {
    if attempts_made > retries {
        return false;
    }
    match failure {
        AttemptFailure::NotSent => true,
        AttemptFailure::SentNoResponse => body_replayable && is_idempotent(method),
        AttemptFailure::TimedOut => false,
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
    use super::AttemptFailure::*;
    use super::*;

    #[test]
    fn policy() {
        let get = Method::GET;
        let post = Method::POST;
        assert!(may_retry(NotSent, &post, false, 1, 2));
        assert!(may_retry(SentNoResponse, &get, true, 1, 2));
        assert!(
            !may_retry(SentNoResponse, &get, false, 1, 2),
            "streamed body cannot be replayed"
        );
        assert!(
            !may_retry(SentNoResponse, &post, true, 1, 2),
            "POST is never sent twice"
        );
        assert!(!may_retry(TimedOut, &get, true, 1, 2));
        assert!(
            may_retry(NotSent, &get, true, 2, 2),
            "two extra attempts allowed"
        );
        assert!(!may_retry(NotSent, &get, true, 3, 2), "budget spent");
        assert!(!may_retry(NotSent, &get, true, 1, 0), "retries: 0");
    }
}
