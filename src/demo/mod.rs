//! `switchyard demo`: two echo backends and the balancer in front, in one command.
//!
//! The backends listen on free loopback ports and are named `demo-1` and `demo-2`;
//! the balancer uses thread mode and round-robin, so `curl` alternates between them.

pub mod echo_backend;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::{self, Backend, BackendId, BackendSet};
use crate::config::{Config, Mode, Overrides};
use crate::server;
pub use echo_backend::EchoBackend;

/// Runs the demo until the process is stopped.
pub fn run(listen: SocketAddr) -> Result<(), crate::Error> {
    let mut backends = Vec::new();
    for i in 1..=2 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        backends.push(EchoBackend::start(l, &format!("demo-{i}"))?);
    }
    let mut specs = Vec::new();
    for b in &backends {
        specs.push(backend::parse_spec(&b.addr().to_string()).map_err(crate::Error::Usage)?);
    }
    let overrides = Overrides {
        listen: Some(listen),
        mode: Some(Mode::Thread),
        workers: Some(1),
        backends: specs,
        ..Overrides::default()
    };
    let config = Arc::new(Config::from_overrides(&overrides)?);
    let listeners = server::listener::bind(config.listen, config.workers)?;
    let running = server::start(Arc::clone(&config), listeners)?;
    let at = running.local_addr();
    println!("switchyard demo: balancer on http://{at}/ in front of:");
    for (b, name) in backends.iter().zip(["demo-1", "demo-2"]) {
        println!("  {name} at http://{}/", b.addr());
    }
    println!("try:  curl -i http://{at}/hello     (run it twice: the backend alternates)");
    println!("stop: Ctrl-C");
    running.wait();
    Ok(())
}

/// A `Backend` value for a socket address (used by tests and benchmarks).
pub fn backend_at(addr: SocketAddr, weight: u32) -> Backend {
    let host = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let address = backend::normalise(&host, addr.port());
    Backend {
        id: BackendId::of(&address),
        address,
        host,
        port: addr.port(),
        scheme: backend::Scheme::Http,
        addrs: vec![addr],
        weight,
    }
}

/// A backend set over addresses, all weight 1.
pub fn backend_set(addrs: &[SocketAddr]) -> BackendSet {
    BackendSet::new(addrs.iter().map(|a| backend_at(*a, 1)).collect())
}
