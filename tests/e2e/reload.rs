//! Reloads (file change, SIGHUP, in-process) and graceful shutdown.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use switchyard::backend::parse_spec;

use crate::support::balancer::scrape;
use crate::support::client::get;
use crate::support::process::{Proc, serving};
use crate::support::{Balancer, Conn, Gate, Reply, Scratch, TestBackend, dead_port, eventually};

fn yaml(listen: std::net::SocketAddr, backends: &[std::net::SocketAddr]) -> String {
    let mut s = format!(
        "listen: {listen}\nworkers: 2\nmode: thread\nhealth:\n  probes: false\nbackends:\n"
    );
    for b in backends {
        s.push_str(&format!("  - address: {b}\n"));
    }
    s
}

/// Writes `text` to a new file and renames it over `path`, as editors do.
fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A client loop in the background, counting failures, until `stop`.
fn client_loop(
    addr: std::net::SocketAddr,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<(usize, usize)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let h = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        let mut c = Conn::open(addr);
        while !s.load(SeqCst) {
            if c.get("/").status == 200 {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        (ok, failed)
    });
    (stop, h)
}

#[test]
fn rename_over_reload_adds_a_backend_without_errors() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let dir = Scratch::new("reload");
    let path = dir.join("lb.yaml");
    let listen = dead_port();
    std::fs::write(&path, yaml(listen, &[a.addr])).unwrap();
    let mut p = Proc::with_config(&path);
    assert!(serving(listen));
    let (stop, looper) = client_loop(listen);
    assert!(eventually(Duration::from_secs(5), || a.request_count() > 20));
    // Also asks for a new listen address: that part needs a restart and is refused.
    let other = dead_port();
    rename_over(&path, &yaml(other, &[a.addr, b.addr]));
    assert!(
        eventually(Duration::from_secs(5), || b.request_count() > 20),
        "the new backend never got traffic"
    );
    stop.store(true, SeqCst);
    let (ok, failed) = looper.join().unwrap();
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(
        std::net::TcpStream::connect(other).is_err(),
        "listen must not change on reload"
    );
    p.signal(libc::SIGTERM);
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        log.matches("listen addresses changed: restart switchyard to apply them")
            .count(),
        1,
        "one restart-needed message: {log}"
    );
}

/// Process mode, 2 workers: a restart-only change is warned about once (by the master),
/// not once per process, and the reload is one log line saying what changed.
#[test]
fn restart_only_changes_are_warned_about_once() {
    let a = TestBackend::named("a");
    let dir = Scratch::new("warn-once");
    let path = dir.join("lb.yaml");
    let listen = dead_port();
    let process = |l| yaml(l, &[a.addr]).replace("mode: thread", "mode: process");
    std::fs::write(&path, process(listen)).unwrap();
    let mut p = Proc::with_config(&path);
    assert!(serving(listen));
    rename_over(
        &path,
        &process(dead_port()).replace("probes: false", "probes: false\n  interval: 3s"),
    );
    assert!(
        p.wait_log(&["configuration reloaded"], Duration::from_secs(5))
            .is_some()
    );
    assert_eq!(get(listen, "/").status, 200);
    p.signal(libc::SIGTERM);
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(log.matches("listen addresses changed").count(), 1, "{log}");
    // One line for the reload, saying what changed.
    assert_eq!(log.matches("configuration reloaded").count(), 1, "{log}");
    assert!(log.contains("changed=health"), "{log}");
}

#[test]
fn sighup_reloads_what_the_watcher_cannot_see() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    // The config path is a symlink into another directory: edits there make no event
    // in the watched directory, so only SIGHUP reloads them.
    let watched = Scratch::new("hup-watched");
    let real_dir = Scratch::new("hup-real");
    let real = real_dir.join("real.yaml");
    let listen = dead_port();
    std::fs::write(&real, yaml(listen, &[a.addr])).unwrap();
    let path = watched.join("lb.yaml");
    std::os::unix::fs::symlink(&real, &path).unwrap();
    let p = Proc::with_config(&path);
    assert!(serving(listen));
    std::fs::write(&real, yaml(listen, &[b.addr])).unwrap();
    p.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || get(listen, "/").text() == "b"),
        "SIGHUP did not reload"
    );
}

