//! Regressions found in review of the proxy core (issue 2/3); each names what broke.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::{Balancer, Conn, Reply, TestBackend, eventually};

/// A Content-Length upload above the replay buffer used to leave the response clock
/// unset forever: hyper stops polling a body once it is complete.
#[test]
fn large_content_length_upload_still_gets_its_504() {
    let hang = TestBackend::raw(|mut s| {
        let mut sink = vec![0u8; 65536];
        while s.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
    });
    let lb = Balancer::new()
        .backend(hang.addr)
        .backend_response(Duration::from_millis(300))
        .start();
    let mut c = Conn::open(lb.addr);
    let body = vec![b'u'; 100_000];
    c.send(
        format!(
            "PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let t = Instant::now();
    let r = c.read_response();
    assert_eq!(r.status, 504, "{}", r.text());
    // Without the clock it never comes (the client's read times out at 10 s).
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

/// A backend that answers before reading the upload must not have that connection
/// pooled: the next request would wait behind the unfinished upload. Poisoned, the
/// next GET would be written to a backend that never reads it again and get a 504
/// after `backend_response`; no clock is needed to tell.
#[test]
fn early_answer_to_an_upload_does_not_poison_the_pool() {
    let be = TestBackend::raw(|mut s| {
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        if text.starts_with("POST") {
            // Answer at once, never read the body, keep the connection open.
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly");
            std::thread::sleep(Duration::from_secs(6));
        } else {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let _ = s.read(&mut buf);
        }
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .backend_response(Duration::from_secs(2))
        .start();
    let addr = lb.addr;
    let uploader = std::thread::spawn(move || {
        let mut c = Conn::open(addr);
        c.send(
            format!(
                "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                8 << 20
            )
            .as_bytes(),
        );
        let _ = c.stream.write_all(&vec![b'x'; 256 * 1024]);
        c.read_response().text()
    });
    assert_eq!(uploader.join().unwrap(), "early");
    let r = get(lb.addr, "/ok");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok"),
        "sent behind the unfinished upload"
    );
}

/// A backend that sends the head and then stalls its body used to hold the client
/// (and an in-flight count) forever.
#[test]
fn stalled_response_body_is_cut() {
    let be = TestBackend::start(|_| {
        Reply::With(Box::new(|s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
            std::thread::sleep(Duration::from_secs(10));
            false
        }))
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .backend_response(Duration::from_millis(300))
        .start();
    let mut c = Conn::open(lb.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = c.read_head();
    assert_eq!(head.status, 200);
    assert!(
        c.closed_within(Duration::from_secs(8)),
        "stalled body never cut"
    );
    assert!(
        eventually(Duration::from_secs(5), || lb.health().in_flight(0) == 0),
        "in-flight count leaked"
    );
}

/// A backend response carrying both Content-Length and chunked framing was relayed
/// with the Content-Length, cutting the body.
#[test]
fn chunked_response_with_a_stray_content_length_is_relayed_whole() {
    let be = TestBackend::start(|_| {
        Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec())
    });
    let lb = Balancer::new().backend(be.addr).start();
    let r = get(lb.addr, "/");
    assert_eq!(r.text(), "hello");
}

/// A bare LF ending a chunked trailer line: every line of chunked framing must end in
/// CRLF for us (hyper would read the LF as part of the line), so such a body is a 400
/// and nothing reaches the backend: one reading, never two.
#[test]
fn trailer_line_ended_by_a_bare_lf_is_refused() {
    let be = TestBackend::start(|r| Reply::ok(&r.target));
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(be.requests().iter().all(|r| r.target != "/t"));
}

/// A Content-Length with many leading zeros used to switch the sniffer off for the
/// rest of the connection, letting a later CL+TE request through.
#[test]
fn long_content_length_does_not_switch_off_the_check() {
    let be = TestBackend::start(|r| Reply::ok(&r.target));
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(
        format!(
            "POST /z HTTP/1.1\r\nHost: a\r\nContent-Length: {}2\r\n\r\nab",
            "0".repeat(60)
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().text(), "/z");
    c.send(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(c.read_response().status, 400);
    assert!(be.requests().iter().all(|r| r.target != "/x"));
}

/// The head of a pipelined request that started arriving during the previous one is
/// timed by `client_header`, not `client_idle`.
#[test]
fn pipelined_partial_head_is_timed_as_a_head() {
    let be = TestBackend::start(|_| {
        std::thread::sleep(Duration::from_millis(200));
        Reply::ok("ok")
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .client_header(Duration::from_millis(300))
        .client_idle(Duration::from_secs(20))
        .start();
    let mut c = Conn::open(lb.addr);
    c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHo");
    assert_eq!(c.read_response().status, 200);
    let t = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "partial head never cut off"
    );
    // Timed by client_header (300 ms), not client_idle (20 s).
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "timed by client_idle: {:?}",
        t.elapsed()
    );
}

/// A large upload that stalls is a timeout (408), not a malformed body (400).
#[test]
fn stalled_large_upload_is_408() {
    let be = TestBackend::raw(|mut s| {
        let mut sink = vec![0u8; 65536];
        while s.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .client_idle(Duration::from_millis(300))
        .start();
    let mut c = Conn::open(lb.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n");
    c.send(&vec![b'x'; 200_000]);
    let r = c.read_response();
    assert_eq!(r.status, 408, "{}", r.text());
}

/// A backend's 101 that nobody asked for: 502 instead of a stranded client.
#[test]
fn backend_switching_protocols_is_a_502() {
    let be = TestBackend::start(|_| {
        Reply::RawThenClose(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec())
    });
    let lb = Balancer::new().backend(be.addr).start();
    let r = crate::support::client::raw(lb.addr, b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("upgrade"), "{}", r.text());
}

/// `Connection: host` must not strip the Host header; userinfo never reaches Host.
#[test]
fn host_survives_connection_and_absolute_form_tricks() {
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = Balancer::new().backend(be.addr).start();
    crate::support::client::raw(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: host\r\n\r\n",
    );
    crate::support::client::raw(
        lb.addr,
        b"GET http://u:p@shop2/x HTTP/1.1\r\nHost: shop2\r\n\r\n",
    );
    let got = be.requests();
    assert_eq!(got[0].header("host").as_deref(), Some("shop"));
    assert_eq!(got[1].header("host").as_deref(), Some("shop2"));
    assert_eq!(got[1].target, "/x");
}

/// A backend that stops reading a large upload used to hang the request forever.
#[test]
fn backend_that_stops_reading_an_upload_gets_a_504() {
    let deaf = TestBackend::raw(|_s| std::thread::sleep(Duration::from_secs(10)));
    let lb = Balancer::new()
        .backend(deaf.addr)
        .backend_response(Duration::from_millis(500))
        .start();
    let mut c = Conn::open(lb.addr);
    let total = 20 << 20;
    c.send(format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {total}\r\n\r\n").as_bytes());
    let mut w = c.stream.try_clone().unwrap();
    let t = Instant::now();
    // Keep pushing the body from another thread; the answer is read here meanwhile.
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..20 {
            if w.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let r = c.read_head();
    assert_eq!(r.status, 504);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

/// `switchyard_retries_total` counts retries that went out, not ones that were merely
/// allowed.
#[test]
fn retries_total_counts_only_real_retries() {
    let lb = Balancer::new()
        .backend(crate::support::dead_port())
        .admin()
        .start();
    assert_eq!(get(lb.addr, "/").status, 502);
    let s = lb.metrics();
    assert_eq!(
        s.value("switchyard_retries_total", &[]),
        Some(0.0),
        "{s:#?}"
    );
}

/// Empty lines before a request are skipped in linear time and only so many: a client
/// sending nothing but CRLFs gets a 400 and cannot hold the worker, and another
/// client is served meanwhile.
#[test]
fn a_flood_of_empty_lines_is_refused() {
    let be = TestBackend::start(|r| Reply::ok(&r.target));
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"\r\n\r\nGET /lead HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_response().text(), "/lead", "a few are ignored");
    let mut flood = Conn::open(lb.addr);
    let _ = flood.stream.write_all(&b"\r\n".repeat(100_000));
    let r = flood.read_response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("empty lines"), "{}", r.text());
    assert_eq!(get(lb.addr, "/other").text(), "/other");
}

/// A CRLF after a body (some clients send one) is not the start of a head: no 408
/// when `client_header` passes, the connection serves the next request.
#[test]
fn stray_crlf_after_a_body_does_not_start_the_head_clock() {
    let be = TestBackend::start(|r| Reply::ok(&r.target));
    let lb = Balancer::new()
        .backend(be.addr)
        .client_header(Duration::from_millis(200))
        .start();
    let mut c = Conn::open(lb.addr);
    c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\r\n");
    assert_eq!(c.read_response().text(), "/p");
    std::thread::sleep(Duration::from_millis(500)); // past client_header, on purpose
    assert_eq!(c.get("/next").text(), "/next");
}

/// A backend's `Connection: Content-Length` cannot strip the response's framing.
#[test]
fn connection_cannot_strip_a_responses_length() {
    let be = TestBackend::start(|r| {
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{}",
                r.target.len(),
                r.target
            )
            .into_bytes(),
        )
    });
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n");
    let one = c.read_response();
    assert_eq!(one.header("content-length"), Some("4"));
    assert_eq!(one.text(), "/one");
    assert_eq!(c.read_response().text(), "/two");
}

/// A local answer to a request whose body was not read says the connection closes.
#[test]
fn local_answer_before_the_body_was_read_says_close() {
    let lb = Balancer::new()
        .backend(crate::support::dead_port())
        .with(|c| c.retries = 0)
        .start();
    let mut c = Conn::open(lb.addr);
    c.send(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n");
    let _ = c.stream.write_all(&vec![b'x'; 100_000]);
    let r = c.read_response();
    assert!(r.status >= 500, "{}", r.status);
    assert_eq!(r.header("connection"), Some("close"));
}

/// A long (streamed) upload that could not be sent at all (connection refused) goes
/// to another backend, as a held one does.
#[test]
fn streamed_upload_that_was_never_sent_is_retried() {
    let ok = TestBackend::start(|r| Reply::ok(&r.body.len().to_string()));
    let lb = Balancer::new()
        .backend(crate::support::dead_port())
        .backend(ok.addr)
        .start();
    for _ in 0..2 {
        let mut c = Conn::open(lb.addr);
        c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n");
        c.send(&vec![b'x'; 100_000]);
        let r = c.read_response();
        assert_eq!((r.status, r.text().as_str()), (200, "100000"));
    }
}
