//! Test support: builders that read like the scenario.
//!
//! `Balancer::new().backend(addr).start()` runs switchyard in this process (thread
//! mode) on 127.0.0.1:0; `TestBackend` is a scriptable blocking HTTP/1.1 backend that
//! records every request and connection it sees; `client` speaks raw HTTP/1.1 over
//! `TcpStream` so tests can send exact bytes and read exact framing. `process` runs the
//! built binary and reads its log as it comes; `prometheus` parses `/metrics` strictly.
//! [`Gate`] holds a backend's answer until the test says so, which orders events
//! (a drain waiting for a request, say) without timing them. [`Scratch`] is a test's
//! own directory (config files, certificates, logs), removed when the test ends, even
//! when it fails.

#![allow(dead_code)]

pub mod backend;
pub mod balancer;
pub mod client;
pub mod process;
pub mod prometheus;
pub mod tls;

pub use backend::{Reply, TestBackend};
pub use balancer::Balancer;
pub use client::Conn;

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A directory of the test's own, removed on drop (pass or panic). Derefs to its path.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("sy-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch directory");
        Scratch(p)
    }

    /// Writes `text` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        path
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `cond` every few ms until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A loopback port with nothing listening on it.
pub fn dead_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// A gate a backend handler waits at until the test opens it (or 30 s pass, so a failed
/// test never leaves a thread stuck for good).
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    pub fn open(&self) {
        *self.0.0.lock().expect("lock") = true;
        self.0.1.notify_all();
    }

    pub fn wait(&self) {
        let open = self.0.0.lock().expect("lock");
        let _ = self
            .0
            .1
            .wait_timeout_while(open, Duration::from_secs(30), |open| !*open);
    }
}

/// A loopback address where connecting hangs: a listener whose accept queue is full
/// and never drained, so the kernel drops further SYNs (a non-routable address is not
/// reliable: some sandboxes answer any address). Closed when dropped.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

pub fn black_hole() -> BlackHole {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    listener.bind(&any.into()).expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    // Fill the queue until a connect hangs: then the balancer's will too.
    let mut queued = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return BlackHole {
                    addr,
                    _listener: listener,
                    _queued: queued,
                };
            }
            Err(e) => panic!("black hole: {e}"),
        }
    }
    panic!("connects to a full accept queue never hung");
}
