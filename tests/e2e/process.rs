//! Process mode: a master, forked workers and a prober, as a user runs them.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::support::balancer::scrape;
use crate::support::client::get;
use crate::support::process::{Proc, kill, serving};
use crate::support::{Conn, Gate, Reply, TestBackend, dead_port, eventually};

/// Process mode, `workers` workers on `listen` in front of `backend`, plus `extra`.
fn proxying(
    listen: std::net::SocketAddr,
    backend: std::net::SocketAddr,
    workers: u32,
    extra: &[&str],
) -> Proc {
    let (l, b, w) = (listen.to_string(), backend.to_string(), workers.to_string());
    let mut args = vec!["-l", &l, "-b", &b, "-w", &w];
    args.extend_from_slice(extra);
    master(&args)
}

/// The binary in process mode with `args`.
fn master(args: &[&str]) -> Proc {
    let mut args = args.to_vec();
    args.extend_from_slice(&["--mode", "process"]);
    Proc::start(&args)
}

#[test]
fn workers_are_pinned_children_and_a_killed_one_is_replaced() {
    let be = TestBackend::named("a");
    let listen = dead_port();
    let m = proxying(listen, be.addr, 2, &[]);
    assert!(serving(listen));
    assert!(
        eventually(Duration::from_secs(5), || m.workers().len() == 2),
        "{:?}",
        m.children()
    );
    // (A child takes its name just after the fork: wait for it.)
    let probers = || {
        m.children()
            .iter()
            .filter(|(_, c)| c == "switchyard-prb")
            .count()
    };
    assert!(
        eventually(Duration::from_secs(5), || probers() == 1),
        "one prober process: {:?}",
        m.children()
    );
    let workers = m.workers();
    // Each pins itself just after taking its name.
    let cpus = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list"))
            .unwrap_or_default()
            .to_string()
    };
    for (i, &pid) in workers.iter().enumerate() {
        assert!(
            eventually(Duration::from_secs(5), || {
                let c = cpus(pid);
                !c.is_empty() && !c.contains(',') && !c.contains('-')
            }),
            "worker {i} not pinned to one CPU: {}",
            cpus(pid)
        );
    }

    // A client loop, a new connection per request, while one worker is SIGKILLed.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let (s, f, o) = (Arc::clone(&stop), Arc::clone(&failed), Arc::clone(&ok));
    let looper = std::thread::spawn(move || {
        while !s.load(SeqCst) {
            match std::panic::catch_unwind(|| get(listen, "/").status) {
                Ok(200) => o.fetch_add(1, SeqCst),
                _ => f.fetch_add(1, SeqCst),
            };
        }
    });
    assert!(eventually(Duration::from_secs(5), || ok.load(SeqCst) > 50));
    let victim = workers[0];
    assert!(kill(victim as i32, libc::SIGKILL));
    // The contract says within a second; the bound is generous for a loaded machine
    // (the master replaces a first death at once, with no back-off).
    assert!(
        eventually(Duration::from_secs(5), || {
            let w = m.workers();
            w.len() == 2 && !w.contains(&victim)
        }),
        "no replacement: {:?}",
        m.children()
    );
    assert!(
        !m.log().contains("backing off"),
        "a first death is replaced at once: {}",
        m.log()
    );
    let before = ok.load(SeqCst);
    assert!(eventually(Duration::from_secs(5), || ok.load(SeqCst) > before + 100));
    stop.store(true, SeqCst);
    looper.join().unwrap();
    let failed = failed.load(SeqCst);
    // Only requests on the killed worker's own connections may fail.
    assert!(
        failed <= 3,
        "{failed} requests failed of {}",
        ok.load(SeqCst) + failed
    );
}

