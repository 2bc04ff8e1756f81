use std::time::{Duration, UNIX_EPOCH};

use http::{Method, Version};

use super::*;

#[test]
fn timestamps() {
    assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    let t = UNIX_EPOCH + Duration::from_millis(1_795_423_456_789);
    assert_eq!(timestamp(t), "2026-11-23T08:44:16.789Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(&timestamp(leap)[..10], "2000-02-29");
}

/// The line as the access log made it before it formatted into bytes (`String`s,
/// `format!`, `serde_json`), after the timestamp: what the output must still be.
fn reference(e: &Entry, bytes: u64, took: Duration, format: Format) -> String {
    let s = |span| String::from_utf8_lossy(e.get(span)).into_owned();
    let quoted = |t: String| {
        if t.is_empty() {
            return "\"-\"".to_string();
        }
        format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))
    };
    let dash = |t: String| if t.is_empty() { "-".to_string() } else { t };
    let backend = Some(s(e.backend)).filter(|b| !b.is_empty());
    let backend_name = Some(s(e.backend_name)).filter(|b| !b.is_empty());
    match format {
        Format::Combined => {
            let (up_status, up_time) = match e.upstream {
                Some((st, t)) => (st.to_string(), format!("{:.3}ms", t.as_secs_f64() * 1000.0)),
                None => ("-".into(), "-".into()),
            };
            format!(
                " {} \"{} {} {:?}\" {} {bytes} {} {:.3}ms {} {} {} {} {up_status} {up_time}\n",
                s(e.client),
                e.method,
                s(e.target),
                e.version,
                e.status,
                backend.as_deref().unwrap_or("-"),
                took.as_secs_f64() * 1000.0,
                quoted(s(e.host)),
                quoted(s(e.user_agent)),
                quoted(s(e.forwarded_for)),
                dash(s(e.request_id)),
            )
        }
        Format::Json => {
            let version = match e.version {
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                _ => "HTTP/1.1",
            };
            #[derive(serde::Serialize)]
            struct Json<'a> {
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
            let mut v = serde_json::to_string(&Json {
                client: &s(e.client),
                method: e.method.as_str(),
                target: &s(e.target),
                version,
                status: e.status,
                bytes,
                duration_ms: took.as_secs_f64() * 1000.0,
                upstream_addr: backend.as_deref(),
                backend_name: backend_name.as_deref(),
                upstream_status: e.upstream.map(|u| u.0),
                upstream_ms: e.upstream.map(|u| u.1.as_secs_f64() * 1000.0),
                host: &s(e.host),
                user_agent: &s(e.user_agent),
                x_forwarded_for: &s(e.forwarded_for),
                request_id: &s(e.request_id),
            })
            .unwrap();
            v.push('\n');
            v
        }
    }
}

/// The new line, split into its timestamp and the rest.
fn made(e: &Entry, bytes: u64, took: Duration, format: Format) -> (String, String) {
    let mut out = Vec::new();
    line::line(&mut out, e, bytes, took, format);
    let text = String::from_utf8(out).unwrap();
    match format {
        Format::Combined => {
            let (time, rest) = text.split_at(24);
            (time.to_string(), rest.to_string())
        }
        Format::Json => {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let time = v["time"].as_str().unwrap().to_string();
            let prefix = format!("{{\"time\":\"{time}\",");
            let rest = text.strip_prefix(&prefix).unwrap();
            (time, format!("{{{rest}"))
        }
    }
}

/// Entries with awkward text: quotes, backslashes, every control character, bytes
/// that are not UTF-8, non-ASCII; with and without a backend.
fn entries() -> Vec<Entry> {
    let all_bytes: Vec<u8> = (0..=255).collect();
    let mut out = Vec::new();
    let texts: [&[u8]; 7] = [
        b"",
        b"plain",
        b"a \"quoted\" \\ back\\slash",
        b"ctl \x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x1f\x7f end",
        b"bad \xff\xfe utf8 \xe2\x82 cut \xc3\xa9 ok",
        "ünïcødé ✓ 🚀".as_bytes(),
        &all_bytes,
    ];
    for (i, t) in texts.iter().enumerate() {
        let version = [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2][i % 3];
        let mut e = Entry::new(b"10.0.0.9", Method::GET, b"/p?q=1", version);
        e.headers(
            [
                (&b"Host"[..], *t),
                (b"user-agent", *t),
                (b"X-Forwarded-For", *t),
                (b"X-REQUEST-ID", *t),
                (b"host", b"second.example"),
            ]
            .into_iter(),
        );
        e.status = 200 + i as u16;
        if i % 2 == 0 {
            let name = [None, None, Some("api-1"), None, Some("we\"ird\\")][i % 5];
            e.backend("127.0.0.1:9001", name);
            e.upstream = Some((e.status, Duration::from_nanos(801_234 * i as u64 + 7)));
        }
        out.push(e);
        let mut e = Entry::new(t, Method::from_bytes(b"PURGE").unwrap(), t, version);
        e.default_host(b"h2.example");
        out.push(e);
    }
    out
}

