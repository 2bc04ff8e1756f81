//! Backend responses of every framing reach the client correctly framed, and the
//! client connection stays usable after each.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::{Balancer, Conn, Reply, TestBackend};

fn backend_answering(resp: &'static [u8]) -> TestBackend {
    TestBackend::start(move |r| {
        if r.target == "/next" {
            Reply::ok("next")
        } else {
            Reply::Raw(resp.to_vec())
        }
    })
}

#[test]
fn content_length_response() {
    let be = backend_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    let r = c.get("/");
    assert_eq!(
        (r.status, r.text().as_str(), r.chunked),
        (200, "hello", false)
    );
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(c.get("/next").text(), "next");
}

#[test]
fn chunked_response() {
    let be = backend_answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n");
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    let r = c.get("/");
    assert_eq!(
        (r.status, r.text().as_str(), r.chunked),
        (200, "abcdefg", true)
    );
    assert_eq!(c.get("/next").text(), "next");
}

#[test]
fn close_delimited_response_is_rechunked() {
    let be = TestBackend::start(|r| {
        if r.target == "/next" {
            return Reply::ok("next");
        }
        Reply::With(Box::new(|s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
                .unwrap();
            false // close: that is the framing
        }))
    });
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    let r = c.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "until the end"));
    assert!(
        r.chunked,
        "an HTTP/1.1 client gets chunked framing: {:?}",
        r.headers
    );
    // The client connection survived the backend's close.
    assert_eq!(c.get("/next").text(), "next");
}

#[test]
fn head_response_has_no_body_but_keeps_its_length() {
    let be = backend_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response_for("HEAD");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1234"));
    // If a body had been sent, this would read it as the next response.
    assert_eq!(c.get("/next").text(), "next");
}

#[test]
fn no_content_and_not_modified_carry_no_body() {
    for resp in [
        &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
        &b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"[..],
    ] {
        let be = backend_answering(resp);
        let lb = Balancer::new().backend(be.addr).start();
        let mut c = Conn::open(lb.addr);
        let r = c.get("/");
        assert!(r.status == 204 || r.status == 304);
        assert!(r.header("transfer-encoding").is_none(), "{:?}", r.headers);
        assert!(
            r.header("content-length").is_none_or(|v| v == "0"),
            "{:?}",
            r.headers
        );
        assert_eq!(c.get("/next").text(), "next");
    }
}

#[test]
fn chunked_request_is_reframed_for_the_backend() {
    let be = TestBackend::start(|r| Reply::ok(&String::from_utf8_lossy(&r.body)));
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.text(), "Wikipedia");
    let got = &be.requests()[0];
    // Small bodies are held whole, so they go out with an exact length.
    assert_eq!(got.header("content-length").as_deref(), Some("9"));
    assert!(!got.has("transfer-encoding"));
}

// Backend responses whose framing cannot be relayed: the client gets the balancer's
// own 502 (nothing of the response has gone to it yet), and its connection carries on.

/// The backend answers `/` with `resp`; the client gets a 502 with the one-line text
/// body, then the next request on the same connection works.
fn answered_502(resp: &'static [u8]) {
    let be = backend_answering(resp);
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    let r = c.get("/");
    r.assert_local_error(502);
    assert_eq!(c.get("/next").text(), "next");
}

/// `gzip, chunked` relayed as plain chunked would hand the client gzip bytes labelled
/// as plain: refused.
#[test]
fn backend_coding_other_than_chunked_is_a_502() {
    answered_502(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
}

/// A first chunk size line that is already broken when the head arrives (same write):
/// a counted 502, not a bare close.
#[test]
fn malformed_first_chunk_from_backend_is_a_502() {
    for resp in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"[..],
        // A size that overflows 64 bits.
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nabc\r\n0\r\n\r\n"[..],
    ] {
        let be = backend_answering(resp);
        let lb = Balancer::new().backend(be.addr).admin().start();
        let mut c = Conn::open(lb.addr);
        let r = c.get("/");
        r.assert_local_error(502);
        assert_eq!(c.get("/next").text(), "next");
        let s = lb.metrics();
        assert_eq!(
            s.value(
                "switchyard_local_responses_total",
                &[("code", "502"), ("reason", "bad_gateway")]
            ),
            Some(1.0),
            "{s:#?}"
        );
    }
}

