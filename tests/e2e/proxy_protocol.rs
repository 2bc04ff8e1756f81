//! PROXY protocol: headers from trusted peers name the client; missing, broken or
//! untrusted ones close the connection; backends with `proxy_protocol:` get one.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use switchyard::proxy_protocol::Cidr;

use crate::support::Balancer;
use crate::support::backend::{Reply, TestBackend};
use crate::support::client::Conn;

const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h
}

fn v2_tcp6(src: std::net::Ipv6Addr) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&[0x30, 0x39, 0x1f, 0x90]);
    h
}

fn v2_local() -> Vec<u8> {
    [V2_SIG, &[0x20, 0x00, 0, 0]].concat()
}

/// Trusts 127.0.0.1 only: tests speak from 127.0.0.2 to be untrusted.
fn trusting_localhost() -> Balancer {
    let nets: Vec<Cidr> = vec!["127.0.0.1/32".parse().unwrap()];
    Balancer::new().with(move |c| c.listeners[0].proxy_protocol = Some(nets))
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

fn untrusted(lb: SocketAddr) -> Conn {
    Conn::open_from(lb, IpAddr::from([127, 0, 0, 2]))
}

/// Closed with nothing written back.
fn refused(c: &mut Conn) -> bool {
    c.closed_within(Duration::from_secs(5)) && c.take_buffered().is_empty()
}

fn refusals(lb: &crate::support::balancer::Started) -> f64 {
    let m = lb.metrics();
    let labels = [("reason", "proxy_protocol")];
    m.value("switchyard_connections_refused_total", &labels)
        .expect("the proxy_protocol refusal counter")
}

/// v1, v2 (IPv4 and IPv6, header in pieces or with the request in one write) from a
/// trusted peer name the client in X-Forwarded-For for every request on the
/// connection; v2 LOCAL keeps the peer's address.
#[test]
fn proxy_protocol_headers_name_the_client() {
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = trusting_localhost().backend(be.addr).start();
    let v1 = b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 8080\r\n".to_vec();
    let v1_6 = b"PROXY TCP6 2001:db8::9 ::1 40000 8080\r\n".to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (v1, "192.0.2.1"),
        (v1_6, "2001:db8::9"),
        (v2_tcp4([198, 51, 100, 7], 5555), "198.51.100.7"),
        (v2_tcp6("2001:db8::7".parse().unwrap()), "2001:db8::7"),
        (v2_local(), "127.0.0.1"),
        (b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
    ];
    for (i, (header, client)) in cases.iter().enumerate() {
        let mut c = Conn::open(lb.addr);
        if i % 2 == 0 {
            // The header in pieces, then the request on its own.
            let (a, b) = header.split_at(header.len() / 2);
            c.send(&a[..1]).send(&a[1..]).send(b);
            assert_eq!(c.get("/first").status, 200);
        } else {
            // Header and request in one segment: the request's bytes are not lost.
            c.send(&[header.as_slice(), GET].concat());
            assert_eq!(c.read_response().status, 200);
        }
        assert_eq!(c.get("/second").status, 200, "keep-alive after the header");
        let seen = be.requests();
        let last_two = &seen[seen.len() - 2..];
        for r in last_two {
            assert_eq!(r.header("x-forwarded-for").as_deref(), Some(*client), "{i}");
        }
    }
}

/// A trusted peer without a header, and an untrusted one with one, are closed without
/// a byte, never reach a backend, and are counted; an untrusted peer without a header
/// is served as usual.
#[test]
fn proxy_protocol_refuses_missing_and_untrusted_headers() {
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = trusting_localhost().backend(be.addr).admin().start();
    assert_eq!(refusals(&lb), 0.0);
    let mut c = Conn::open(lb.addr);
    c.send(GET);
    assert!(refused(&mut c), "trusted peer without a header");
    let mut c = untrusted(lb.addr);
    c.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(refused(&mut c), "untrusted peer with a v1 header");
    let mut c = untrusted(lb.addr);
    c.send(&[v2_tcp4([192, 0, 2, 1], 1).as_slice(), GET].concat());
    assert!(refused(&mut c), "untrusted peer with a v2 header");
    assert_eq!(be.request_count(), 0);
    assert_eq!(refusals(&lb), 3.0);
    // An untrusted peer that sends HTTP (even starting with P) is served, and its own
    // address is the client's.
    let mut c = untrusted(lb.addr);
    c.send(b"P");
    c.send(b"OST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    assert_eq!(
        be.requests()[0].header("x-forwarded-for").as_deref(),
        Some("127.0.0.2")
    );
    assert_eq!(refusals(&lb), 3.0);
    // `trusted` follows a reload: 127.0.0.1 is now an ordinary client.
    lb.reload(|c| c.listeners[0].proxy_protocol = Some(vec!["127.0.0.2".parse().unwrap()]));
    let served = crate::support::eventually(Duration::from_secs(5), || {
        let mut c = Conn::open(lb.addr);
        c.send(GET);
        c.read_response_or_close().is_some_and(|r| r.status == 200)
    });
    assert!(
        served,
        "127.0.0.1 still had to send a header after the reload"
    );
    let mut c = untrusted(lb.addr);
    c.send(GET);
    assert!(refused(&mut c), "127.0.0.2 is trusted now");
}

/// Truncated, oversized, bad-signature and over-long headers close the connection
/// (no panic); the worker serves the next connection.
#[test]
fn broken_proxy_headers_are_refused() {
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = trusting_localhost()
        .backend(be.addr)
        .admin()
        .client_header(Duration::from_millis(300))
        .start();
    let mut oversized = v2_tcp4([192, 0, 2, 1], 1);
    oversized[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let mut bad_sig = v2_tcp4([192, 0, 2, 1], 1);
    bad_sig[7] = b'q';
    let mut bad_version = v2_tcp4([192, 0, 2, 1], 1);
    bad_version[12] = 0x31;
    let mut short_family = v2_tcp4([192, 0, 2, 1], 1);
    short_family[13] = 0x21; // IPv6 in 12 bytes
    let long_v1 = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized v2", [oversized.as_slice(), GET].concat()),
        ("bad signature", [bad_sig.as_slice(), GET].concat()),
        ("bad version", [bad_version.as_slice(), GET].concat()),
        ("short family", [short_family.as_slice(), GET].concat()),
        ("v1 without a line end", long_v1),
        ("bad v1", b"PROXY TCP4 192.0.2.1 nope 1 2\r\n".to_vec()),
        // Truncated: the rest never comes, the header clock closes it.
        ("truncated v2", v2_tcp4([192, 0, 2, 1], 1)[..20].to_vec()),
        ("truncated v1", b"PROXY TCP4 192.0.2.1".to_vec()),
        // Silent: a trusted peer's header is due within client_header of the accept.
        ("nothing", Vec::new()),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let mut c = Conn::open(lb.addr);
        c.send(bytes);
        assert!(refused(&mut c), "{what}");
        assert_eq!(refusals(&lb), (i + 1) as f64, "{what}");
    }
    // A header cut short by the client's close is not a refusal, just a close.
    let mut c = Conn::open(lb.addr);
    c.send(&v2_tcp4([192, 0, 2, 1], 1)[..10]);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(refused(&mut c));
    assert_eq!(be.request_count(), 0);
    let mut c = Conn::open(lb.addr);
    c.send(&v2_tcp4([192, 0, 2, 1], 1));
    assert_eq!(c.get("/").status, 200);
}

/// `key: client_ip` rate limits and `connections_per_client` count the address the
/// header names, not the balancer in front.
#[test]
fn proxy_protocol_address_keys_limits() {
    use switchyard::limit::{LimitKey, RateLimit, Scope, name_hash};
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = trusting_localhost()
        .backend(be.addr)
        .with(|c| {
            c.limits.connections_per_client = 1;
            c.rate_limits = vec![RateLimit {
                name: "per-client".into(),
                name_hash: name_hash("per-client"),
                key: LimitKey::ClientIp,
                quota: 1,
                window_s: 3600,
                burst: 1,
                scope: Scope::Local,
            }];
        })
        .start();
    let open = |a: u8| {
        let mut c = Conn::open(lb.addr);
        c.send(&v2_tcp4([192, 0, 2, a], 1000));
        c
    };
    // Two clients behind the same peer: one connection each is allowed at once.
    let (mut a, mut b) = (open(1), open(2));
    assert_eq!(a.get("/").status, 200);
    assert_eq!(b.get("/").status, 200);
    let mut a2 = open(1);
    let r = a2.read_response();
    assert_eq!(r.status, 429, "a second connection from 192.0.2.1");
    // The rate limit (1 + burst 1 per hour) is per named client too.
    assert_eq!(a.get("/").status, 200);
    assert_eq!(a.get("/").status, 429);
    assert_eq!(b.get("/").status, 200);
}

/// A backend with `proxy_protocol: v2` reads one header per new connection naming the
/// client (as its own header named it) and the balancer's address; a pooled
/// connection sends none again. A `v1` backend gets the text form.
#[test]
fn backends_get_a_proxy_header_per_connection() {
    for v in [
        switchyard::proxy_protocol::Version::V2,
        switchyard::proxy_protocol::Version::V1,
    ] {
        let (tx, rx) = mpsc::channel::<String>();
        let tx = std::sync::Mutex::new(tx);
        let be = TestBackend::raw(move |stream| {
            let tx = tx.lock().unwrap().clone();
            let mut r = BufReader::new(stream);
            // The header, parsed from what the buffer holds.
            let buf = r.fill_buf().unwrap().to_vec();
            let config = proxy_header::ParseConfig::default();
            let (h, len) = match proxy_header::ProxyHeader::parse(&buf, config) {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.send(format!("no header: {e}"));
                    return;
                }
            };
            let a = h.proxied_address().expect("addresses");
            let _ = tx.send(format!("{} {} {}", buf[0] == b'P', a.source, a.destination));
            r.consume(len);
            // Then plain HTTP/1.1 requests, keep-alive, until the balancer closes.
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let _ = tx.send(format!("request {}", line.trim_end()));
                while line != "\r\n" {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                }
                let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if r.get_mut().write_all(ok).is_err() {
                    return;
                }
            }
        });
        let lb = trusting_localhost()
            .backend(be.addr)
            .with(move |c| {
                let mut backends = c.backends.as_slice().to_vec();
                backends[0].proxy_protocol = Some(v);
                c.backends = switchyard::backend::BackendSet::new(backends);
            })
            .start();
        let mut c = Conn::open(lb.addr);
        c.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 8080\r\n");
        assert_eq!(c.get("/one").status, 200);
        assert_eq!(c.get("/two").status, 200);
        let got: Vec<String> = (0..3)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(5))
                    .expect("backend saw")
            })
            .collect();
        let v1 = v == switchyard::proxy_protocol::Version::V1;
        assert_eq!(
            got,
            [
                format!("{v1} 192.0.2.1:40000 {}", lb.addr),
                "request GET /one HTTP/1.1".to_string(),
                "request GET /two HTTP/1.1".to_string(),
            ]
        );
        // Another client (another address) gets a connection of its own.
        let mut d = Conn::open(lb.addr);
        d.send(&v2_tcp4([198, 51, 100, 2], 7000));
        assert_eq!(d.get("/three").status, 200);
        let header = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("second dial");
        assert_eq!(header, format!("{v1} 198.51.100.2:7000 {}", lb.addr));
    }
}

