//! Rate limits as a client sees them: 429 with Retry-After and the IETF RateLimit
//! headers, one budget shared by every worker, per-client keys, and the count in
//! /metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::support::balancer::scrape;
use crate::support::client::raw;
use crate::support::process::{Proc, serving};
use crate::support::{Conn, TestBackend, dead_port};

/// Process mode, 2 workers, `rate: 200/s, burst: 20` on one global key, 4 clients
/// sending as fast as they can for 2 s: the accepted count is at most 5% over 420 (one
/// budget for both workers, not one each) and not far under it (a loaded machine sends
/// less evenly, and an empty moment cannot be saved up past the burst), every other
/// answer is a 429 with a text body, Retry-After and RateLimit headers, and no refused
/// request reached the backend.
#[test]
fn a_global_limit_is_one_budget_for_all_workers() {
    let be = TestBackend::named("ok");
    let listen = dead_port();
    let admin = dead_port();
    let dir = crate::support::Scratch::new("sy-limit");
    let path = dir.join("lb.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {listen}\nadmin: {admin}\nworkers: 2\nmode: process\n\
             health: {{probes: false}}\nbackends: [{}]\n\
             rate_limits:\n  - {{name: everyone, key: global, rate: 200/s, burst: 20}}\n",
            be.addr
        ),
    )
    .unwrap();
    let _p = Proc::with_config(&path);
    assert!(serving(listen) && serving(admin));
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (ok, limited) = (Arc::clone(&ok), Arc::clone(&limited));
            std::thread::spawn(move || {
                let mut c = Conn::open(listen);
                while start.elapsed() < Duration::from_secs(2) {
                    let r = c.get("/");
                    match r.status {
                        200 => ok.fetch_add(1, SeqCst),
                        429 => {
                            assert!(
                                r.text().starts_with(
                                    "429 Too Many Requests: over the rate limit 'everyone'"
                                ),
                                "{}",
                                r.text()
                            );
                            let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
                            assert!(after >= 1, "Retry-After: {after}");
                            assert_eq!(
                                r.header("ratelimit-policy"),
                                Some("\"everyone\";q=200;w=1")
                            );
                            assert!(
                                r.header("ratelimit")
                                    .unwrap()
                                    .starts_with("\"everyone\";r=0;t=")
                            );
                            limited.fetch_add(1, SeqCst)
                        }
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
    assert!(
        limited > ok,
        "the clients did not go past the limit: {ok} ok, {limited} limited"
    );
    assert!(
        (340..=442).contains(&ok),
        "{ok} accepted in 2 s at 200/s + 20 (and {limited} limited)"
    );
    assert_eq!(
        be.request_count(),
        ok,
        "a refused request reached the backend"
    );
    let m = scrape(admin);
    assert_eq!(
        m.value("switchyard_rate_limited_total", &[("limit", "everyone")]),
        Some(limited as f64)
    );
}

/// `key: client_ip` gives each client its own bucket, and `key: header:NAME` limits
/// only requests that carry the header (in-process, thread mode).
#[test]
fn per_client_and_per_header_keys() {
    use switchyard::limit::{LimitKey, RateLimit, Scope, name_hash};
    let be = TestBackend::named("ok");
    let limit = |name: &str, key: LimitKey| RateLimit {
        name: name.into(),
        name_hash: name_hash(name),
        key,
        quota: 1,
        window_s: 3600,
        burst: 2,
        scope: Scope::Local,
    };
    let lb = crate::support::Balancer::new()
        .backend(be.addr)
        .with(move |c| {
            c.rate_limits = vec![
                limit("per-token", LimitKey::Header("x-token".into())),
                limit("per-client", LimitKey::ClientIp),
            ];
        })
        .start();
    let get = |extra: &str| {
        raw(
            lb.addr,
            format!("GET / HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes(),
        )
        .status
    };
    // The token's bucket (1 + burst 2) runs out first; the client's bucket is shared by
    // both kinds of request, so it is spent too.
    assert_eq!(
        [
            get("X-Token: a\r\n"),
            get("X-Token: a\r\n"),
            get("X-Token: a\r\n")
        ],
        [200; 3]
    );
    assert_eq!(get("X-Token: a\r\n"), 429);
    // A request without the header is limited only by the client limit, which has
    // room left? It was spent by the three above (one bucket per client IP).
    assert_eq!(get(""), 429);
    let r = raw(lb.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(r.text().contains("'per-client'"), "{}", r.text());
}

/// `limits.connections_per_client: 3` over 2 workers: a fourth connection from the same
/// address gets a 429 and the close, counted in /metrics; once one of the three closes,
/// a new one is served.
#[test]
fn connections_per_client_are_capped_across_workers() {
    use std::io::Read;
    let be = TestBackend::named("ok");
    let lb = crate::support::Balancer::new()
        .backend(be.addr)
        .workers(2)
        .admin()
        .with(|c| c.limits.connections_per_client = 3)
        .start();
    let mut held: Vec<Conn> = (0..3).map(|_| Conn::open(lb.addr)).collect();
    for c in &mut held {
        assert_eq!(c.get("/").status, 200);
    }
    let mut fourth = std::net::TcpStream::connect(lb.addr).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = fourth.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 429")
            && answer.ends_with("too many connections from your address\n"),
        "{answer:?}"
    );
    assert_eq!(
        lb.metrics().value(
            "switchyard_connections_refused_total",
            &[("reason", "per_client")]
        ),
        Some(1.0)
    );
    // The three still work; when one closes, a new connection is served.
    assert_eq!(held[0].get("/").status, 200);
    drop(held.pop());
    assert!(crate::support::eventually(Duration::from_secs(5), || {
        let mut c = std::net::TcpStream::connect(lb.addr).unwrap();
        use std::io::Write;
        let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s.starts_with("HTTP/1.1 200")
    }));
}

/// `max_connections: 2` on the only backend, 20 concurrent slow requests: never more
/// than 2 at the backend at once, the rest wait their turn and all complete; with
/// `queue.timeout: 200ms` the overflow gets a 503 with its text after about 200 ms.
#[test]
fn max_connections_queues_and_times_out() {
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (n, m) = (Arc::clone(&now), Arc::clone(&most));
    let be = TestBackend::start(move |_| {
        let k = n.fetch_add(1, SeqCst) + 1;
        m.fetch_max(k, SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        n.fetch_sub(1, SeqCst);
        crate::support::Reply::ok("slow")
    });
    let run = |timeout: Duration| {
        let lb = crate::support::Balancer::new()
            .backend(be.addr)
            .workers(2)
            .admin()
            .with(move |c| {
                let mut backends: Vec<_> = c.backends.iter().cloned().collect();
                backends[0].max_connections = 2;
                c.backends = switchyard::backend::BackendSet::new(backends);
                c.queue.timeout = timeout;
            })
            .start();
        let addr = lb.addr;
        let clients: Vec<_> = (0..20)
            .map(|_| {
                std::thread::spawn(move || {
                    let t = Instant::now();
                    let r = crate::support::client::get(addr, "/");
                    (r.status, r.text(), t.elapsed())
                })
            })
            .collect();
        let out: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        (out, lb.metrics())
    };
    let (all, m) = run(Duration::from_secs(10));
    assert!(all.iter().all(|(s, _, _)| *s == 200), "{all:?}");
    assert!(
        most.load(SeqCst) <= 2,
        "{} at once at the backend",
        most.load(SeqCst)
    );
    assert!(
        m.value("switchyard_queue_wait_seconds_count", &[])
            .unwrap_or(0.0)
            >= 10.0
    );
    assert_eq!(m.value("switchyard_queue_length", &[]), Some(0.0));

    most.store(0, SeqCst);
    let (some, _) = run(Duration::from_millis(200));
    let refused: Vec<_> = some.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(!refused.is_empty() && refused.len() < 20, "{some:?}");
    for (_, text, took) in &refused {
        assert!(text.contains("within queue.timeout"), "{text}");
        assert!(
            *took >= Duration::from_millis(190) && *took < Duration::from_secs(2),
            "{took:?}"
        );
    }
    assert!(most.load(SeqCst) <= 2);
}
