//! The request path, top to bottom: [`Proxy::handle`] for HTTP/2 clients (hyper's
//! server hands it each stream), `h1::Proxy::serve_h1` for HTTP/1 clients.
//!
//! One `Proxy` per worker. For each HTTP/2 request: mark the client connection busy,
//! run the [`guard`], read up to the replay limit of the body ([`body`]), rewrite the
//! head ([`headers`]), pick a backend (`balance`), send it through the worker's pool
//! (`upstream`), and relay the response with its body streaming. Failures become
//! responses in one place ([`error_response`]). Both paths run one attempt loop that
//! reads one error type, [`retry::Failure`], which says whether the same backend gets
//! another try on a fresh connection (a stale pooled one) or another backend may be
//! tried.

pub mod body;
pub mod error_response;
pub mod guard;
pub mod h1;
pub mod headers;
pub mod key;
pub mod redirect;
pub mod request_body;
pub mod retry;
pub mod upgrade;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::access_log;
use crate::backend::{Backend, BackendId};
use crate::balance::{AnyStrategy, Pick, Tried, View};
use crate::config::Config;
use crate::health::shared::Ledger;
use crate::health::{HealthTable, InFlightGuard, Reason, Source};
use crate::proxy_protocol::Origin;
use crate::server::conn_io::ConnState;
use crate::snapshot::Snapshot;
use crate::upstream::{Exchange, Pool, Upstreams};
use body::{ClientFault, Finish, Lease, ProxyBody, ReqBody, Upload};
use error_response::ProxyError;
use retry::Failure;

/// What the proxy knows about one client connection.
pub struct ClientConn {
    pub clock: Rc<ConnState>,
    /// The client's IP as a header value, built once per connection.
    pub addr_value: HeaderValue,
    /// `http` or `https`: the scheme the client used.
    pub proto: HeaderValue,
    /// Keeps the connection counted open (for draining) while something outlives
    /// its HTTP task: a tunnel holds a clone.
    pub open: Rc<dyn std::any::Any>,
    /// The client's address and the one it reached, for backends' PROXY headers.
    pub origin: Origin,
}

impl ClientConn {
    pub fn new(
        origin: Origin,
        clock: Rc<ConnState>,
        https: bool,
        open: Rc<dyn std::any::Any>,
    ) -> ClientConn {
        let ip = origin.client.ip().to_string();
        let addr_value =
            HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientConn {
            clock,
            addr_value,
            proto: HeaderValue::from_static(if https { "https" } else { "http" }),
            open,
            origin,
        }
    }
}

/// Per-backend things the request path needs, built once per snapshot.
struct BackendSlot {
    pool: Rc<Pool>,
    /// TLS connector for an `https` backend (or why one could not be built).
    tls: Result<Option<tokio_rustls::TlsConnector>, String>,
    /// `Set-Cookie` value pinning a client to this backend (sticky strategy).
    cookie: HeaderValue,
    /// `Host` for HTTP/1.0 requests that carried none.
    host: HeaderValue,
}

impl BackendSlot {
    fn tls(&self) -> crate::upstream::TlsChoice<'_> {
        match &self.tls {
            Ok(c) => Ok(c.as_ref()),
            Err(e) => Err(e.as_str()),
        }
    }
}

/// One worker's request handler.
pub struct Proxy {
    config: Arc<Config>,
    health: Arc<HealthTable>,
    strategy: AnyStrategy,
    /// What `consistent-hash` hashes (`None` for other strategies).
    hash_key: Option<crate::balance::HashKey>,
    /// This worker's link to Redis (`scope: redis` limits), kept across reloads while
    /// `redis:` does not change.
    redis: Option<Rc<crate::limit::redis::RedisLimiter>>,
    slots: Vec<BackendSlot>,
    upstreams: Upstreams,
    /// Count requests for `/metrics` (only when an admin listener can serve them).
    record: bool,
    /// This worker's share of the shared gauges.
    ledger: &'static Ledger,
    /// TLS termination, built from this snapshot's certificates.
    /// Per listener (by index): TLS termination, when it has it.
    tls_acceptors: Vec<Option<tokio_rustls::TlsAcceptor>>,
    access_log: bool,
    /// Some backend gets a PROXY header (so connections note their local address).
    sends_proxy_headers: bool,
}