#[test]
fn differing_content_lengths_from_backend_are_a_502() {
    answered_502(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd");
    answered_502(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd");
}

/// A response head over the balancer's limit (bytes, or header lines) is a 502.
#[test]
fn oversized_response_head_is_a_502() {
    for big in [
        (0..5)
            .map(|i| format!("X-Big-{i}: {}\r\n", "v".repeat(60_000)))
            .collect::<String>(),
        (0..300).map(|i| format!("X-H{i}: v\r\n")).collect(),
    ] {
        let be = TestBackend::start(move |_| {
            let resp = format!("HTTP/1.1 200 OK\r\n{big}Content-Length: 2\r\n\r\nok");
            // The balancer hangs up part way: a failed write is expected.
            Reply::With(Box::new(move |s| {
                let _ = s.write_all(resp.as_bytes());
                false
            }))
        });
        let lb = Balancer::new().backend(be.addr).start();
        let r = crate::support::client::get(lb.addr, "/");
        r.assert_local_error(502);
    }
}

/// Bytes a backend sends past a response that has no body (204, 304, a response to
/// HEAD), here a whole forged response, never reach the client: the backend
/// connection is not reused, and the next response on the client connection is the
/// real one.
#[test]
fn stray_bytes_after_a_bodiless_response_do_not_leak() {
    for (method, resp) in [
        (
            "GET",
            &b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"[..],
        ),
        (
            "GET",
            &b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"[..],
        ),
        (
            "HEAD",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"[..],
        ),
    ] {
        let be = backend_answering(resp);
        let lb = Balancer::new().backend(be.addr).start();
        let mut c = Conn::open(lb.addr);
        c.send(format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let r = c.read_response_for(method);
        assert!(matches!(r.status, 200 | 204 | 304), "{method}: {r:?}");
        let next = c.get("/next");
        assert_eq!(next.text(), "next", "{method} {:?}", r.status);
        assert!(c.take_buffered().is_empty(), "{method} {:?}", r.status);
        let seen = be.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[1].conn, 1,
            "backend connection reused after stray bytes ({method} {})",
            r.status
        );
    }
}

/// An endless run of interim (1xx) responses is cut short with a 502, not waited out.
#[test]
fn flood_of_interim_responses_is_a_502() {
    let be = TestBackend::start(|_| {
        Reply::With(Box::new(|s| {
            let batch = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(100);
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end && s.write_all(&batch).is_ok() {
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        }))
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .backend_response(Duration::from_secs(30))
        .start();
    let t = Instant::now();
    let r = crate::support::client::get(lb.addr, "/");
    r.assert_local_error(502);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

/// A response whose framing is faulty (RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0
/// message "MUST" be treated as faulty framing and the connection closed after it;
/// 6.3: Content-Length beside Transfer-Encoding "ought to be handled as an error") is
/// relayed by its chunked framing, but its backend connection must not carry another
/// request: the backend may have meant the other framing.
#[test]
fn backend_connection_with_faulty_framing_is_not_reused() {
    for resp in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
        &b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
    ] {
        let be = backend_answering(resp);
        let lb = Balancer::new().backend(be.addr).start();
        let mut c = Conn::open(lb.addr);
        assert_eq!(c.get("/").text(), "ok");
        assert_eq!(c.get("/next").text(), "next");
        let seen = be.requests();
        assert_eq!(
            seen[1].conn,
            1,
            "backend connection reused after {:?}",
            String::from_utf8_lossy(resp)
        );
    }
}
