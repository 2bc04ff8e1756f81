//! `switchyard demo`: two echo backends and the balancer in front, in one command.
//!
//! The backends are child processes (`switchyard backend`) on free loopback ports,
//! named `demo-1` and `demo-2`, so a user can kill one and watch the balancer route
//! around it; they exit with the demo. The balancer runs in this process (thread mode,
//! round-robin, probes every second), so `curl` alternates between the two.

pub mod echo_backend;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{self, Backend, BackendId, BackendSet};
use crate::config::{Config, Mode, Overrides};
use crate::server;
pub use echo_backend::EchoBackend;

/// A backend child process, killed when dropped.
struct DemoBackend {
    name: String,
    addr: SocketAddr,
    child: Child,
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the demo until the process is stopped.
pub fn run(listen: SocketAddr) -> Result<(), crate::Error> {
    let exe = std::env::current_exe()?;
    let mut backends = Vec::new();
    for i in 1..=2 {
        let addr = free_loopback_port()?;
        let name = format!("demo-{i}");
        let child = Command::new(&exe)
            .args(["backend", "--listen", &addr.to_string(), "--name", &name])
            .args(["--exit-with-parent", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        backends.push(DemoBackend { name, addr, child });
    }
    for b in &backends {
        wait_until_listening(b.addr)?;
    }
    let mut specs = Vec::new();
    for b in &backends {
        specs.push(backend::parse_spec(&b.addr.to_string()).map_err(crate::Error::Usage)?);
    }
    let overrides = Overrides {
        listen: Some(listen),
        mode: Some(Mode::Thread),
        workers: Some(1),
        backends: specs,
        ..Overrides::default()
    };
    let mut config = Config::from_overrides(&overrides)?;
    config.health.interval = Duration::from_secs(1);
    config.health.timeout = Duration::from_millis(500);
    let config = Arc::new(config);
    let control = server::control::Control::new(None)?;
    let listeners = server::listener::bind_all(&config.listen_addrs(), config.workers)?;
    let running = server::start(Arc::clone(&config), listeners)?;
    let at = running.local_addr();
    println!("switchyard demo: balancer on http://{at}/ in front of:");
    for b in &backends {
        println!("  {} at http://{}/ (pid {})", b.name, b.addr, b.child.id());
    }
    println!("try:  curl -i http://{at}/hello     (run it twice: the backend alternates)");
    println!(
        "then: kill {} and keep curling: every request is answered by demo-1",
        backends[1].child.id()
    );
    println!("stop: Ctrl-C");
    let life = server::control::Lifecycle {
        exe: None,
        pid_file: None,
        ready: None,
    };
    control.run(running, life)?;
    Ok(())
}

fn free_loopback_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn wait_until_listening(addr: SocketAddr) -> Result<(), crate::Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(crate::Error::Usage(format!(
                "demo backend at {addr} did not start"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
        tls: Default::default(),
        protocol: Default::default(),
        max_connections: 0,
        proxy_protocol: None,
        name: None,
    }
}

/// A backend set over addresses, all weight 1.
pub fn backend_set(addrs: &[SocketAddr]) -> BackendSet {
    BackendSet::new(addrs.iter().map(|a| backend_at(*a, 1)).collect())
}
