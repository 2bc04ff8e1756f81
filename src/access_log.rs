//! The access log: one line per request, written off the request path.
//!
//! A request that finishes formats its line straight into its thread's buffer (no
//! lock, no allocation: the request's text waits in a reused buffer, see [`Entry`]).
//! The buffer goes to the process's one writer thread when it holds 64 KiB or 20 ms
//! after its first line; the writer writes it to stderr or to `access_log.path`
//! (opened for appending by each process; SIGUSR1 reopens it, see [`crate::logging`]).
//! When too many buffers wait (the output slower than the traffic) their lines are
//! dropped and counted, rather than slowing requests down; the writer reports how many
//! it lost. `combined` (default), one request per line:
//!
//! `2026-11-23T08:00:00.123Z 10.0.0.9 "GET /path HTTP/1.1" 200 1234 127.0.0.1:9001 0.843ms "example.com" "curl/8.5" "-" - 200 0.801ms`
//!
//! timestamp (UTC), client address, request line, status, response body bytes, backend
//! (`-` when the balancer answered itself), duration from request head to response end,
//! then Host, User-Agent, the X-Forwarded-For the client sent, its X-Request-Id, the
//! backend's status and its time to the response head (`-` without a backend answer).
//! `json`: one object per line with the same fields, named, plus `backend_name` (the
//! backend's `name:`, or null; the combined line shows the address only).

mod line;
mod writer;

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use http::{Method, Version};

pub use line::timestamp;

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
    writer::reopen();
}

/// Waits (up to a second) until every line so far is written; workers call it
/// before they exit so their last lines are not lost.
pub fn flush() {
    writer::flush();
}

/// Writes the line for `entry` (through this thread's buffer).
pub fn write(entry: &Entry, bytes: u64, took: Duration) {
    let format = OUTPUT.get().map_or(Format::Combined, |o| o.format);
    writer::append(|out| line::line(out, entry, bytes, took, format));
}

/// Where a field's bytes are in [`Entry::text`] (empty: not given).
type Span = (u32, u32);

/// What one line says about a request. The text fields (client, target, headers,
/// backend) are raw bytes in one buffer taken from a per-thread pool and given back
/// when the entry is dropped, so a request allocates nothing for its line; they are
/// escaped when the line is made. Adding a field: a [`Span`] here, a setter, and its
/// place in each format in `line.rs`.
#[derive(Debug)]
pub struct Entry {
    text: Text,
    client: Span,
    target: Span,
    host: Span,
    user_agent: Span,
    /// The X-Forwarded-For the client sent (before ours is added).
    forwarded_for: Span,
    request_id: Span,
    /// The backend's address, when one was chosen.
    backend: Span,
    /// The backend's `name:`, if it has one (JSON lines only).
    backend_name: Span,
    pub method: Method,
    pub version: Version,
    pub status: u16,
    /// The backend's status and its time to the response head, when one answered.
    pub upstream: Option<(u16, Duration)>,
}

impl Entry {
    /// An entry for a request; status and backend are filled in at the end.
    pub fn new(client: &[u8], method: Method, target: &[u8], version: Version) -> Entry {
        let mut text = Text::take();
        Entry {
            client: text.put(client),
            target: text.put(target),
            text,
            host: (0, 0),
            user_agent: (0, 0),
            forwarded_for: (0, 0),
            request_id: (0, 0),
            backend: (0, 0),
            backend_name: (0, 0),
            method,
            version,
            status: 0,
            upstream: None,
        }
    }

    /// Takes the headers the line shows from (name, value) pairs (the first of each).
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
            if field.0 == field.1 {
                *field = self.text.put(value);
            }
        }
    }

    /// The Host to show when the request had no Host header (HTTP/2's authority).
    pub fn default_host(&mut self, host: &[u8]) {
        if self.host.0 == self.host.1 {
            self.host = self.text.put(host);
        }
    }

    /// The backend that was chosen: its address, and its `name:` if it has one.
    pub fn backend(&mut self, address: &str, name: Option<&str>) {
        self.backend = self.text.put(address.as_bytes());
        if let Some(name) = name {
            self.backend_name = self.text.put(name.as_bytes());
        }
    }

    /// The bytes of a field (empty when not given).
    fn get(&self, (from, to): Span) -> &[u8] {
        (self.text.0)
            .get(from as usize..to as usize)
            .unwrap_or_default()
    }
}

/// Bytes borrowed from this thread's pool, given back on drop.
#[derive(Debug)]
struct Text(Vec<u8>);

/// Entries in flight on one thread are at most this many before their buffers are
/// freed rather than kept; a buffer grown past `KEEP_BYTES` is freed too.
const POOL: usize = 1024;
const KEEP_BYTES: usize = 4096;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Text {
    fn take() -> Text {
        let pooled = FREE.try_with(|f| f.try_borrow_mut().ok()?.pop());
        Text(
            pooled
                .ok()
                .flatten()
                .unwrap_or_else(|| Vec::with_capacity(256)),
        )
    }

    /// Appends `bytes`; where they are (empty if the text would pass 4 GiB).
    fn put(&mut self, bytes: &[u8]) -> Span {
        let from = self.0.len();
        let (Ok(a), Ok(b)) = (u32::try_from(from), u32::try_from(from + bytes.len())) else {
            return (0, 0);
        };
        self.0.extend_from_slice(bytes);
        (a, b)
    }
}

impl Drop for Text {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() > KEEP_BYTES {
            return;
        }
        buf.clear();
        let _ = FREE.try_with(|f| {
            if let Ok(mut f) = f.try_borrow_mut() {
                if f.len() < POOL {
                    f.push(buf);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
