//! Health: breaker, probes, failover and safe retries, with real backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::{Balancer, Conn, Reply, TestBackend, dead_port, eventually};

const PROBE: Duration = Duration::from_millis(100);

#[test]
fn one_of_three_down_from_the_start_costs_nothing() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let dead = dead_port();
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .backend(dead)
        .probes(PROBE)
        .start();
    let mut c = Conn::open(lb.addr);
    for i in 0..50 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
    }
    assert!(
        eventually(Duration::from_secs(5), || !lb.health().is_up(2)),
        "dead backend never marked down"
    );
    assert!(lb.health().is_up(0) && lb.health().is_up(1));
}

#[test]
fn dead_from_the_start_is_found_by_the_first_probe() {
    let a = TestBackend::named("a");
    let dead = dead_port();
    // A long interval: only the first probe (within 250 ms of start) can find it.
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(dead)
        .probes(Duration::from_secs(30))
        .start();
    assert!(
        eventually(Duration::from_secs(3), || !lb.health().is_up(1)),
        "first probe did not mark it down"
    );
    assert!(lb.health().is_up(0));
}

#[test]
fn backend_killed_mid_loop_costs_no_failed_gets() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let c = TestBackend::named("c");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .backend(c.addr)
        .probes(PROBE)
        .start();
    let mut conn = Conn::open(lb.addr);
    let mut failed = 0;
    for i in 0..300 {
        if i == 100 {
            b.kill();
        }
        if conn.get("/").status != 200 {
            failed += 1;
        }
    }
    assert_eq!(failed, 0);
    assert!(eventually(Duration::from_secs(5), || !lb.health().is_up(1)));
    let after = b.request_count();
    for _ in 0..30 {
        assert_eq!(conn.get("/").status, 200);
    }
    assert_eq!(b.request_count(), after, "a down backend got traffic");
}

/// A POST that reached a backend which then died is answered 502, and no other
/// backend ever sees it; a GET in the same situation is retried elsewhere.
#[test]
fn sent_post_is_never_retried_but_get_is() {
    let dies = TestBackend::start(|_| Reply::With(Box::new(|_| false))); // read it, then hang up
    let other1 = TestBackend::named("other1");
    let other2 = TestBackend::named("other2");
    let lb = Balancer::new()
        .backend(dies.addr)
        .backend(other1.addr)
        .backend(other2.addr)
        .start();
    // Round-robin: the first request goes to `dies`.
    let mut c = Conn::open(lb.addr);
    c.send(b"POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nmoney");
    let r = c.read_response();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(dies.request_count(), 1);
    assert_eq!(
        other1.request_count() + other2.request_count(),
        0,
        "the POST was sent twice"
    );
    // Next round: the GET hits `dies` again and is retried on another backend.
    let _ = get(lb.addr, "/");
    let _ = get(lb.addr, "/");
    let r = get(lb.addr, "/idempotent");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        dies.requests()
            .iter()
            .filter(|r| r.target == "/idempotent")
            .count(),
        1
    );
}

#[test]
fn post_that_could_not_be_sent_goes_elsewhere() {
    let alive = TestBackend::named("alive");
    let lb = Balancer::new()
        .backend(dead_port())
        .backend(alive.addr)
        .start();
    let mut c = Conn::open(lb.addr);
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "alive"));
    assert_eq!(alive.requests()[0].body, b"hi");
}

/// `n` backends that read a request and hang up, behind a balancer with `retries: 2`;
/// how many times each saw the one GET sent through it (answered 502).
fn attempts_over_hangups(n: usize) -> Vec<usize> {
    let hangups: Vec<TestBackend> = (0..n)
        .map(|_| TestBackend::start(|_| Reply::With(Box::new(|_| false))))
        .collect();
    let mut lb = Balancer::new().with(|c| c.retries = 2);
    for h in &hangups {
        lb = lb.backend(h.addr);
    }
    let lb = lb.start();
    get(lb.addr, "/").assert_local_error(502);
    hangups.iter().map(TestBackend::request_count).collect()
}

/// Retries stop at `retries` extra attempts.
#[test]
fn retries_are_bounded() {
    let counts = attempts_over_hangups(4);
    assert_eq!(
        counts.iter().sum::<usize>(),
        3,
        "1 attempt + 2 retries: {counts:?}"
    );
    assert!(counts.iter().all(|&c| c <= 1), "{counts:?}");
}

/// Two backends and two retries allowed: round-robin alone would come back to the
/// first for the third attempt; a request never goes to a backend twice, so it stops.
#[test]
fn retries_never_repeat_a_backend() {
    let counts = attempts_over_hangups(2);
    assert_eq!(counts, [1, 1], "a backend was tried twice");
}

/// Every backend gone: 503 once they are marked down, and each 503 comes at once.
/// "At once" is checked against what slowness would mean here: waiting for a probe
/// (every 30 s) or for a connect timeout (30 s); the bound (5 s) leaves a loaded
/// machine plenty of room and still catches both.
#[test]
fn all_backends_down_gives_503_fast() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .probes(Duration::from_secs(30))
        .with(|c| c.timeouts.connect = Duration::from_secs(30))
        .start();
    assert_eq!(get(lb.addr, "/").status, 200);
    a.kill();
    b.kill();
    // Live requests fail over, then mark both down (three failures each).
    assert!(
        eventually(Duration::from_secs(10), || get(lb.addr, "/").status == 503),
        "no 503 after losing every backend"
    );
    assert!(lb.health().all_down());
    // And it stays a fast 503 (the fail-open attempt fails at once).
    for _ in 0..5 {
        let t = Instant::now();
        let r = get(lb.addr, "/");
        assert_eq!(r.status, 503);
        assert!(r.text().contains("no healthy backend"), "{}", r.text());
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}

