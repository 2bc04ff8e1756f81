//! Listening sockets: one SO_REUSEPORT socket per worker and `listen:` entry, so the
//! kernel spreads new connections across workers and no worker waits on another's
//! accept queue. A worker serves one socket of every entry ([`Sets`]).
//!
//! All sockets are bound up front (before any worker starts), so "address in use"
//! is reported at start-up, and a port of 0 is resolved once by the first socket and
//! reused by the others (tests bind `127.0.0.1:0`).
//!
//! SO_REUSEPORT would also let a second, unrelated switchyard (a forgotten `demo`)
//! join the group and take a share of the connections without a word. So before
//! binding, a plain socket (SO_REUSEADDR only, so TIME_WAIT leftovers do not count)
//! tries the address: if anything listens there, start-up stops with "address in
//! use". Sockets are shared only by inheritance: forked workers, a binary upgrade
//! (SIGUSR2), and systemd socket activation — all of which hand over sockets rather
//! than bind new ones.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog of each listening socket.
const BACKLOG: i32 = 4096;

/// Every worker's sockets: `sets[w][i]` is worker `w`'s socket for listener `i`
/// (the config's `listen:` entries, in order).
pub type Sets = Vec<Vec<TcpListener>>;

/// Binds `workers` SO_REUSEPORT sockets on each of `addrs`, refusing an address
/// something already listens on.
pub fn bind_all(addrs: &[SocketAddr], workers: usize) -> io::Result<Sets> {
    let groups = addrs
        .iter()
        .map(|a| bind(*a, workers))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(by_worker(groups))
}

/// Listener-major groups (each one socket per worker) to worker-major [`Sets`].
pub fn by_worker(groups: Vec<Vec<TcpListener>>) -> Sets {
    let workers = groups.iter().map(Vec::len).max().unwrap_or(0);
    let mut sets: Sets = (0..workers)
        .map(|_| Vec::with_capacity(groups.len()))
        .collect();
    for group in groups {
        for (w, socket) in group.into_iter().enumerate() {
            sets[w].push(socket);
        }
    }
    sets
}

/// Binds `n` SO_REUSEPORT listeners on `addr`, refusing an address something already
/// listens on.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        ensure_free(addr)?;
    }
    let first = bind_one(addr)?;
    let actual = first.local_addr()?;
    more(first, actual, n)
}

/// `first` plus `n - 1` more SO_REUSEPORT listeners on its address (for workers that
/// an inherited socket does not cover).
pub fn more(first: TcpListener, addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(n.max(1));
    out.push(first);
    for _ in 1..n {
        out.push(bind_one(addr)?);
    }
    Ok(out)
}

/// Fails with `AddrInUse` when some socket listens on `addr` (or overlaps it: a
/// wildcard address against a specific one).
pub fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "cannot listen on {addr}: address in use (another process listens there; \
                 stop it or choose another address)"
            ),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e}"),
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_occupied_address_is_refused_and_ours_can_grow() {
        let ours = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = ours[0].local_addr().unwrap();
        let e = bind(addr, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("address in use"), "{e}");
        // A plain listener (nginx's kind) is refused too.
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = bind(plain.local_addr().unwrap(), 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // Inherited sockets grow the group without the check.
        let first = ours.into_iter().next().unwrap();
        assert_eq!(more(first, addr, 3).unwrap().len(), 3);
        drop(plain);
    }

    #[test]
    fn every_worker_gets_one_socket_of_each_listener() {
        let any = "127.0.0.1:0".parse().unwrap();
        let sets = bind_all(&[any, any], 3).unwrap();
        assert_eq!(sets.len(), 3);
        let addrs = |i: usize| -> Vec<SocketAddr> {
            sets.iter().map(|s| s[i].local_addr().unwrap()).collect()
        };
        let (a, b) = (addrs(0), addrs(1));
        assert!(a.iter().all(|x| *x == a[0]) && b.iter().all(|x| *x == b[0]));
        assert_ne!(a[0], b[0]);
    }
}
