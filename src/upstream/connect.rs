//! Dialing a backend: TCP with `TCP_NODELAY`, trying each resolved address in turn.
//!
//! The caller bounds the whole dial with `timeouts.connect`. TLS arrives later and
//! will wrap the stream here.

use std::io;

use tokio::net::TcpStream;

use crate::backend::Backend;

/// Connects to the first of the backend's addresses that accepts.
pub async fn tcp(backend: &Backend) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "backend has no resolved address");
    for addr in &backend.addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
