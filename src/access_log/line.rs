//! Formatting one access-log line straight into the writer's byte buffer: no
//! allocation, text taken from the [`Entry`]'s bytes and escaped on the way (JSON as
//! `serde_json` escapes a string; header bytes that are not UTF-8 become U+FFFD, as
//! [`String::from_utf8_lossy`] does). Durations are written from integer nanoseconds:
//! `0.843ms` in `combined`, `0.843216` (ms, exact) in JSON.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Version;

use super::{Entry, Format};

/// Appends the line for `e` (ending in `\n`) to `out`.
pub(super) fn line(out: &mut Vec<u8>, e: &Entry, bytes: u64, took: Duration, format: Format) {
    match format {
        Format::Combined => combined(out, e, bytes, took),
        Format::Json => json(out, e, bytes, took),
    }
}

fn combined(out: &mut Vec<u8>, e: &Entry, bytes: u64, took: Duration) {
    now(out);
    out.push(b' ');
    as_is(out, e.get(e.client));
    out.extend_from_slice(b" \"");
    out.extend_from_slice(e.method.as_str().as_bytes());
    out.push(b' ');
    as_is(out, e.get(e.target));
    out.push(b' ');
    out.extend_from_slice(version_debug(e.version));
    out.extend_from_slice(b"\" ");
    int(out, e.status.into());
    out.push(b' ');
    int(out, bytes);
    out.push(b' ');
    or_dash(out, e.get(e.backend));
    out.push(b' ');
    millis_3(out, took);
    out.extend_from_slice(b"ms ");
    for field in [e.host, e.user_agent, e.forwarded_for] {
        quoted(out, e.get(field));
        out.push(b' ');
    }
    or_dash(out, e.get(e.request_id));
    match e.upstream {
        Some((status, time)) => {
            out.push(b' ');
            int(out, status.into());
            out.push(b' ');
            millis_3(out, time);
            out.extend_from_slice(b"ms\n");
        }
        None => out.extend_from_slice(b" - -\n"),
    }
}

fn json(out: &mut Vec<u8>, e: &Entry, bytes: u64, took: Duration) {
    out.extend_from_slice(b"{\"time\":\"");
    now(out);
    out.extend_from_slice(b"\",\"client\":");
    json_str(out, e.get(e.client));
    out.extend_from_slice(b",\"method\":");
    json_str(out, e.method.as_str().as_bytes());
    out.extend_from_slice(b",\"target\":");
    json_str(out, e.get(e.target));
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(match e.version {
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_2 => b"HTTP/2.0",
        _ => b"HTTP/1.1",
    });
    out.extend_from_slice(b"\",\"status\":");
    int(out, e.status.into());
    out.extend_from_slice(b",\"bytes\":");
    int(out, bytes);
    out.extend_from_slice(b",\"duration_ms\":");
    ms_json(out, took);
    out.extend_from_slice(b",\"upstream_addr\":");
    match e.get(e.backend) {
        b"" => out.extend_from_slice(b"null"),
        addr => json_str(out, addr),
    }
    out.extend_from_slice(b",\"backend_name\":");
    match e.get(e.backend_name) {
        b"" => out.extend_from_slice(b"null"),
        name => json_str(out, name),
    }
    match e.upstream {
        Some((status, time)) => {
            out.extend_from_slice(b",\"upstream_status\":");
            int(out, status.into());
            out.extend_from_slice(b",\"upstream_ms\":");
            ms_json(out, time);
        }
        None => out.extend_from_slice(b",\"upstream_status\":null,\"upstream_ms\":null"),
    }
    out.extend_from_slice(b",\"host\":");
    json_str(out, e.get(e.host));
    out.extend_from_slice(b",\"user_agent\":");
    json_str(out, e.get(e.user_agent));
    out.extend_from_slice(b",\"x_forwarded_for\":");
    json_str(out, e.get(e.forwarded_for));
    out.extend_from_slice(b",\"request_id\":");
    json_str(out, e.get(e.request_id));
    out.extend_from_slice(b"}\n");
}

/// `http::Version`'s `Debug` text, which the combined line has always shown.
fn version_debug(v: Version) -> &'static [u8] {
    match v {
        Version::HTTP_09 => b"HTTP/0.9",
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_2 => b"HTTP/2.0",
        Version::HTTP_3 => b"HTTP/3.0",
        _ => b"HTTP/1.1",
    }
}

