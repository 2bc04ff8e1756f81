//! The admin listener: metrics summed over every worker, /healthz, /backends, and the
//! access log.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::{Balancer, Reply, TestBackend, dead_port, eventually};

/// Sum of every sample of `name` in a scrape (label sets ignored).
fn sum(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn sample(scrape: &str, line_start: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Makes sure Python's prometheus_client is importable, installing it once if not.
fn ensure_prometheus_client() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let have = |_: ()| {
            Command::new("python3")
                .args(["-c", "import prometheus_client"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have(()) {
            let _ = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "prometheus_client"])
                .status();
        }
    });
}

/// Checks the exposition with the reference parser (Python's prometheus_client).
fn parses_with_prometheus_client(scrape: &str) {
    ensure_prometheus_client();
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\nfams = list(p(sys.stdin.read()))\nprint(len(fams), sum(len(f.samples) for f in fams))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the scrape (is prometheus_client installed? pip install prometheus_client): {}\n{scrape}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = String::from_utf8_lossy(&out.stdout);
    let families: usize = counts.split_whitespace().next().unwrap().parse().unwrap();
    assert!(families >= 8, "{counts}");
}

fn scrape(admin: std::net::SocketAddr) -> String {
    let r = get(admin, "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    r.text()
}

#[test]
fn thread_mode_counts_every_request_exactly_once() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let admin = dead_port();
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .workers(2)
        .with(move |c| c.admin = Some(admin))
        .start();
    assert!(eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(admin).is_ok()
    }));
    let before = scrape(admin);
    let n0 = sum(&before, "switchyard_requests_total");
    for _ in 0..37 {
        assert_eq!(get(lb.addr, "/").status, 200);
    }
    let after = scrape(admin);
    assert_eq!(
        sum(&after, "switchyard_requests_total") - n0,
        37.0,
        "{after}"
    );
    assert_eq!(
        sum(&after, "switchyard_request_duration_seconds_count"),
        37.0
    );
    parses_with_prometheus_client(&after);
    // Admin requests themselves are not counted.
    assert_eq!(sum(&scrape(admin), "switchyard_requests_total") - n0, 37.0);

    // The balancer's own answers are counted with a reason.
    let r = crate::support::client::raw(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n",
    );
    assert_eq!(r.status, 417);
    let s = scrape(admin);
    assert_eq!(
        sample(
            &s,
            "switchyard_local_responses_total{code=\"417\",reason=\"expectation_failed\"}"
        ),
        Some(1.0),
        "{s}"
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

#[test]
fn backend_up_drops_for_a_killed_backend() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let admin = dead_port();
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .probes(Duration::from_millis(100))
        .with(move |c| c.admin = Some(admin))
        .start();
    assert!(eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(admin).is_ok()
    }));
    let up = |s: &str| {
        sample(
            s,
            &format!("switchyard_backend_up{{backend=\"{}\"}}", b.addr),
        )
    };
    assert_eq!(up(&scrape(admin)), Some(1.0));
    b.kill();
    assert!(
        eventually(Duration::from_secs(3), || up(&scrape(admin)) == Some(0.0)),
        "backend_up never dropped"
    );
    let s = scrape(admin);
    let down = format!(
        "switchyard_health_transitions_total{{backend=\"{}\",to=\"down\"}}",
        b.addr
    );
    assert_eq!(sample(&s, &down), Some(1.0), "{s}");
    drop(lb);
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn process_mode_sums_over_workers_and_healthz_turns_503_while_draining() {
    let slow = TestBackend::start(|r| {
        if r.target == "/slow" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Reply::ok("ok")
    });
    let listen = dead_port();
    let admin = dead_port();
    let mut p = Proc(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "-l",
                &listen.to_string(),
                "-b",
                &slow.addr.to_string(),
                "-w",
                "2",
                "--mode",
                "process",
            ])
            .args(["--admin", &admin.to_string(), "--access-log"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(admin).is_ok()
    }));
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(listen).is_ok()
    }));
    let n0 = sum(&scrape(admin), "switchyard_requests_total");
    // Fresh connections: the kernel spreads them over both worker processes.
    for _ in 0..60 {
        assert_eq!(get(listen, "/").status, 200);
    }
    let s = scrape(admin);
    assert_eq!(sum(&s, "switchyard_requests_total") - n0, 60.0, "{s}");
    parses_with_prometheus_client(&s);

    // Drain with a request in flight: /healthz says 503 until the end.
    let inflight = std::thread::spawn(move || get(listen, "/slow").status);
    assert!(eventually(Duration::from_secs(5), || slow
        .requests()
        .iter()
        .any(|r| r.target == "/slow")));
    let t = Instant::now();
    Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || get(admin, "/healthz").status
            == 503),
        "healthz did not turn 503 while draining"
    );
    assert_eq!(inflight.join().unwrap(), 200);
    let status = loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));

    // One access-log line per request, in the documented shape.
    let log: Vec<String> = BufReader::new(p.0.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    let lines: Vec<&String> = log.iter().filter(|l| l.contains("\"GET /")).collect();
    assert_eq!(lines.len(), 61, "{log:#?}");
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
            && fields[8].trim_end_matches("ms").parse::<f64>().unwrap() >= 1400.0,
        "{slow_line}"
    );
}
