//! The access log: one line per request on stderr, written off the request path.
//!
//! A request that finishes hands its line to a bounded queue; one writer thread per
//! process drains it to stderr in batches. When the queue is full (stderr slower than
//! the traffic) lines are dropped and counted, rather than slowing requests down; the
//! writer reports how many it lost. Line format (one request):
//!
//! `2026-11-23T08:00:00.123Z 10.0.0.9 "GET /path HTTP/1.1" 200 1234 127.0.0.1:9001 0.843ms`
//!
//! timestamp (UTC), client address, request line, status, response body bytes, backend
//! (`-` when the balancer answered itself), duration from request head to response end.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

static SENDER: OnceLock<SyncSender<Msg>> = OnceLock::new();

enum Msg {
    Line(String),
    /// Write everything queued before this, then answer.
    Flush(SyncSender<()>),
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
}

/// Queues the line for `entry` (starting the writer the first time).
pub fn write(entry: &Entry, bytes: u64, took: Duration) {
    let tx = SENDER.get_or_init(start_writer);
    let line = format!(
        "{} {} \"{} {} {:?}\" {} {} {} {:.3}ms\n",
        timestamp(SystemTime::now()),
        entry.client,
        entry.method,
        entry.target,
        entry.version,
        entry.status,
        bytes,
        entry.backend.as_deref().unwrap_or("-"),
        took.as_secs_f64() * 1000.0,
    );
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

fn writer(rx: Receiver<Msg>) {
    let stderr = std::io::stderr();
    let mut batch = String::new();
    let mut flushes = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.clear();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => batch.push_str(&line),
                Msg::Flush(done) => flushes.push(done),
            }
            if batch.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        let dropped = DROPPED.swap(0, Relaxed);
        let mut out = stderr.lock();
        let _ = out.write_all(batch.as_bytes());
        if dropped > 0 {
            let _ = writeln!(out, "access log: {dropped} lines dropped (stderr too slow)");
        }
        drop(out);
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
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
