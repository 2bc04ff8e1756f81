//! Upgrade tunnels (WebSocket): the one case where a connection stops being HTTP.
//!
//! A request with `Connection: upgrade` and `Upgrade: websocket` keeps both headers on
//! its way to the backend, on a fresh connection (a tunnel consumes it). If the backend
//! answers `101 Switching Protocols`, the client gets the 101 with the backend's
//! handshake headers, and both connections are handed to a tunnel task that copies bytes
//! both ways until either side closes or nothing moves for `timeouts.client_idle`. The
//! backend stays counted in flight while the tunnel lives. Other upgrade tokens are
//! refused with 501; `h2c` (an HTTP/2 offer that HTTP/1.1 may ignore) is ignored.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::body::ProxyBody;
use super::error_response::ProxyError;
use super::{ClientConn, headers};
use crate::health::InFlightGuard;
use crate::server::conn_io::Upgraded;
use crate::upstream::Exchange;

/// The `Upgrade` value of a request that asks for a WebSocket tunnel, `None` for a
/// plain request (or an ignorable `h2c` offer), or a 501 for other protocols.
pub fn requested(h: &HeaderMap) -> Result<Option<HeaderValue>, ProxyError> {
    let Some(upgrade) = h.get(header::UPGRADE) else {
        return Ok(None);
    };
    let asks = h.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if !asks {
        return Ok(None);
    }
    let protocols = || {
        upgrade
            .as_bytes()
            .split(|&b| b == b',')
            .map(|t| t.trim_ascii())
    };
    let name = |t: &[u8]| {
        t.split(|&b| b == b'/')
            .next()
            .unwrap_or(t)
            .to_ascii_lowercase()
    };
    if protocols().any(|t| name(t) == b"websocket") {
        Ok(Some(upgrade.clone()))
    } else if protocols().all(|t| name(t) == b"h2c") {
        Ok(None)
    } else {
        Err(ProxyError::UpgradeRefused)
    }
}

/// Answers the client's upgrade with the backend's 101 and starts the tunnel.
pub fn start(
    conn: &ClientConn,
    exchange: Exchange,
    in_flight: InFlightGuard,
    idle: Duration,
) -> Response<ProxyBody> {
    let mut backend_resp = exchange.response;
    let backend_side = hyper::upgrade::on(&mut backend_resp);
    let (mut parts, _) = backend_resp.into_parts();
    let token = parts.headers.get(header::UPGRADE).cloned();
    headers::rewrite_response(&mut parts.headers);
    if let Some(t) = token {
        headers::restore_upgrade(&mut parts.headers, t);
    }
    // The worker hands the client socket over once hyper has written the 101.
    let client_side = conn.clock.await_upgrade();
    // The backend connection's task finishes on its own once it hands the socket over.
    drop(exchange.conn);
    let open = Rc::clone(&conn.open);
    tokio::task::spawn_local(run(client_side, backend_side, idle, (in_flight, open)));
    Response::from_parts(parts, ProxyBody::local(Bytes::new(), None))
}

/// `_held` lives as long as the tunnel: the backend stays counted in flight, the client
/// connection counted open (a drain waits for it, up to its deadline).
async fn run(
    client: oneshot::Receiver<Upgraded>,
    backend: OnUpgrade,
    idle: Duration,
    _held: (InFlightGuard, Rc<dyn std::any::Any>),
) {
    let (c, b) = match tokio::join!(client, backend) {
        (Ok(c), Ok(b)) => (c, b),
        (c, b) => {
            tracing::debug!(
                client = c.is_ok(),
                backend = b.is_ok(),
                "upgrade did not complete"
            );
            return;
        }
    };
    let Upgraded {
        io: mut c,
        read_buf,
    } = c;
    let mut b = TokioIo::new(b);
    // Bytes the client sent right behind its request head belong to the tunnel.
    if !read_buf.is_empty() && !forward(&mut b, &read_buf, idle).await {
        return;
    }
    splice(&mut c, &mut b, idle).await;
}

/// Copies bytes both ways between `c` and `b` until either side closes or nothing
/// moves for `idle`, then closes both (cleanly where the peers let us).
pub async fn splice<C, B>(c: &mut C, b: &mut B, idle: Duration)
where
    C: AsyncReadExt + AsyncWriteExt + Unpin,
    B: AsyncReadExt + AsyncWriteExt + Unpin,
{
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_backend = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = c.read(&mut from_client) => match r {
                Ok(n) if n > 0 => if !forward(b, &from_client[..n], idle).await { break },
                _ => break,
            },
            r = b.read(&mut from_backend) => match r {
                Ok(n) if n > 0 => if !forward(c, &from_backend[..n], idle).await { break },
                _ => break,
            },
            _ = tokio::time::sleep(idle) => {
                tracing::debug!("tunnel idle for {idle:?}: closing it");
                break;
            }
        }
    }
    // A clean close where the peers let us; a peer that stopped reading gets none.
    let close = async {
        let _ = c.shutdown().await;
        let _ = b.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}

/// Writes `bytes` to one side; false when it failed or the side took nothing for
/// `idle` (a peer that stopped reading must not hold the tunnel open forever).
async fn forward<W: AsyncWriteExt + Unpin>(to: &mut W, bytes: &[u8], idle: Duration) -> bool {
    match tokio::time::timeout(idle, to.write_all(bytes)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::debug!("tunnel peer stopped reading for {idle:?}: closing it");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn which_upgrades_are_tunnelled() {
        let ws = h(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(requested(&ws).unwrap().unwrap(), "WebSocket");
        assert!(
            requested(&h(&[("upgrade", "websocket")]))
                .unwrap()
                .is_none(),
            "no Connection: upgrade"
        );
        assert!(
            requested(&h(&[("connection", "upgrade"), ("upgrade", "h2c")]))
                .unwrap()
                .is_none()
        );
        let other = h(&[("connection", "upgrade"), ("upgrade", "IRC/6.9")]);
        assert!(matches!(requested(&other), Err(ProxyError::UpgradeRefused)));
    }
}
