//! Dialing a backend: TCP with `TCP_NODELAY`, trying each resolved address in turn,
//! then TLS for `https` backends.
//!
//! The caller bounds the whole dial with `timeouts.connect`. [`Stream`] is what hyper
//! then speaks HTTP over: a plain TCP stream or a rustls one.

use std::io;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::backend::Backend;
use crate::proxy_protocol::{self, Origin};
use crate::tls;

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

/// Why a dial failed.
#[derive(Debug)]
pub enum DialError {
    /// No TCP connection.
    Tcp(io::Error),
    /// TCP connected but the TLS handshake failed (verification, protocol...).
    Tls(String),
}

/// Dials `backend`, with TLS through `connector` when it is given. `http1_only` makes
/// ALPN offer only `http/1.1` whatever the connector offers (upgrades, probes).
/// A backend with `proxy_protocol:` first gets its PROXY header (before TLS): the
/// addresses of `origin`, the client the connection is dialed for, or LOCAL for a
/// connection of our own (`None`: health probes).
pub async fn open(
    backend: &Backend,
    connector: Option<&TlsConnector>,
    http1_only: bool,
    origin: Option<&Origin>,
) -> Result<Stream, DialError> {
    let mut tcp = tcp(backend).await.map_err(DialError::Tcp)?;
    if let Some(version) = backend.proxy_protocol {
        let mut header = [0; proxy_protocol::ENCODED_MAX];
        let n = proxy_protocol::encode(version, origin, &mut header);
        tcp.write_all(&header[..n]).await.map_err(DialError::Tcp)?;
    }
    let Some(connector) = connector else {
        return Ok(Stream::Plain(tcp));
    };
    let name = tls::client::server_name(backend).map_err(DialError::Tls)?;
    let handshake = if http1_only {
        connector
            .with_alpn(vec![b"http/1.1".to_vec()])
            .connect(name, tcp)
    } else {
        connector.connect(name, tcp)
    };
    match handshake.await {
        Ok(s) => Ok(Stream::Tls(Box::new(s))),
        Err(e) => Err(DialError::Tls(e.to_string())),
    }
}

/// A connection to a backend, plain or TLS.
pub type Stream = crate::tls::MaybeTls<TlsStream<TcpStream>>;

impl Stream {
    /// True when TLS negotiated HTTP/2 by ALPN.
    pub fn negotiated_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}
