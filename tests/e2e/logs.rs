//! The application log as an operator ships it: JSON lines in a file, reopened on
//! SIGUSR1 after logrotate renamed it (the master and its workers alike).

use std::path::Path;
use std::time::Duration;

use crate::support::client::get;
use crate::support::process::{Proc, serving};
use crate::support::{dead_port, eventually};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn json_log_file_is_reopened_on_sigusr1() {
    let dir = std::env::temp_dir().join(format!("sy-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("switchyard.log");
    let listen = dead_port();
    let dead = dead_port();
    let path = dir.join("lb.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {listen}\nworkers: 2\nmode: process\nhealth: {{probes: false}}\n\
             retries: 0\nbackends: [{dead}]\nlog_format: json\nlog_file: switchyard.log\n"
        ),
    )
    .unwrap();
    let p = Proc::start(&["-c", path.to_str().unwrap()]);
    assert!(serving(listen));
    // A worker logs the failed attempt; the master logged its start.
    assert_eq!(get(listen, "/").status, 502);
    let has = |file: &Path, needle: &str| lines(file).iter().any(|l| l.contains(needle));
    assert!(
        eventually(Duration::from_secs(5), || has(
            &log,
            "backend attempt failed"
        )),
        "{:?} / stderr: {}",
        lines(&log),
        p.log()
    );
    for l in lines(&log) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        assert!(v["message"].is_string(), "{l}");
    }
    // The master says it serves once every worker accepts (maybe after the above).
    let serving_line = r#""message":"switchyard serving (process mode)""#;
    assert!(
        eventually(Duration::from_secs(5), || has(&log, serving_line)),
        "{:?}",
        lines(&log)
    );
    assert!(p.log().is_empty(), "stderr: {}", p.log());

    // logrotate: rename, then SIGUSR1. New lines (master's and workers') go to a new
    // file at the old path; the renamed one gets no more.
    let rotated = dir.join("switchyard.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    p.signal(libc::SIGUSR1);
    assert!(eventually(Duration::from_secs(5), || has(
        &log,
        "log file reopened"
    )));
    let before = lines(&rotated).len();
    // Each worker reopens too: both of them log into the new file.
    assert!(
        eventually(Duration::from_secs(5), || {
            let _ = get(listen, "/");
            lines(&log)
                .iter()
                .filter(|l| l.contains("log file reopened"))
                .count()
                >= 3
                && has(&log, "backend attempt failed")
        }),
        "{:?}",
        lines(&log)
    );
    assert_eq!(lines(&rotated).len(), before, "{:?}", lines(&rotated));
    for l in lines(&log) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `access_log: {path, format: json}`: one JSON object per request with the fields an
/// operator ships (client, request, status, bytes, duration, upstream address, status
/// and time, Host, User-Agent, X-Forwarded-For, request id), and SIGUSR1 reopens it.
#[test]
fn json_access_log_has_every_field_and_reopens() {
    use std::io::{Read, Write};
    let dir = std::env::temp_dir().join(format!("sy-access-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let be = crate::support::TestBackend::named("b");
    let listen = dead_port();
    let path = dir.join("lb.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {listen}\nworkers: 2\nmode: process\nhealth: {{probes: false}}\n\
             backends: [{}]\naccess_log: {{path: access.log, format: json}}\n",
            be.addr
        ),
    )
    .unwrap();
    let p = Proc::start(&["-c", path.to_str().unwrap()]);
    assert!(serving(listen));
    let send = |path: &str| {
        let mut s = std::net::TcpStream::connect(listen).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: probe/1.0\r\n\
             X-Forwarded-For: 203.0.113.7\r\nX-Request-Id: req-42\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    };
    send("/first?x=1");
    let parsed = |file: &Path| -> Vec<serde_json::Value> {
        lines(file)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    assert!(eventually(Duration::from_secs(5), || !lines(&log).is_empty()));
    let v = &parsed(&log)[0];
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(
        (v["method"].as_str(), v["target"].as_str()),
        (Some("GET"), Some("/first?x=1"))
    );
    assert_eq!(
        (v["status"].as_u64(), v["bytes"].as_u64()),
        (Some(200), Some(1))
    );
    assert_eq!(v["upstream_addr"], be.addr.to_string());
    assert_eq!(v["upstream_status"], 200);
    assert!(v["upstream_ms"].as_f64().unwrap() <= v["duration_ms"].as_f64().unwrap());
    assert_eq!(v["host"], "shop.example");
    assert_eq!(v["user_agent"], "probe/1.0");
    assert_eq!(v["x_forwarded_for"], "203.0.113.7");
    assert_eq!(v["request_id"], "req-42");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));

    // Rotated: the next lines go to a new file at the same path.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    p.signal(libc::SIGUSR1);
    assert!(
        eventually(Duration::from_secs(5), || {
            send("/second");
            parsed(&log).iter().any(|v| v["target"] == "/second")
        }),
        "{:?} / {:?}",
        lines(&log),
        lines(&rotated)
    );
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
