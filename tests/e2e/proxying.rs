//! What a forwarded request and its response look like on both sides.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use crate::support::client::{get, raw};
use crate::support::{Balancer, Conn, Reply, TestBackend, eventually};

#[test]
fn round_robin_alternates_between_echo_backends() {
    let b1 = switchyard::demo::EchoBackend::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        "demo-1",
    )
    .unwrap();
    let b2 = switchyard::demo::EchoBackend::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        "demo-2",
    )
    .unwrap();
    let lb = Balancer::new()
        .backend(b1.addr())
        .backend(b2.addr())
        .start();
    let names: Vec<String> = (0..4)
        .map(|_| {
            let r = get(lb.addr, "/");
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-backend"), r.json()["backend"].as_str());
            r.json()["backend"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(names, ["demo-1", "demo-2", "demo-1", "demo-2"]);
}

#[test]
fn request_arrives_intact_with_forwarding_headers() {
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = Balancer::new().backend(be.addr).start();
    let mut req = b"PUT /a/b%20c?x=1&y=%2F&z HTTP/1.1\r\nHost: shop.example:8080\r\nX-First: 1\r\nX-Obs: caf\xe9\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.1\r\nX-Forwarded-Proto: https\r\nVia: 1.0 edge\r\nX-Last: z\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let r = raw(lb.addr, &req);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("via"), Some("1.1 switchyard"));
    let got = &be.requests()[0];
    assert_eq!(got.method, "PUT");
    assert_eq!(got.target, "/a/b%20c?x=1&y=%2F&z");
    assert_eq!(got.body, b"hello");
    assert_eq!(got.header("host").as_deref(), Some("shop.example:8080"));
    assert_eq!(
        got.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-obs"))
            .unwrap()
            .1,
        b"caf\xe9"
    );
    assert_eq!(
        got.header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 198.51.100.1, 127.0.0.1")
    );
    assert_eq!(
        got.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for"))
            .count(),
        1
    );
    assert_eq!(got.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        got.header("via").as_deref(),
        Some("1.0 edge, 1.1 switchyard")
    );
    // End-to-end headers keep their relative order.
    let names: Vec<String> = got
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    let pos = |n: &str| names.iter().position(|k| k == n).unwrap();
    assert!(
        pos("host") < pos("x-first")
            && pos("x-first") < pos("x-obs")
            && pos("x-obs") < pos("x-last")
    );

    // No X-Forwarded-For at all: one is added.
    req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    raw(lb.addr, &req);
    assert_eq!(
        be.requests()[1].header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

#[test]
fn hop_by_hop_headers_are_removed_both_ways() {
    let be = TestBackend::start(|_| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nConnection: X-Secret-Resp, keep-alive\r\nX-Secret-Resp: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let lb = Balancer::new().backend(be.addr).start();
    let r = raw(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: foo/2\r\nX-Kept: yes\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    for h in [
        "connection",
        "x-secret-resp",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(
            r.header(h).is_none(),
            "client got hop-by-hop {h}: {:?}",
            r.headers
        );
    }
    assert_eq!(r.header("x-kept"), Some("yes"));
    let got = &be.requests()[0];
    for h in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(!got.has(h), "backend got hop-by-hop {h}: {:?}", got.headers);
    }
    assert_eq!(got.header("x-kept").as_deref(), Some("yes"));
}

/// The backend sees the first MiB of an 8 MiB upload while the client is still
/// holding the rest back: the body streams, it is not collected first.
#[test]
fn upload_streams_to_the_backend() {
    const TOTAL: usize = 8 << 20;
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    let be = TestBackend::raw(move |mut stream| {
        let mut buf = vec![0u8; 65536];
        let mut head = Vec::new();
        // Read the head.
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        let at = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut got = head.len() - at;
        s.store(got, SeqCst);
        while got < TOTAL {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "balancer closed the upload early");
            got += n;
            s.store(got, SeqCst);
        }
        let body = format!("{got}");
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes());
    let mib = vec![b'x'; 1 << 20];
    c.send(&mib);
    assert!(
        eventually(Duration::from_secs(5), || seen.load(SeqCst) >= 900 * 1024),
        "backend saw only {} bytes of the first MiB: the upload was buffered",
        seen.load(SeqCst)
    );
    for _ in 1..8 {
        c.send(&mib);
    }
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), TOTAL.to_string());
}

/// The client reads the first 4 MiB of a download while the backend still holds back
/// the second half.
#[test]
fn download_streams_to_the_client() {
    const HALF: usize = 4 << 20;
    let release = Arc::new(AtomicUsize::new(0));
    let rel = Arc::clone(&release);
    let be = TestBackend::start(move |_| {
        let rel = Arc::clone(&rel);
        Reply::With(Box::new(move |s| {
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 2 * HALF).unwrap();
            s.write_all(&vec![b'a'; HALF]).unwrap();
            assert!(
                eventually(Duration::from_secs(10), || rel.load(SeqCst) == 1),
                "never released"
            );
            s.write_all(&vec![b'b'; HALF]).unwrap();
            true
        }))
    });
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = c.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("8388608"));
    let early = c.take_buffered();
    assert!(early.iter().all(|b| *b == b'a'));
    let mut got = early.len();
    let mut buf = vec![0u8; 65536];
    while got < HALF {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0);
        assert!(buf[..n].iter().all(|b| *b == b'a'));
        got += n;
    }
    release.store(1, SeqCst);
    while got < 2 * HALF {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0, "short body: {got}");
        got += n;
    }
    assert_eq!(got, 2 * HALF);
}

