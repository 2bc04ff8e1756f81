//! Admin writes: drain, enable and re-weigh a backend at run time.
//!
//! `POST /backends/{id}/drain`, `POST /backends/{id}/enable`, `PUT /backends/{id}/weight`
//! (a decimal body, the same whole numbers `weight:` takes) and `DELETE
//! /backends/{id}/weight` (back to the configured weight). Each one changes the
//! backend's admin word in its shared slot ([`crate::health::AdminState`]), which every
//! worker reads at its next pick, so it takes effect everywhere at once, and holds
//! across reloads while the backend stays configured. Answers are JSON: the backend as
//! `/backends` shows it, or `{"error": ...}`. Checks run in this order: path (404),
//! method (405), access ([`token::access`]: 401/403), id (404), body (400/413).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::token::{self, Access};
use crate::health::AdminState;
use crate::snapshot::Snapshot;

/// Largest admin request body read.
const MAX_BODY: usize = 1024;

/// What a write path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drain,
    Enable,
    Weight,
}

impl Action {
    /// The methods the action's path takes (for 405's `Allow`).
    fn allow(self) -> &'static str {
        match self {
            Action::Drain | Action::Enable => "POST",
            Action::Weight => "PUT, DELETE",
        }
    }
}

/// One field of the admin state, set.
#[derive(Clone, Copy)]
enum Change {
    Drained(bool),
    Weight(Option<u32>),
}

/// A path under `/backends/`: `Some(Ok((id, action)))` for a write path, `Some(Err(()))`
/// for anything else under it (404), `None` for paths outside it (the read endpoints).
pub fn route(path: &str) -> Option<Result<(&str, Action), ()>> {
    let rest = path.strip_prefix("/backends/")?;
    let Some((id, action)) = rest.split_once('/') else {
        return Some(Err(()));
    };
    Some(match action {
        "drain" => Ok((id, Action::Drain)),
        "enable" => Ok((id, Action::Enable)),
        "weight" => Ok((id, Action::Weight)),
        _ => Err(()),
    })
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// Answers a request whose path is under `/backends/` ([`route`] is `Some`).
pub async fn handle(
    snapshot: &Snapshot,
    local: Option<std::net::SocketAddr>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let Some(Ok((id, action))) = route(&path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not found: write paths are /backends/{id}/drain, /backends/{id}/enable and /backends/{id}/weight",
        );
    };
    let allowed = match action {
        Action::Drain | Action::Enable => req.method() == Method::POST,
        Action::Weight => req.method() == Method::PUT || req.method() == Method::DELETE,
    };
    if !allowed {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("use {} for this path", action.allow()),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(action.allow()));
        return r;
    }
    // An unknown listener address counts as not loopback.
    let local = local.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match token::access(snapshot.config.admin_token.as_ref(), local, authorization) {
        Access::Allowed => {}
        Access::Unauthorized => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "admin writes need `Authorization: Bearer TOKEN` with the token of admin_token_file",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        Access::Forbidden => {
            return error(
                StatusCode::FORBIDDEN,
                "admin writes are refused on a non-loopback admin address without \
                 admin_token_file: set admin_token_file, or bind admin to 127.0.0.1",
            );
        }
    }
    let found = crate::backend::BackendId::parse_hex(id.as_bytes())
        .and_then(|want| snapshot.config.backends.iter().position(|b| b.id == want));
    let Some(i) = found else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no backend with id '{id}' (see GET /backends for the ids)"),
        );
    };
    let change = match (action, req.method()) {
        (Action::Drain, _) => Change::Drained(true),
        (Action::Enable, _) => Change::Drained(false),
        (Action::Weight, &Method::DELETE) => Change::Weight(None),
        (Action::Weight, _) => match read_weight(req.into_body()).await {
            Ok(w) => Change::Weight(Some(w)),
            Err((status, why)) => return error(status, why),
        },
    };
    let health = &snapshot.health;
    let before = health.admin_state(i);
    let Some(after) = health.update_admin(i, |s| match change {
        Change::Drained(drained) => AdminState { drained, ..s },
        Change::Weight(weight) => AdminState { weight, ..s },
    }) else {
        return error(
            StatusCode::INSUFFICIENT_STORAGE,
            "this backend shares the shared region's overflow slot (over 4096 backends \
             seen since start): restart switchyard to change it",
        );
    };
    if before != after {
        let b = snapshot.config.backends.get(i);
        tracing::warn!(
            backend = %b.address,
            drained = after.drained,
            weight_override = ?after.weight,
            "admin API changed a backend"
        );
    }
    json(StatusCode::OK, &super::backend_json(snapshot, i))
}

/// The body of `PUT .../weight`: a whole number from 1 to 4294967295, as `weight:`.
async fn read_weight(body: Incoming) -> Result<u32, (StatusCode, String)> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY} bytes: send the weight alone, e.g. `3`"),
            ));
        }
        Err(e) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            ));
        }
    };
    parse_weight(&bytes).map_err(|e| (StatusCode::BAD_REQUEST, e))
}

/// A weight as `weight:` takes it: a whole number from 1 to 4294967295 (surrounding
/// white space ignored).
pub fn parse_weight(body: &[u8]) -> Result<u32, String> {
    let text = std::str::from_utf8(body)
        .map(str::trim)
        .map_err(|_| "the weight is not text".to_string())?;
    let hint =
        "send a whole number from 1 to 4294967295, e.g. `3` (POST .../drain takes a backend out)";
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = text.chars().take(32).collect();
        return Err(format!("'{shown}' is not a weight: {hint}"));
    }
    match text.parse::<u32>() {
        Ok(0) => Err(format!("weight 0 would never be picked: {hint}")),
        Ok(w) => Ok(w),
        Err(_) => Err(format!("weight {text} is too large: {hint}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/backends"), None);
        assert_eq!(route("/metrics"), None);
        assert_eq!(route("/backends/ab/drain"), Some(Ok(("ab", Action::Drain))));
        assert_eq!(
            route("/backends/ab/enable"),
            Some(Ok(("ab", Action::Enable)))
        );
        assert_eq!(
            route("/backends/ab/weight"),
            Some(Ok(("ab", Action::Weight)))
        );
        for bad in [
            "/backends/",
            "/backends/ab",
            "/backends/ab/x",
            "/backends/ab/drain/x",
        ] {
            assert_eq!(route(bad), Some(Err(())), "{bad}");
        }
    }

    #[test]
    fn weights_are_what_the_config_takes() {
        assert_eq!(parse_weight(b"3"), Ok(3));
        assert_eq!(parse_weight(b" 12\n"), Ok(12));
        assert_eq!(parse_weight(b"4294967295"), Ok(u32::MAX));
        for bad in [
            &b""[..],
            b"0",
            b"-1",
            b"+3",
            b"0.5",
            b"3.0",
            b"1e3",
            b"0x10",
            b"4294967296",
            b"99999999999999999999999",
            b"three",
            b"\xff",
            b"{\"weight\": 3}",
        ] {
            let e = parse_weight(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(!e.is_empty());
        }
    }
}
