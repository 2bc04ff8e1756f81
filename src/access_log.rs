//! The access log: one line per request, written off the request path.
//!
//! A request that finishes hands its line to a bounded queue; one writer thread per
//! process drains it in batches to stderr or to `access_log.path` (opened for appending
//! by each process; SIGUSR1 reopens it, see [`crate::logging`]). When the queue is full
//! (the output slower than the traffic) lines are dropped and counted, rather than
//! slowing requests down; the writer reports how many it lost. `combined` (default),
//! one request per line:
//!
//! `2026-11-23T08:00:00.123Z 10.0.0.9 "GET /path HTTP/1.1" 200 1234 127.0.0.1:9001 0.843ms "example.com" "curl/8.5" "-" - 200 0.801ms`
//!
//! timestamp (UTC), client address, request line, status, response body bytes, backend
//! (`-` when the balancer answered itself), duration from request head to response end,
//! then Host, User-Agent, the X-Forwarded-For the client sent, its X-Request-Id, the
//! backend's status and its time to the response head (`-` without a backend answer).
//! `json`: one object per line with the same fields, named, plus `backend_name` (the
//! backend's `name:`, or null; the combined line shows the address only).

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

/// `access_log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Combined,
    Json,
}

/// Where and how lines are written: set once at start, before the workers exist.
struct Output {
    format: Format,
    path: Option<std::path::PathBuf>,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Sets the format and the file (`None`: stderr); the first call wins.
pub fn configure(format: Format, path: Option<std::path::PathBuf>) {
    let _ = OUTPUT.set(Output { format, path });
}

/// Asks the writer to open its file again (logrotate); nothing when not running.
pub fn reopen() {
    if let Some(tx) = SENDER.get() {
        let _ = tx.try_send(Msg::Reopen);
    }
}

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

static SENDER: OnceLock<SyncSender<Msg>> = OnceLock::new();

enum Msg {
    Line(String),
    /// Write everything queued before this, then answer.
    Flush(SyncSender<()>),
    /// Open the file again.
    Reopen,
}
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// What one line says about a request.
#[derive(Debug)]
pub struct Entry {
    pub client: String,
    pub method: Method,
    pub target: String,
    pub version: Version,
    pub status: u16,
    pub backend: Option<String>,
    /// The backend's `name:`, if it has one (JSON lines only).
    pub backend_name: Option<String>,
    pub host: String,
    pub user_agent: String,
    /// The X-Forwarded-For the client sent (before ours is added).
    pub forwarded_for: String,
    pub request_id: String,
    /// The backend's status and its time to the response head, when one answered.
    pub upstream: Option<(u16, Duration)>,
}

impl Entry {
    /// An entry for a request; status and backend are filled in at the end.
    pub fn new(client: String, method: Method, target: String, version: Version) -> Entry {
        Entry {
            client,
            method,
            target,
            version,
            status: 0,
            backend: None,
            backend_name: None,
            host: String::new(),
            user_agent: String::new(),
            forwarded_for: String::new(),
            request_id: String::new(),
            upstream: None,
        }
    }

    /// Takes the headers the line shows from (name, value) pairs.
    pub fn headers<'a>(&mut self, headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) {
        for (name, value) in headers {
            let field = if name.eq_ignore_ascii_case(b"host") {
                &mut self.host
            } else if name.eq_ignore_ascii_case(b"user-agent") {
                &mut self.user_agent
            } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                &mut self.forwarded_for
            } else if name.eq_ignore_ascii_case(b"x-request-id") {
                &mut self.request_id
            } else {
                continue;
            };
            if field.is_empty() {
                *field = String::from_utf8_lossy(value).into_owned();
            }
        }
    }
}

