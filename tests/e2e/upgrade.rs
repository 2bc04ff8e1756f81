//! Binary upgrades (SIGUSR2) and systemd (socket activation, readiness), with the
//! built binary as an operator runs it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use crate::support::client::get;
use crate::support::process::{Proc, kill, serving};
use crate::support::{TestBackend, dead_port, eventually};

fn scratch(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("upgrade-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped by whoever adopted it) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Kills a process the test did not start itself (the new master) and its children.
struct Reaper(i32);

impl Drop for Reaper {
    fn drop(&mut self) {
        kill(self.0, libc::SIGTERM);
        if !eventually(Duration::from_secs(5), || !alive(self.0)) {
            kill(self.0, libc::SIGKILL);
        }
    }
}

/// Requests from several clients until stopped: half on a new connection each, half
/// on keep-alive connections (reopened after a `Connection: close`).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|i| {
                let (s, o, f) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
                std::thread::spawn(move || {
                    let mut conn: Option<TcpStream> = None;
                    while !s.load(SeqCst) {
                        let keep = i % 2 == 1;
                        match one_request(addr, keep.then_some(&mut conn)) {
                            true => o.fetch_add(1, SeqCst),
                            false => f.fetch_add(1, SeqCst),
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(SeqCst)
    }

    /// Waits for `n` more successes.
    fn more(&self, n: usize) -> bool {
        let from = self.ok();
        eventually(Duration::from_secs(10), || self.ok() >= from + n)
    }

    /// Stops the clients; (ok, failed).
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        (self.ok.load(SeqCst), self.failed.load(SeqCst))
    }
}

/// One GET; on a kept connection when `kept` is given. True on a 200.
fn one_request(addr: SocketAddr, kept: Option<&mut Option<TcpStream>>) -> bool {
    let mut fresh = None;
    let slot = match kept {
        Some(slot) => slot,
        None => &mut fresh,
    };
    if slot.is_none() {
        let Ok(s) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        *slot = Some(s);
    }
    let Some(s) = slot.as_mut() else { return false };
    if s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").is_err() {
        *slot = None;
        return false;
    }
    // Read one response with a Content-Length body.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let done = loop {
        let Ok(n) = s.read(&mut chunk) else {
            break None;
        };
        if n == 0 {
            break None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            break Some((
                head.starts_with("http/1.1 200"),
                head.contains("connection: close"),
            ));
        }
    };
    match done {
        Some((ok, close)) => {
            if close {
                *slot = None;
            }
            ok
        }
        None => {
            *slot = None;
            false
        }
    }
}

/// Process and thread mode: SIGUSR2 under load loses nothing; the pid file names the
/// new master, the old one drains and exits, and the admin listener carries on.
#[test]
fn sigusr2_hands_over_without_losing_a_request() {
    for mode in ["process", "thread"] {
        let dir = scratch(mode);
        let pid_file = dir.join("sy.pid");
        let be = TestBackend::named("a");
        let (listen, admin) = (dead_port(), dead_port());
        let mut old = Proc::start(&[
            "-l",
            &listen.to_string(),
            "-b",
            &be.addr.to_string(),
            "-w",
            "2",
            "--mode",
            mode,
            "--admin",
            &admin.to_string(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ]);
        assert!(serving(listen));
        assert!(eventually(Duration::from_secs(5), || read_pid(&pid_file)
            == Some(old.pid())));
        let load = Load::start(listen, 6);
        assert!(load.more(200), "{mode}: no traffic: {}", old.log());
        old.signal(libc::SIGUSR2);
        assert!(
            old.wait_log(&["the new binary serves"], Duration::from_secs(15))
                .is_some(),
            "{mode}: {}",
            old.log()
        );
        let new = read_pid(&pid_file).expect("a pid file");
        let _reaper = Reaper(new);
        assert_ne!(new, old.pid(), "{mode}");
        assert!(
            eventually(Duration::from_secs(15), || !old.is_running()),
            "{mode}: the old master did not exit"
        );
        assert!(alive(new), "{mode}: the new master is gone");
        assert!(
            load.more(300),
            "{mode}: no traffic after the upgrade: {}",
            old.log()
        );
        let (ok, failed) = load.finish();
        assert_eq!(
            failed,
            0,
            "{mode}: {failed} of {} requests failed: {}",
            ok + failed,
            old.log()
        );
        assert!(!dir.join("sy.pid.oldbin").exists(), "{mode}");
        assert_eq!(get(admin, "/healthz").status, 200, "{mode}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A new binary that cannot serve (it exits, or its config is now invalid) leaves the
/// old master serving, with the pid file its own again and a log line saying why.
#[test]
fn a_failed_upgrade_keeps_the_old_master_serving() {
    let dir = scratch("failed");
    let pid_file = dir.join("sy.pid");
    let config = dir.join("lb.yaml");
    let be = TestBackend::named("a");
    let listen = dead_port();
    std::fs::write(
        &config,
        format!("listen: {listen}\nworkers: 1\nbackends: [{}]\n", be.addr),
    )
    .unwrap();
    // Run from a link, so that the "binary" can be replaced under the master.
    let exe = dir.join("switchyard");
    std::fs::hard_link(env!("CARGO_BIN_EXE_switchyard"), &exe)
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_switchyard"), &exe).map(|_| ()))
        .unwrap();
    let mut m = Proc::spawn(
        Command::new(&exe)
            .args([
                "-c",
                config.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
            ])
            .stdout(Stdio::null()),
    );
    assert!(serving(listen));
    assert!(eventually(Duration::from_secs(5), || read_pid(&pid_file)
        == Some(m.pid())));

    // 1. A broken binary: a script that exits 1.
    let script = dir.join("broken");
    std::fs::write(&script, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&script, &exe).unwrap();
    m.signal(libc::SIGUSR2);
    let line = m.wait_log(
        &["upgrade failed", "keeps serving"],
        Duration::from_secs(15),
    );
    assert!(
        line.is_some_and(|l| l.contains("exit status: 1")),
        "{}",
        m.log()
    );
    assert!(m.is_running());
    assert_eq!(get(listen, "/").status, 200);
    assert_eq!(read_pid(&pid_file), Some(m.pid()));

    // 2. The real binary again, with a config that no longer validates.
    std::fs::remove_file(&exe).unwrap();
    std::fs::hard_link(env!("CARGO_BIN_EXE_switchyard"), &exe)
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_switchyard"), &exe).map(|_| ()))
        .unwrap();
    std::fs::write(
        &config,
        format!(
            "listen: {listen}\nworkers: 1\nbackends: [{}]\nstrategy: nope\n",
            be.addr
        ),
    )
    .unwrap();
    assert!(
        m.wait_log(&["configuration rejected"], Duration::from_secs(10))
            .is_some(),
        "{}",
        m.log()
    );
    m.signal(libc::SIGUSR2);
    assert!(
        eventually(Duration::from_secs(15), || m
            .log()
            .matches("upgrade failed")
            .count()
            == 2),
        "{}",
        m.log()
    );
    assert!(
        m.log().contains("strategy"),
        "the new binary's own error is in the log: {}",
        m.log()
    );
    assert!(m.is_running());
    for _ in 0..10 {
        assert_eq!(get(listen, "/").status, 200);
    }
    assert_eq!(read_pid(&pid_file), Some(m.pid()));
    assert!(!dir.join("sy.pid.oldbin").exists());
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Socket activation: the binary serves on the socket it was given as descriptor 3
/// (LISTEN_FDS, LISTEN_PID), in place of binding `listen`.
#[test]
fn systemd_socket_activation_serves_the_given_socket() {
    let be = TestBackend::named("activated");
    for mode in ["process", "thread"] {
        let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let fd = sock.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_switchyard"))
            .args(["-b", &be.addr.to_string(), "-w", "2", "--mode", mode])
            // `listen` is the default 0.0.0.0:8080: it must not be bound.
            .stdout(Stdio::null());
        // SAFETY: dup2 is async-signal-safe; descriptor 3 becomes the listener.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let m = Proc::spawn(&mut cmd);
        drop(sock);
        assert!(
            m.wait_log(&["sockets handed over", "Systemd"], Duration::from_secs(10))
                .is_some(),
            "{mode}: {}",
            m.log()
        );
        for _ in 0..6 {
            assert_eq!(get(addr, "/").text(), "activated", "{mode}");
        }
    }
}

/// `Type=notify`: READY=1 once serving, RELOADING=1 (with MONOTONIC_USEC) and READY=1
/// around a reload, STOPPING=1 on SIGTERM.
#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let be = TestBackend::named("a");
    for mode in ["process", "thread"] {
        let dir = scratch(&format!("notify-{mode}"));
        let notify = dir.join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let listen = dead_port();
        let config = dir.join("lb.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: {listen}\nworkers: 2\nmode: {mode}\nbackends: [{}]\n",
                be.addr
            ),
        )
        .unwrap();
        let mut m = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .args(["-c", config.to_str().unwrap()])
                .env("NOTIFY_SOCKET", &notify)
                .stdout(Stdio::null()),
        );
        let next = || {
            let mut buf = [0u8; 256];
            match rx.recv(&mut buf) {
                Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(e) => format!("nothing: {e}"),
            }
        };
        let ready = next();
        assert!(ready.starts_with("READY=1"), "{mode}: {ready}");
        // Ready means serving: no wait needed.
        assert_eq!(get(listen, "/").status, 200, "{mode}");
        m.signal(libc::SIGHUP);
        let reloading = next();
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{mode}: {reloading}"
        );
        assert!(next().starts_with("READY=1"), "{mode}");
        m.signal(libc::SIGTERM);
        assert!(next().starts_with("STOPPING=1"), "{mode}");
        let (code, log) = m.wait_exit(Duration::from_secs(15));
        assert_eq!(code, Some(0), "{mode}: {log}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The example unit files pass `systemd-analyze verify` (with the binary's path put in
/// place of /usr/local/bin/switchyard). Skipped, saying so, where systemd-analyze is
/// not installed.
#[test]
fn example_unit_files_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED example_unit_files_verify: systemd-analyze is not installed");
        return;
    }
    let dir = scratch("units");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd");
    for unit in ["switchyard.service", "switchyard.socket"] {
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        let text = text.replace(
            "/usr/local/bin/switchyard",
            env!("CARGO_BIN_EXE_switchyard"),
        );
        std::fs::write(dir.join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("switchyard.service"))
        .arg(dir.join("switchyard.socket"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Only what it says of our units counts: a container without a running systemd may
    // add lines about its own environment.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("switchyard.")).collect();
    assert!(ours.is_empty(), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With two `listen:` entries, SIGUSR2 hands over both, matched to the new config's
/// entries by address: here the new file lists them the other way round and adds a
/// third. Under load on the plain entry no request is lost; afterwards the TLS entry
/// still speaks TLS, the plain one plain HTTP, and the new one serves.
#[test]
fn sigusr2_hands_over_every_listener() {
    for mode in ["process", "thread"] {
        let dir = scratch(&format!("two-{mode}"));
        let ca = crate::support::tls::TestCa::new(&dir);
        let (cert, key) = ca.server_cert().write(&dir, "lb");
        let pid_file = dir.join("sy.pid");
        let config = dir.join("lb.yaml");
        let be = TestBackend::named("a");
        let (plain, tls, added) = (dead_port(), dead_port(), dead_port());
        let tls_entry = format!(
            "{{address: {tls}, tls: {{certificates: [{{cert: {}, key: {}}}]}}}}",
            cert.display(),
            key.display()
        );
        let write = |entries: &[&str]| {
            let text = format!(
                "listen: [{}]\nworkers: 2\nmode: {mode}\nbackends: [{}]\n",
                entries.join(", "),
                be.addr
            );
            std::fs::write(&config, text).unwrap();
        };
        write(&[&plain.to_string(), &tls_entry]);
        let old = Proc::start(&[
            "-c",
            config.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ]);
        assert!(serving(plain) && serving(tls));
        let load = Load::start(plain, 4);
        assert!(load.more(100), "{mode}: {}", old.log());
        write(&[&added.to_string(), &tls_entry, &plain.to_string()]);
        old.signal(libc::SIGUSR2);
        assert!(
            old.wait_log(&["the new binary serves"], Duration::from_secs(15))
                .is_some(),
            "{mode}: {}",
            old.log()
        );
        let new = read_pid(&pid_file).expect("a pid file");
        let _reaper = Reaper(new);
        assert!(eventually(Duration::from_secs(15), || !alive(old.pid())));
        assert!(load.more(100), "{mode}: {}", old.log());
        let (ok, failed) = load.finish();
        assert_eq!(failed, 0, "{mode}: {failed} of {} failed", ok + failed);
        assert_eq!(get(added, "/").text(), "a", "{mode}");
        assert_eq!(
            get(tls, "/").status,
            400,
            "{mode}: the TLS entry answers plain HTTP"
        );
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                ca.pem_path.to_str().unwrap(),
            ])
            .arg(format!("https://localhost:{}/", tls.port()))
            .output()
            .expect("curl is needed for this test");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a", "{mode}: {out:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
