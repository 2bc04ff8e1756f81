//! WebSocket tunnels: the upgrade handshake passes through, then frames flow both ways.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use crate::support::client::raw;
use crate::support::{Balancer, Conn, TestBackend};

/// RFC 6455's example key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn read_frame(s: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let masked = h[1] & 0x80 != 0;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).ok()?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut mask = [0u8; 4];
    if masked {
        s.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Some((h[0] & 0x0f, payload))
}

fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    assert!(payload.len() < 126);
    f.push(m | payload.len() as u8);
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Reads a request head byte by byte (nothing past it); lower-cased, `None` at EOF.
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// A WebSocket echo server: answers the handshake, echoes every frame until Close.
fn echo_backend() -> TestBackend {
    echo_backend_counting_ends().0
}

/// The echo server, and how many of its tunnels have ended (Close or EOF).
fn echo_backend_counting_ends() -> (TestBackend, Arc<AtomicUsize>) {
    let ended = Arc::new(AtomicUsize::new(0));
    let e = Arc::clone(&ended);
    let be = TestBackend::raw(move |mut s: TcpStream| {
        let Some(text) = read_head(&mut s) else {
            return;
        };
        if !text.contains("upgrade: websocket") {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        assert!(text.contains(&KEY.to_ascii_lowercase()), "{text}");
        let reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        );
        s.write_all(reply.as_bytes()).unwrap();
        while let Some((op, payload)) = read_frame(&mut s) {
            let _ = s.write_all(&frame(op, &payload, None));
            if op == 8 {
                break;
            }
        }
        e.fetch_add(1, SeqCst);
    });
    (be, ended)
}

fn handshake(c: &mut Conn) {
    c.send(format!("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes());
    let r = c.read_head();
    assert_eq!(r.status, 101, "{:?}", r.headers);
    assert_eq!(r.header("sec-websocket-accept"), Some(ACCEPT));
    assert!(
        r.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    );
    assert!(
        r.header("connection")
            .is_some_and(|u| u.eq_ignore_ascii_case("upgrade")),
        "{:?}",
        r.headers
    );
}

#[test]
fn websocket_echo_round_trip() {
    let be = echo_backend();
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    handshake(&mut c);
    for msg in ["hello switchyard", "second frame"] {
        c.send(&frame(1, msg.as_bytes(), Some([1, 2, 3, 4])));
        let (op, payload) = read_frame(&mut c.stream).expect("echo frame");
        assert_eq!((op, payload.as_slice()), (1, msg.as_bytes()));
    }
    c.send(&frame(8, b"", Some([9, 9, 9, 9])));
    let (op, _) = read_frame(&mut c.stream).expect("close frame");
    assert_eq!(op, 8);
    assert!(
        c.closed_within(Duration::from_secs(8)),
        "tunnel not closed after the backend closed"
    );
}

/// A tunnel with traffic outlives `client_idle`; one silent for `client_idle` is
/// closed, on both sides, and not before.
#[test]
fn idle_tunnel_is_closed() {
    let (be, ended) = echo_backend_counting_ends();
    let lb = Balancer::new()
        .backend(be.addr)
        .client_idle(Duration::from_millis(400))
        .start();
    let mut c = Conn::open(lb.addr);
    handshake(&mut c);
    // Traffic keeps it open past the idle time (these gaps are the scenario)...
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        c.send(&frame(1, b"ping", Some([5, 6, 7, 8])));
        assert!(read_frame(&mut c.stream).is_some());
    }
    // ...silence closes it, once it has lasted client_idle.
    let quiet = std::time::Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(8)),
        "idle tunnel never closed"
    );
    assert!(
        quiet.elapsed() >= Duration::from_millis(350),
        "closed after {:?} of silence, before client_idle",
        quiet.elapsed()
    );
    assert!(
        crate::support::eventually(Duration::from_secs(5), || ended.load(SeqCst) == 1),
        "the backend side of the tunnel stayed open"
    );
}

