//! Several workers: one SO_REUSEPORT listener each, all serving.

use std::time::Duration;

use crate::support::client::get;
use crate::support::{Balancer, TestBackend};

/// Listening sockets on `port` in this network namespace, from /proc/net/tcp.
fn listeners_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&format!(":{port:04X}")) && cols[3] == "0A"
        })
        .count()
}

#[test]
fn each_worker_has_its_own_listener_and_all_serve() {
    let be = TestBackend::named("a");
    let lb = Balancer::new().backend(be.addr).workers(3).start();
    assert_eq!(
        listeners_on(lb.addr.port()),
        3,
        "one SO_REUSEPORT socket per worker"
    );
    // Many connections: the kernel spreads them; every one is served.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = lb.addr;
            std::thread::spawn(move || (0..25).all(|_| get(addr, "/").text() == "a"))
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
    assert_eq!(be.request_count(), 100);
    // Each worker keeps its own pool: at most one backend connection per worker here.
    assert!(be.connections() <= 12, "{}", be.connections());
    let _ = Duration::ZERO;
}
