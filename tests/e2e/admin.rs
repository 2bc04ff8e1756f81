//! The admin listener: metrics summed over every worker, /healthz, /backends, and the
//! access log. Scrapes are parsed strictly (support/prometheus.rs) and read by name
//! and label set, so a test sees what a Prometheus server would.

use std::time::Duration;

use crate::support::balancer::scrape;
use crate::support::client::get;
use crate::support::process::{Proc, serving};
use crate::support::prometheus::Kind;
use crate::support::{Balancer, Gate, Reply, TestBackend, dead_port, eventually};

#[test]
fn thread_mode_counts_every_request_exactly_once() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .workers(2)
        .admin()
        .start();
    let admin = lb.admin_addr();
    let n0 = lb.metrics().sum("switchyard_requests_total");
    for _ in 0..37 {
        assert_eq!(get(lb.addr, "/").status, 200);
    }
    // A request's duration is recorded just after its response is written: wait for
    // the last one.
    assert!(eventually(Duration::from_secs(5), || lb
        .metrics()
        .sum("switchyard_request_duration_seconds_count")
        == 37.0));
    let after = lb.metrics();
    assert_eq!(after.sum("switchyard_requests_total") - n0, 37.0);
    assert_eq!(after.sum("switchyard_request_duration_seconds_count"), 37.0);
    // Every documented family, with its type and help.
    for (name, kind) in [
        ("switchyard_requests_total", Kind::Counter),
        ("switchyard_local_responses_total", Kind::Counter),
        ("switchyard_request_duration_seconds", Kind::Histogram),
        ("switchyard_backend_up", Kind::Gauge),
        ("switchyard_backend_in_flight", Kind::Gauge),
        ("switchyard_health_transitions_total", Kind::Counter),
        ("switchyard_retries_total", Kind::Counter),
        ("switchyard_client_connections_open", Kind::Gauge),
        ("switchyard_connections_parked", Kind::Gauge),
    ] {
        let f = after
            .family(name)
            .unwrap_or_else(|| panic!("no {name}: {after:#?}"));
        assert_eq!(f.kind, kind, "{name}");
        assert!(f.help.as_deref().is_some_and(|h| !h.is_empty()), "{name}");
    }
    // Admin requests themselves are not counted.
    assert_eq!(lb.metrics().sum("switchyard_requests_total") - n0, 37.0);

    // The balancer's own answers are counted with a reason.
    let r = crate::support::client::raw(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n",
    );
    assert_eq!(r.status, 417);
    let s = lb.metrics();
    assert_eq!(
        s.value(
            "switchyard_local_responses_total",
            &[("code", "417"), ("reason", "expectation_failed")]
        ),
        Some(1.0),
        "{s:#?}"
    );

    // /backends
    let list = get(admin, "/backends").json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["address"], a.addr.to_string());
    assert_eq!(list[0]["up"], true);
    assert_eq!(list[0]["weight"], 1);
    assert_eq!(
        list[0]["id"],
        switchyard::backend::BackendId::of(&a.addr.to_string()).to_string()
    );
    assert_eq!(get(admin, "/healthz").status, 200);
    assert_eq!(get(admin, "/nope").status, 404);
}

/// `switchyard_backend_up` and `switchyard_health_transitions_total{to=...}` follow a
/// backend that dies and comes back.
#[test]
fn backend_up_and_transitions_follow_a_backend_that_dies_and_returns() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let b_addr = b.addr;
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b_addr)
        .probes(Duration::from_millis(100))
        .admin()
        .start();
    let name = b_addr.to_string();
    let up = || {
        lb.metrics()
            .value("switchyard_backend_up", &[("backend", &name)])
    };
    let moved = |to: &str| {
        lb.metrics().value(
            "switchyard_health_transitions_total",
            &[("backend", &name), ("to", to)],
        )
    };
    assert_eq!(up(), Some(1.0));
    assert_eq!((moved("down"), moved("up")), (Some(0.0), Some(0.0)));
    b.kill();
    assert!(
        eventually(Duration::from_secs(5), || up() == Some(0.0)),
        "backend_up never dropped"
    );
    assert_eq!((moved("down"), moved("up")), (Some(1.0), Some(0.0)));
    // /backends says when, as a UTC timestamp (the other backend never failed).
    let list = get(lb.admin_addr(), "/backends").json();
    let at = list[1]["last_failure_at"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(at.starts_with("20") && at.ends_with('Z'), "{list}");
    assert!(list[0]["last_failure_at"].is_null(), "{list}");
    let _back = TestBackend::start_on(b_addr, |_| Reply::ok("b again"));
    assert!(
        eventually(Duration::from_secs(5), || up() == Some(1.0)),
        "backend_up never came back"
    );
    assert_eq!((moved("down"), moved("up")), (Some(1.0), Some(1.0)));
}