/// `bytes` as UTF-8 (each invalid sequence as U+FFFD), with the ASCII bytes `special`
/// picks replaced by `escape`'s text for them.
fn lossy(
    out: &mut Vec<u8>,
    bytes: &[u8],
    special: impl Fn(u8) -> bool,
    escape: impl Fn(u8) -> &'static [u8],
) {
    // Most text is plain ASCII: one pass (without early exit, so it vectorises), one copy.
    if !bytes
        .iter()
        .fold(false, |any, &b| any | (b >= 0x80) | special(b))
    {
        out.extend_from_slice(bytes);
        return;
    }
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut from = 0;
        for (i, &b) in valid.iter().enumerate() {
            if special(b) {
                out.extend_from_slice(&valid[from..i]);
                out.extend_from_slice(escape(b));
                from = i + 1;
            }
        }
        out.extend_from_slice(&valid[from..]);
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
}

/// Text shown as it is (but UTF-8).
fn as_is(out: &mut Vec<u8>, bytes: &[u8]) {
    lossy(out, bytes, |_| false, |_| b"");
}

/// `"text"` with `"` and `\` escaped, or `"-"` when empty.
fn quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.extend_from_slice(b"\"-\"");
        return;
    }
    out.push(b'"');
    lossy(
        out,
        bytes,
        |b| b == b'"' || b == b'\\',
        |b| if b == b'"' { b"\\\"" } else { b"\\\\" },
    );
    out.push(b'"');
}

fn or_dash(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.push(b'-');
    } else {
        as_is(out, bytes);
    }
}

/// A JSON string, escaped as `serde_json` does: `"`, `\`, and control characters
/// (`\b \t \n \f \r` short, the others `\u00XX`).
fn json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    /// The escape of every control character: short where JSON has one, else `\u00XX`.
    static CONTROL: [[u8; 6]; 32] = {
        let mut t = [[0; 6]; 32];
        let mut i = 0;
        while i < 32 {
            t[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 15]];
            i += 1;
        }
        t
    };
    out.push(b'"');
    lossy(
        out,
        bytes,
        |b| b < 0x20 || b == b'"' || b == b'\\',
        |b| match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            _ => CONTROL.get(usize::from(b)).map_or(b"", |e| &e[..]),
        },
    );
    out.push(b'"');
}

fn int(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Milliseconds with three decimals (rounded to the microsecond): `0.843`.
fn millis_3(out: &mut Vec<u8>, d: Duration) {
    let micros = (d.as_nanos() + 500) / 1000;
    int(out, u64::try_from(micros / 1000).unwrap_or(u64::MAX));
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Milliseconds as a JSON number, to the nanosecond (exact: no `f64` in between):
/// `0.843216`, `12.0`.
fn ms_json(out: &mut Vec<u8>, d: Duration) {
    let nanos = d.as_nanos();
    int(out, u64::try_from(nanos / 1_000_000).unwrap_or(u64::MAX));
    out.push(b'.');
    let mut frac = (nanos % 1_000_000) as u32;
    let mut places = 6;
    while places > 1 && frac % 10 == 0 {
        frac /= 10;
        places -= 1;
    }
    let mut digits = [b'0'; 6];
    for at in (0..places).rev() {
        digits[at] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&digits[..places]);
}

thread_local! {
    /// The second of the last timestamp made on this thread and its text up to the
    /// `.` before the milliseconds: lines in the same second only redo those.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// [`timestamp`] of now.
fn now(out: &mut Vec<u8>) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let mut s = Vec::with_capacity(24);
        timestamp_to(&mut s, secs, 0);
        text.copy_from_slice(&s[..20]);
        SECOND.set((secs, text));
    }
    out.extend_from_slice(&text);
    millis_z(out, d.subsec_millis());
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut s = Vec::with_capacity(24);
    timestamp_to(&mut s, d.as_secs(), d.subsec_millis());
    String::from_utf8_lossy(&s).into_owned()
}

fn timestamp_to(out: &mut Vec<u8>, secs: u64, millis: u32) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let two = |out: &mut Vec<u8>, n: u64| {
        out.extend_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8])
    };
    let year = y.clamp(0, 9999) as u64;
    two(out, year / 100);
    two(out, year % 100);
    out.push(b'-');
    two(out, m.into());
    out.push(b'-');
    two(out, day.into());
    out.push(b'T');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem % 3600 / 60);
    out.push(b':');
    two(out, rem % 60);
    out.push(b'.');
    millis_z(out, millis);
}

fn millis_z(out: &mut Vec<u8>, ms: u32) {
    let ms = ms.min(999);
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
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