impl Proxy {
    /// A handler for `snapshot`. Backends that `previous` also served keep their pool
    /// (and its idle connections) when the pool settings did not change.
    pub fn new(snapshot: &Snapshot, previous: Option<&Proxy>, worker: usize) -> Proxy {
        let config = Arc::clone(&snapshot.config);
        let health = Arc::clone(&snapshot.health);
        let options = crate::balance::Options {
            hash: config.hash.clone(),
            workers: config.workers,
        };
        let strategy = AnyStrategy::new(config.strategy, &config.backends, &options);
        let hash_key = (config.strategy == crate::balance::StrategyKind::ConsistentHash)
            .then(|| config.hash.key.clone());
        let redis = config.redis.as_ref().map(|r| {
            previous
                .and_then(|p| p.redis.as_ref())
                .filter(|old| old.config == *r)
                .map(Rc::clone)
                .unwrap_or_else(|| Rc::new(crate::limit::redis::RedisLimiter::new(r.clone())))
        });
        let same_pool_settings = previous.is_some_and(|p| p.config.pool == config.pool);
        let slots = config
            .backends
            .iter()
            .map(|b| BackendSlot {
                tls: match b.scheme {
                    crate::backend::Scheme::Http => Ok(None),
                    crate::backend::Scheme::Https => {
                        crate::tls::client::connector(b, b.offers_h2()).map(Some)
                    }
                },
                // A pool carries over only to a backend dialed the same way (a reload
                // that changes its TLS settings must not reuse the old connections).
                pool: previous
                    .filter(|_| same_pool_settings)
                    .and_then(|p| {
                        let old = p.config.backends.iter().position(|o| o.id == b.id)?;
                        let same = p.config.backends.get(old).dials_like(b);
                        p.slots.get(old).filter(|_| same)
                    })
                    .map(|s| Rc::clone(&s.pool))
                    .unwrap_or_else(|| {
                        Rc::new(Pool::new(
                            config.pool.max_idle_per_backend,
                            config.pool.idle_timeout,
                        ))
                    }),
                cookie: sticky_cookie(&config.sticky_cookie, b.id),
                host: HeaderValue::from_str(&b.address)
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            })
            .collect();
        let upstreams = Upstreams::new(config.timeouts.connect);
        let record = config.admin.is_some();
        let access_log = config.access_log;
        let ledger = health.ledger(worker);
        let tls_acceptors = snapshot
            .tls
            .iter()
            .map(|t| t.as_ref().map(crate::tls::server::acceptor))
            .collect();
        Proxy {
            sends_proxy_headers: config.backends.iter().any(|b| b.proxy_protocol.is_some()),
            config,
            health,
            strategy,
            hash_key,
            redis,
            slots,
            upstreams,
            record,
            ledger,
            tls_acceptors,
            access_log,
        }
    }