#[test]
fn expect_100_continue_gets_the_interim_response() {
    let be = TestBackend::start(|r| Reply::ok(&format!("{}", r.body.len())));
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let interim = c.read_head();
    assert_eq!(interim.status, 100);
    c.send(b"data");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "4"));
    assert!(!be.requests()[0].has("expect"));
}

#[test]
fn keep_alive_and_pipelining() {
    let be = TestBackend::start(|r| Reply::ok(&r.target));
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    assert_eq!(c.get("/one").text(), "/one");
    assert_eq!(c.get("/two").text(), "/two");
    // Three requests in one write; three responses, in order.
    c.send(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\nPOST /p3 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nz");
    let bodies: Vec<String> = (0..3).map(|_| c.read_response().text()).collect();
    assert_eq!(bodies, ["/p1", "/p2", "/p3"]);
}

#[test]
fn http10_client_gets_a_valid_unchunked_response() {
    // The backend answers chunked; an HTTP/1.0 client must not see chunked framing.
    let be = TestBackend::start(|_| {
        Reply::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec())
    });
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(b"GET /old HTTP/1.0\r\n\r\n");
    let out = c.read_to_close();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1."), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nhello world"), "{text}");
    // The backend got an HTTP/1.1 request with a Host.
    let got = &be.requests()[0];
    assert_eq!(got.version, "HTTP/1.1");
    assert_eq!(got.header("host"), Some(be.addr.to_string()));
}