#[test]
fn invalid_edit_keeps_the_old_config() {
    let a = TestBackend::named("a");
    let dir = Scratch::new("invalid");
    let path = dir.join("lb.yaml");
    let listen = dead_port();
    std::fs::write(&path, yaml(listen, &[a.addr])).unwrap();
    let mut p = Proc::with_config(&path);
    assert!(serving(listen));
    let b = TestBackend::named("b");
    // Invalid (and pointing at `b`, so taking it would show).
    let bad = format!("{}strategy: fastest\n", yaml(listen, &[b.addr]));
    rename_over(&path, &bad);
    // The rejection names the file, line and key: the start-up line, which also
    // mentions the strategy, cannot pass for it.
    let line = bad.lines().position(|l| l.starts_with("strategy")).unwrap() + 1;
    let rejected = p.wait_log(
        &[
            "configuration rejected",
            &format!("lb.yaml:{line}: strategy"),
        ],
        Duration::from_secs(10),
    );
    assert!(rejected.is_some(), "no rejection logged: {}", p.log());
    // The old config keeps serving.
    for _ in 0..4 {
        assert_eq!(get(listen, "/").text(), "a");
    }
    // A valid edit afterwards is taken.
    rename_over(&path, &yaml(listen, &[b.addr]));
    assert!(eventually(Duration::from_secs(5), || get(listen, "/")
        .text()
        == "b"));
    p.signal(libc::SIGTERM);
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
}

/// Reloads that meet the input limits (a file nested 100,000 brackets deep; the config
/// path swapped for a symlink to /dev/zero) are refused with a log line naming the
/// file, and the running config answers every request meanwhile; a good file is then
/// taken as usual. In both modes: thread mode reloads in the control loop, process mode
/// in the master.
#[test]
fn deep_and_endless_reloads_are_refused_and_the_old_config_serves() {
    for mode in ["thread", "process"] {
        let a = TestBackend::named("a");
        let b = TestBackend::named("b");
        let dir = Scratch::new(&format!("limits-{mode}"));
        let path = dir.join("lb.yaml");
        let listen = dead_port();
        let file =
            |backend| yaml(listen, &[backend]).replace("mode: thread", &format!("mode: {mode}"));
        std::fs::write(&path, file(a.addr)).unwrap();
        let mut p = Proc::with_config(&path);
        assert!(serving(listen));
        let (stop, looper) = client_loop(listen);
        assert!(eventually(Duration::from_secs(5), || a.request_count() > 5));

        // Deep: a valid file (pointing at `b`, so taking it would show) plus one key.
        let good = file(b.addr);
        let line = good.lines().count() + 1;
        let deep = format!(
            "{good}extra: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        rename_over(&path, &deep);
        let rejected = p.wait_log(
            &[
                "configuration rejected",
                &format!("lb.yaml:{line}: extra: nested more than 64 levels deep"),
            ],
            Duration::from_secs(10),
        );
        assert!(
            rejected.is_some(),
            "{mode}: no rejection logged: {}",
            p.log()
        );

        // Endless: the path becomes a symlink to /dev/zero.
        let tmp = dir.join("zero.tmp");
        std::os::unix::fs::symlink("/dev/zero", &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let rejected = p.wait_log(
            &["configuration rejected", "lb.yaml: larger than 16 MiB"],
            Duration::from_secs(10),
        );
        assert!(
            rejected.is_some(),
            "{mode}: no rejection logged: {}",
            p.log()
        );
        // SIGHUP reads it again, and is refused again.
        p.signal(libc::SIGHUP);
        assert!(
            eventually(Duration::from_secs(10), || p
                .log()
                .matches("lb.yaml: larger than 16 MiB")
                .count()
                >= 2),
            "{mode}: SIGHUP not refused: {}",
            p.log()
        );

        stop.store(true, SeqCst);
        let (ok, failed) = looper.join().unwrap();
        assert_eq!(failed, 0, "{mode}: {failed} failed of {}", ok + failed);
        assert_eq!(b.request_count(), 0, "{mode}: a refused config was taken");
        for _ in 0..4 {
            assert_eq!(get(listen, "/").text(), "a");
        }

        // A good file afterwards is taken.
        rename_over(&path, &good);
        assert!(
            eventually(Duration::from_secs(5), || get(listen, "/").text() == "b"),
            "{mode}: the good file after the refused ones was not taken"
        );
        p.signal(libc::SIGTERM);
        let (code, log) = p.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{mode}: {log}");
    }
}

/// SIGTERM: idle keep-alive connections close while the request in flight (held at
/// the backend) is still being waited for; it then finishes, and the process exits 0.
#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let gate = Gate::new();
    let g = gate.clone();
    let slow = TestBackend::start(move |r| {
        if r.target == "/slow" {
            g.wait();
        }
        Reply::ok("finished")
    });
    let (listen, admin) = (dead_port(), dead_port());
    let mut p = Proc::start(&[
        "-l",
        &listen.to_string(),
        "-b",
        &slow.addr.to_string(),
        "--mode",
        "thread",
        "-w",
        "2",
        "--admin",
        &admin.to_string(),
    ]);
    assert!(serving(listen) && serving(admin));
    // An idle keep-alive client (it made a request, and has parked): closed by the
    // drain.
    let mut idle = Conn::open(listen);
    assert_eq!(idle.get("/").status, 200);
    assert!(eventually(Duration::from_secs(5), || scrape(admin)
        .value("switchyard_connections_parked", &[])
        == Some(1.0)));
    let client = std::thread::spawn(move || get(listen, "/slow"));
    assert!(eventually(Duration::from_secs(5), || slow.count("/slow") == 1));
    p.signal(libc::SIGTERM);
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "the drain left an idle connection open"
    );
    assert!(p.is_running(), "exited with a request in flight");
    gate.open();
    let r = client.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "finished"));
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn drain_gives_up_after_the_drain_timeout() {
    let hang = TestBackend::start(|_| Reply::Hang);
    let dir = Scratch::new("drain");
    let path = dir.join("lb.yaml");
    let listen = dead_port();
    std::fs::write(
        &path,
        format!("{}timeouts:\n  drain: 500ms\n", yaml(listen, &[hang.addr])),
    )
    .unwrap();
    let mut p = Proc::with_config(&path);
    assert!(serving(listen));
    let _stuck = std::thread::spawn(move || {
        let mut c = Conn::open(listen);
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        c.read_to_close()
    });
    assert!(eventually(Duration::from_secs(5), || hang.request_count() == 1));
    let t = Instant::now();
    p.signal(libc::SIGTERM);
    let (code, _) = p.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "did not wait for the request"
    );
    hang.kill();
}