/// On a TLS listener the header comes before the TLS handshake.
#[test]
fn proxy_protocol_header_precedes_tls() {
    use switchyard::config::{CertificatePaths, ListenTls};
    let dir = crate::support::Scratch::new("sy-pp-tls");
    let ca = crate::support::tls::TestCa::new(&dir);
    let (cert, key) = ca.server_cert_for(&["a.test"]).write(&dir, "a");
    let tls = ListenTls::load(vec![CertificatePaths { cert, key }]).unwrap();
    let be = TestBackend::start(|_| Reply::ok("ok"));
    let lb = trusting_localhost()
        .backend(be.addr)
        .with(move |c| c.listeners[0].tls = Some(tls))
        .start();
    let config = crate::support::tls::client_config(&ca, &[b"http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = std::net::TcpStream::connect(lb.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&v2_tcp4([203, 0, 113, 9], 4444)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut tls, &mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let r = &be.requests()[0];
    assert_eq!(r.header("x-forwarded-for").as_deref(), Some("203.0.113.9"));
    assert_eq!(r.header("x-forwarded-proto").as_deref(), Some("https"));

    // HTTP/2 over TLS (the hyper request path) takes the header's address too.
    let config = crate::support::tls::client_config(&ca, &[b"h2"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = lb.addr;
    rt.block_on(async move {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PROXY TCP6 2001:db8::5 ::1 1000 443\r\n")
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let io = hyper_util::rt::TokioIo::new(tls);
        let exec = hyper_util::rt::TokioExecutor::new();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
                exec, io,
            )
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get("https://a.test/h2")
            .body(http_body_util::Empty::new())
            .unwrap();
        let r = send.send_request(req).await.expect("h2 response");
        assert_eq!(r.status(), 200);
    });
    let r = &be.requests()[1];
    assert_eq!(r.target, "/h2");
    assert_eq!(r.header("x-forwarded-for").as_deref(), Some("2001:db8::5"));
}

/// An h2c backend with `proxy_protocol: v2`: its one shared connection's header names
/// the client whose request opened it (later clients ride it without a header), and
/// health probes' connections say LOCAL.
#[test]
fn h2c_backends_get_the_opening_clients_address_and_probes_local() {
    use switchyard::backend::{BackendSet, Protocol};
    let h2 = crate::support::tls::H2Backend::start(None, Duration::ZERO);
    let (tx, rx) = mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    let target = h2.addr;
    // Reads the header, reports it, then relays the bytes to the h2c backend.
    let be = TestBackend::raw(move |stream| {
        let tx = tx.lock().unwrap().clone();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let buf = r.fill_buf().unwrap_or_default().to_vec();
        let config = proxy_header::ParseConfig::default();
        let Ok((h, len)) = proxy_header::ProxyHeader::parse(&buf, config) else {
            let _ = tx.send("no header".into());
            return;
        };
        let said = h
            .proxied_address()
            .map_or("LOCAL".to_string(), |a| a.source.to_string());
        let _ = tx.send(said);
        r.consume(len);
        let mut up = std::net::TcpStream::connect(target).unwrap();
        up.write_all(r.buffer()).unwrap();
        let mut down = up.try_clone().unwrap();
        let mut client = stream;
        let mut client_w = client.try_clone().unwrap();
        let back = std::thread::spawn(move || std::io::copy(&mut down, &mut client_w));
        let _ = std::io::copy(&mut client, &mut up);
        let _ = up.shutdown(std::net::Shutdown::Write);
        let _ = back.join();
    });
    let mut b = switchyard::demo::backend_at(be.addr, 1);
    b.protocol = Protocol::H2c;
    b.proxy_protocol = Some(switchyard::proxy_protocol::Version::V2);
    let lb = trusting_localhost()
        .backend(be.addr)
        .with(move |c| c.backends = BackendSet::new(vec![b]))
        .probes(Duration::from_millis(50))
        .start();
    let probe = rx.recv_timeout(Duration::from_secs(5)).expect("a probe");
    assert_eq!(probe, "LOCAL");
    for (i, a) in [1u8, 2].into_iter().enumerate() {
        let mut c = Conn::open(lb.addr);
        c.send(&v2_tcp4([192, 0, 2, a], 9000));
        let r = c.get(&format!("/r{i}"));
        assert_eq!((r.status, r.text()), (200, format!("HTTP/2.0 /r{i}")));
    }
    // Probes dial on their own; requests shared one connection, opened for 192.0.2.1.
    // (A dial's header is reported before any byte is relayed, so before a response.)
    let said: Vec<String> = rx.try_iter().filter(|s| s != "LOCAL").collect();
    assert_eq!(said, ["192.0.2.1:9000"]);
    assert!(lb.health().is_up(0));
}