    /// Process-wide counters (open connections are counted by the worker).
    pub fn global_stats(&self) -> &'static crate::metrics::GlobalStats {
        self.health.global()
    }

    /// This worker's ledger.
    pub fn ledger(&self) -> &'static Ledger {
        self.ledger
    }

    /// The acceptor for TLS on listener `i`, when it terminates TLS.
    pub fn tls_acceptor(&self, i: usize) -> Option<tokio_rustls::TlsAcceptor> {
        self.tls_acceptors.get(i).cloned().flatten()
    }

    /// `redirect_https` of listener `i`: the TLS port its requests are sent to.
    pub fn redirect_https(&self, i: usize) -> Option<u16> {
        self.config.listeners.get(i).and_then(|l| l.redirect_https)
    }

    /// The client timeouts of this handler's config.
    pub fn timeouts(&self) -> crate::config::Timeouts {
        self.config.timeouts.clone()
    }

    /// The request-head limits, as the HTTP/1 codec takes them.
    pub fn head_limits(&self) -> crate::http1::request::Limits {
        let l = &self.config.limits;
        crate::http1::request::Limits {
            request_line: l.request_line,
            header_section: l.header_section,
            headers: l.headers,
        }
    }

    /// Counts a response the balancer made itself (when metrics are on).
    pub fn count_local(&self, e: &ProxyError) {
        if self.record {
            self.health
                .global()
                .count_local(e.reason(), e.status().as_u16());
        }
    }

    pub fn pool_idle_timeout(&self) -> Duration {
        self.config.pool.idle_timeout
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
        // The response body marks the connection idle when it is done; until there is
        // one (or if this future is dropped: an HTTP/2 stream reset), this does.
        let mut busy = BusyGuard(Some(&conn.clock));
        let start = Instant::now();
        let log = self.access_log.then(|| {
            let uri = req.uri();
            let target = match uri.path_and_query() {
                Some(p) => std::borrow::Cow::Borrowed(p.as_str()),
                None => std::borrow::Cow::Owned(uri.to_string()),
            };
            let mut e = access_log::Entry::new(
                conn.addr_value.as_bytes(),
                req.method().clone(),
                target.as_bytes(),
                req.version(),
            );
            e.headers((req.headers().iter()).map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())));
            if let Some(a) = uri.authority() {
                e.default_host(a.as_str().as_bytes());
            }
            e
        });
        let (mut resp, backend) = match self.forward(conn, req).await {
            Ok((resp, index)) => (resp, Some(index)),
            Err(e) => {
                tracing::debug!(error = ?e, "answered locally");
                if self.record {
                    self.health
                        .global()
                        .count_local(e.reason(), e.status().as_u16());
                }
                (
                    error_response::respond(&e, Some(Rc::clone(&conn.clock))),
                    None,
                )
            }
        };
        busy.0 = None;
        if self.record || log.is_some() {
            let stats = backend
                .filter(|_| self.record)
                .map(|i| self.health.stats(i));
            let log = log.map(|mut e| {
                e.status = resp.status().as_u16();
                if let Some(i) = backend {
                    e.backend(self.health.address(i), self.health.name(i));
                }
                // A backend answered: its status, and the time to its response head.
                e.upstream = backend.map(|_| (e.status, start.elapsed()));
                e
            });
            let finish = Box::new(Finish { start, stats, log });
            resp = resp.map(|b| b.with_finish(Some(finish)));
        }
        resp
    }

    async fn forward(
        &self,
        conn: &ClientConn,
        req: Request<Incoming>,
    ) -> Result<(Response<ProxyBody>, usize), ProxyError> {
        guard::check(&req, &self.config.limits)?;
        let (mut parts, incoming) = req.into_parts();
        if let Some(e) = self
            .rate_limited(&H2Key {
                parts: &parts,
                client: conn.addr_value.as_bytes(),
            })
            .await
        {
            return Err(e);
        }

        let upload = Rc::new(Upload::default());
        let idle = self.config.timeouts.client_idle;
        let body = body::read_request_body(incoming, idle, &upload)
            .await
            .map_err(|e| match e {
                ClientFault::Malformed => ProxyError::BadBody,
                ClientFault::Timeout => ProxyError::ClientBodyTimeout,
            })?;

        to_origin_form(&mut parts.uri, &mut parts.headers);
        headers::rewrite_request(&mut parts.headers, &conn.addr_value, &conn.proto);
        // An HTTP/1.0 request may lack Host; the backend gets its own address then.
        let needs_host =
            parts.version == Version::HTTP_10 && !parts.headers.contains_key(header::HOST);
        parts.version = Version::HTTP_11;
        let sticky = if self.strategy.is_sticky() {
            find_cookie(&parts.headers, self.config.sticky_cookie.as_bytes())
        } else {
            None
        };
        self.count_for_budget();
        let key = self.hash_key.as_ref().and_then(|k| {
            key::hash(
                k,
                &H2Key {
                    parts: &parts,
                    client: conn.addr_value.as_bytes(),
                },
            )
        });
        // What a second attempt needs once the first was written: only when allowed.
        let replay = match body.replay() {
            Some(body) if retry::is_idempotent(&parts.method) => Some(Replay {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
                body,
            }),
            _ => None,
        };
        let replay_rule = retry::Replay::of(&parts.method, body.replay().is_some());
        let mut next = Some(Request::from_parts(parts, body));

        let mut tried = Tried::default();
        let mut attempts = 0u32;
        let mut last = ProxyError::NoHealthyBackend;
        loop {
            let (pick, fail_open, in_flight) =
                match self.pick_with_room(&tried, sticky, key, attempts).await {
                    Ok(p) => p,
                    Err(Some(e)) => return Err(e),
                    Err(None) => return Err(last),
                };
            let backend = self.config.backends.get(pick.index);
            let slot = &self.slots[pick.index];
            tried.insert(pick.index);
            let host = needs_host.then_some(&slot.host);
            let build = |unsent: Option<Request<ReqBody>>| {
                let mut req = unsent.or_else(|| replay.as_ref().map(Replay::build))?;
                if let Some(h) = host {
                    req.headers_mut().insert(header::HOST, h.clone());
                }
                Some(req)
            };
            let Some(req) = build(next.take()) else {
                return Err(last);
            };
            if attempts > 0 && self.record {
                // Counted when the retry really goes out, not when it is merely allowed.
                let retries = &self.health.global().retries;
                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            attempts += 1;
            let sent = self.strategy.wants_latency().then(Instant::now);
            let mut result = self
                .attempt(backend, slot, req, &upload, false, &conn.origin)
                .await;
            if let Err((f, unsent)) = &mut result {
                if f.retry_fresh(replay_rule) {
                    if let Some(req) = build(unsent.take()) {
                        tracing::debug!(backend = %backend.address, "pooled connection was stale; retrying on a fresh one");
                        // Boxed: the cold path stays out of every request's state.
                        result =
                            Box::pin(self.attempt(backend, slot, req, &upload, true, &conn.origin))
                                .await;
                    }
                }
            }
            match result {
                Ok(exchange) => {
                    if let Some(t) = sent {
                        self.observe_latency(pick.index, t.elapsed());
                    }
                    let status = exchange.response.status();
                    if self.config.health.passive_5xx && status.is_server_error() {
                        self.health
                            .record_failure(pick.index, Source::Request, Reason::Status5xx);
                    } else {
                        self.health.record_success(pick.index, Source::Request);
                    }
                    if status == http::StatusCode::SWITCHING_PROTOCOLS {
                        // HTTP/2 has no upgrades: a bare 101 would strand the client.
                        tracing::warn!(backend = %backend.address, "backend switched protocols unasked");
                        return Err(ProxyError::UpgradeNotSupported);
                    }
                    let resp = self.relay(conn, exchange, pick, slot, in_flight, upload);
                    return Ok((resp, pick.index));
                }
                Err((mut f, unsent)) => {
                    if let Some(fault) = upload.client_fault.get() {
                        f.client = Some(match fault {
                            ClientFault::Malformed => ProxyError::BadBody,
                            ClientFault::Timeout => ProxyError::ClientBodyTimeout,
                        });
                    }
                    if let Some(e) = f.client {
                        return Err(e);
                    }
                    self.attempt_failed(pick.index, attempts, &f);
                    // A request handed back unsent may go again whatever its body.
                    let rule = retry::Replay {
                        held: replay_rule.held || unsent.is_some(),
                        ..replay_rule
                    };
                    let again = !fail_open
                        && f.may_retry(rule, attempts, self.config.retries)
                        && self.budget_allows_retry();
                    last = if fail_open {
                        ProxyError::NoHealthyBackend
                    } else {
                        f.error
                    };
                    if !again {
                        return Err(last);
                    }
                    next = unsent;
                }
            }
        }
    }

    /// Logs a failed attempt and records it against the backend.
    fn attempt_failed(&self, index: usize, attempt: u32, f: &Failure) {
        tracing::warn!(
            backend = %self.health.address(index),
            attempt,
            reason = f.reason.as_str(),
            cause = f.cause.as_deref().unwrap_or(""),
            "backend attempt failed"
        );
        self.health.record_failure(index, Source::Request, f.reason);
    }

    /// One attempt on one backend (on a new connection when `fresh`), under
    /// `backend_response`. A failure hands back the request when none of it was sent.
    async fn attempt(
        &self,
        backend: &Backend,
        slot: &BackendSlot,
        req: Request<ReqBody>,
        upload: &Rc<Upload>,
        fresh: bool,
        origin: &Origin,
    ) -> Result<Exchange, (Failure, Option<Request<ReqBody>>)> {
        upload.sent_at.set(None);
        upload.progress_at.set(Some(Instant::now()));
        let (tls, pool) = (slot.tls(), &slot.pool);
        let send = async {
            if fresh {
                self.upstreams
                    .send_fresh(backend, tls, pool, req, upload, origin)
                    .await
            } else {
                let up = &self.upstreams;
                up.send(backend, tls, pool, req, upload, origin).await
            }
        };
        let send = std::pin::pin!(send);
        match self.with_response_timeout(send, upload).await {
            Err(_) => Err((Failure::timed_out(false), None)),
            Ok(Ok(x)) => Ok(x),
            Ok(Err(f)) => {
                let written = f.request.is_none();
                let reused = f.reused;
                Err((Failure::upstream(f.error, written, reused), f.request))
            }
        }
    }

    /// The backend's response, rewritten for the client, its body streaming.
    fn relay(
        &self,
        conn: &ClientConn,
        exchange: Exchange,
        pick: Pick,
        slot: &BackendSlot,
        in_flight: InFlightGuard,
        upload: Rc<Upload>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = exchange.response.into_parts();
        if self.record {
            self.health
                .stats(pick.index)
                .count_response(parts.status.as_u16());
        }
        headers::rewrite_response(&mut parts.headers);
        if pick.set_cookie {
            parts
                .headers
                .append(header::SET_COOKIE, slot.cookie.clone());
        }
        let lease = Lease { upload };
        let stall = self.config.timeouts.backend_response;
        let clock = Some(Rc::clone(&conn.clock));
        let body = ProxyBody::upstream(body, Some(lease), in_flight, stall, clock);
        Response::from_parts(parts, body)
    }

    /// The backend for the next attempt, and whether it is a fail-open one: the
    /// strategy's pick among eligible backends or, when every backend is marked down on
    /// the first attempt, the one that failed longest ago (rather than refuse all
    /// traffic until a probe says otherwise). `Err(None)`: no attempt left, answer with
    /// the last failure; `Err(Some(_))`: answer with that.
    fn next_pick(
        &self,
        tried: &Tried,
        sticky: Option<BackendId>,
        key: Option<u64>,
        attempts: u32,
    ) -> Result<(Pick, bool), Option<ProxyError>> {
        let view = View {
            health: &self.health,
            tried,
            sticky,
            key,
            ramp: self.ramp(),
        };
        match self.strategy.pick(&view) {
            Some(p) => Ok((p, false)),
            None if attempts == 0 => match self.least_recently_failed(tried) {
                Some(index) => Ok((
                    Pick {
                        index,
                        set_cookie: self.strategy.is_sticky(),
                    },
                    true,
                )),
                None => Err(Some(ProxyError::NoHealthyBackend)),
            },
            None if self.health.all_down() => Err(Some(ProxyError::NoHealthyBackend)),
            None => Err(None),
        }
    }

    /// Feeds a response time to the strategy (least-latency) and publishes its
    /// estimate for /backends.
    fn observe_latency(&self, index: usize, rtt: Duration) {
        self.strategy.observe(index, rtt);
        if let Some(us) = self.strategy.latency_us(index) {
            self.health.set_latency_us(index, us);
        }
    }

    /// `limits.connections_per_client` for a new connection from `ip`: counted in this
    /// worker's table (release it with [`Proxy::release_client`]), or refused (and the
    /// refusal counted).
    pub fn admit_client(&self, ip: std::net::IpAddr) -> Admit {
        let cap = self.config.limits.connections_per_client;
        if cap == 0 {
            return Admit::Uncounted;
        }
        let hash = match ip {
            std::net::IpAddr::V4(a) => crate::balance::maglev::hash_key(&a.octets()),
            std::net::IpAddr::V6(a) => crate::balance::maglev::hash_key(&a.octets()),
        };
        if self.health.client_connections(self.config.workers, hash) >= u64::from(cap) {
            self.health
                .global()
                .connections_refused_per_client
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Admit::Refused;
        }
        if self.ledger.by_client.add(hash) {
            Admit::Counted(hash)
        } else {
            Admit::Uncounted
        }
    }

    /// `proxy_protocol.trusted` of listener `i`, when it takes PROXY headers.
    pub fn proxy_protocol(&self, i: usize) -> Option<&[crate::proxy_protocol::Cidr]> {
        let l = self.config.listeners.get(i)?;
        l.proxy_protocol.as_deref()
    }

    /// True when some backend gets a PROXY header (which names the local address).
    pub fn sends_proxy_headers(&self) -> bool {
        self.sends_proxy_headers
    }

    /// A connection counted by [`Proxy::admit_client`] closed.
    pub fn release_client(ledger: &Ledger, hash: u64) {
        ledger.by_client.release(hash);
    }

    /// The 429 of the first rate limit that refuses this request, if one does.
    pub(crate) async fn rate_limited(&self, r: &impl key::KeySource) -> Option<ProxyError> {
        use crate::limit::{Decision, LimitKey, Scope};
        let limits = &self.config.rate_limits;
        if limits.is_empty() {
            return None;
        }
        let now = crate::health::shared::monotonic_ns();
        let table = self.health.rate_table();
        for l in limits {
            let key = match &l.key {
                LimitKey::ClientIp => l.key_of(r.client()),
                LimitKey::Global => l.key_of(b""),
                // A request without the header is not limited by this limit.
                LimitKey::Header(h) => match r.header(h) {
                    Some(v) => l.key_of(v),
                    None => continue,
                },
            };
            let decision = match (l.scope, &self.redis) {
                (Scope::Local, _) | (Scope::Redis, None) => {
                    crate::limit::check(table, key, now, l.pace())
                }
                // Boxed: the round trip's state stays out of every request's future.
                (Scope::Redis, Some(redis)) => match Box::pin(redis.check(key, l.pace())).await {
                    Ok(d) => d,
                    // Logged at warn by the limiter once per outage, not per request.
                    Err(why) => {
                        tracing::debug!(limit = %l.name, "rate limiter unavailable: {why:?}");
                        match redis.config.on_error {
                            crate::limit::redis::OnError::Allow => continue,
                            crate::limit::redis::OnError::Deny => {
                                return Some(ProxyError::RateLimiterUnavailable);
                            }
                        }
                    }
                },
            };
            if let Decision::Deny { retry_after_ns } = decision {
                if self.record {
                    self.health.global().count_rate_limited(l.name_hash);
                }
                return Some(ProxyError::RateLimited(Box::new(error_response::Limited {
                    name: l.name.clone(),
                    retry_after_s: retry_after_ns.div_ceil(1_000_000_000).max(1),
                    quota: l.quota,
                    window_s: l.window_s,
                })));
            }
        }
        None
    }

    /// Counts a client request for the retry budget (when one is set).
    #[inline]
    fn count_for_budget(&self) {
        if self.config.retry_budget.is_some() {
            self.ledger
                .count_request(crate::health::shared::monotonic_ms());
        }
    }

    /// Whether the retry budget allows one more retry now; counts it (made, or
    /// skipped in `switchyard_retries_skipped_total{reason="budget"}`).
    fn budget_allows_retry(&self) -> bool {
        let Some(b) = self.config.retry_budget else {
            return true;
        };
        let now = crate::health::shared::monotonic_ms();
        let (requests, retries, seconds) = self.health.budget_window(self.config.workers, now);
        // `min_per_second` for each second of the window that saw traffic.
        let allowed = b.ratio * requests as f64 + f64::from(b.min_per_second * seconds);
        if (retries as f64) < allowed {
            self.ledger.count_retry(now);
            return true;
        }
        self.health
            .global()
            .retries_skipped_budget
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(requests, retries, "retry over budget: not made");
        false
    }

    /// The next pick and its in-flight count, waiting in the queue (`queue:`) while
    /// every backend that could take the request is at its `max_connections`: woken
    /// in FIFO order when one of this worker's requests ends, and re-checking every
    /// 10 ms for room made by other workers.
    async fn pick_with_room(
        &self,
        tried: &Tried,
        sticky: Option<BackendId>,
        key: Option<u64>,
        attempts: u32,
    ) -> Result<(Pick, bool, InFlightGuard), Option<ProxyError>> {
        let mut waiting: Option<Queued> = None;
        loop {
            match self.next_pick(tried, sticky, key, attempts) {
                Ok((pick, fail_open)) => {
                    if let Some(g) = self.health.try_start_request(pick.index, self.ledger) {
                        return Ok((pick, fail_open, g));
                    }
                    // Another worker took the last room first: wait for more.
                }
                Err(e) if !self.full_but_up(tried) => return Err(e),
                Err(_) => {}
            }
            let q = match &waiting {
                Some(q) => q,
                None => waiting.insert(self.enter_queue()?),
            };
            let left =
                (q.since + self.config.queue.timeout).saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Some(ProxyError::QueueTimeout));
            }
            // Boxed: the wait's timer stays out of every request's future.
            Box::pin(wait_for_room(left.min(Duration::from_millis(10)))).await;
        }
    }

    /// True when a backend this request could use is up but at its `max_connections`.
    fn full_but_up(&self, tried: &Tried) -> bool {
        self.health.has_caps()
            && (0..self.health.len()).any(|i| {
                !tried.contains(i)
                    && self.health.is_up(i)
                    && !self.health.is_drained(i)
                    && !self.health.has_room(i)
            })
    }

    /// A place in the queue, or 503 when it is full.
    fn enter_queue(&self) -> Result<Queued, Option<ProxyError>> {
        use std::sync::atomic::Ordering::Relaxed;
        let g = self.health.global();
        if g.queued.fetch_add(1, Relaxed) >= self.config.queue.size as i64 {
            g.queued.fetch_sub(1, Relaxed);
            return Err(Some(ProxyError::QueueFull));
        }
        self.ledger.queued.fetch_add(1, Relaxed);
        Ok(Queued {
            since: Instant::now(),
            global: g,
            ledger: self.ledger,
        })
    }

    /// Slow start's clock and window, when it is on and the strategy ramps (weights
    /// do not apply to consistent-hash and sticky, which keep their keys instead).
    #[inline]
    fn ramp(&self) -> Option<crate::balance::Ramp> {
        let window = self.config.slow_start;
        if window.is_zero() || self.hash_key.is_some() || self.strategy.is_sticky() {
            return None;
        }
        Some(crate::balance::Ramp {
            now_ms: crate::health::shared::monotonic_ms(),
            window_ms: window.as_millis() as u64,
        })
    }

    /// The down backend (not yet tried) whose last failure is oldest.
    fn least_recently_failed(&self, tried: &Tried) -> Option<usize> {
        // A drained backend is never a fail-open pick: the operator took it out.
        (0..self.slots.len())
            .filter(|&i| !tried.contains(i) && !self.health.is_drained(i))
            .min_by_key(|&i| self.health.last_failure_ms(i))
    }

    /// Runs one attempt under `backend_response`, which starts once the request has been
    /// fully handed to a connection (`sent_at`: set by `upstream` for a held body, by the
    /// body itself when a streamed upload ends; an upload's own pace is bounded by the
    /// client idle timeout instead). Dialing is bounded by `connect` inside the attempt;
    /// until `sent_at` is known the deadline is re-checked every `min(connect,
    /// backend_response)`.
    ///
    /// The attempt comes pinned by the caller: taken by value it would be stored twice
    /// in this future (argument, then pinned local), and this future is part of every
    /// request's state, which is moved on each request.
    async fn with_response_timeout<F, T>(
        &self,
        mut attempt: std::pin::Pin<&mut F>,
        upload: &Upload,
    ) -> Result<T, ProxyError>
    where
        F: std::future::Future<Output = T>,
    {
        let t = &self.config.timeouts;
        let step = t.connect.min(t.backend_response);
        let mut deadline = Instant::now() + step;
        loop {
            match tokio::time::timeout_at(deadline, attempt.as_mut()).await {
                Ok(v) => return Ok(v),
                Err(_) => match upload.sent_at.get() {
                    Some(at) if at + t.backend_response <= Instant::now() => {
                        return Err(ProxyError::Timeout);
                    }
                    Some(at) => deadline = at + t.backend_response,
                    // Still uploading: the backend must keep taking the body.
                    None => match upload.progress_at.get() {
                        Some(p) if p + t.backend_response <= Instant::now() => {
                            return Err(ProxyError::Timeout);
                        }
                        _ => deadline = Instant::now() + step,
                    },
                },
            }
        }
    }
}