#[test]
fn backend_that_comes_back_is_used_again() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let b_addr = b.addr;
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b_addr)
        .probes(PROBE)
        .start();
    b.kill();
    assert!(
        eventually(Duration::from_secs(3), || !lb.health().is_up(1)),
        "never marked down"
    );
    for _ in 0..4 {
        assert_eq!(get(lb.addr, "/").text(), "a");
    }
    let back = TestBackend::start_on(b_addr, |_| Reply::ok("b again"));
    assert!(
        eventually(Duration::from_secs(3), || lb.health().is_up(1)),
        "never marked up again"
    );
    let texts: Vec<String> = (0..4).map(|_| get(lb.addr, "/").text()).collect();
    assert!(texts.iter().any(|t| t == "b again"), "{texts:?}");
    drop(back);
}

#[test]
fn hanging_backend_gives_504_and_is_marked_down() {
    let hang = TestBackend::start(|_| Reply::Hang);
    let lb = Balancer::new()
        .backend(hang.addr)
        .backend_response(Duration::from_millis(200))
        .start();
    for i in 0..3 {
        assert!(lb.health().is_up(0), "down after only {i} timeouts");
        let t = Instant::now();
        let r = get(lb.addr, "/");
        assert_eq!(r.status, 504, "{}", r.text());
        // Not before the timeout; a bound that only a missing timeout would break.
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    }
    assert!(
        !lb.health().is_up(0),
        "three timeouts should open the breaker"
    );
    hang.kill();
}

/// A backend that times out is not retried (it may still be working on the request):
/// an idempotent GET that could be replayed still gets its 504, and the next backend
/// never sees it.
#[test]
fn a_timed_out_request_is_not_retried() {
    let hang = TestBackend::start(|_| Reply::Hang);
    let ok = TestBackend::named("ok");
    let lb = Balancer::new()
        .backend(hang.addr)
        .backend(ok.addr)
        .backend_response(Duration::from_millis(300))
        .start();
    // Round-robin: the first request goes to `hang`.
    get(lb.addr, "/once").assert_local_error(504);
    assert_eq!(hang.count("/once"), 1);
    assert_eq!(
        ok.request_count(),
        0,
        "the timed-out request was sent again"
    );
    hang.kill();
}

#[test]
fn passive_5xx_counts_only_when_configured() {
    let sick = TestBackend::start(|_| {
        Reply::Raw(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".to_vec())
    });
    let lb = Balancer::new().backend(sick.addr).start();
    for _ in 0..5 {
        assert_eq!(get(lb.addr, "/").status, 500, "a backend's 5xx is relayed");
    }
    assert!(lb.health().is_up(0));
    let lb = Balancer::new()
        .backend(sick.addr)
        .with(|c| c.health.passive_5xx = true)
        .start();
    for _ in 0..3 {
        assert_eq!(get(lb.addr, "/").status, 500);
    }
    assert!(!lb.health().is_up(0));
}

#[test]
fn probes_check_the_path_and_status() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let be = TestBackend::start(move |r| {
        if r.target == "/healthz"
            && r.header("user-agent")
                .is_some_and(|u| u.contains("switchyard"))
        {
            h.fetch_add(1, SeqCst);
            Reply::Raw(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".to_vec())
        } else {
            Reply::ok("ok")
        }
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .probes(PROBE)
        .with(|c| c.health.path = "/healthz".into())
        .start();
    assert!(
        eventually(Duration::from_secs(3), || !lb.health().is_up(0)),
        "503 probes should mark it down"
    );
    assert!(hits.load(SeqCst) >= 1);
}

/// Probes run once per backend per process, not once per worker.
#[test]
fn probes_run_once_per_process() {
    let be = TestBackend::named("a");
    let lb = Balancer::new()
        .backend(be.addr)
        .workers(3)
        .probes(PROBE)
        .start();
    // Let about eight probe rounds pass (this wait is the measurement itself).
    std::thread::sleep(Duration::from_millis(900));
    let probes = be
        .requests()
        .iter()
        .filter(|r| {
            r.header("user-agent")
                .is_some_and(|u| u.contains("switchyard"))
        })
        .count();
    drop(lb);
    assert!(
        (3..=12).contains(&probes),
        "{probes} probes in 900 ms at 100 ms with 3 workers"
    );
}

/// Every backend marked down, yet one is alive: the fail-open attempt reaches it
/// (the least recently failed one) instead of refusing all traffic.
#[test]
fn all_marked_down_still_tries_the_least_recently_failed() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let lb = Balancer::new().backend(a.addr).backend(b.addr).start();
    use switchyard::health::{Reason, Source};
    // b failed long ago, a just now: b is tried first.
    for _ in 0..3 {
        lb.health()
            .record_failure(1, Source::Request, Reason::Reset);
    }
    std::thread::sleep(Duration::from_millis(5)); // distinct failure times
    for _ in 0..3 {
        lb.health()
            .record_failure(0, Source::Request, Reason::Reset);
    }
    assert!(lb.health().all_down());
    let r = get(lb.addr, "/");
    assert_eq!((r.status, r.text().as_str()), (200, "b"));
}
