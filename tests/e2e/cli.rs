//! The binary as a user runs it: flags, config file, subcommands, exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::support::client::get;
use crate::support::process::serving;
use crate::support::{TestBackend, dead_port};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

/// A child process killed when the test ends, pass or fail.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Proc {
    Proc(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard"),
    )
}

fn fails_with(args: &[&str], needle: &str) {
    let out = bin().args(args).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
}

#[test]
fn bad_flags_exit_2_and_say_what_to_write() {
    fails_with(&["-b", "127.0.0.1:1", "-s", "fastest"], "round-robin");
    fails_with(&["-b", "127.0.0.1:1,weight=0"], "weight");
    fails_with(&["-b", "localhost"], "HOST:PORT");
    fails_with(&["-b", "127.0.0.1:1", "-l", "8080"], "ADDR:PORT");
    fails_with(&["-b", "127.0.0.1:1", "-w", "zero"], "worker count");
    fails_with(
        &["-b", "127.0.0.1:1", "--log-level", "loud"],
        "error, warn, info",
    );
    fails_with(&["--no-such-flag"], "--no-such-flag");
    fails_with(&[], "backends");
}

#[test]
fn serves_from_flags() {
    let be = TestBackend::named("a");
    let listen = dead_port();
    let _p = spawn(bin().args([
        "-l",
        &listen.to_string(),
        "-b",
        &be.addr.to_string(),
        "-w",
        "2",
        "--mode",
        "thread",
    ]));
    assert!(serving(listen));
    assert_eq!(get(listen, "/").text(), "a");
}

#[test]
fn port_and_host_flags() {
    let be = TestBackend::named("a");
    let listen = dead_port();
    let _p = spawn(bin().args([
        "--host",
        "127.0.0.1",
        "-p",
        &listen.port().to_string(),
        "-b",
        &be.addr.to_string(),
    ]));
    assert!(serving(listen));
    assert_eq!(get(listen, "/").text(), "a");
}

#[test]
fn config_file_with_flags_overriding_it() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let file_listen = dead_port();
    let cli_listen = dead_port();
    let dir = crate::support::Scratch::new("switchyard-cli");
    let path = dir.join("lb.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {file_listen}\nworkers: 1\nmode: thread\nstrategy: weighted-round-robin\nbackends:\n  - address: {}\n    weight: 3\n  - address: {}\nhealth:\n  path: /\n  interval: 5s\ntimeouts:\n  connect: 1s\n  backend_response: 5s\nretries: 1\naccess_log: false\n",
            a.addr, b.addr
        ),
    )
    .unwrap();
    // The file alone.
    {
        let _p = spawn(bin().args(["-c", path.to_str().unwrap()]));
        assert!(serving(file_listen));
        let seq: String = (0..4).map(|_| get(file_listen, "/").text()).collect();
        assert_eq!(seq, "aaba", "weights from the file");
    }
    // -l and -b override the file.
    let _p = spawn(bin().args([
        "-c",
        path.to_str().unwrap(),
        "-l",
        &cli_listen.to_string(),
        "-b",
        &b.addr.to_string(),
    ]));
    assert!(serving(cli_listen));
    for _ in 0..3 {
        assert_eq!(get(cli_listen, "/").text(), "b");
    }
}

#[test]
fn bad_config_file_exits_2_naming_the_key() {
    let dir = crate::support::Scratch::new("switchyard-badcfg");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:0\nstrategy: fastest\nbackends:\n  - address: 127.0.0.1:9001\n",
    )
    .unwrap();
    fails_with(&["-c", path.to_str().unwrap()], "strategy");
    fails_with(&["check", "-c", path.to_str().unwrap()], "bad.yaml:2:");
    std::fs::write(&path, "backends:\n  - address: 127.0.0.1:9001\n").unwrap();
    let out = bin()
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The file may be given without -c, and the summary counts right.
    let out = bin()
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.ends_with("ok (1 backend, strategy round-robin, listen 0.0.0.0:8080)\n"),
        "{said}"
    );
    fails_with(&["check"], "<FILE>");
}

/// Completions for each shell clap knows, and a man page naming every subcommand.
#[test]
fn completions_and_manpage() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("switchyard") && text.contains("check"),
            "{shell}: {text}"
        );
    }
    fails_with(&["completions", "tcsh"], "tcsh");
    let out = bin().arg("manpage").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(
        man.starts_with(".ie") && man.contains(".TH switchyard 1"),
        "{man}"
    );
    for sub in ["demo", "backend", "check", "completions", "manpage"] {
        assert!(man.contains(sub), "{sub}");
    }
    assert!(man.contains("HTTP/1.1 and HTTP/2"));
}

