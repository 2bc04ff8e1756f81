//! Strategies seen from a client: sticky cookies, weights, least-connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use switchyard::backend::BackendId;
use switchyard::balance::StrategyKind;

use crate::support::client::get;
use crate::support::{Balancer, Conn, Reply, TestBackend, eventually};

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
}

#[test]
fn sticky_cookie_pins_a_client_to_its_backend() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .strategy(StrategyKind::Sticky)
        .start();

    let first = get(lb.addr, "/");
    let set = first
        .header("set-cookie")
        .expect("first answer sets the cookie")
        .to_string();
    assert!(set.starts_with("SWITCHYARD_BACKEND="), "{set}");
    assert!(set.contains("Path=/") && set.contains("HttpOnly"), "{set}");
    let who = first.header("x-backend").unwrap().to_string();
    let addr = if who == "a" { a.addr } else { b.addr };
    // The value is the backend's stable id: a fixed hash of its address.
    assert_eq!(
        cookie_value(&set),
        BackendId::of(&addr.to_string()).to_string()
    );

    let mut c = Conn::open(lb.addr);
    for _ in 0..6 {
        c.send(
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nCookie: other=1; {}\r\n\r\n",
                set.split(';').next().unwrap()
            )
            .as_bytes(),
        );
        let r = c.read_response();
        assert_eq!(r.header("x-backend"), Some(who.as_str()));
        assert!(
            r.header("set-cookie").is_none(),
            "a valid cookie is not set again"
        );
    }

    // An unknown id falls back to another pick and sets the cookie again.
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: SWITCHYARD_BACKEND=00000000deadbeef\r\n\r\n");
    let r = c.read_response();
    assert!(r.header("set-cookie").is_some());
}

/// `sticky.cookie` renames the cookie (the default name is then just another
/// cookie); an id whose backend is unhealthy falls back to a healthy one and sets the
/// cookie again, while that backend, alive but failing its probes, gets nothing.
#[test]
fn sticky_cookie_name_is_configurable_and_an_unhealthy_id_falls_back() {
    let sick = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&sick);
    let a = TestBackend::start(move |r| {
        if r.target == "/healthz" && s.load(SeqCst) {
            Reply::Raw(b"HTTP/1.1 503 Sick\r\nContent-Length: 0\r\n\r\n".to_vec())
        } else {
            Reply::ok("a")
        }
    });
    let b = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .strategy(StrategyKind::Sticky)
        .probes(Duration::from_millis(100))
        .with(|c| {
            c.sticky_cookie = "route".into();
            c.health.path = "/healthz".into();
        })
        .start();
    let id = |addr: std::net::SocketAddr| BackendId::of(&addr.to_string()).to_string();
    let with_cookie = |cookie: &str| {
        crate::support::client::raw(
            lb.addr,
            format!("GET /x HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n").as_bytes(),
        )
    };
    let first = get(lb.addr, "/");
    let set = first.header("set-cookie").expect("sets the cookie");
    assert!(set.starts_with("route="), "{set}");
    assert!(set.contains("Path=/") && set.contains("HttpOnly"), "{set}");
    // The configured name pins; the default one is ignored.
    for _ in 0..3 {
        let r = with_cookie(&format!("route={}", id(a.addr)));
        assert_eq!((r.text().as_str(), r.header("set-cookie")), ("a", None));
    }
    let r = with_cookie(&format!("SWITCHYARD_BACKEND={}", id(b.addr)));
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.starts_with("route=")),
        "{:?}",
        r.headers
    );

    // `a` starts failing its probes: its id no longer pins.
    sick.store(true, SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || !lb.health().is_up(0)),
        "never marked down"
    );
    let before = a.count("/x");
    for _ in 0..3 {
        let r = with_cookie(&format!("route={}", id(a.addr)));
        assert_eq!(r.text(), "b");
        assert_eq!(
            r.header("set-cookie")
                .map(|c| c.split(';').next().unwrap().to_string()),
            Some(format!("route={}", id(b.addr))),
            "the cookie is set again, to the backend that answered"
        );
    }
    assert_eq!(a.count("/x"), before, "the unhealthy backend got traffic");
}

#[test]
fn weights_share_traffic_smoothly() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let c = TestBackend::named("c");
    let lb = Balancer::new()
        .weighted(a.addr, 5)
        .weighted(b.addr, 1)
        .weighted(c.addr, 1)
        .strategy(StrategyKind::WeightedRoundRobin)
        .start();
    let mut conn = Conn::open(lb.addr);
    let seq: String = (0..14).map(|_| conn.get("/").text()).collect();
    assert_eq!(seq, "aabacaaaabacaa");
    assert!(!seq.contains("aaaaa"));
}

