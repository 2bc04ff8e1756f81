//! The request path, top to bottom: [`Proxy::handle`].
//!
//! One `Proxy` per worker. For each request hyper hands it: mark the client connection
//! busy, run the [`guard`], read up to the replay limit of the body ([`body`]), rewrite
//! the head ([`headers`]), pick a backend (`balance`), send it through the worker's
//! pool (`upstream`), and relay the response with its body streaming. Failures become
//! responses in one place ([`error_response`]). A request that died on a *reused*
//! keep-alive connection before any response byte came back is sent once more on a
//! fresh connection when that is safe (idempotent method, body held whole).

pub mod body;
pub mod error_response;
pub mod guard;
pub mod headers;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::backend::{Backend, BackendId};
use crate::balance::{AnyStrategy, Tried, View};
use crate::config::Config;
use crate::health::HealthTable;
use crate::server::conn_io::ConnState;
use crate::upstream::{Failed, Pool, UpstreamError, Upstreams};
use body::{ClientBodyError, Lease, ProxyBody, ReqBody};
use error_response::ProxyError;

/// What the proxy knows about one client connection.
pub struct ClientConn {
    pub clock: Rc<ConnState>,
    /// The client's IP as a header value, built once per connection.
    pub addr_value: HeaderValue,
    /// `http` or `https`: the scheme the client used.
    pub proto: HeaderValue,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, clock: Rc<ConnState>) -> ClientConn {
        let ip = peer.ip().to_string();
        let addr_value =
            HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientConn {
            clock,
            addr_value,
            proto: HeaderValue::from_static("http"),
        }
    }
}

/// Per-backend things the request path needs, built once per snapshot.
struct BackendSlot {
    pool: Rc<Pool>,
    /// `Set-Cookie` value pinning a client to this backend (sticky strategy).
    cookie: HeaderValue,
    /// `Host` for HTTP/1.0 requests that carried none.
    host: HeaderValue,
}

/// One worker's request handler.
pub struct Proxy {
    config: Arc<Config>,
    health: Arc<HealthTable>,
    strategy: AnyStrategy,
    slots: Vec<BackendSlot>,
    upstreams: Upstreams,
}

impl Proxy {
    pub fn new(config: Arc<Config>, health: Arc<HealthTable>) -> Proxy {
        let strategy = AnyStrategy::new(config.strategy, &config.backends);
        let slots = config
            .backends
            .iter()
            .map(|b| BackendSlot {
                pool: Rc::new(Pool::new(
                    config.pool.max_idle_per_backend,
                    config.pool.idle_timeout,
                )),
                cookie: sticky_cookie(&config.sticky_cookie, b.id),
                host: HeaderValue::from_str(&b.address)
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            })
            .collect();
        let upstreams = Upstreams::new(config.timeouts.connect);
        Proxy {
            config,
            health,
            strategy,
            slots,
            upstreams,
        }
    }

    /// Drops expired idle backend connections (called periodically by the worker).
    pub fn sweep_pools(&self) {
        for s in &self.slots {
            s.pool.sweep();
        }
    }

