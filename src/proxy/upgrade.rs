//! Upgrade tunnels (WebSocket): the one case where a connection stops being HTTP.
//!
//! A request with `Connection: upgrade` and `Upgrade: websocket` keeps both headers on
//! its way to the backend, on a fresh connection (a tunnel consumes it). If the backend
//! answers `101 Switching Protocols`, the client gets the 101 with the backend's
//! handshake headers, and the connection's task [`splice`]s the two sockets until
//! either side closes or nothing moves for `timeouts.client_idle` (see
//! `proxy::h1`). The backend stays counted in flight while the tunnel lives. Other
//! upgrade tokens are refused with 501; `h2c` (an HTTP/2 offer that HTTP/1.1 may
//! ignore) is ignored.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error_response::ProxyError;

/// Whether a request whose `Connection` asks for an upgrade, with this `Upgrade`
/// value, becomes a WebSocket tunnel (`true`), is a plain request (`false`: an
/// ignorable `h2c` offer), or is refused (501, other protocols).
pub fn requested(upgrade: &[u8]) -> Result<bool, ProxyError> {
    let protocols = || upgrade.split(|&b| b == b',').map(<[u8]>::trim_ascii);
    let name = |t: &[u8]| {
        t.split(|&b| b == b'/')
            .next()
            .unwrap_or(t)
            .to_ascii_lowercase()
    };
    if protocols().any(|t| name(t) == b"websocket") {
        Ok(true)
    } else if protocols().all(|t| name(t) == b"h2c") {
        Ok(false)
    } else {
        Err(ProxyError::UpgradeRefused)
    }
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
    let write = async {
        to.write_all(bytes).await?;
        // TLS keeps written bytes until flushed.
        to.flush().await
    };
    match tokio::time::timeout(idle, write).await {
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

    #[test]
    fn which_upgrades_are_tunnelled() {
        assert!(requested(b"WebSocket").unwrap());
        assert!(requested(b"h2c, websocket").unwrap());
        assert!(!requested(b"h2c").unwrap());
        assert!(matches!(
            requested(b"IRC/6.9"),
            Err(ProxyError::UpgradeRefused)
        ));
    }
}
