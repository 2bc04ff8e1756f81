//! The admin listener: `/metrics`, `/healthz`, `/backends`, and the runtime writes of
//! [`write`] (drain, enable, weight). Off unless `--admin` is set, so it never shadows
//! a path of the proxied service.
//!
//! It runs beside the prober (a thread in thread mode, the prober process in process
//! mode), reads the current [`Snapshot`] and the shared counters, and never touches the
//! request path: writes go to the backends' shared slots, which the workers read. Its
//! own requests are not counted in the metrics.

mod token;
mod write;

pub use token::{Access, AdminToken, access};

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::metrics::prometheus;
use crate::snapshot::Snapshot;

/// Serves the admin endpoints on `listener` until `stop` turns true.
pub async fn serve(
    listener: std::net::TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin listener unusable: {e}");
            return;
        }
    };
    let local = listener.local_addr().ok();
    let seen = Arc::new(arc_swap::ArcSwap::from(Arc::clone(&snapshots.borrow())));
    tokio::spawn(forget_on_reload(
        snapshots.clone(),
        stop.clone(),
        Arc::clone(&seen),
    ));
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.changed() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let snapshots = snapshots.clone();
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let snapshot = Arc::clone(&snapshots.borrow());
                // Every answer comes after the admin state caught up with its snapshot.
                forget_added(&seen, &snapshot);
                async move {
                    let r = if write::route(req.uri().path()).is_some() {
                        write::handle(&snapshot, local, req).await
                    } else {
                        answer(&snapshot, &req)
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            // A scrape takes milliseconds; nothing holds an admin connection for long.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn answer(snapshot: &Snapshot, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
    let health = &snapshot.health;
    match req.uri().path() {
        "/metrics" => {
            let limits: Vec<_> = (snapshot.config.rate_limits.iter())
                .map(|l| (l.name.as_str(), l.name_hash))
                .collect();
            let mut body = prometheus::render(health, &limits);
            prometheus::render_discovery(&mut body, health, &snapshot.config.discovery);
            text(StatusCode::OK, prometheus::CONTENT_TYPE, body)
        }
        "/healthz" => {
            if health.global().draining.load(Relaxed) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "draining\n".into(),
                )
            } else {
                text(StatusCode::OK, "text/plain", "ok\n".into())
            }
        }
        "/backends" => {
            let list: Vec<serde_json::Value> = (0..snapshot.config.backends.len())
                .map(|i| backend_json(snapshot, i))
                .collect();
            let mut body = serde_json::Value::Array(list).to_string();
            body.push('\n');
            text(StatusCode::OK, "application/json", body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /backends (writes: /backends/{id}/drain, \
             /backends/{id}/enable, /backends/{id}/weight)\n"
                .into(),
        ),
    }
}

/// Backend `i` of the snapshot as `/backends` (and every admin write) shows it.
pub(crate) fn backend_json(snapshot: &Snapshot, i: usize) -> serde_json::Value {
    let health = &snapshot.health;
    let b = snapshot.config.backends.get(i);
    let now = crate::health::shared::monotonic_ms();
    let window = snapshot.config.slow_start.as_millis() as u64;
    let reason = health.last_reason(i);
    let admin = health.admin_state(i);
    // During slow start: the weight it is given now (as the strategies scale it, the
    // admin override in place of the configured weight), rounded to two decimals.
    let since = health.up_since_ms(i);
    let age = now.saturating_sub(since);
    let ramp = if window == 0 || since == 0 || age >= window {
        1.0
    } else {
        (age as f64 / window as f64).max(crate::balance::RAMP_FLOOR)
    };
    let weight = admin.weight.unwrap_or(b.weight);
    let effective = (f64::from(weight) * ramp * 100.0).round() / 100.0;
    let latency = health.latency_us(i);
    serde_json::json!({
        "address": b.address,
        "name": b.name,
        "id": b.id.to_string(),
        "weight": b.weight,
        "weight_override": admin.weight,
        "effective_weight": effective,
        "draining": admin.drained,
        "up": health.is_up(i),
        "in_flight": health.in_flight(i),
        "max_connections": (b.max_connections > 0).then_some(b.max_connections),
        // The one queue every backend under a cap shares.
        "queue_length": health.global().queued.load(Relaxed).max(0),
        "latency_ms": (latency > 0).then(|| f64::from(latency) / 1000.0),
        "last_failure": (reason != crate::health::Reason::None).then(|| reason.as_str()),
        "last_failure_at": failed_at(health.last_failure_ms(i)),
    })
}

/// The wall-clock time (RFC 3339, UTC) of a failure recorded at `monotonic_ms`
/// (0: none).
fn failed_at(monotonic_ms: u64) -> Option<String> {
    if monotonic_ms == 0 {
        return None;
    }
    let ago = crate::health::monotonic_ms().saturating_sub(monotonic_ms);
    let at = std::time::SystemTime::now() - std::time::Duration::from_millis(ago);
    Some(crate::access_log::timestamp(at))
}

/// Follows reloads (see [`forget_added`]) as they come.
async fn forget_on_reload(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
    seen: Arc<arc_swap::ArcSwap<Snapshot>>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
        let next = Arc::clone(&snapshots.borrow_and_update());
        forget_added(&seen, &next);
    }
}

/// A backend a reload adds starts with no admin state, even if its slot remembers a
/// drain or weight from an earlier config that had it (the state holds only while the
/// backend stays configured). `seen` is the snapshot last compared; both the reload
/// follower and every admin request call this (on the admin runtime's one thread, with
/// the current snapshot), so an admin answer never shows a stale state, and two
/// reloads would have to land between two runs of the follower to be seen as one.
/// Cleared on addition rather than removal, so a worker still on the old snapshot
/// never sees a drained backend that is being removed turn pickable; until this runs,
/// an added backend may at worst sit out its first milliseconds.
fn forget_added(seen: &arc_swap::ArcSwap<Snapshot>, next: &Arc<Snapshot>) {
    let prev = seen.swap(Arc::clone(next));
    if Arc::ptr_eq(&prev, next) {
        return;
    }
    for (i, b) in next.config.backends.iter().enumerate() {
        let known = prev.config.backends.iter().any(|o| o.id == b.id);
        if !known && next.health.admin_state(i) != crate::health::AdminState::default() {
            next.health
                .update_admin(i, |_| crate::health::AdminState::default());
            tracing::info!(backend = %b.address, "re-added backend: its earlier admin state is cleared");
        }
    }
}