#[test]
fn other_upgrades_are_refused_and_h2c_is_ignored() {
    let be = TestBackend::start(|_| crate::support::Reply::ok("plain"));
    let lb = Balancer::new().backend(be.addr).start();
    let r = raw(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n",
    );
    assert_eq!(r.status, 501);
    assert!(r.text().contains("websocket"), "{}", r.text());
    let r = raw(lb.addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    assert!(!be.requests()[0].has("upgrade"));
}

/// An HTTPS backend that also speaks HTTP/2: once a plain request has made the
/// balancer's connection to it HTTP/2, a WebSocket upgrade still goes out as
/// HTTP/1.1 on a connection of its own (HTTP/2 has no `Upgrade`).
#[test]
fn websocket_to_an_https_backend_that_speaks_h2_goes_over_http1() {
    let dir = crate::support::Scratch::new("switchyard-ws-tls");
    let ca = crate::support::tls::TestCa::new(&dir);
    let addr = crate::support::tls::ws_tls_backend(ca.server_cert(), ACCEPT);
    let address = format!("localhost:{}", addr.port());
    let b = switchyard::backend::Backend {
        id: switchyard::backend::BackendId::of(&address),
        address,
        host: "localhost".into(),
        port: addr.port(),
        scheme: switchyard::backend::Scheme::Https,
        addrs: vec![addr],
        weight: 1,
        tls: switchyard::backend::TlsOptions {
            ca_file: Some(ca.pem_path.clone()),
            insecure: false,
        },
        protocol: Default::default(),
        max_connections: 0,
        proxy_protocol: None,
        name: None,
    };
    let lb = Balancer::new()
        .backend(addr)
        .with(move |c| c.backends = switchyard::backend::BackendSet::new(vec![b]))
        .start();
    // Plain requests learn (by ALPN) that the backend speaks HTTP/2.
    assert_eq!(crate::support::client::get(lb.addr, "/x").text(), "h2 /x");
    let mut c = Conn::open(lb.addr);
    handshake(&mut c);
    c.send(&frame(1, b"over tls", Some([1, 2, 3, 4])));
    let (op, payload) = read_frame(&mut c.stream).expect("echo frame");
    assert_eq!((op, payload.as_slice()), (1, &b"over tls"[..]));
}

/// A client that stops reading while the backend keeps sending cannot hold the tunnel
/// (and the backend connection) open: writes that make no progress for `client_idle`
/// close both sides.
#[test]
fn tunnel_to_a_client_that_stopped_reading_is_closed() {
    let closed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&closed);
    let be = TestBackend::raw(move |mut s: TcpStream| {
        if read_head(&mut s).is_none() {
            return;
        }
        let reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        );
        s.write_all(reply.as_bytes()).unwrap();
        // Flood until the balancer gives up on the client and closes us.
        let chunk = vec![0x42u8; 64 * 1024];
        while s.write_all(&chunk).is_ok() {}
        flag.store(true, SeqCst);
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .client_idle(Duration::from_millis(300))
        .start();
    let mut c = Conn::open(lb.addr);
    handshake(&mut c);
    // The client reads nothing more.
    assert!(
        crate::support::eventually(Duration::from_secs(10), || closed.load(SeqCst)),
        "the tunnel kept writing to a client that stopped reading"
    );
    drop(c);
}

/// A backend that refuses the upgrade (426) answers on a connection dialed for the
/// upgrade alone: it is not pooled, so later requests never ride on it.
#[test]
fn refused_upgrade_connection_is_not_pooled() {
    let be = TestBackend::start(|r| {
        if r.has("upgrade") {
            crate::support::Reply::Raw(
                b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno".to_vec(),
            )
        } else {
            crate::support::Reply::ok("plain")
        }
    });
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    c.send(format!("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes());
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (426, "no"));
    assert_eq!(c.get("/").text(), "plain");
    assert_eq!(be.connections(), 2, "the upgrade's connection was reused");
}

/// A keep-alive connection that sat idle (and was parked) can still be upgraded, and
/// the tunnel gets the socket.
#[test]
fn websocket_on_a_connection_that_was_idle() {
    let be = echo_backend();
    let lb = Balancer::new().backend(be.addr).start();
    let mut c = Conn::open(lb.addr);
    // A plain request first (the echo backend answers it with a 200 and closes).
    assert_eq!(c.get("/plain").status, 200);
    std::thread::sleep(Duration::from_millis(100)); // long enough to park: the scenario
    handshake(&mut c);
    c.send(&frame(1, b"after a nap", Some([1, 1, 1, 1])));
    let (op, payload) = read_frame(&mut c.stream).expect("echo frame");
    assert_eq!((op, payload.as_slice()), (1, &b"after a nap"[..]));
}

/// A drain waits for an open tunnel: the balancer stops accepting, the tunnel keeps
/// carrying frames, and the drain ends once the tunnel closes.
#[test]
fn a_drain_waits_for_an_open_tunnel() {
    let be = echo_backend();
    let mut lb = Balancer::new()
        .backend(be.addr)
        .with(|c| c.timeouts.drain = Duration::from_secs(30))
        .start();
    let addr = lb.addr;
    let mut c = Conn::open(addr);
    handshake(&mut c);
    let drain = lb.drain_in_background();
    assert!(
        crate::support::eventually(Duration::from_secs(5), || TcpStream::connect(addr).is_err()),
        "still accepting while draining"
    );
    for msg in ["still", "open"] {
        c.send(&frame(1, msg.as_bytes(), Some([3, 1, 4, 1])));
        let (op, payload) = read_frame(&mut c.stream).expect("echo while draining");
        assert_eq!((op, payload.as_slice()), (1, msg.as_bytes()));
    }
    assert!(
        !drain.is_finished(),
        "the drain did not wait for the tunnel"
    );
    c.send(&frame(8, b"", Some([9, 9, 9, 9])));
    assert_eq!(read_frame(&mut c.stream).expect("close frame").0, 8);
    assert!(
        crate::support::eventually(Duration::from_secs(5), || drain.is_finished()),
        "the drain went on after the tunnel closed"
    );
    drain.join().unwrap();
}

/// A tunnel still open at the drain deadline is cut then, not before.
#[test]
fn a_tunnel_open_at_the_drain_deadline_is_cut() {
    let be = echo_backend();
    let mut lb = Balancer::new()
        .backend(be.addr)
        .client_idle(Duration::from_secs(30))
        .with(|c| c.timeouts.drain = Duration::from_millis(500))
        .start();
    let mut c = Conn::open(lb.addr);
    handshake(&mut c);
    let t = std::time::Instant::now();
    let drain = lb.drain_in_background();
    assert!(
        c.closed_within(Duration::from_secs(8)),
        "the tunnel outlived the drain deadline"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "cut after {:?}, before the drain deadline",
        t.elapsed()
    );
    drain.join().unwrap();
}
