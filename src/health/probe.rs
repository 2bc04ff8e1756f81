//! Active health checks: one prober per process, not per worker.
//!
//! A thread with its own current-thread runtime runs one task per backend: wait a
//! random start offset (so many balancers do not probe in lock-step), then send
//! `GET {health.path}` on a fresh connection every `health.interval` (each wait
//! jittered by up to ±10%), bounded by `health.timeout`. A status in
//! `health.expect_status` is a success; anything else, a refused connection or a
//! timeout is a failure. Results feed the same [`HealthTable`] breakers that live
//! requests feed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::Empty;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use tokio::sync::watch;

use super::{HealthTable, Reason, Source};
use crate::backend::Backend;
use crate::config::Config;
use crate::snapshot::Snapshot;
use crate::upstream::connect;

/// Probes every backend of the current snapshot until `shutdown`; a new snapshot
/// restarts the probe tasks for its backend set (state lives in the shared slots).
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let snapshot = Arc::clone(&snapshots.borrow_and_update());
        let mut tasks = tokio::task::JoinSet::new();
        if snapshot.config.health.probes {
            for i in 0..snapshot.config.backends.len() {
                let snapshot = Arc::clone(&snapshot);
                tasks.spawn(async move { probe_loop(&snapshot.config, &snapshot.health, i).await });
            }
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        tasks.abort_all();
    }
}

async fn probe_loop(config: &Config, table: &HealthTable, i: usize) {
    let h = &config.health;
    let backend = config.backends.get(i);
    // Probes speak TLS to TLS backends, with the same trust as live requests.
    let tls = match backend.scheme {
        crate::backend::Scheme::Http => Ok(None),
        crate::backend::Scheme::Https => {
            crate::tls::client::connector(backend, backend.offers_h2()).map(Some)
        }
    };
    let mut rng = seeded_rng(i);
    // Start soon (a backend dead from the start is found by the first probe), but
    // not all at the same instant.
    let first = h.interval.min(Duration::from_millis(250));
    tokio::time::sleep(first.mul_f64(rng.random_range(0.0..1.0))).await;
    loop {
        match tokio::time::timeout(h.timeout, probe_once(backend, &tls, &h.path)).await {
            Ok(Ok(status)) if h.expect_status.contains(status.as_u16()) => {
                tracing::debug!(backend = %backend.address, %status, "probe ok");
                table.record_success(i, Source::Probe);
            }
            Ok(Ok(status)) => {
                tracing::debug!(backend = %backend.address, %status, "probe got an unexpected status");
                table.record_failure(i, Source::Probe, Reason::ProbeStatus);
            }
            Ok(Err(reason)) => {
                tracing::debug!(backend = %backend.address, reason = reason.as_str(), "probe failed");
                table.record_failure(i, Source::Probe, reason);
            }
            Err(_) => {
                tracing::debug!(backend = %backend.address, "probe timed out");
                table.record_failure(i, Source::Probe, Reason::Timeout);
            }
        }
        tokio::time::sleep(h.interval.mul_f64(rng.random_range(0.9..1.1))).await;
    }
}

fn seeded_rng(i: usize) -> StdRng {
    let mut seed = [0u8; 32];
    if getrandom_fill(&mut seed).is_err() {
        // Jitter only needs to differ between instances, not to be secret.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        seed[..8].copy_from_slice(&(t ^ std::process::id() as u64 ^ i as u64).to_le_bytes());
    }
    StdRng::from_seed(seed)
}

fn getrandom_fill(buf: &mut [u8]) -> Result<(), ()> {
    use rand::TryRng;
    rand::rngs::SysRng.try_fill_bytes(buf).map_err(|_| ())
}

/// One probe on a fresh connection (HTTP/2 to h2c backends and to TLS backends that
/// choose it by ALPN, HTTP/1.1 to the rest): the status, or why there was none.
async fn probe_once(
    backend: &Backend,
    tls: &Result<Option<tokio_rustls::TlsConnector>, String>,
    path: &str,
) -> Result<StatusCode, Reason> {
    let connector = tls.as_ref().map_err(|_| Reason::Tls)?;
    let stream = connect::open(backend, connector.as_ref(), false, None)
        .await
        .map_err(|e| match e {
            connect::DialError::Tcp(_) => Reason::ConnectRefused,
            connect::DialError::Tls(_) => Reason::Tls,
        })?;
    let h2 = backend.h2c() || stream.negotiated_h2();
    let io = hyper_util::rt::TokioIo::new(stream);
    if h2 {
        // A backend that speaks HTTP/2 (h2c, or chosen by ALPN like live requests)
        // is probed in HTTP/2: it may speak nothing else.
        let exec = hyper_util::rt::TokioExecutor::new();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(exec, io)
                .await
                .map_err(|_| Reason::Reset)?;
        let conn = tokio::spawn(conn);
        let authority = http::uri::Authority::try_from(backend.address.as_str())
            .map_err(|_| Reason::BadResponse)?;
        let uri = http::Uri::builder()
            .scheme(match backend.scheme {
                crate::backend::Scheme::Http => "http",
                crate::backend::Scheme::Https => "https",
            })
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| Reason::BadResponse)?;
        let req = Request::get(uri)
            .version(http::Version::HTTP_2)
            .header(header::USER_AGENT, "switchyard-health-check")
            .body(Empty::new())
            .map_err(|_| Reason::BadResponse)?;
        let result = sender.send_request(req).await;
        conn.abort();
        return status_of(result);
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|_| Reason::Reset)?;
    let conn = tokio::spawn(conn);
    let host =
        HeaderValue::from_str(&backend.address).unwrap_or(HeaderValue::from_static("localhost"));
    let req = Request::get(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "switchyard-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|_| Reason::BadResponse)?;
    let result = sender.send_request(req).await;
    conn.abort();
    status_of(result)
}

fn status_of<B>(result: hyper::Result<http::Response<B>>) -> Result<StatusCode, Reason> {
    match result {
        Ok(resp) => Ok(resp.status()),
        Err(e) if e.is_parse() => Err(Reason::BadResponse),
        Err(_) => Err(Reason::Reset),
    }
}