#[test]
fn backend_subcommand_echoes_requests() {
    let listen = dead_port();
    let _p = spawn(bin().args(["backend", "--listen", &listen.to_string(), "--name", "solo"]));
    assert!(serving(listen));
    let r = get(listen, "/x?y=1");
    assert_eq!(r.header("x-backend"), Some("solo"));
    let j = r.json();
    assert_eq!(
        (
            j["backend"].as_str(),
            j["method"].as_str(),
            j["path"].as_str()
        ),
        (Some("solo"), Some("GET"), Some("/x?y=1"))
    );
}

#[test]
fn demo_alternates_between_its_two_backends() {
    let listen = dead_port();
    let mut p = spawn(bin().args(["demo", "--listen", &listen.to_string()]));
    // The demo prints the curl line to try.
    let stdout = p.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = String::new();
    while let Some(Ok(l)) = lines.next() {
        printed.push_str(&l);
        printed.push('\n');
        if l.starts_with("then: kill") {
            break;
        }
    }
    assert!(
        printed.contains(&format!("curl -i http://{listen}/")),
        "{printed}"
    );
    assert!(serving(listen));
    let names: Vec<String> = (0..4)
        .map(|_| {
            get(listen, "/").json()["backend"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["demo-1", "demo-2", "demo-1", "demo-2"]);

    // Killing demo-2 (the pid the demo printed) costs the client nothing.
    let pid = printed
        .lines()
        .find_map(|l| l.strip_prefix("then: kill "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(crate::support::process::kill(
        pid.parse().unwrap(),
        libc::SIGKILL
    ));
    for i in 0..20 {
        let r = get(listen, "/");
        assert_eq!(r.status, 200, "request {i} after the kill: {}", r.text());
        assert_eq!(r.json()["backend"], "demo-1");
    }
}

#[test]
fn check_names_the_key_line_and_fix_for_each_bad_file() {
    let dir = crate::support::Scratch::new("switchyard-check");
    let b = "backends:\n  - address: 127.0.0.1:9001\n";
    let cases: Vec<(String, &[&str])> = vec![
        (
            format!("{b}strategy: fastest\n"),
            &["bad.yaml:3:", "strategy", "round-robin"],
        ),
        (
            "backends:\n  - address: 127.0.0.1:9001\n    weight: 0\n".into(),
            &["bad.yaml:3:", "backends[0].weight"],
        ),
        (
            "backends:\n  - address: 127.0.0.1:9001\n  - address: 127.0.0.1:9001\n".into(),
            &["bad.yaml:3:", "backends[1]", "already"],
        ),
        (
            "listen: 127.0.0.1:8080\n".into(),
            &["backends", "HOST:PORT"],
        ),
        (
            format!("{b}timeouts:\n  connect: 5 seconds\n"),
            &["bad.yaml:4:", "timeouts.connect", "250ms"],
        ),
        (
            "backends:\n  - address: 127.0.0.1\n".into(),
            &["bad.yaml:2:", "backends[0].address", "port"],
        ),
        (
            format!("{b}helth:\n  path: /\n"),
            &["bad.yaml:3:", "helth", "health"],
        ),
        (
            format!("listen: 8080\n{b}"),
            &["bad.yaml:1:", "listen", "ADDR:PORT"],
        ),
    ];
    for (yaml, needles) in cases {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let out = bin()
            .args(["check", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        for n in needles {
            assert!(err.contains(n), "for\n{yaml}expected {n:?} in: {err}");
        }
    }
}

/// Text nested 100,000 brackets deep (libyaml alone takes most of a minute on it) and a
/// config path that is a symlink to /dev/zero (endless, length 0) are refused at once,
/// by `check` and by a start, with the file, line and key.
#[test]
fn deep_and_endless_files_are_refused_at_once() {
    let dir = crate::support::Scratch::new("switchyard-limits");
    let deep = dir.join("deep.yaml");
    std::fs::write(
        &deep,
        format!(
            "backends: [127.0.0.1:9001]\nextra: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .unwrap();
    let zero = dir.join("z.yaml");
    let _ = std::fs::remove_file(&zero);
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let (deep, zero) = (deep.to_str().unwrap(), zero.to_str().unwrap());

    let deep_error = format!("{deep}:2: extra: nested more than 64 levels deep (");
    fails_with(&["check", "-c", deep], &deep_error);
    fails_with(&["-c", deep], &deep_error);
    let zero_error = format!("{zero}: larger than 16 MiB, the most a config file may be (");
    fails_with(&["check", "-c", zero], &zero_error);
    fails_with(&["-c", zero], &zero_error);
}

/// examples/switchyard.yaml shows every key the config accepts (set, or in a comment):
/// each section is asked for its keys by giving it an unknown one, as a user would.
#[test]
fn the_example_config_shows_every_key() {
    let example = include_str!("../../examples/switchyard.yaml");
    let shown = |key: &str| {
        example.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ', '-']);
            l.starts_with(&format!("{key}:"))
                || l.contains(&format!("{{{key}:"))
                || l.contains(&format!(", {key}:"))
        })
    };
    let dir = crate::support::Scratch::new("sy-example");
    let path = dir.join("probe.yaml");
    let sections = [
        "zzz: 1",
        "listen: {zzz: 1}",
        "listen: {tls: {zzz: 1}}",
        "listen: {tls: {certificates: [{zzz: 1}]}}",
        "backends: [{zzz: 1}]",
        "backends: [{tls: {zzz: 1}}]",
        "health: {zzz: 1}",
        "timeouts: {zzz: 1}",
        "limits: {zzz: 1}",
        "sticky: {zzz: 1}",
        "pool: {zzz: 1}",
        "hash: {zzz: 1}",
        "retry_budget: {zzz: 1}",
        "rate_limits: [{zzz: 1}]",
        "redis: {zzz: 1}",
        "queue: {zzz: 1}",
        "discovery: [{zzz: 1}]",
        "discovery: [{etcd: {zzz: 1}}]",
        "access_log: {zzz: 1}",
    ];
    let mut missing = Vec::new();
    for s in sections {
        std::fs::write(&path, format!("{s}\n")).unwrap();
        let out = bin()
            .args(["check", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let keys = err
            .split("valid keys here: ")
            .nth(1)
            .and_then(|k| k.split(')').next())
            .unwrap_or_else(|| panic!("{s}: {err}"));
        for key in keys.split(", ") {
            if !shown(key) {
                missing.push(format!("{key} (in `{s}`)"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in examples/switchyard.yaml: {missing:?}"
    );
}

/// A file with five mistakes: `check` reports the five, in line order, each naming
/// its line and key, then how many; exit 2.
#[test]
fn check_reports_every_mistake() {
    let dir = crate::support::Scratch::new("sy-five");
    let path = dir.join("five.yaml");
    std::fs::write(
        &path,
        "listen: 0.0.0.0:8080\nworkers: 0\nstrategy: fastest\nbackends:\n  \
         - address: 10.0.0.1:8080\n    weight: 0\n  - address: 10.0.0.2:8080\n\
         timeouts:\n  connect: 0s\nhealth: {interval: soon}\n",
    )
    .unwrap();
    let out = bin()
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let want = [
        "five.yaml:2: workers:",
        "five.yaml:3: strategy:",
        "five.yaml:6: backends[0].weight:",
        "five.yaml:9: timeouts.connect:",
        "five.yaml:10: health.interval:",
    ];
    assert_eq!(lines.len(), want.len() + 1, "{err}");
    for (line, w) in lines.iter().zip(want) {
        assert!(line.contains(w) && line.ends_with(')'), "{line} / {w}");
    }
    assert!(lines[5].contains("5 problems in"), "{err}");
}

/// Hints that used to be wrong: each says what to write for that key.
#[test]
fn check_hints_fit_the_key() {
    let dir = crate::support::Scratch::new("sy-hints");
    let path = dir.join("h.yaml");
    for (text, said) in [
        (
            "timeouts: {connect: 0s}",
            "timeouts.connect: must be greater than zero (write e.g. `connect: 2s`)",
        ),
        (
            "workers: -1",
            "workers: invalid type: integer `-1`, expected a whole number (write e.g. `workers: 4`)",
        ),
    ] {
        std::fs::write(&path, format!("backends: [10.0.0.1:80]\n{text}\n")).unwrap();
        let out = bin()
            .args(["check", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim_end().ends_with(said), "{text}: {err}");
    }
}

/// The README's `check` example is what `check` prints for that file.
#[test]
fn the_readme_check_example_is_what_check_prints() {
    let readme = include_str!("../../README.md");
    let start = readme.find("$ cat lb.yaml\n").expect("the example") + "$ cat lb.yaml\n".len();
    let rest = &readme[start..];
    let end = rest
        .find("$ switchyard check lb.yaml\n")
        .expect("the command");
    let file = &rest[..end];
    let printed = rest[end..].lines().nth(1).expect("the output line");
    let dir = crate::support::Scratch::new("sy-readme");
    std::fs::write(dir.join("lb.yaml"), file).unwrap();
    let out = bin()
        .current_dir(&dir)
        .args(["check", "lb.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), printed);
}