#[test]
fn process_mode_reloads_and_drains() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let gate = Gate::new();
    let g = gate.clone();
    let slow = TestBackend::start(move |r| {
        if r.target == "/slow" {
            g.wait();
        }
        Reply::ok("slow")
    });
    let dir = crate::support::Scratch::new("switchyard-proc");
    let path = dir.join("lb.yaml");
    let listen = dead_port();
    let yaml = |backends: &[std::net::SocketAddr]| {
        let mut s = format!(
            "listen: {listen}\nworkers: 2\nhealth:\n  interval: 100ms\n  timeout: 2s\nbackends:\n"
        );
        for x in backends {
            s.push_str(&format!("  - {x}\n"));
        }
        s
    };
    std::fs::write(&path, yaml(&[a.addr])).unwrap();
    let mut m = master(&["-c", path.to_str().unwrap()]);
    assert!(serving(listen));
    assert_eq!(get(listen, "/").text(), "a");

    // Rename-over reload reaches every worker: only b answers afterwards.
    let tmp = dir.join("lb.yaml.new");
    std::fs::write(&tmp, yaml(&[b.addr, slow.addr])).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        (0..6).all(|_| get(listen, "/").text() != "a")
    }));

    // Probes run once per process: about one per 100 ms, not one per worker.
    let before = b.request_count();
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(1000)); // the measurement window itself
    let probes = b.requests()[before..]
        .iter()
        .filter(|r| {
            r.header("user-agent")
                .is_some_and(|u| u.contains("switchyard"))
        })
        .count();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        (probes as f64) < 14.0 * secs,
        "{probes} probes in {secs:.1}s: probing per worker?"
    );
    assert!(probes >= 3, "{probes} probes");

    // SIGTERM with a request in flight (held at the backend): the drain waits for it,
    // it completes, the master exits 0.
    let client = std::thread::spawn(move || {
        let mut c = crate::support::Conn::open(listen);
        // Keep asking until the round-robin lands on the slow backend.
        loop {
            let r = c.get("/slow");
            if r.text() == "slow" {
                return r.status;
            }
        }
    });
    assert!(eventually(Duration::from_secs(5), || slow
        .requests()
        .iter()
        .any(|r| r.target == "/slow")));
    m.signal(libc::SIGTERM);
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            listen
        )
        .is_err()),
        "still accepting after SIGTERM"
    );
    assert!(m.is_running(), "exited with a request in flight");
    gate.open();
    assert_eq!(client.join().unwrap(), 200);
    let (code, log) = m.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("configuration reloaded"), "{log}");
}

/// One GET on a fresh connection that must complete within `within`.
fn get_within(addr: std::net::SocketAddr, path: &str, within: Duration) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, within).ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// The master keeps every worker's listening socket, and a replacement serves the same
/// one: connections that queued on it while its worker was dead wait for the
/// replacement instead of being reset. A client opening a new connection per request
/// loses at most the one request the killed worker had accepted, per kill. (Before,
/// the replacement bound a new socket and each kill cost about 12 requests.)
#[test]
fn killed_workers_lose_only_what_they_had_accepted() {
    let be = TestBackend::named("a");
    let listen = dead_port();
    let m = proxying(listen, be.addr, 2, &[]);
    assert!(serving(listen));
    assert!(eventually(Duration::from_secs(5), || m.workers().len() == 2));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let (s, f, o) = (Arc::clone(&stop), Arc::clone(&failed), Arc::clone(&ok));
    let looper = std::thread::spawn(move || {
        while !s.load(SeqCst) {
            match std::panic::catch_unwind(|| get(listen, "/").status) {
                Ok(200) => o.fetch_add(1, SeqCst),
                _ => f.fetch_add(1, SeqCst),
            };
        }
    });
    // When each worker pid was first seen: a victim must have lived over a second, or
    // the master would (rightly) back off as from a crash loop.
    let mut seen: std::collections::HashMap<u32, Instant> = Default::default();
    const KILLS: usize = 20;
    for k in 0..KILLS {
        let before = ok.load(SeqCst);
        assert!(
            eventually(Duration::from_secs(10), || {
                let w = m.workers();
                for &p in &w {
                    seen.entry(p).or_insert_with(Instant::now);
                }
                w.len() == 2 && ok.load(SeqCst) > before + 20
            }),
            "kill {k}: workers {:?}, {} ok, {} failed",
            m.children(),
            ok.load(SeqCst),
            failed.load(SeqCst)
        );
        let (victim, born) = m
            .workers()
            .into_iter()
            .filter_map(|p| seen.get(&p).map(|t| (p, *t)))
            .min_by_key(|(_, t)| *t)
            .unwrap();
        let age = born.elapsed();
        if age < Duration::from_millis(1100) {
            std::thread::sleep(Duration::from_millis(1100) - age);
        }
        assert!(kill(victim as i32, libc::SIGKILL));
    }
    let before = ok.load(SeqCst);
    assert!(eventually(Duration::from_secs(10), || ok.load(SeqCst) > before + 50));
    stop.store(true, SeqCst);
    looper.join().unwrap();
    let failed = failed.load(SeqCst);
    assert!(
        failed <= KILLS,
        "{failed} requests failed over {KILLS} kills, of {}",
        ok.load(SeqCst) + failed
    );
    assert!(!m.log().contains("backing off"), "{}", m.log());
}

