//! Backend keep-alive pool: reuse, bound, expiry, and stale connections.

use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::{Balancer, Conn, Reply, TestBackend, eventually};

#[test]
fn steady_load_reuses_backend_connections() {
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = Balancer::new().backend(be.addr).start();
    // 100 requests over 10 client connections, sequentially.
    for _ in 0..10 {
        let mut c = Conn::open(lb.addr);
        for _ in 0..10 {
            assert_eq!(c.get("/").status, 200);
        }
    }
    assert_eq!(be.request_count(), 100);
    assert!(
        be.connections() <= 2,
        "backend saw {} connections for 100 requests",
        be.connections()
    );
}

/// A pooled connection is reused while fresh and closed once idle for
/// `pool.idle_timeout`, not before.
#[test]
fn idle_backend_connections_expire() {
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = Balancer::new()
        .backend(be.addr)
        .with(|c| c.pool.idle_timeout = Duration::from_millis(300))
        .start();
    assert_eq!(get(lb.addr, "/").status, 200);
    assert_eq!(get(lb.addr, "/").status, 200);
    let idle_since = Instant::now();
    assert_eq!(be.connections(), 1, "the pooled connection was not reused");
    assert_eq!(be.closed_by_peer(), 0);
    assert!(
        eventually(Duration::from_secs(5), || be.closed_by_peer() == 1),
        "the idle pooled connection was never closed"
    );
    assert!(
        idle_since.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, before pool.idle_timeout",
        idle_since.elapsed()
    );
}

#[test]
fn idle_connections_are_bounded() {
    // Four slow requests in parallel open four backend connections; only two stay.
    let be = TestBackend::start(|r| {
        if r.target == "/slow" {
            std::thread::sleep(Duration::from_millis(300));
        }
        Reply::ok("ok")
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .with(|c| c.pool.max_idle_per_backend = 2)
        .start();
    let addr = lb.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(addr, "/slow").status))
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert_eq!(be.connections(), 4);
    assert!(
        eventually(Duration::from_secs(5), || be.closed_by_peer() == 2),
        "expected 2 of 4 connections closed, saw {}",
        be.closed_by_peer()
    );
    // The two kept ones serve the next requests without a new dial.
    for _ in 0..4 {
        assert_eq!(get(addr, "/").status, 200);
    }
    assert_eq!(be.connections(), 4);
}

#[test]
fn backend_closing_after_each_response_costs_no_errors() {
    // Answers without `Connection: close` and then hangs up: the pooled connection
    // is stale when the next request comes.
    let be = TestBackend::start(|_| {
        Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
    });
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    for i in 0..30 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(be.request_count(), 30);
}

#[test]
fn connection_close_from_backend_is_not_reused() {
    let be = TestBackend::start(|_| {
        Reply::RawThenClose(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        )
    });
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    for _ in 0..5 {
        assert_eq!(c.get("/").status, 200);
    }
    assert_eq!(be.connections(), 5);
    assert_eq!(be.request_count(), 5);
}
