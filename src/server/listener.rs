//! Listening sockets: one SO_REUSEPORT socket per worker, so the kernel spreads new
//! connections across workers and no worker waits on another's accept queue.
//!
//! All sockets are bound up front (before any worker starts), so "address in use"
//! is reported at start-up, and a port of 0 is resolved once by the first socket and
//! reused by the others (tests bind `127.0.0.1:0`).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog of each listening socket.
const BACKLOG: i32 = 4096;

/// Binds `n` SO_REUSEPORT listeners on `addr`.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr)?;
    let actual = first.local_addr()?;
    let mut out = Vec::with_capacity(n.max(1));
    out.push(first);
    for _ in 1..n {
        out.push(bind_one(actual)?);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