/// Waits until one of this worker's capped requests ends, or `most`.
async fn wait_for_room(most: Duration) {
    let room = crate::health::ROOM.with(Rc::clone);
    let _ = tokio::time::timeout(most, room.notified()).await;
}

/// A request waiting in the queue: counted while it waits, its wait recorded when it
/// leaves.
struct Queued {
    since: Instant,
    global: &'static crate::metrics::GlobalStats,
    ledger: &'static Ledger,
}

impl Drop for Queued {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.global.queued.fetch_sub(1, Relaxed);
        self.ledger.queued.fetch_sub(1, Relaxed);
        self.global.queue_waits.fetch_add(1, Relaxed);
        self.global
            .queue_wait_us
            .fetch_add(self.since.elapsed().as_micros() as u64, Relaxed);
    }
}

/// What [`Proxy::admit_client`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Counted under this address hash: release it when the connection closes.
    Counted(u64),
    /// No cap, or no room in the table to count it.
    Uncounted,
    /// The client has its cap of connections open.
    Refused,
}

/// Marks the client connection idle when dropped, unless disarmed (`.0 = None`).
struct BusyGuard<'a>(Option<&'a ConnState>);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Some(clock) = self.0 {
            clock.idle();
        }
    }
}

/// A copy of a request head and held body, for sending again.
struct Replay {
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
    body: ReqBody,
}