/// `"text"` with `"` and `\` escaped, or `"-"` when empty.
fn quoted(s: &str) -> String {
    if s.is_empty() {
        return "\"-\"".into();
    }
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn line(entry: &Entry, bytes: u64, took: Duration, format: Format) -> String {
    let now = now_text();
    match format {
        Format::Combined => {
            let (up_status, up_time) = match entry.upstream {
                Some((s, t)) => (s.to_string(), format!("{:.3}ms", t.as_secs_f64() * 1000.0)),
                None => ("-".into(), "-".into()),
            };
            format!(
                "{now} {} \"{} {} {:?}\" {} {bytes} {} {:.3}ms {} {} {} {} {up_status} {up_time}\n",
                entry.client,
                entry.method,
                entry.target,
                entry.version,
                entry.status,
                entry.backend.as_deref().unwrap_or("-"),
                took.as_secs_f64() * 1000.0,
                quoted(&entry.host),
                quoted(&entry.user_agent),
                quoted(&entry.forwarded_for),
                or_dash(&entry.request_id),
            )
        }
        Format::Json => {
            #[derive(serde::Serialize)]
            struct Json<'a> {
                time: &'a str,
                client: &'a str,
                method: &'a str,
                target: &'a str,
                version: &'a str,
                status: u16,
                bytes: u64,
                duration_ms: f64,
                upstream_addr: Option<&'a str>,
                backend_name: Option<&'a str>,
                upstream_status: Option<u16>,
                upstream_ms: Option<f64>,
                host: &'a str,
                user_agent: &'a str,
                x_forwarded_for: &'a str,
                request_id: &'a str,
            }
            let version = match entry.version {
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                _ => "HTTP/1.1",
            };
            let j = Json {
                time: &now,
                client: &entry.client,
                method: entry.method.as_str(),
                target: &entry.target,
                version,
                status: entry.status,
                bytes,
                duration_ms: took.as_secs_f64() * 1000.0,
                upstream_addr: entry.backend.as_deref(),
                backend_name: entry.backend_name.as_deref(),
                upstream_status: entry.upstream.map(|u| u.0),
                upstream_ms: entry.upstream.map(|u| u.1.as_secs_f64() * 1000.0),
                host: &entry.host,
                user_agent: &entry.user_agent,
                x_forwarded_for: &entry.forwarded_for,
                request_id: &entry.request_id,
            };
            let mut s = serde_json::to_string(&j).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

/// Queues the line for `entry` (starting the writer the first time).
pub fn write(entry: &Entry, bytes: u64, took: Duration) {
    let tx = SENDER.get_or_init(start_writer);
    let format = OUTPUT.get().map_or(Format::Combined, |o| o.format);
    let line = line(entry, bytes, took, format);
    if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(line)) {
        DROPPED.fetch_add(1, Relaxed);
    }
}

/// Waits (up to a second) until every line queued so far is written; workers call it
/// before they exit so their last lines are not lost.
pub fn flush() {
    if let Some(tx) = SENDER.get() {
        let (done, wait) = sync_channel(1);
        if tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(1));
        }
    }
}

fn start_writer() -> SyncSender<Msg> {
    let (tx, rx) = sync_channel(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || writer(rx));
    if let Err(e) = spawned {
        tracing::error!("access log writer could not start: {e}");
    }
    tx
}

/// The writer's output: the file, or stderr.
enum Out {
    File(std::fs::File),
    Stderr(std::io::Stderr),
}

impl Out {
    fn open() -> Out {
        let Some(path) = OUTPUT.get().and_then(|o| o.path.as_ref()) else {
            return Out::Stderr(std::io::stderr());
        };
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Out::File(f),
            Err(e) => {
                tracing::error!(path = %path.display(), "access log: cannot open the file, writing to stderr: {e}");
                Out::Stderr(std::io::stderr())
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) {
        let _ = match self {
            Out::File(f) => f.write_all(bytes),
            Out::Stderr(e) => e.lock().write_all(bytes),
        };
    }
}

/// How long the writer lets lines gather between writes. Sleeping (rather than
/// waiting on the queue) means a request's `send` never has to wake the writer: under
/// load it costs a queue push, and the output gets a few large writes a second.
const GATHER: Duration = Duration::from_millis(20);

fn writer(rx: Receiver<Msg>) {
    let mut out = Out::open();
    let mut batch = String::new();
    let mut flushes = Vec::new();
    // Wait for the first line, then write what gathered every GATHER, until idle.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        loop {
            let mut reopen = false;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Line(line) => batch.push_str(&line),
                    Msg::Flush(done) => flushes.push(done),
                    Msg::Reopen => reopen = true,
                }
                if batch.len() >= 64 * 1024 {
                    out.write_all(batch.as_bytes());
                    batch.clear();
                }
                next = rx.try_recv().ok();
            }
            let dropped = DROPPED.swap(0, Relaxed);
            if dropped > 0 {
                batch.push_str(&format!(
                    "access log: {dropped} lines dropped (output too slow)\n"
                ));
            }
            let idle = batch.is_empty() && flushes.is_empty() && !reopen;
            out.write_all(batch.as_bytes());
            batch.clear();
            if reopen {
                out = Out::open();
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            if idle {
                break;
            }
            std::thread::sleep(GATHER);
            next = rx.try_recv().ok();
        }
    }
}

thread_local! {
    /// The last timestamp made on this thread and its millisecond: lines in the same
    /// millisecond (most of them, under load) reuse the text.
    static NOW: std::cell::RefCell<(u128, std::rc::Rc<str>)> =
        std::cell::RefCell::new((0, std::rc::Rc::from("")));
}

/// [`timestamp`] of now, made once per millisecond per thread.
fn now_text() -> std::rc::Rc<str> {
    let t = SystemTime::now();
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    NOW.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != ms {
            *c = (ms, std::rc::Rc::from(timestamp(t)));
        }
        std::rc::Rc::clone(&c.1)
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_423_456_789);
        assert_eq!(timestamp(t), "2026-11-23T08:44:16.789Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&timestamp(leap)[..10], "2000-02-29");
    }
}
