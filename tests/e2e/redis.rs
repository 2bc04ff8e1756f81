//! `scope: redis` against a real Redis (`redis-server` from Debian, started here on a
//! free port): one budget shared by two instances, `on_error` when Redis is gone, and
//! limits resuming when it is back.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::process::{Proc, serving};
use crate::support::{Conn, TestBackend, dead_port, eventually};

/// A `redis-server` on `addr`, killed on drop.
struct RedisServer {
    addr: SocketAddr,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> RedisServer {
        let mut r = RedisServer {
            addr: dead_port(),
            child: None,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.addr.port().to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test (Debian: apt-get install redis-server)");
        self.child = Some(child);
        assert!(serving(self.addr), "redis-server did not start");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn instance(
    dir: &std::path::Path,
    name: &str,
    redis: SocketAddr,
    backend: SocketAddr,
    extra: &str,
) -> (Proc, SocketAddr) {
    let listen = dead_port();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "listen: {listen}\nworkers: 2\nmode: thread\nhealth: {{probes: false}}\n\
             backends: [{backend}]\nredis: {{url: 'redis://{redis}/0'{extra}}}\n\
             rate_limits:\n  - {{name: fleet, key: global, rate: 100/s, burst: 10, scope: redis}}\n"
        ),
    )
    .unwrap();
    let p = Proc::with_config(&path);
    assert!(serving(listen));
    (p, listen)
}

/// Two instances, one Redis, `rate: 100/s, burst: 10` on one global key: over 3 s of
/// clients at full speed on both, the accepted requests of the two together are at most
/// 5% over 310 (one budget, not one each) and not far under it.
#[test]
fn two_instances_share_one_budget_through_redis() {
    let redis = RedisServer::start();
    let be = TestBackend::named("ok");
    let dir = crate::support::Scratch::new("sy-redis");
    // A generous timeout: this test is about the shared budget, and under the whole
    // suite's load a 50 ms round trip (or first connect) can time out, letting
    // requests through by `on_error: allow` (the outage test below covers that).
    let (_a, one) = instance(&dir, "one", redis.addr, be.addr, ", timeout: 1s");
    let (_b, two) = instance(&dir, "two", redis.addr, be.addr, ", timeout: 1s");
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let clients: Vec<_> = [one, one, two, two]
        .into_iter()
        .map(|addr| {
            let (ok, limited) = (Arc::clone(&ok), Arc::clone(&limited));
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                while start.elapsed() < Duration::from_secs(3) {
                    match c.get("/").status {
                        200 => ok.fetch_add(1, SeqCst),
                        429 => limited.fetch_add(1, SeqCst),
                        s => panic!("status {s}"),
                    };
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (ok, limited) = (ok.load(SeqCst), limited.load(SeqCst));
    assert!(limited > ok, "{ok} ok, {limited} limited");
    assert!(
        (285..=316).contains(&ok),
        "{ok} accepted over two instances in 3 s at 100/s"
    );
}

/// Redis killed: `on_error: allow` serves on, `deny` answers 503 within the timeout
/// (plus a little); Redis back: the limit applies again.
#[test]
fn redis_going_away_follows_on_error_and_limits_resume() {
    let mut redis = RedisServer::start();
    let be = TestBackend::named("ok");
    let dir = crate::support::Scratch::new("sy-redis-err");
    let (_a, allow) = instance(
        &dir,
        "allow",
        redis.addr,
        be.addr,
        ", timeout: 50ms, on_error: allow",
    );
    let (_d, deny) = instance(
        &dir,
        "deny",
        redis.addr,
        be.addr,
        ", timeout: 50ms, on_error: deny",
    );
    // Limited while Redis is there.
    let burst = |addr| (0..50).map(|_| get(addr, "/").status).collect::<Vec<_>>();
    assert!(burst(allow).contains(&429));
    redis.kill();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(get(allow, "/").status, 200);
        let r = get(deny, "/");
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("rate limiter"), "{}", r.text());
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a request waited {:?}",
            t.elapsed()
        );
    }
    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || burst(allow).contains(&429)),
        "the limit did not resume"
    );
}