/// Connections queued on a worker's socket when it dies are served by its replacement:
/// the worker is stopped (so it accepts nothing), five requests are sent on new
/// connections, and only then is it killed. Every one is answered.
#[test]
fn connections_queued_on_a_killed_worker_are_served_by_its_replacement() {
    use std::io::{Read, Write};
    let be = TestBackend::named("a");
    let listen = dead_port();
    let m = proxying(listen, be.addr, 1, &[]);
    assert!(serving(listen));
    assert!(eventually(Duration::from_secs(5), || m.workers().len() == 1));
    let victim = m.workers()[0];
    assert!(kill(victim as i32, libc::SIGSTOP));
    let mut queued: Vec<std::net::TcpStream> = (0..5)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(listen).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(
                c,
                "GET /{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            c
        })
        .collect();
    assert!(kill(victim as i32, libc::SIGKILL));
    for (i, c) in queued.iter_mut().enumerate() {
        let mut answer = String::new();
        let read = c.read_to_string(&mut answer);
        assert!(
            read.is_ok() && answer.starts_with("HTTP/1.1 200"),
            "queued connection {i}: {read:?} {answer:?}"
        );
    }
}

/// Regression: a worker used to keep the listening sockets of the workers forked after
/// it, so a killed worker's socket stayed in the SO_REUSEPORT group with nobody
/// accepting, and new connections hung.
#[test]
fn killed_worker_leaves_no_orphan_listener() {
    let be = TestBackend::named("a");
    let listen = dead_port();
    let m = proxying(listen, be.addr, 3, &[]);
    assert!(serving(listen));
    assert!(eventually(Duration::from_secs(5), || m.workers().len() == 3));
    let victim = *m.workers().last().unwrap();
    assert!(kill(victim as i32, libc::SIGKILL));
    assert!(eventually(Duration::from_secs(5), || {
        let w = m.workers();
        w.len() == 3 && !w.contains(&victim)
    }));
    // An orphan listener would take about a third of new connections and never answer
    // them: the first one it takes fails this (a generous bound, met in milliseconds).
    for i in 0..40 {
        assert_eq!(
            get_within(listen, "/", Duration::from_secs(5)),
            Some(200),
            "connection {i} hung after a worker was replaced"
        );
    }
}

