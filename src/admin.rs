//! The admin listener: `/metrics`, `/healthz`, `/backends`. Off unless `--admin` is set,
//! so it never shadows a path of the proxied service.
//!
//! It runs beside the prober (a thread in thread mode, the prober process in process
//! mode), reads the current [`Snapshot`] and the shared counters, and never touches the
//! request path. Its own requests are not counted in the metrics.

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
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let snapshot = Arc::clone(&snapshots.borrow());
                async move { Ok::<_, Infallible>(answer(&snapshot, &req)) }
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
            let now = crate::health::shared::monotonic_ms();
            let window = snapshot.config.slow_start.as_millis() as u64;
            let list: Vec<serde_json::Value> = snapshot
                .config
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let reason = health.last_reason(i);
                    // During slow start: the weight it is given now (as the strategies
                    // scale it), rounded to two decimals.
                    let since = health.up_since_ms(i);
                    let age = now.saturating_sub(since);
                    let ramp = if window == 0 || since == 0 || age >= window {
                        1.0
                    } else {
                        (age as f64 / window as f64).max(crate::balance::RAMP_FLOOR)
                    };
                    let effective = (f64::from(b.weight) * ramp * 100.0).round() / 100.0;
                    let latency = health.latency_us(i);
                    serde_json::json!({
                        "address": b.address,
                        "id": b.id.to_string(),
                        "weight": b.weight,
                        "effective_weight": effective,
                        "up": health.is_up(i),
                        "in_flight": health.in_flight(i),
                        "max_connections": (b.max_connections > 0).then_some(b.max_connections),
                        // The one queue every backend under a cap shares.
                        "queue_length": health.global().queued.load(Relaxed).max(0),
                        "latency_ms": (latency > 0).then(|| f64::from(latency) / 1000.0),
                        "last_failure": (reason != crate::health::Reason::None).then(|| reason.as_str()),
                    })
                })
                .collect();
            let mut body = serde_json::Value::Array(list).to_string();
            body.push('\n');
            text(StatusCode::OK, "application/json", body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /backends\n".into(),
        ),
    }
}