/// In-process: a reload that reorders and adds backends keeps the health state and
/// the pooled connections of the ones it keeps. Every kept backend moves, and the
/// down one's old position goes to a new backend: state kept by position would show.
#[test]
fn reload_keeps_health_and_pools_of_unchanged_backends() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let c = TestBackend::named("c");
    let lb = Balancer::new()
        .backend(a.addr)
        .backend(b.addr)
        .admin()
        .start();
    let mut conn = Conn::open(lb.addr);
    for _ in 0..10 {
        conn.get("/");
    }
    let a_conns = a.connections();
    lb.health().set_up(1, false); // b is down
    let specs = [b.addr, c.addr, a.addr];
    lb.reload(move |cfg| {
        let set = specs.iter().map(|s| {
            let spec = parse_spec(&s.to_string()).unwrap();
            switchyard::demo::backend_at(*s, spec.weight)
        });
        cfg.backends = switchyard::backend::BackendSet::new(set.collect());
    });
    let up = |addr: std::net::SocketAddr| {
        let list = get(lb.admin_addr(), "/backends").json();
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == addr.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("{addr} not in {list}"));
        entry["up"].as_bool().unwrap()
    };
    assert!(!up(b.addr), "b (now first) must stay down");
    assert!(up(c.addr), "c (new, where b was) starts up");
    assert!(up(a.addr), "a (now last) stays up");
    assert!(eventually(Duration::from_secs(5), || {
        conn.get("/");
        c.request_count() > 0
    }));
    for _ in 0..10 {
        assert_ne!(conn.get("/").text(), "b");
    }
    assert_eq!(
        a.connections(),
        a_conns,
        "a's pooled connection was not kept"
    );
}

/// In-process: a request in flight to a backend that a reload removes completes.
#[test]
fn removed_backend_finishes_its_requests() {
    let slow = TestBackend::start(|_| {
        std::thread::sleep(Duration::from_millis(500));
        Reply::ok("slow")
    });
    let other = TestBackend::named("other");
    let lb = Balancer::new().backend(slow.addr).start();
    let addr = lb.addr;
    let inflight = std::thread::spawn(move || get(addr, "/"));
    assert!(eventually(Duration::from_secs(5), || slow.request_count() == 1));
    let o = other.addr;
    lb.reload(move |cfg| {
        cfg.backends =
            switchyard::backend::BackendSet::new(vec![switchyard::demo::backend_at(o, 1)]);
    });
    assert_eq!(inflight.join().unwrap().text(), "slow");
    assert!(eventually(Duration::from_secs(5), || get(lb.addr, "/")
        .text()
        == "other"));
    assert_eq!(slow.request_count(), 1);
}