    /// Serves one request. Never fails: errors become responses.
    pub async fn handle(&self, conn: &ClientConn, req: Request<Incoming>) -> Response<ProxyBody> {
        conn.clock.busy();
        match self.forward(conn, req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = ?e, "answered locally");
                error_response::respond(&e, Some(Rc::clone(&conn.clock)))
            }
        }
    }

    async fn forward(
        &self,
        conn: &ClientConn,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if conn.clock.next_request_ambiguous() {
            return Err(ProxyError::BadRequest(
                "Content-Length together with Transfer-Encoding is ambiguous",
            ));
        }
        guard::check(&req, &self.config.limits)?;
        let (mut parts, incoming) = req.into_parts();

        let sent_at: body::SentAt = Rc::new(Cell::new(None));
        let client_failed = Rc::new(Cell::new(false));
        let idle = self.config.timeouts.client_idle;
        let body = body::read_request_body(incoming, idle, &sent_at, &client_failed)
            .await
            .map_err(|e| match e {
                ClientBodyError::Malformed(_) => ProxyError::BadBody,
                ClientBodyError::Timeout => ProxyError::ClientBodyTimeout,
            })?;

        to_origin_form(&mut parts.uri, &mut parts.headers);
        headers::rewrite_request(&mut parts.headers, &conn.addr_value, &conn.proto);
        let client_version = parts.version;
        parts.version = Version::HTTP_11;

        let sticky = if self.strategy.is_sticky() {
            find_cookie(&parts.headers, self.config.sticky_cookie.as_bytes())
        } else {
            None
        };
        let tried = Tried::default();
        let view = View {
            health: &self.health,
            tried: &tried,
            sticky,
        };
        let pick = self
            .strategy
            .pick(&view)
            .ok_or(ProxyError::NoHealthyBackend)?;
        let backend = self.config.backends.get(pick.index);
        let slot = &self.slots[pick.index];
        if client_version == Version::HTTP_10 && !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, slot.host.clone());
        }
        let in_flight = self.health.start_request(pick.index);

        // Keep what a second attempt on a fresh connection would need.
        let replay = match body.replay() {
            Some(b) if is_idempotent(&parts.method) => Some((
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
                b,
            )),
            _ => None,
        };
        if !matches!(body, ReqBody::Streaming(_)) {
            sent_at.set(Some(Instant::now()));
        }
        let req = Request::from_parts(parts, body);
        let attempt = self.upstreams.send(backend, &slot.pool, req);
        let result = self.with_response_timeout(attempt, &sent_at).await?;
        let exchange = match result {
            Ok(x) => x,
            Err(Failed {
                reused: true,
                request: None,
                error: UpstreamError::Send(e),
            }) if replay.is_some() && !client_failed.get() => {
                // The pooled connection died after we wrote: the backend most likely
                // closed it while idle. Safe to send again on a fresh connection.
                tracing::debug!(backend = %backend.address, "retrying on a fresh connection: {e}");
                let Some((method, uri, headers, body)) = replay else {
                    return Err(ProxyError::BadGateway);
                };
                let mut req = Request::new(body);
                *req.method_mut() = method;
                *req.uri_mut() = uri;
                *req.headers_mut() = headers;
                sent_at.set(Some(Instant::now()));
                let attempt = self.upstreams.send_fresh(backend, req);
                match self.with_response_timeout(attempt, &sent_at).await? {
                    Ok(x) => x,
                    Err(f) => return Err(self.failure(backend, f, &client_failed)),
                }
            }
            Err(f) => return Err(self.failure(backend, f, &client_failed)),
        };

        let (mut resp_parts, resp_body) = exchange.response.into_parts();
        headers::rewrite_response(&mut resp_parts.headers);
        if pick.set_cookie {
            resp_parts
                .headers
                .append(header::SET_COOKIE, slot.cookie.clone());
        }
        let lease = Lease {
            pool: Rc::clone(&slot.pool),
            sender: exchange.sender,
        };
        let body = ProxyBody::upstream(
            resp_body,
            Some(lease),
            in_flight,
            Some(Rc::clone(&conn.clock)),
        );
        Ok(Response::from_parts(resp_parts, body))
    }

    /// Runs one attempt under `backend_response`, which starts once the request body has
    /// been fully handed over (an upload's own pace is bounded by the client idle
    /// timeout instead). Dialing is bounded by `connect` inside the attempt.
    async fn with_response_timeout<F, T>(
        &self,
        attempt: F,
        sent_at: &body::SentAt,
    ) -> Result<T, ProxyError>
    where
        F: std::future::Future<Output = T>,
    {
        let t = &self.config.timeouts;
        let mut attempt = std::pin::pin!(attempt);
        let mut deadline = Instant::now() + t.connect + t.backend_response;
        loop {
            match tokio::time::timeout_at(deadline, attempt.as_mut()).await {
                Ok(v) => return Ok(v),
                Err(_) => match sent_at.get() {
                    Some(at) if at + t.backend_response <= Instant::now() => {
                        return Err(ProxyError::Timeout);
                    }
                    Some(at) => deadline = at + t.backend_response,
                    None => deadline = Instant::now() + t.backend_response,
                },
            }
        }
    }

    fn failure(&self, backend: &Backend, f: Failed, client_failed: &Cell<bool>) -> ProxyError {
        if client_failed.get() {
            return ProxyError::BadBody;
        }
        match f.error {
            UpstreamError::Connect(e) => {
                tracing::warn!(backend = %backend.address, "connect failed: {e}");
                ProxyError::ConnectFailed
            }
            UpstreamError::ConnectTimeout => {
                tracing::warn!(backend = %backend.address, "connect timed out");
                ProxyError::Timeout
            }
            UpstreamError::Send(e) => {
                tracing::warn!(backend = %backend.address, "exchange failed: {e}");
                ProxyError::BadGateway
            }
        }
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// An absolute-form target (`GET http://h/p`) becomes origin-form with `Host: h`.
fn to_origin_form(uri: &mut Uri, headers: &mut http::HeaderMap) {
    if uri.authority().is_none() {
        return;
    }
    if let Some(auth) = uri.authority() {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            headers.insert(header::HOST, v);
        }
    }
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    if let Ok(u) = Uri::try_from(pq) {
        *uri = u;
    }
}

/// `NAME=<id>; Path=/; HttpOnly`.
fn sticky_cookie(name: &str, id: BackendId) -> HeaderValue {
    HeaderValue::from_str(&format!("{name}={id}; Path=/; HttpOnly"))
        .unwrap_or_else(|_| HeaderValue::from_static("SWITCHYARD_BACKEND=; Path=/"))
}

/// The backend id in the request's `Cookie` header(s) under `name`, if well formed.
fn find_cookie(headers: &http::HeaderMap, name: &[u8]) -> Option<BackendId> {
    for v in headers.get_all(header::COOKIE) {
        for pair in v.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if let Some(rest) = pair.strip_prefix(name) {
                if let Some(value) = rest.strip_prefix(b"=") {
                    return BackendId::parse_hex(value.trim_ascii());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_lookup() {
        let id = BackendId::of("127.0.0.1:9001");
        let mut h = http::HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; SWITCHYARD_BACKENDX=zz"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("b=2; SWITCHYARD_BACKEND={id}")).unwrap(),
        );
        assert_eq!(find_cookie(&h, b"SWITCHYARD_BACKEND"), Some(id));
        assert_eq!(find_cookie(&h, b"OTHER"), None);
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let mut uri: Uri = "http://example.com:8080/a?b=c".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("wrong"));
        to_origin_form(&mut uri, &mut h);
        assert_eq!(uri, "/a?b=c");
        assert_eq!(h["host"], "example.com:8080");
    }
}