/// The duration histogram has the documented buckets (0.5 ms to 10 s, then +Inf) and
/// puts a slow request above the buckets it outlasted; the in-flight gauge shows a
/// request while it is in flight.
#[test]
fn duration_buckets_and_in_flight_gauge() {
    let gate = Gate::new();
    let g = gate.clone();
    let be = TestBackend::start(move |r| {
        match r.target.as_str() {
            "/held" => g.wait(),
            "/slow" => std::thread::sleep(Duration::from_millis(300)),
            _ => {}
        }
        Reply::ok("ok")
    });
    let lb = Balancer::new().backend(be.addr).admin().start();
    let name = be.addr.to_string();
    for _ in 0..5 {
        assert_eq!(get(lb.addr, "/").status, 200);
    }
    assert_eq!(get(lb.addr, "/slow").status, 200);
    // A request is recorded when its response has been written, which may be a moment
    // after the client has read it.
    let labels = [("backend", name.as_str())];
    assert!(
        eventually(Duration::from_secs(5), || {
            lb.metrics()
                .value("switchyard_request_duration_seconds_count", &labels)
                == Some(6.0)
        }),
        "six requests recorded"
    );
    let s = lb.metrics();
    let buckets: Vec<(f64, f64)> = s
        .samples("switchyard_request_duration_seconds_bucket")
        .filter(|x| x.label("backend") == Some(name.as_str()))
        .map(|x| {
            let le = x.label("le").unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, x.value)
        })
        .collect();
    let les: Vec<f64> = buckets.iter().map(|b| b.0).collect();
    assert_eq!(
        les,
        [
            0.0005,
            0.001,
            0.0025,
            0.005,
            0.01,
            0.025,
            0.05,
            0.1,
            0.25,
            0.5,
            1.0,
            2.5,
            5.0,
            10.0,
            f64::INFINITY
        ]
    );
    let at = |le: f64| buckets.iter().find(|b| b.0 == le).unwrap().1;
    assert!(at(0.25) <= 5.0, "the 300 ms request is not within 0.25 s");
    assert_eq!(at(f64::INFINITY), 6.0);
    assert_eq!(
        s.value("switchyard_request_duration_seconds_count", &labels),
        Some(6.0)
    );
    assert!(s.value("switchyard_request_duration_seconds_sum", &labels) >= Some(0.3));
    assert_eq!(
        s.value(
            "switchyard_requests_total",
            &[("backend", &name), ("code", "200")]
        ),
        Some(6.0)
    );

    let in_flight = || lb.metrics().value("switchyard_backend_in_flight", &labels);
    assert_eq!(in_flight(), Some(0.0));
    let addr = lb.addr;
    let held = std::thread::spawn(move || get(addr, "/held").status);
    assert!(eventually(Duration::from_secs(5), || be
        .requests()
        .iter()
        .any(|r| r.target == "/held")));
    assert_eq!(in_flight(), Some(1.0));
    gate.open();
    assert_eq!(held.join().unwrap(), 200);
    assert!(
        eventually(Duration::from_secs(5), || in_flight() == Some(0.0)),
        "in flight after the response: {:?}",
        in_flight()
    );
}

#[test]
fn process_mode_sums_over_workers_and_healthz_turns_503_while_draining() {
    let gate = Gate::new();
    let g = gate.clone();
    let slow = TestBackend::start(move |r| {
        if r.target == "/slow" {
            g.wait();
        }
        Reply::ok("ok")
    });
    let listen = dead_port();
    let admin = dead_port();
    let (l, b, a) = (listen.to_string(), slow.addr.to_string(), admin.to_string());
    let mut p = Proc::start(&[
        "-l",
        &l,
        "-b",
        &b,
        "-w",
        "2",
        "--mode",
        "process",
        "--admin",
        &a,
        "--access-log",
    ]);
    assert!(serving(admin) && serving(listen));
    let n0 = scrape(admin).sum("switchyard_requests_total");
    // Fresh connections: the kernel spreads them over both worker processes.
    for _ in 0..60 {
        assert_eq!(get(listen, "/").status, 200);
    }
    let s = scrape(admin);
    assert_eq!(s.sum("switchyard_requests_total") - n0, 60.0, "{s:#?}");

    // Drain with a request in flight (held at the backend): /healthz says 503 until
    // the end, and the drain waits for the request.
    let inflight = std::thread::spawn(move || get(listen, "/slow").status);
    assert!(eventually(Duration::from_secs(5), || slow
        .requests()
        .iter()
        .any(|r| r.target == "/slow")));
    let held_since = std::time::Instant::now();
    p.signal(libc::SIGTERM);
    assert!(
        eventually(Duration::from_secs(10), || get(admin, "/healthz").status
            == 503),
        "healthz did not turn 503 while draining"
    );
    assert!(p.is_running(), "exited with a request in flight");
    let held = held_since.elapsed();
    gate.open();
    assert_eq!(inflight.join().unwrap(), 200);
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");

    // One access-log line per request, in the documented shape.
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("\"GET /")).collect();
    assert_eq!(lines.len(), 61, "{log}");
    let slow_line = lines.iter().find(|l| l.contains("/slow")).unwrap();
    let fields: Vec<&str> = slow_line.split(' ').collect();
    // timestamp client "GET /slow HTTP/1.1" status bytes backend duration
    assert!(
        fields[0].ends_with('Z') && fields[0].contains('T'),
        "{slow_line}"
    );
    assert_eq!(fields[1], "127.0.0.1");
    assert_eq!(
        (fields[2], fields[3], fields[4]),
        ("\"GET", "/slow", "HTTP/1.1\"")
    );
    assert_eq!((fields[5], fields[6]), ("200", "2"));
    assert_eq!(fields[7], slow.addr.to_string());
    assert!(
        fields[8].ends_with("ms")
            && fields[8].trim_end_matches("ms").parse::<f64>().unwrap() >= held.as_millis() as f64,
        "held {held:?}: {slow_line}"
    );
}