/// A Kubernetes ConfigMap volume: `lb.yaml -> ..data/lb.yaml`, `..data -> ..v1`; an
/// update writes `..v2` and atomically renames a new `..data` symlink over the old one.
#[test]
fn configmap_symlink_swap_reloads() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let dir = Scratch::new("configmap");
    let listen = dead_port();
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/lb.yaml"), yaml(listen, &[a.addr])).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/lb.yaml", dir.join("lb.yaml")).unwrap();
    let _p = Proc::start(&["-c", dir.join("lb.yaml").to_str().unwrap()]);
    assert!(serving(listen));
    assert_eq!(get(listen, "/").text(), "a");
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/lb.yaml"), yaml(listen, &[b.addr])).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || get(listen, "/").text() == "b"),
        "symlink swap not picked up"
    );
}

/// A reload that adds a backend with certificate verification off warns about it, as
/// a start does; backends already insecure are not warned about again.
#[test]
fn reload_warns_about_a_newly_insecure_backend() {
    let a = TestBackend::named("a");
    let dir = Scratch::new("insecure");
    let path = dir.join("lb.yaml");
    let listen = dead_port();
    let insecure =
        |port: u16| format!("  - address: https://localhost:{port}\n    tls: {{insecure: true}}\n");
    let first = format!(
        "{}{}",
        yaml(listen, &[a.addr]),
        insecure(dead_port().port())
    );
    std::fs::write(&path, &first).unwrap();
    let mut p = Proc::with_config(&path);
    assert!(serving(listen));
    // Drop `a`, keep the first insecure backend, add a second one.
    let kept = first
        .lines()
        .skip_while(|l| !l.contains("https"))
        .collect::<Vec<_>>();
    let second = format!(
        "{}{}\n{}",
        yaml(listen, &[]),
        kept.join("\n"),
        insecure(dead_port().port())
    );
    rename_over(&path, &second);
    assert!(eventually(Duration::from_secs(5), || (0..6).all(|_| get(
        listen, "/"
    )
    .text()
        != "a")));
    p.signal(libc::SIGTERM);
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        log.matches("verification is OFF").count(),
        2,
        "one warning at start, one for the backend the reload added: {log}"
    );
}

/// An edit written into the file itself (same inode, as `echo >` and many editors do)
/// reloads like a rename over it does.
#[test]
fn in_place_edit_reloads() {
    use std::os::unix::fs::MetadataExt;
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let dir = Scratch::new("inplace");
    let path = dir.join("lb.yaml");
    let listen = dead_port();
    std::fs::write(&path, yaml(listen, &[a.addr])).unwrap();
    let _p = Proc::with_config(&path);
    assert!(serving(listen));
    assert_eq!(get(listen, "/").text(), "a");
    let inode = std::fs::metadata(&path).unwrap().ino();
    std::fs::write(&path, yaml(listen, &[b.addr])).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().ino(),
        inode,
        "not an in-place edit"
    );
    assert!(
        eventually(Duration::from_secs(5), || get(listen, "/").text() == "b"),
        "in-place edit not picked up"
    );
}

/// Certificate files are read again on a reload (SIGHUP: the config file itself is
/// unchanged); a reload whose certificate does not load is rejected whole, and the
/// old certificate (and the rest of the old config) keeps serving.
#[test]
fn certificates_reload_and_a_bad_one_is_rejected_whole() {
    use crate::support::tls::{TestCa, client_config, https_get};
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let dir = Scratch::new("certs");
    let ca = TestCa::new(&dir);
    let first = ca.server_cert();
    first.write(&dir, "lb");
    let path = dir.join("lb.yaml");
    let listen = dead_port();
    // Certificate paths are relative to the config file.
    let config = |backend: std::net::SocketAddr| {
        format!(
            "listen:\n  address: {listen}\n  tls:\n    certificates:\n      - {{cert: lb.pem, key: lb.key}}\nworkers: 1\nmode: thread\nhealth:\n  probes: false\nbackends:\n  - address: {backend}\n"
        )
    };
    std::fs::write(&path, config(a.addr)).unwrap();
    let mut p = Proc::with_config(&path);
    assert!(serving(listen));
    let client = client_config(&ca, &[b"http/1.1"]);
    let fetch = || https_get(listen, Arc::clone(&client), "localhost", "/");
    assert_eq!(fetch(), (first.chain[0].clone(), "a".to_string()));

    let second = ca.server_cert();
    second.write(&dir, "lb");
    p.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || fetch().0 == second.chain[0]),
        "the new certificate was not loaded"
    );

    // A certificate file that does not load, with a backend change in the same edit.
    std::fs::write(dir.join("lb.pem"), "not a certificate\n").unwrap();
    rename_over(&path, &config(b.addr));
    let rejected = p.wait_log(
        &["configuration rejected", "listen.tls"],
        Duration::from_secs(10),
    );
    assert!(rejected.is_some(), "no rejection logged: {}", p.log());
    for _ in 0..3 {
        assert_eq!(fetch(), (second.chain[0].clone(), "a".to_string()));
    }
    p.signal(libc::SIGTERM);
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
}

