//! Bad input gets a clear 4xx/5xx and never reaches a backend; backend failures get
//! 502/504; slow clients are cut off; nothing a client sends stops the worker.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::client::{Resp, raw};
use crate::support::{Balancer, Conn, Reply, TestBackend, dead_port};

/// The start of `bytes`, for messages (some test inputs are tens of KiB).
fn shown(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.chars().take(120).collect()
}

/// Sends `bytes` on a new connection to `lb` and expects the balancer's own answer:
/// `status` with the contract's one-line text body, and then a close with nothing
/// more (every refusal here, 400/414/431/501, leaves the framing unknown).
fn refused_by(lb: SocketAddr, bytes: &[u8], status: u16) -> Resp {
    let mut c = Conn::open(lb);
    c.send(bytes);
    let r = c.read_response();
    assert_eq!(
        r.status,
        status,
        "for {:?}: {:?} {}",
        shown(bytes),
        r.headers,
        r.text()
    );
    r.assert_local_error(status);
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "still open after the {status} for {:?}",
        shown(bytes)
    );
    let extra = c.take_buffered();
    assert!(
        extra.is_empty(),
        "bytes after the {status} for {:?}: {:?}",
        shown(bytes),
        shown(&extra)
    );
    r
}

/// Sends `bytes`, expects `status` as [`refused_by`] does, and checks the backend saw
/// nothing and the balancer still serves a clean request afterwards.
fn refused(bytes: &[u8], status: u16) -> Resp {
    let be = TestBackend::start(|_| Reply::ok("reached"));
    let lb = Balancer::new().backend(be.addr).start();
    let r = refused_by(lb.addr, bytes, status);
    assert_eq!(
        be.request_count(),
        0,
        "request reached the backend: {:?}",
        be.requests()
    );
    // A clean follow-up request on a new connection works.
    assert_eq!(crate::support::client::get(lb.addr, "/").text(), "reached");
    r
}

#[test]
fn differing_content_lengths() {
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    );
}

#[test]
fn invalid_content_length() {
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        400,
    );
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n",
        400,
    );
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
        400,
    );
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        400,
    );
}

#[test]
fn bad_chunk_size() {
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    );
    // A size that overflows 64 bits.
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nabc\r\n0\r\n\r\n",
        400,
    );
    // Data longer than its size line says.
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn obs_fold() {
    refused(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        400,
    );
}

#[test]
fn control_characters_in_values() {
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x00b\r\n\r\n", 400);
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n", 400);
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\rb\r\n\r\n", 400);
}

#[test]
fn space_in_header_name_and_whitespace_led_first_line() {
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX Bad: 1\r\n\r\n", 400);
    refused(
        b"GET / HTTP/1.1\r\nContent-Length : 0\r\nHost: a\r\n\r\n",
        400,
    );
    refused(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
}

#[test]
fn missing_repeated_or_empty_host() {
    refused(b"GET / HTTP/1.1\r\n\r\n", 400);
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400);
    refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    refused(b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400);
    refused(b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400);
}

/// RFC 9112 3.2: a Host whose value is not `uri-host [":" port]` is a 400 too.
#[test]
fn invalid_host_value() {
    refused(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    refused(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
}

#[test]
fn bad_method_token() {
    refused(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused(b"GE\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused(b"G\xc3\xa9T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

#[test]
fn unknown_transfer_codings() {
    // Not ending in chunked: the length is unknowable.
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    );
    // A coding before chunked that we cannot pass on.
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    );
    // The same list over two lines.
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
    );
}

/// `chunked` anywhere but last (or twice): the body's end cannot be found, 400.
#[test]
fn misplaced_chunked_is_400() {
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    );
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
        400,
    );
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n0\r\n\r\n",
        400,
    );
}