/// Bodies that arrive in many pieces reach the backend byte for byte, both below the
/// replay limit (held whole) and above it (streamed).
#[test]
fn multi_piece_bodies_arrive_byte_for_byte() {
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = Balancer::new().backend(be.addr).start();

    let mut c = Conn::open(lb.addr);
    c.send(b"POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut expected = Vec::new();
    for i in 0..6u8 {
        let piece = vec![b'a' + i; 100 + i as usize];
        expected.extend_from_slice(&piece);
        c.send(format!("{:x}\r\n", piece.len()).as_bytes())
            .send(&piece)
            .send(b"\r\n");
        std::thread::sleep(Duration::from_millis(5)); // separate reads on the balancer side
    }
    c.send(b"0\r\n\r\n");
    assert_eq!(c.read_response().status, 200);

    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.send(
        format!(
            "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    for piece in big.chunks(7000) {
        c.send(piece);
    }
    assert_eq!(c.read_response().status, 200);

    let got = be.requests();
    assert_eq!(got[0].body, expected);
    assert_eq!(got[1].body.len(), big.len());
    assert!(got[1].body == big, "large body corrupted");
}

/// Header lines go through as the client wrote them, name case and order kept, minus
/// the hop-by-hop ones, with the forwarding headers edited; the response's lines come
/// back with their case kept too.
#[test]
fn header_case_and_order_are_kept_both_ways() {
    let be = TestBackend::start(|_| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nX-Resp-Mixed: a\r\nx-resp-lower: b\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: 1\r\nX-RESP-UPPER: c\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let lb = Balancer::new().backend(be.addr).start();
    let r = raw(
        lb.addr,
        b"GET /case HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: v\r\nConnection: keep-alive, X-Hop\r\nx-lower: w\r\nX-Hop: gone\r\nKeep-Alive: 300\r\nTE: trailers\r\nX-Forwarded-For: 203.0.113.7\r\nX-UPPER: z\r\nx-forwarded-for: 198.51.100.1\r\nX-Forwarded-Proto: https\r\nVia: 1.0 edge\r\nX-Last: 1\r\n\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let got = &be.requests()[0];
    let forwarding = ["x-forwarded-for", "x-forwarded-proto", "via"];
    let lines: Vec<(String, String)> = got
        .headers
        .iter()
        .filter(|(k, _)| !forwarding.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let want: Vec<(String, String)> = [
        ("Host", "a"),
        ("X-Mixed-Case", "v"),
        ("x-lower", "w"),
        ("X-UPPER", "z"),
        ("X-Last", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(lines, want, "all lines: {:?}", got.headers);
    let once = |name: &str| {
        let all: Vec<String> = got
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert_eq!(all.len(), 1, "{name}: {:?}", got.headers);
        all[0].clone()
    };
    assert_eq!(
        once("x-forwarded-for"),
        "203.0.113.7, 198.51.100.1, 127.0.0.1"
    );
    assert_eq!(once("x-forwarded-proto"), "http");
    assert_eq!(once("via"), "1.0 edge, 1.1 switchyard");

    let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|k| *k == n)
            .unwrap_or_else(|| panic!("no {n:?} (case kept) in {names:?}"))
    };
    assert!(
        pos("X-Resp-Mixed") < pos("x-resp-lower") && pos("x-resp-lower") < pos("X-RESP-UPPER"),
        "{names:?}"
    );
    assert!(r.header("x-resp-hop").is_none(), "{:?}", r.headers);
}

/// Three requests in one write, each framed differently, get three responses in
/// order on the one connection, and each body reaches the backend whole.
#[test]
fn pipelined_requests_of_every_framing() {
    let be = TestBackend::start(|r| {
        Reply::ok(&format!(
            "{} {}",
            r.target,
            String::from_utf8_lossy(&r.body)
        ))
    });
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(
        b"GET /get HTTP/1.1\r\nHost: a\r\n\r\n\
POST /length HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n",
    );
    let bodies: Vec<String> = (0..3).map(|_| c.read_response().text()).collect();
    assert_eq!(bodies, ["/get ", "/length hello", "/chunked Wikipedia"]);
    // Still the same connection, still usable.
    assert_eq!(c.get("/after").text(), "/after ");
    let got = be.requests();
    let seen: Vec<(&str, &str, &[u8])> = got
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str(), r.body.as_slice()))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/get", &b""[..]),
            ("POST", "/length", b"hello"),
            ("POST", "/chunked", b"Wikipedia"),
            ("GET", "/after", b""),
        ]
    );

    // The same with bodies over the 64 KiB held whole, so they stream.
    let big = vec![b'x'; 100_000];
    let mut msg =
        b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in big.chunks(30_000) {
        msg.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        msg.extend_from_slice(piece);
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b"0\r\n\r\n");
    msg.extend_from_slice(
        format!(
            "POST /length HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    msg.extend_from_slice(&big);
    msg.extend_from_slice(b"GET /get HTTP/1.1\r\nHost: a\r\n\r\n");
    c.send(&msg);
    let statuses: Vec<u16> = (0..3).map(|_| c.read_response().status).collect();
    assert_eq!(statuses, [200, 200, 200]);
    let got = be.requests();
    let seen: Vec<(&str, usize)> = got[4..]
        .iter()
        .map(|r| (r.target.as_str(), r.body.len()))
        .collect();
    assert_eq!(
        seen,
        [("/chunked", big.len()), ("/length", big.len()), ("/get", 0)]
    );
    assert!(
        got[4].body == big && got[5].body == big,
        "a streamed body changed"
    );
}