/// Flags keep overriding the file after a reload: `-b` still replaces the file's
/// backends and `-s` its strategy, while the rest of the file (here the sticky
/// cookie's name) reloads.
#[test]
fn flags_keep_overriding_the_file_after_a_reload() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let c = TestBackend::named("c");
    let dir = Scratch::new("flags");
    let path = dir.join("lb.yaml");
    let listen = dead_port();
    let file = |strategy: &str, cookie: &str, backend: std::net::SocketAddr| {
        format!(
            "{}strategy: {strategy}\nsticky:\n  cookie: {cookie}\n",
            yaml(listen, &[backend])
        )
    };
    std::fs::write(&path, file("round-robin", "first", a.addr)).unwrap();
    let b_flag = b.addr.to_string();
    let _p = Proc::start(&["-c", path.to_str().unwrap(), "-b", &b_flag, "-s", "sticky"]);
    assert!(serving(listen));
    let cookie_name = |r: &crate::support::client::Resp| {
        r.header("set-cookie")
            .and_then(|c| c.split_once('='))
            .map(|(n, _)| n.to_string())
    };
    let r = get(listen, "/");
    assert_eq!(r.text(), "b");
    assert_eq!(cookie_name(&r).as_deref(), Some("first"));

    rename_over(&path, &file("random", "second", c.addr));
    assert!(
        eventually(Duration::from_secs(5), || cookie_name(&get(listen, "/"))
            .as_deref()
            == Some("second")),
        "the reload was not applied"
    );
    for _ in 0..4 {
        let r = get(listen, "/");
        assert_eq!(r.text(), "b", "-b no longer overrides the file");
        assert_eq!(
            cookie_name(&r).as_deref(),
            Some("second"),
            "-s sticky no longer overrides the file"
        );
    }
    assert_eq!(c.request_count(), 0);
}

/// `workers`, `mode`, `admin` and `limits` need a restart: a reload that changes them
/// says so and keeps the running values (two worker processes, the first admin
/// address, the old request-line limit), while the rest of it (the backend) applies.
#[test]
fn restart_only_keys_keep_their_values_over_a_reload() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let dir = Scratch::new("restart-only");
    let path = dir.join("lb.yaml");
    let (listen, admin1, admin2) = (dead_port(), dead_port(), dead_port());
    let file = |workers: u32,
                mode: &str,
                admin: std::net::SocketAddr,
                line: u32,
                backend: std::net::SocketAddr| {
        format!(
            "listen: {listen}\nworkers: {workers}\nmode: {mode}\nadmin: {admin}\nlimits:\n  request_line: {line}\nhealth:\n  probes: false\nbackends:\n  - address: {backend}\n"
        )
    };
    std::fs::write(&path, file(2, "process", admin1, 1024, a.addr)).unwrap();
    let mut p = Proc::with_config(&path);
    assert!(serving(listen) && serving(admin1));
    assert!(eventually(Duration::from_secs(5), || p.workers().len() == 2));
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(1500));
    let status = || crate::support::client::raw(listen, long_line.as_bytes()).status;
    assert_eq!(status(), 414);

    rename_over(&path, &file(3, "thread", admin2, 4096, b.addr));
    assert!(
        eventually(Duration::from_secs(5), || get(listen, "/").text() == "b"),
        "the reload was not applied"
    );
    for key in ["workers", "mode", "admin", "limits"] {
        assert!(
            p.wait_log(
                &[&format!("{key} changed: restart switchyard")],
                Duration::from_secs(5)
            )
            .is_some(),
            "no restart-needed message for {key}: {}",
            p.log()
        );
    }
    assert_eq!(p.workers().len(), 2, "workers: {:?}", p.children());
    assert_eq!(
        status(),
        414,
        "the request-line limit changed without a restart"
    );
    assert_eq!(get(admin1, "/healthz").status, 200);
    assert!(
        std::net::TcpStream::connect(admin2).is_err(),
        "the admin listener moved"
    );
    p.signal(libc::SIGTERM);
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
}