/// HTTP/1.0 has no chunked framing: a Transfer-Encoding there is a 400.
#[test]
fn transfer_encoding_in_http10_is_400() {
    refused(
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn limits_give_414_and_431_with_a_text_body() {
    let be = TestBackend::start(|_| Reply::ok("reached"));
    let lb = Balancer::new().backend(be.addr).start();
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let r = refused_by(lb.addr, long_target.as_bytes(), 414);
    assert!(r.text().contains("too long"), "{}", r.text());
    // A request line over the limit with no end yet: answered without waiting for it.
    let no_end = format!("GET /{}", "a".repeat(9000));
    refused_by(lb.addr, no_end.as_bytes(), 414);
    let big_headers: String = (0..40)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(2000)))
        .collect();
    let r = refused_by(
        lb.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{big_headers}\r\n").as_bytes(),
        431,
    );
    assert!(r.text().contains("too large"), "{}", r.text());
    // A header section over the limit with no end yet (one long line, no line end).
    let no_end = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}", "v".repeat(70_000));
    refused_by(lb.addr, no_end.as_bytes(), 431);
    // ... and with complete lines but no empty line yet.
    refused_by(
        lb.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{big_headers}").as_bytes(),
        431,
    );
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    refused_by(
        lb.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
        431,
    );
    assert_eq!(be.request_count(), 0);
    // Just under the limits is fine.
    let ok_headers: String = (0..30)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(2000)))
        .collect();
    let r = raw(
        lb.addr,
        format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n{ok_headers}\r\n",
            "a".repeat(8000)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    let many: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(
        lb.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
}

/// Refusals are counted in /metrics by status and reason, one each.
#[test]
fn refused_heads_are_counted() {
    let be = TestBackend::start(|_| Reply::ok("reached"));
    let lb = Balancer::new().backend(be.addr).admin().start();
    refused_by(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        400,
    );
    refused_by(
        lb.addr,
        format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000)).as_bytes(),
        414,
    );
    refused_by(
        lb.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    );
    let s = lb.metrics();
    for (code, reason) in [
        ("400", "bad_request"),
        ("414", "uri_too_long"),
        ("501", "unsupported_transfer_coding"),
    ] {
        assert_eq!(
            s.value(
                "switchyard_local_responses_total",
                &[("code", code), ("reason", reason)]
            ),
            Some(1.0),
            "{code} {reason}: {s:#?}"
        );
    }
    assert_eq!(be.request_count(), 0);
}

/// CL.TE smuggling: a request with both headers is a 400 and nothing of it (nor the
/// request hidden in its body) reaches a backend; the connection closes.
#[test]
fn content_length_with_transfer_encoding_is_refused() {
    refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400);
}

/// The same attempt after a clean keep-alive request (and pipelined behind one) is
/// still caught: the framing is followed across requests.
#[test]
fn ambiguous_request_later_on_a_connection_is_refused() {
    let be = TestBackend::start(|r| Reply::ok(&r.target));
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 39\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: x");
    assert_eq!(c.read_response().text(), "/first");
    c.send(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\nPOST /third HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_response().text(), "/second");
    let r = c.read_response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("ambiguous"), "{}", r.text());
    assert!(c.closed_within(Duration::from_secs(5)));
    let seen: Vec<String> = be.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(seen, ["/first", "/second"]);
}

/// An HTTP/2 preface on the HTTP/1 port: a close, or a 400 with its text body and
/// then a close.
#[test]
fn http2_preface_is_closed() {
    let be = TestBackend::start(|_| Reply::ok("reached"));
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    if let Some(r) = c.read_response_or_close() {
        r.assert_local_error(400);
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "open after the 400"
        );
        assert!(c.take_buffered().is_empty());
    }
    assert_eq!(be.request_count(), 0);
}

/// A head that does not arrive within `client_header` gets a 408 with the one-line
/// text body and then a close (the contract allows "408 or a close"; our codec always
/// answers). Not before `client_header`, and from that clock, not `client_idle`.
#[test]
fn slow_request_head_is_cut_off() {
    let be = TestBackend::start(|_| Reply::ok("reached"));
    let lb = Balancer::new()
        .backend(be.addr)
        .client_header(Duration::from_millis(300))
        .client_idle(Duration::from_secs(20))
        .admin()
        .start();
    let mut c = Conn::open(lb.addr);
    let t = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let answer = c.read_response_or_close();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(290),
        "cut off before client_header: {waited:?} ({answer:?})"
    );
    assert!(
        waited < Duration::from_secs(8),
        "timed by client_idle: {waited:?}"
    );
    let r = answer.expect("closed without the 408");
    r.assert_local_error(408);
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "still open after the 408"
    );
    assert!(c.take_buffered().is_empty());
    assert_eq!(be.request_count(), 0);
    let s = lb.metrics();
    assert_eq!(
        s.value(
            "switchyard_local_responses_total",
            &[("code", "408"), ("reason", "client_head_timeout")]
        ),
        Some(1.0),
        "{s:#?}"
    );
}

#[test]
fn idle_keep_alive_is_not_cut_by_the_header_clock_but_by_the_idle_one() {
    let be = TestBackend::start(|_| Reply::ok("reached"));
    let lb = Balancer::new()
        .backend(be.addr)
        .client_header(Duration::from_millis(200))
        .client_idle(Duration::from_millis(1200))
        .start();
    let mut c = Conn::open(lb.addr);
    assert_eq!(c.get("/").status, 200);
    // Idle longer than client_header: still open (this wait is the scenario itself).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.get("/").status, 200);
    // Then idle past client_idle: closed.
    let t = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "idle connection never closed"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "closed too early: {:?}",
        t.elapsed()
    );
}