/// Regression: replacement children used to steal the master's signals. After every
/// child has been replaced, SIGHUP and SIGTERM must still reach the master.
#[test]
fn master_keeps_its_signals_after_replacing_children() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let dir = crate::support::Scratch::new("switchyard-sig");
    // The config path is a symlink into another directory, so only SIGHUP can reload it.
    let real = dir.join("real.yaml");
    let link_dir = dir.join("watched");
    std::fs::create_dir_all(&link_dir).unwrap();
    let path = link_dir.join("lb.yaml");
    let listen = dead_port();
    let yaml =
        |x: std::net::SocketAddr| format!("listen: {listen}\nworkers: 2\nbackends:\n  - {x}\n");
    std::fs::write(&real, yaml(a.addr)).unwrap();
    let _ = std::fs::remove_file(&path);
    std::os::unix::fs::symlink(&real, &path).unwrap();
    let mut m = master(&["-c", path.to_str().unwrap()]);
    assert!(serving(listen));
    assert!(eventually(Duration::from_secs(5), || m.children().len() == 3));
    for (pid, _) in m.children() {
        assert!(kill(pid as i32, libc::SIGKILL));
    }
    assert!(eventually(Duration::from_secs(10), || m.children().len()
        == 3
        && get_within(listen, "/", Duration::from_secs(3)) == Some(200)));
    std::fs::write(&real, yaml(b.addr)).unwrap();
    m.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || get(listen, "/").text() == "b"),
        "SIGHUP lost after replacements"
    );
    m.signal(libc::SIGTERM);
    let (code, log) = m.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
}

/// Regression: Ctrl-C (SIGINT to the whole process group) used to kill the workers at
/// once; they must drain like on SIGTERM.
#[test]
fn sigint_to_the_process_group_still_drains() {
    use std::os::unix::process::CommandExt;
    let gate = Gate::new();
    let g = gate.clone();
    let slow = TestBackend::start(move |_| {
        g.wait();
        Reply::ok("finished")
    });
    let listen = dead_port();
    let mut p = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["-l", &listen.to_string(), "-b", &slow.addr.to_string()])
            .args(["-w", "2", "--mode", "process"])
            .process_group(0)
            .stdout(Stdio::null()),
    );
    assert!(serving(listen));
    let client = std::thread::spawn(move || get(listen, "/held").text());
    assert!(eventually(Duration::from_secs(5), || slow.count("/held") == 1));
    assert!(kill(-p.pid(), libc::SIGINT), "SIGINT to the group");
    // Draining: no longer accepting, but waiting for the request it holds.
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            listen
        )
        .is_err()),
        "still accepting after SIGINT"
    );
    assert!(p.is_running(), "exited with a request in flight");
    gate.open();
    assert_eq!(client.join().unwrap(), "finished");
    let (code, log) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
}

/// A killed worker's share of the gauges is taken back out (requests in flight, open
/// and parked connections; in-flight counts used to stay), and its counts stay.
#[test]
fn killed_workers_gauges_are_settled_and_their_counts_stay() {
    let gate = Gate::new();
    let g = gate.clone();
    let be = TestBackend::start(move |r| {
        if r.target == "/held" {
            g.wait();
        }
        Reply::ok("ok")
    });
    let listen = dead_port();
    let admin = dead_port();
    let m = proxying(listen, be.addr, 2, &["--admin", &admin.to_string()]);
    assert!(serving(listen) && serving(admin));
    assert!(eventually(Duration::from_secs(5), || m.workers().len() == 2));
    let name = be.addr.to_string();
    let gauge = |metric: &str| {
        let s = scrape(admin);
        match metric {
            "in_flight" => s.value("switchyard_backend_in_flight", &[("backend", &name)]),
            _ => s.value(metric, &[]),
        }
    };
    for _ in 0..10 {
        assert_eq!(get_within(listen, "/", Duration::from_secs(5)), Some(200));
    }
    // Idle keep-alive clients, parked in whichever worker took them.
    let idle: Vec<Conn> = (0..4)
        .map(|_| {
            let mut c = Conn::open(listen);
            assert_eq!(c.get("/").status, 200);
            c
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || gauge(
            "switchyard_connections_parked"
        ) == Some(4.0)),
        "parked: {:?}",
        gauge("switchyard_connections_parked")
    );
    let held: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || get_within(listen, "/held", Duration::from_secs(5))))
        .collect();
    assert!(eventually(Duration::from_secs(5), || be.count("/held") == 3));
    assert_eq!(gauge("in_flight"), Some(3.0));
    assert!(
        eventually(Duration::from_secs(5), || gauge(
            "switchyard_client_connections_open"
        ) == Some(7.0)),
        "open: {:?}",
        gauge("switchyard_client_connections_open")
    );
    let counted = scrape(admin).sum("switchyard_requests_total");
    assert_eq!(counted, 14.0);

    for w in m.workers() {
        assert!(kill(w as i32, libc::SIGKILL));
    }
    for h in held {
        let _ = h.join();
    }
    drop(idle);
    for metric in [
        "in_flight",
        "switchyard_client_connections_open",
        "switchyard_connections_parked",
    ] {
        assert!(
            eventually(Duration::from_secs(5), || gauge(metric) == Some(0.0)),
            "{metric} stuck at {:?}",
            gauge(metric)
        );
    }
    assert_eq!(
        get(admin, "/backends").json()[0]["in_flight"].as_u64(),
        Some(0)
    );
    assert_eq!(
        scrape(admin).sum("switchyard_requests_total"),
        counted,
        "a killed worker's counts went"
    );
    gate.open();
}

