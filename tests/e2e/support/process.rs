//! The built binary run as a user runs it: a child process whose log (stderr) is read
//! as it is written, so a test can wait for a line ("configuration rejected", "restart
//! switchyard") instead of sleeping, signals sent with `libc::kill`, and the master's
//! children (process mode) found in /proc. Dropping a `Proc` SIGKILLs its children and
//! then it, so a failed test leaves nothing running.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::eventually;

/// Sends `sig` to `pid` (a negative pid: to that process group). True if it was sent.
pub fn kill(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) takes plain integers; the worst a wrong pid does is fail (or
    // signal a process of this user, which the callers name on purpose).
    unsafe { libc::kill(pid, sig) == 0 }
}

/// True once something accepts connections on `addr` (within 10 s).
pub fn serving(addr: SocketAddr) -> bool {
    eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
}

pub struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
    /// Set when stderr reaches EOF (the process and everything it forked are gone).
    log_done: Arc<AtomicBool>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            for (pid, _) in self.children() {
                kill(pid as i32, libc::SIGKILL);
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Proc {
    /// `switchyard ARGS...`, stdout discarded, stderr kept as the log.
    pub fn start(args: &[&str]) -> Proc {
        Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .args(args)
                .stdout(Stdio::null()),
        )
    }

    /// `switchyard -c CONFIG`.
    pub fn with_config(config: &std::path::Path) -> Proc {
        Proc::start(&["-c", config.to_str().expect("a UTF-8 path")])
    }

    /// Runs `cmd` with stderr kept as the log (stdout as `cmd` has it).
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard");
        let log = Arc::new(Mutex::new(String::new()));
        let log_done = Arc::new(AtomicBool::new(false));
        let stderr = child.stderr.take().expect("stderr");
        let (l, d) = (Arc::clone(&log), Arc::clone(&log_done));
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                l.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
            d.store(true, SeqCst);
        });
        Proc {
            child,
            log,
            log_done,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` to the process; it must still be there.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(kill(self.pid(), sig), "could not signal switchyard");
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    /// Waits until the log has a line containing every one of `needles`; returns it.
    pub fn wait_log(&self, needles: &[&str], within: Duration) -> Option<String> {
        let mut found = None;
        eventually(within, || {
            found = self
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_owned);
            found.is_some()
        });
        found
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit; returns its exit code and everything it logged.
    pub fn wait_exit(&mut self, within: Duration) -> (Option<i32>, String) {
        let end = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < end,
                "switchyard did not exit within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // The rest of the log (children write to the same pipe until they are gone).
        eventually(Duration::from_secs(5), || self.log_done.load(SeqCst));
        (status.code(), self.log())
    }

    /// (pid, name) of every direct child.
    pub fn children(&self) -> Vec<(u32, String)> {
        let me = self.child.id();
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ..."
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = stat[open + 1..close].to_string();
            let ppid: u32 = stat[close + 2..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if ppid == me {
                out.push((pid, comm));
            }
        }
        out
    }

    /// Pids of the worker processes (process mode).
    pub fn workers(&self) -> Vec<u32> {
        self.children()
            .into_iter()
            .filter(|(_, c)| c.starts_with("switchyard-w"))
            .map(|(p, _)| p)
            .collect()
    }
}