/// CONNECT is not proxied: a 501 with a text body, counted, and no backend sees it.
#[test]
fn connect_is_501() {
    let be = TestBackend::start(|_| Reply::ok("reached"));
    let lb = Balancer::new().backend(be.addr).admin().start();
    let r = raw(
        lb.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    r.assert_local_error(501);
    assert_eq!(be.request_count(), 0);
    let s = lb.metrics();
    assert_eq!(
        s.value(
            "switchyard_local_responses_total",
            &[("code", "501"), ("reason", "method_not_supported")]
        ),
        Some(1.0),
        "{s:#?}"
    );
}

/// Connecting for longer than `timeouts.connect` is a 504 (not before it); with
/// another backend, the request (never written) goes there instead, POST included.
#[test]
fn connect_timeout_gives_504_or_another_backend() {
    let hole = crate::support::black_hole();
    let connect = Duration::from_millis(300);
    let lb = Balancer::new()
        .backend(hole.addr)
        .with(move |c| c.timeouts.connect = connect)
        .start();
    let t = Instant::now();
    let r = crate::support::client::get(lb.addr, "/");
    r.assert_local_error(504);
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert!(
        t.elapsed() >= connect - Duration::from_millis(10),
        "{:?}",
        t.elapsed()
    );

    let ok = TestBackend::named("ok");
    let lb = Balancer::new()
        .backend(hole.addr)
        .backend(ok.addr)
        .with(move |c| c.timeouts.connect = connect)
        .start();
    // Round-robin: the first request goes to the black hole, and waits out the
    // connect timeout there first.
    let t = Instant::now();
    let r = raw(
        lb.addr,
        b"POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nmoney",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(
        t.elapsed() >= connect - Duration::from_millis(10),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(ok.requests()[0].body, b"money");
}

#[test]
fn backend_refusing_connections_gives_502() {
    let lb = Balancer::new().backend(dead_port()).start();
    let r = crate::support::client::get(lb.addr, "/");
    assert_eq!(r.status, 502);
    assert!(r.text().starts_with("502 Bad Gateway"), "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
}

#[test]
fn backend_answering_garbage_gives_502() {
    for reply in [
        &b"SPDY/9 what\r\n\r\n"[..],
        // HTTP/0.9 style: a body with no status line, then a close.
        &b"hello there, no status line\n"[..],
        &b"HTTP/1.1 abc Nope\r\nContent-Length: 0\r\n\r\n"[..],
    ] {
        let be = TestBackend::start(move |_| Reply::RawThenClose(reply.to_vec()));
        let lb = Balancer::new().backend(be.addr).start();
        let r = crate::support::client::get(lb.addr, "/");
        r.assert_local_error(502);
    }
}

#[test]
fn slow_backend_gives_504() {
    let be = TestBackend::start(|_| Reply::Hang);
    let lb = Balancer::new()
        .backend(be.addr)
        .backend_response(Duration::from_millis(300))
        .start();
    let t = Instant::now();
    let r = crate::support::client::get(lb.addr, "/");
    r.assert_local_error(504);
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

#[test]
fn garbage_never_stops_the_worker() {
    let be = TestBackend::start(|_| Reply::ok("alive"));
    let lb = Balancer::new().backend(be.addr).start();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces: [&[u8]; 12] = [
        b"GET ",
        b"/",
        b" HTTP/1.1",
        b"\r\n",
        b"Host: a",
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
        b":",
        b"\x00",
        b"\xff",
        b" ",
        b"0\r\n",
    ];
    for _ in 0..200 {
        let mut msg = Vec::new();
        for _ in 0..(next() % 20) {
            msg.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
        }
        msg.extend_from_slice(b"\r\n\r\n");
        let mut c = Conn::open(lb.addr);
        let _ = std::io::Write::write_all(&mut c.stream, &msg);
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c.stream, &mut sink);
    }
    assert_eq!(crate::support::client::get(lb.addr, "/").text(), "alive");
}

/// A client that asks for a large response and never reads it is cut off after
/// `client_idle`, and the backend connection feeding it is released.
#[test]
fn client_that_stops_reading_is_cut_off() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let backend_write_failed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&backend_write_failed);
    let be = TestBackend::start(move |_| {
        let flag = Arc::clone(&flag);
        Reply::With(Box::new(move |s| {
            let body = vec![b'x'; 64 << 20];
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let ok = std::io::Write::write_all(s, head.as_bytes()).is_ok()
                && std::io::Write::write_all(s, &body).is_ok();
            flag.store(!ok, SeqCst);
            false
        }))
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .client_idle(Duration::from_millis(300))
        .start();
    let mut c = Conn::open(lb.addr);
    c.send(b"GET /huge HTTP/1.1\r\nHost: a\r\n\r\n");
    // Never read: the balancer's writes stall, then it gives up.
    assert!(
        crate::support::eventually(Duration::from_secs(10), || backend_write_failed
            .load(SeqCst)),
        "the stalled response was never abandoned"
    );
}
