//! Backend responses of every framing reach the client correctly framed, and the
//! client connection stays usable after each.

use std::io::Write;

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