impl Replay {
    fn build(&self) -> Request<ReqBody> {
        let body = self.body.replay().unwrap_or(ReqBody::Empty);
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// An HTTP/2 request as the hash key sees it.
struct H2Key<'a> {
    parts: &'a http::request::Parts,
    client: &'a [u8],
}

impl key::KeySource for H2Key<'_> {
    fn client(&self) -> &[u8] {
        self.client
    }

    fn target(&self) -> &[u8] {
        self.parts
            .uri
            .path_and_query()
            .map_or(b"/", |p| p.as_str().as_bytes())
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.parts.headers.get(name).map(HeaderValue::as_bytes)
    }

    fn cookies(&self) -> impl Iterator<Item = &[u8]> {
        self.parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
    }
}

/// An absolute-form target (`GET http://h/p`) becomes origin-form with `Host: h`.
fn to_origin_form(uri: &mut Uri, headers: &mut http::HeaderMap) {
    if uri.authority().is_none() {
        return;
    }
    if let Some(auth) = uri.authority() {
        // Never forward userinfo (`user:pw@host`) as part of Host.
        let host = auth
            .as_str()
            .rsplit_once('@')
            .map_or(auth.as_str(), |(_, h)| h);
        if let Ok(v) = HeaderValue::from_str(host) {
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
    headers
        .get_all(header::COOKIE)
        .iter()
        .find_map(|v| find_cookie_in(v.as_bytes(), name))
}

/// The backend id under `name` in one `Cookie` header value, if well formed.
fn find_cookie_in(value: &[u8], name: &[u8]) -> Option<BackendId> {
    for pair in value.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        if let Some(rest) = pair.strip_prefix(name) {
            if let Some(value) = rest.strip_prefix(b"=") {
                return BackendId::parse_hex(value.trim_ascii());
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
        let mut uri: Uri = "http://user:pw@example.com:8080/a?b=c".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("wrong"));
        to_origin_form(&mut uri, &mut h);
        assert_eq!(uri, "/a?b=c");
        assert_eq!(h["host"], "example.com:8080");
    }
}
