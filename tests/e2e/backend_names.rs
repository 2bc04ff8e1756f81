//! `backends[].name` end to end (the built binary, process mode, 2 workers): the name
//! shows as a `name` label beside `backend="host:port"` in /metrics, as `name` in
//! /backends, on the DOWN log line and as `backend_name` in the JSON access log; an
//! unnamed backend shows none of it; a SIGHUP reload renames, and says so.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::support::balancer::scrape;
use crate::support::client::get;
use crate::support::process::{Proc, serving};
use crate::support::{TestBackend, dead_port, eventually};

fn yaml(
    listen: SocketAddr,
    admin: SocketAddr,
    named: (SocketAddr, &str),
    plain: SocketAddr,
    dead: SocketAddr,
    access_log: &Path,
) -> String {
    format!(
        "listen: {listen}\nadmin: {admin}\nworkers: 2\nmode: process\n\
         health: {{interval: 100ms, timeout: 2s, unhealthy_threshold: 1}}\n\
         access_log: {{path: '{}', format: json}}\n\
         backends:\n  - address: {}\n    name: {}\n  - address: {plain}\n  \
         - {{address: {dead}, name: gone}}\n",
        access_log.display(),
        named.0,
        named.1
    )
}

/// The `/backends` entry of `backend`.
fn shown(admin: SocketAddr, backend: SocketAddr) -> serde_json::Value {
    let list = get(admin, "/backends").json();
    let list = list.as_array().expect("an array").clone();
    list.into_iter()
        .find(|b| b["address"] == backend.to_string())
        .unwrap_or_else(|| panic!("{backend} not in /backends"))
}

/// Every JSON line of the access log so far.
fn access_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_name_is_a_label_a_field_and_a_log_field_and_reloads() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let dead = dead_port();
    let (listen, admin) = (dead_port(), dead_port());
    let dir = std::env::temp_dir().join(format!("sy-names-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (watched, real_dir) = (dir.join("watched"), dir.join("real"));
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::create_dir_all(&real_dir).unwrap();
    // The config path is a symlink into another directory, and the access log is
    // written in a third: edits make no event in the watched directory, so the reload
    // below is SIGHUP's.
    let log = dir.join("access.log");
    let real = real_dir.join("lb.yaml");
    let config = |name: &str| yaml(listen, admin, (a.addr, name), b.addr, dead, &log);
    std::fs::write(&real, config("api-1")).unwrap();
    let path = watched.join("lb.yaml");
    std::os::unix::fs::symlink(&real, &path).unwrap();
    let p = Proc::with_config(&path);
    assert!(serving(listen) && serving(admin));

    // The dead one goes DOWN, and the line says which by name too.
    let down = p
        .wait_log(
            &["backend marked DOWN", &dead.to_string()],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no DOWN line for {dead}:\n{}", p.log()));
    assert!(down.contains("gone"), "{down}");

    // Traffic to both live backends (round-robin, the dead one skipped once down).
    let mut seen = (false, false);
    assert!(
        eventually(Duration::from_secs(10), || {
            match get(listen, "/").text().as_str() {
                "a" => seen.0 = true,
                "b" => seen.1 = true,
                _ => {}
            }
            seen.0 && seen.1
        }),
        "both backends should answer"
    );

    // /metrics: `name` right after `backend` for the named one, no `name` otherwise.
    let text = get(admin, "/metrics").text();
    let up_a = format!(
        "switchyard_backend_up{{backend=\"{}\",name=\"api-1\"}} 1",
        a.addr
    );
    let up_b = format!("switchyard_backend_up{{backend=\"{}\"}} 1", b.addr);
    let up_dead = format!("switchyard_backend_up{{backend=\"{dead}\",name=\"gone\"}} 0");
    for line in [&up_a, &up_b, &up_dead] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    let s = scrape(admin);
    let (addr_a, addr_b) = (a.addr.to_string(), b.addr.to_string());
    let with_name = [
        ("backend", addr_a.as_str()),
        ("name", "api-1"),
        ("code", "200"),
    ];
    assert!(s.value("switchyard_requests_total", &with_name) >= Some(1.0));
    let plain = [("backend", addr_b.as_str()), ("code", "200")];
    assert!(s.value("switchyard_requests_total", &plain) >= Some(1.0));
    let durations: Vec<_> = s
        .samples("switchyard_request_duration_seconds_count")
        .filter(|x| x.label("backend") == Some(addr_a.as_str()))
        .collect();
    assert_eq!(durations.len(), 1, "{text}");
    assert_eq!(durations[0].label("name"), Some("api-1"), "{text}");

    // /backends: a string, or null.
    assert_eq!(shown(admin, a.addr)["name"], "api-1");
    assert!(shown(admin, b.addr)["name"].is_null());
    assert_eq!(shown(admin, dead)["name"], "gone");

    // The JSON access log: backend_name beside upstream_addr.
    assert!(eventually(Duration::from_secs(5), || {
        let lines = access_lines(&log);
        let to = |addr: &str| lines.iter().any(|l| l["upstream_addr"] == addr);
        to(&addr_a) && to(&addr_b)
    }));
    for l in access_lines(&log) {
        if l["upstream_addr"] == addr_a {
            assert_eq!(l["backend_name"], "api-1", "{l}");
        } else {
            assert!(l["backend_name"].is_null(), "{l}");
        }
    }

    // SIGHUP after a rename: the new name everywhere, the old one gone, the reload line
    // saying so.
    std::fs::write(&real, config("api-2")).unwrap();
    p.signal(libc::SIGHUP);
    let reloaded = p
        .wait_log(
            &["configuration reloaded", "trigger=\"SIGHUP\""],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no reload:\n{}", p.log()));
    assert!(
        reloaded.contains(&format!("backends {} name api-1->api-2", a.addr)),
        "{reloaded}"
    );
    assert!(
        eventually(Duration::from_secs(5), || shown(admin, a.addr)["name"]
            == "api-2"),
        "/backends did not show the new name"
    );
    let text = get(admin, "/metrics").text();
    let renamed = format!(
        "switchyard_backend_up{{backend=\"{}\",name=\"api-2\"}} 1",
        a.addr
    );
    assert!(text.lines().any(|l| l == renamed), "{text}");
    assert!(!text.contains("api-1"), "{text}");
    // The health state stayed with the address: still up, no new transition.
    let s = scrape(admin);
    let renamed_to_up = [
        ("backend", addr_a.as_str()),
        ("name", "api-2"),
        ("to", "up"),
    ];
    assert_eq!(
        s.value("switchyard_health_transitions_total", &renamed_to_up),
        Some(0.0)
    );

    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