/// A worker that keeps dying within a second of starting is replaced after a growing
/// delay, and the log says so, instead of in a tight loop.
#[test]
fn a_crash_looping_worker_is_replaced_with_a_back_off() {
    let be = TestBackend::named("a");
    let listen = dead_port();
    let m = proxying(listen, be.addr, 1, &[]);
    assert!(serving(listen));
    assert!(eventually(Duration::from_secs(5), || m.workers().len() == 1));
    // Kill each replacement as soon as it shows: five deaths, each young. The first
    // replacements come at once, then after 100, 200, 400 ms...
    let mut victim = m.workers()[0];
    let mut waits = Vec::new();
    for _ in 0..5 {
        assert!(kill(victim as i32, libc::SIGKILL));
        let t = Instant::now();
        let mut next = None;
        assert!(
            eventually(Duration::from_secs(10), || {
                next = m.workers().into_iter().find(|&p| p != victim);
                next.is_some()
            }),
            "no replacement: {}",
            m.log()
        );
        waits.push(t.elapsed());
        victim = next.unwrap();
    }
    assert!(
        waits[4] >= Duration::from_millis(350),
        "no back-off: replacements after {waits:?}"
    );
    assert!(
        m.wait_log(&["keeps dying", "backing off"], Duration::from_secs(5))
            .is_some(),
        "{}",
        m.log()
    );
    // It still serves once the loop stops.
    assert!(eventually(Duration::from_secs(10), || get_within(
        listen,
        "/",
        Duration::from_secs(3)
    ) == Some(200)));
}

/// A second instance on a port the first one (or any other program) listens on exits
/// 2 saying so, instead of joining the SO_REUSEPORT group and taking a share of the
/// connections; the first keeps all the traffic.
#[test]
fn a_second_instance_on_an_occupied_port_exits_2() {
    let a = TestBackend::named("first");
    let b = TestBackend::named("second");
    let listen = dead_port();
    let first = proxying(listen, a.addr, 2, &[]);
    assert!(serving(listen));
    for mode in ["process", "thread"] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["-l", &listen.to_string(), "-b", &b.addr.to_string()])
            .args(["--mode", mode])
            .stdin(Stdio::null())
            .output()
            .expect("run switchyard");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode}: {err}");
        assert!(err.contains("address in use"), "{mode}: {err}");
    }
    for _ in 0..20 {
        assert_eq!(get(listen, "/").text(), "first");
    }
    assert_eq!(b.request_count(), 0);
    // A plain listener (nginx, say) counts as occupied too.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["-l", &plain.local_addr().unwrap().to_string()])
        .args(["-b", &b.addr.to_string()])
        .output()
        .expect("run switchyard");
    assert_eq!(out.status.code(), Some(2));
    drop(first);
}