#[test]
fn random_uses_every_backend() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .strategy(StrategyKind::Random)
        .start();
    let mut conn = Conn::open(lb.addr);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        *counts.entry(conn.get("/").text()).or_default() += 1;
    }
    // Binomial(200, 0.5): below 60 has probability < 1e-8.
    assert!(counts["a"] >= 60 && counts["b"] >= 60, "{counts:?}");
}

#[test]
fn least_connections_avoids_the_busy_backend() {
    let slow = TestBackend::start(|r| {
        if r.target == "/slow" {
            Reply::With(Box::new(|s| {
                std::thread::sleep(Duration::from_millis(1500));
                std::io::Write::write_all(s, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
                    .is_ok()
            }))
        } else {
            Reply::ok("a")
        }
    });
    let fast = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(slow.addr)
        .backend(fast.addr)
        .strategy(StrategyKind::LeastConnections)
        .start();
    // Ties rotate: the first request goes to `slow` and stays in flight there.
    let addr = lb.addr;
    let held = std::thread::spawn(move || get(addr, "/slow").text());
    assert!(eventually(Duration::from_secs(5), || slow.request_count() == 1));
    for _ in 0..5 {
        assert_eq!(
            get(lb.addr, "/").text(),
            "b",
            "a request went to the busy backend"
        );
    }
    assert_eq!(held.join().unwrap(), "slow");
}

/// `consistent-hash` on `header:X-User`, as two separate instances (processes, one in
/// process mode and one in thread mode, their backends listed in opposite orders):
/// every user goes to the same backend through either, and when one backend dies only
/// its users move, the same way on both. Bounded load is off here: with it, where a
/// key goes also depends on what is in flight (a request still finishing on another
/// worker is enough to pass a key on at this low load), which is its point.
#[test]
fn consistent_hash_agrees_across_instances_and_a_dead_backend_moves_only_its_keys() {
    use crate::support::client::raw;
    use crate::support::process::{Proc, serving};
    let bs = [
        TestBackend::named("b0"),
        TestBackend::named("b1"),
        TestBackend::named("b2"),
        TestBackend::named("b3"),
    ];
    let dir = crate::support::Scratch::new("sy-chash");
    let instance = |name: &str, mode: &str, order: &[usize]| {
        let listen = crate::support::dead_port();
        let backends: Vec<String> = order
            .iter()
            .map(|&i| format!("  - {}", bs[i].addr))
            .collect();
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "listen: {listen}\nworkers: 2\nmode: {mode}\nstrategy: consistent-hash\n\
                 hash: {{key: 'header:X-User', load_factor: 0}}\nbackends:\n{}\n",
                backends.join("\n")
            ),
        )
        .unwrap();
        let p = Proc::with_config(&path);
        assert!(serving(listen));
        (p, listen)
    };
    let (_p1, one) = instance("one", "process", &[0, 1, 2, 3]);
    let (_p2, two) = instance("two", "thread", &[3, 2, 1, 0]);
    let ask = |addr, user: usize| {
        let r = raw(
            addr,
            format!("GET / HTTP/1.1\r\nHost: t\r\nX-User: u{user}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200, "user {user}");
        r.text()
    };
    let users = 200;
    let owner: Vec<String> = (0..users).map(|u| ask(one, u)).collect();
    for (u, o) in owner.iter().enumerate() {
        assert_eq!(&ask(two, u), o, "user {u}: the instances disagree");
        assert_eq!(&ask(one, u), o, "user {u} moved between two requests");
    }
    let mut per: HashMap<&str, usize> = HashMap::new();
    for o in &owner {
        *per.entry(o.as_str()).or_default() += 1;
    }
    assert_eq!(per.len(), 4, "users spread over every backend: {per:?}");

    bs[1].kill();
    for (u, o) in owner.iter().enumerate() {
        let now = ask(one, u);
        if o == "b1" {
            assert_ne!(now, "b1");
        } else {
            assert_eq!(&now, o, "user {u} of a live backend moved");
        }
        assert_eq!(
            ask(two, u),
            now,
            "user {u}: the instances disagree after the kill"
        );
    }
}

/// `least-latency`: a backend that answers 50 ms late gets at most 10% of 2,000
/// requests (from 8 clients at once) while the two others answer at once.
#[test]
fn least_latency_steers_away_from_a_slow_backend() {
    let fast1 = TestBackend::named("fast1");
    let fast2 = TestBackend::named("fast2");
    let slow = TestBackend::start(|_| {
        std::thread::sleep(Duration::from_millis(50));
        Reply::ok("slow")
    });
    let lb = Balancer::new()
        .backend(fast1.addr)
        .backend(slow.addr)
        .backend(fast2.addr)
        .workers(1)
        .strategy(StrategyKind::LeastLatency)
        .start();
    let addr = lb.addr;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for _ in 0..250 {
                    assert_eq!(c.get("/").status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let to_slow = slow.request_count();
    let to_fast = fast1.request_count() + fast2.request_count();
    assert_eq!(to_slow + to_fast, 2000);
    assert!(to_slow <= 200, "the slow backend got {to_slow} of 2000");
    assert!(fast1.request_count() > 500 && fast2.request_count() > 500);
}

/// `slow_start`: a backend that comes back gets a share that grows over the window
/// (round-robin, 2 backends, a 3 s window): small in its first second, larger in its
/// third.
#[test]
fn slow_start_ramps_a_recovered_backend_up() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let b_addr = b.addr;
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b_addr)
        .probes(Duration::from_millis(100))
        .admin()
        .with(|c| {
            c.slow_start = Duration::from_secs(3);
            c.health.healthy_threshold = 1;
            c.health.unhealthy_threshold = 1;
        })
        .start();
    let health = lb.health();
    b.kill();
    assert!(eventually(Duration::from_secs(5), || !health.is_up(1)));
    let _b2 = TestBackend::start_on(b_addr, |_| Reply::ok("b"));
    assert!(eventually(Duration::from_secs(5), || health.is_up(1)));
    let back = std::time::Instant::now();
    // /backends shows the ramp.
    let list = get(lb.admin_addr(), "/backends").json();
    let effective = |i: usize| list[i]["effective_weight"].as_f64().unwrap_or(-1.0);
    assert_eq!(effective(0), 1.0, "{list}");
    assert!(
        effective(1) < 0.5,
        "a recovering backend's effective weight: {list}"
    );
    let mut c = Conn::open(lb.addr);
    let mut per_second = [[0usize; 2]; 3];
    while back.elapsed() < Duration::from_secs(3) {
        let s = back.elapsed().as_secs() as usize;
        let to_b = c.get("/").text() == "b";
        if s < 3 {
            per_second[s][usize::from(to_b)] += 1;
        }
    }
    let share =
        |s: usize| per_second[s][1] as f64 / (per_second[s][0] + per_second[s][1]).max(1) as f64;
    assert!(
        share(0) < 0.25,
        "first second: {:.2} of requests to b",
        share(0)
    );
    assert!(
        share(2) > share(0) + 0.1,
        "the share did not grow: {:.2}, {:.2}, {:.2}",
        share(0),
        share(1),
        share(2)
    );
}

/// `retry_budget`: with every backend resetting every request, 1,000 GETs (each
/// allowed 2 retries) make at most 1,000 x (1 + ratio) + min_per_second x (the seconds
/// they took, counted whole at both ends) backend attempts, and the skipped retries
/// are counted.
#[test]
fn retry_budget_caps_retries_during_an_outage() {
    use std::io::Read;
    let resetting = || {
        TestBackend::raw(|mut s| {
            // Read the request, then hang up without an answer.
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
        })
    };
    let bs = [resetting(), resetting(), resetting()];
    let mut b = Balancer::new();
    for be in &bs {
        b = b.backend(be.addr);
    }
    let lb = b
        .admin()
        .with(|c| {
            c.retries = 2;
            // Keep them "up", so every request is tried (and retried) for real.
            c.health.unhealthy_threshold = 1_000_000;
            c.retry_budget = Some(switchyard::config::RetryBudget {
                ratio: 0.2,
                min_per_second: 3,
            });
        })
        .start();
    let start = std::time::Instant::now();
    let mut c = Conn::open(lb.addr);
    for i in 0..1000 {
        let r = c.get("/");
        assert_eq!(r.status, 502, "request {i}");
        if r.header("connection") == Some("close") {
            c = Conn::open(lb.addr);
        }
    }
    let secs = start.elapsed().as_secs_f64().ceil() + 1.0;
    let attempts: usize = bs.iter().map(TestBackend::connections).sum();
    let bound = 1000.0 * 1.2 + 3.0 * secs;
    assert!(
        attempts as f64 <= bound,
        "{attempts} backend attempts for 1,000 requests in {secs} s (bound {bound})"
    );
    assert!(attempts >= 1000, "every request was tried once: {attempts}");
    let skipped = lb
        .metrics()
        .value("switchyard_retries_skipped_total", &[("reason", "budget")])
        .unwrap_or(0.0);
    assert!(skipped >= 700.0, "skipped retries counted: {skipped}");
}