/// A JSON line with its durations rounded to the nanosecond: they were the `f64`
/// of the milliseconds (`0.8432160000000001`), and are the exact decimal now.
fn rounded_ms(line: &str) -> String {
    let mut out = line.to_string();
    for key in ["\"duration_ms\":", "\"upstream_ms\":"] {
        let Some(at) = out.find(key).map(|i| i + key.len()) else {
            continue;
        };
        let end = at + out[at..].find([',', '}']).unwrap();
        if let Ok(ms) = out[at..end].parse::<f64>() {
            out.replace_range(at..end, &format!("{ms:.6}"));
        }
    }
    out
}

#[test]
fn lines_are_what_they_were() {
    for took in [843_216_001, 7, 1_000_000, 12_345_678_901].map(Duration::from_nanos) {
        for e in entries() {
            for format in [Format::Combined, Format::Json] {
                let (time, rest) = made(&e, 1234, took, format);
                let was = reference(&e, 1234, took, format);
                if format == Format::Json {
                    assert_eq!(rounded_ms(&rest), rounded_ms(&was), "{e:?}");
                } else {
                    assert_eq!(rest, was, "{e:?}");
                }
                assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
            }
        }
    }
}

#[test]
fn json_durations_are_exact_milliseconds() {
    for (nanos, text) in [
        (0, "0.0"),
        (7, "0.000007"),
        (843_216, "0.843216"),
        (1_000_000, "1.0"),
        (1_500_000, "1.5"),
        (12_345_678_901, "12345.678901"),
    ] {
        let e = Entry::new(b"c", Method::GET, b"/", Version::HTTP_11);
        let (_, rest) = made(&e, 0, Duration::from_nanos(nanos), Format::Json);
        assert!(rest.contains(&format!("\"duration_ms\":{text},")), "{rest}");
    }
}

#[test]
fn json_lines_parse_back_to_the_lossy_text() {
    for e in entries() {
        let mut out = Vec::new();
        line::line(&mut out, &e, 0, Duration::ZERO, Format::Json);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let lossy = String::from_utf8_lossy(e.get(e.user_agent));
        assert_eq!(v["user_agent"], *lossy);
        assert_eq!(v["host"], *String::from_utf8_lossy(e.get(e.host)));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}

#[test]
fn durations_keep_three_decimals() {
    for (nanos, text) in [
        (0, "0.000"),
        (499, "0.000"),
        (500, "0.001"),
        (843_216, "0.843"),
        (1_999_600, "2.000"),
        (12_345_678_901, "12345.679"),
    ] {
        let mut e = Entry::new(b"c", Method::GET, b"/", Version::HTTP_11);
        e.upstream = Some((200, Duration::from_nanos(nanos)));
        let (_, rest) = made(&e, 0, Duration::from_nanos(nanos), Format::Combined);
        assert!(rest.ends_with(&format!(" {text}ms\n")), "{nanos}: {rest}");
        assert!(
            rest.contains(&format!(" {text}ms \"-\"")),
            "{nanos}: {rest}"
        );
    }
}

#[test]
fn the_first_header_of_each_name_counts() {
    let mut e = Entry::new(b"c", Method::GET, b"/", Version::HTTP_2);
    e.headers([(&b"host"[..], &b"a"[..]), (b"host", b"b")].into_iter());
    e.default_host(b"authority");
    assert_eq!(e.get(e.host), b"a");
}

#[test]
fn text_buffers_are_reused() {
    let e = Entry::new(b"c", Method::GET, b"/", Version::HTTP_11);
    let at = e.text.0.as_ptr();
    drop(e);
    let e = Entry::new(b"d", Method::GET, b"/x", Version::HTTP_11);
    assert_eq!(e.text.0.as_ptr(), at);
    assert_eq!((e.get(e.client), e.get(e.target)), (&b"d"[..], &b"/x"[..]));
}
