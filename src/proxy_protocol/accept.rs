//! Reading a client connection's PROXY header on accept, before TLS or HTTP.
//!
//! The header must be taken off the socket and nothing after it, since what follows
//! belongs to TLS or to the HTTP/1 connection's own buffer. So the bytes are *peeked*
//! first: in the usual case the whole header came in the first segment, and one read
//! of exactly its length takes it. A header split across segments is read in pieces
//! no longer than what the header still needs (v2 states its length; v1 ends at a
//! line end, so its tail is read a byte at a time, at most 107 of them).
//!
//! A peer outside `trusted` is only peeked at: if its first bytes are a header, it is
//! refused; otherwise nothing was read and the connection goes on as usual.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::{Cidr, MIN_HEADER, Parsed, any_contains, parse, starts_like_header, still_needed};

/// Why a connection was closed before its first request.
#[derive(Debug)]
pub enum Refused {
    /// A trusted peer sent no header.
    Missing,
    /// A peer outside `trusted` sent one.
    Untrusted,
    /// A trusted peer's header is broken (bad signature, version, family, syntax) or
    /// longer than [`super::MAX_HEADER`].
    Invalid,
    /// The header did not arrive within `timeouts.client_header`.
    Timeout,
    /// The peer closed, or the socket failed, first. Not counted as a refusal.
    Closed(Option<io::Error>),
}

impl Refused {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refused::Missing => "a trusted peer sent no PROXY header",
            Refused::Untrusted => "an untrusted peer sent a PROXY header",
            Refused::Invalid => "broken or oversized PROXY header",
            Refused::Timeout => "PROXY header timed out",
            Refused::Closed(_) => "closed before its PROXY header",
        }
    }
}

/// How often an untrusted peer's first bytes are looked at again while they could
/// still be the start of a header (`P`, `PR`, an empty line...). Rare: a request's
/// first segment is nearly always longer than that.
const UNDECIDED_POLL: Duration = Duration::from_millis(5);

/// The client address of a connection from `peer`: the one its header names for a
/// trusted peer (or `peer` for LOCAL/UNKNOWN/UNSPEC headers), `peer` itself for an
/// untrusted peer that sent none. A trusted peer's header must be in within `header`
/// of the accept (balancers send it at once); an untrusted peer may wait `idle` for
/// its first byte, as without PROXY protocol, and is then looked at within `header`.
pub async fn accept(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trusted: &[Cidr],
    idle: Duration,
    header: Duration,
) -> Result<SocketAddr, Refused> {
    let is_trusted = any_contains(trusted, peer.ip());
    let deadline = Instant::now() + header;
    let first = match is_trusted {
        true => deadline,
        false => Instant::now() + idle,
    };
    let mut buf = [0u8; 256];
    let n = match timeout_at(first, stream.peek(&mut buf)).await {
        Ok(Ok(0)) => return Err(Refused::Closed(None)),
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(Refused::Closed(Some(e))),
        Err(_) if is_trusted => return Err(Refused::Timeout),
        // An idle connection that never spoke: closed as it would be without PROXY.
        Err(_) => return Err(Refused::Closed(None)),
    };
    if !is_trusted {
        let deadline = Instant::now() + header;
        return untrusted(stream, peer, &mut buf, n, deadline).await;
    }
    match parse(&buf[..n]) {
        Parsed::Complete { len, source } => {
            // Already in the socket's buffer: this read does not wait.
            read_exact(stream, &mut buf[..len], deadline).await?;
            Ok(source.unwrap_or(peer))
        }
        Parsed::Invalid => Err(invalid(&buf[..n])),
        Parsed::Partial => {
            let mut got = Vec::with_capacity(n.max(MIN_HEADER));
            got.extend_from_slice(&buf[..n]);
            read_exact(stream, &mut buf[..n], deadline).await?;
            piecewise(stream, got, deadline)
                .await
                .map(|s| s.unwrap_or(peer))
        }
    }
}

/// A peer outside `trusted`: refused if it starts with a header, else untouched.
async fn untrusted(
    stream: &TcpStream,
    peer: SocketAddr,
    buf: &mut [u8],
    mut n: usize,
    deadline: Instant,
) -> Result<SocketAddr, Refused> {
    loop {
        match starts_like_header(&buf[..n]) {
            Some(true) => return Err(Refused::Untrusted),
            Some(false) => return Ok(peer),
            // Not a header as far as anyone can tell: HTTP's own clocks take over.
            None if Instant::now() >= deadline => return Ok(peer),
            None => {
                tokio::time::sleep(UNDECIDED_POLL).await;
                n = match stream.peek(buf).await {
                    Ok(0) => return Err(Refused::Closed(None)),
                    Ok(n) => n,
                    Err(e) => return Err(Refused::Closed(Some(e))),
                };
            }
        }
    }
}

/// A header that came in pieces: `got` holds its start (already consumed). Reads no
/// more than the header still needs, until it parses.
async fn piecewise(
    stream: &mut TcpStream,
    mut got: Vec<u8>,
    deadline: Instant,
) -> Result<Option<SocketAddr>, Refused> {
    loop {
        let need = still_needed(&got);
        let at = got.len();
        got.resize(at + need, 0);
        read_exact(stream, &mut got[at..], deadline).await?;
        match parse(&got) {
            Parsed::Complete { source, .. } => return Ok(source),
            Parsed::Invalid => return Err(invalid(&got)),
            Parsed::Partial => {}
        }
    }
}

/// A trusted peer's bytes that are not a header: none at all, or a broken one.
fn invalid(bytes: &[u8]) -> Refused {
    match starts_like_header(bytes) {
        Some(false) => Refused::Missing,
        _ => Refused::Invalid,
    }
}

async fn read_exact(
    stream: &mut TcpStream,
    into: &mut [u8],
    deadline: Instant,
) -> Result<(), Refused> {
    match timeout_at(deadline, stream.read_exact(into)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Refused::Closed(None)),
        Ok(Err(e)) => Err(Refused::Closed(Some(e))),
        Err(_) => Err(Refused::Timeout),
    }
}
