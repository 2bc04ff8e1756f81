//! Parked connections: an HTTP/1 client connection idle for a moment gives hyper's
//! state back and waits on its socket alone. Nothing about that may show to clients:
//! the same connection serves again (pipelined bytes too, TLS too), the idle clock
//! and drains still close it. That it really parks is read from the
//! `switchyard_connections_parked` gauge, not assumed from a sleep.

use std::time::{Duration, Instant};

use crate::support::balancer::Started;
use crate::support::{Balancer, Conn, Gate, Reply, TestBackend, eventually};

/// The parked-connection gauge of `lb` (started with `.admin()`).
fn parked(lb: &Started) -> f64 {
    lb.metrics()
        .value("switchyard_connections_parked", &[])
        .expect("switchyard_connections_parked")
}

/// Waits until exactly `n` connections are parked.
fn parks(lb: &Started, n: usize) {
    assert!(
        eventually(Duration::from_secs(5), || parked(lb) == n as f64),
        "expected {n} parked, have {}",
        parked(lb)
    );
}

#[test]
fn a_parked_connection_serves_again() {
    let be = TestBackend::start(|r| Reply::ok(&r.target));
    let lb = Balancer::new().backend(be.addr).admin().start();
    let mut c = Conn::open(lb.addr);
    assert_eq!(c.get("/one").text(), "/one");
    parks(&lb, 1);
    assert_eq!(c.get("/two").text(), "/two");
    parks(&lb, 1);
    // Two pipelined requests in one write wake it: both are answered, in order.
    c.send(b"GET /three HTTP/1.1\r\nHost: a\r\n\r\nGET /four HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_response().text(), "/three");
    assert_eq!(c.read_response().text(), "/four");
    parks(&lb, 1);
    // A POST whose body follows its head in a later write.
    c.send(b"POST /five HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
    std::thread::sleep(Duration::from_millis(30)); // the gap between the writes
    c.send(b"hello");
    assert_eq!(c.read_response().text(), "/five");
    assert_eq!(be.requests()[4].body, b"hello");
    assert_eq!(be.connections(), 1);
    parks(&lb, 1);
    // A parked connection the client closes is counted out.
    drop(c);
    parks(&lb, 0);
}

/// The gauge follows a connection through its life: parked before its first request
/// too, not parked while a request is in flight on it, parked again after.
#[test]
fn the_parked_gauge_follows_a_connection() {
    let gate = Gate::new();
    let g = gate.clone();
    let be = TestBackend::start(move |r| {
        if r.target == "/held" {
            g.wait();
        }
        Reply::ok(&r.target)
    });
    let lb = Balancer::new().backend(be.addr).admin().start();
    assert_eq!(parked(&lb), 0.0);
    let mut quiet = Conn::open(lb.addr); // connected, sends nothing
    parks(&lb, 1);
    let mut c = Conn::open(lb.addr);
    c.send(b"GET /held HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || be.count("/held") == 1));
    // `c` is busy; only `quiet` is parked.
    parks(&lb, 1);
    gate.open();
    assert_eq!(c.read_response().text(), "/held");
    parks(&lb, 2);
    assert_eq!(quiet.get("/woken").text(), "/woken");
    parks(&lb, 2);
    drop((quiet, c));
    parks(&lb, 0);
}

/// A TLS-terminating balancer (client idle timeout `idle`) in front of a backend that
/// echoes the target, and an HTTP/1.1 TLS client connected to it.
struct TlsSetup {
    dir: std::path::PathBuf,
    be: TestBackend,
    lb: Started,
    client: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
}

impl TlsSetup {
    fn new(tag: &str, idle: Duration) -> TlsSetup {
        use switchyard::config::{CertificatePaths, ListenTls};
        let dir = std::env::temp_dir().join(format!("switchyard-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = crate::support::tls::TestCa::new(&dir);
        let (cert, key) = ca.server_cert().write(&dir, "lb");
        let be = TestBackend::start(|r| Reply::ok(&r.target));
        let tls = ListenTls::load(vec![CertificatePaths { cert, key }]).unwrap();
        let lb = Balancer::new()
            .backend(be.addr)
            .client_idle(idle)
            .with(move |c| c.listeners[0].tls = Some(tls))
            .admin()
            .start();
        let config = crate::support::tls::client_config(&ca, &[b"http/1.1"]);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = std::net::TcpStream::connect(lb.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        TlsSetup {
            dir,
            be,
            lb,
            client: rustls::StreamOwned::new(conn, tcp),
        }
    }

    /// GET `path` on the TLS connection; the response as text.
    fn get(&mut self, path: &str) -> String {
        use std::io::{Read, Write};
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.client.write_all(req.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !got.ends_with(path.as_bytes()) {
            let n = self.client.read(&mut b).unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8(got).unwrap()
    }
}

impl Drop for TlsSetup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_parked_tls_connection_serves_again() {
    let mut t = TlsSetup::new("park", Duration::from_secs(60));
    assert!(t.get("/one").starts_with("HTTP/1.1 200"));
    parks(&t.lb, 1);
    assert!(t.get("/two").starts_with("HTTP/1.1 200"));
    parks(&t.lb, 1);
    assert_eq!(t.be.connections(), 1);
}

/// A request that outlasts the idle timeout, then silence: the idle clock, started
/// when the response went out, still closes the connection.
#[test]
fn idle_clock_runs_after_a_request_longer_than_itself() {
    let be = TestBackend::start(|r| {
        if r.target == "/slow" {
            std::thread::sleep(Duration::from_millis(700));
        }
        Reply::ok("done")
    });
    let lb = Balancer::new()
        .backend(be.addr)
        .client_idle(Duration::from_millis(400))
        .start();
    let mut c = Conn::open(lb.addr);
    assert_eq!(c.get("/slow").text(), "done");
    let t = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(8)),
        "idle connection never closed"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

/// A drain closes parked connections (after its 1 s linger), as it does idle ones,
/// while it still waits for a request in flight (held at the backend): so the close is
/// the drain's doing, not the end of the process.
#[test]
fn a_drain_closes_parked_connections() {
    let gate = Gate::new();
    let g = gate.clone();
    let be = TestBackend::start(move |r| {
        if r.target == "/held" {
            g.wait();
        }
        Reply::ok("ok")
    });
    let mut lb = Balancer::new().backend(be.addr).admin().start();
    let mut c = Conn::open(lb.addr);
    assert_eq!(c.get("/").text(), "ok");
    parks(&lb, 1);
    let addr = lb.addr;
    let held = std::thread::spawn(move || crate::support::client::get(addr, "/held").text());
    assert!(eventually(Duration::from_secs(5), || be.count("/held") == 1));
    let drain = lb.drain_in_background();
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "the drain left a parked connection open"
    );
    assert!(
        !drain.is_finished(),
        "the drain did not wait for the request"
    );
    gate.open();
    assert_eq!(held.join().unwrap(), "ok");
    drain.join().unwrap();
}

/// During a drain, an idle keep-alive connection may still send one request (within
/// the linger): it is answered, with `Connection: close`, instead of the connection
/// being cut under a request already on its way (which a client sees as an error).
/// Parked and busy-idle connections alike.
#[test]
fn a_request_sent_as_the_drain_starts_is_answered_with_close() {
    let gate = Gate::new();
    let g = gate.clone();
    let be = TestBackend::start(move |r| {
        if r.target == "/held" {
            g.wait();
        }
        Reply::ok(&r.target)
    });
    let mut lb = Balancer::new().backend(be.addr).admin().start();
    let mut parked_conn = Conn::open(lb.addr);
    assert_eq!(parked_conn.get("/").status, 200);
    parks(&lb, 1);
    let mut busy_conn = Conn::open(lb.addr);
    assert_eq!(busy_conn.get("/").status, 200);
    let addr = lb.addr;
    let held = std::thread::spawn(move || crate::support::client::get(addr, "/held").text());
    assert!(eventually(Duration::from_secs(5), || be.count("/held") == 1));
    let drain = lb.drain_in_background();
    // The drain has begun once the listener is gone.
    assert!(eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(addr).is_err()
    }));
    for (name, c) in [("parked", &mut parked_conn), ("idle", &mut busy_conn)] {
        let r = c.get("/late");
        assert_eq!((r.status, r.text().as_str()), (200, "/late"), "{name}");
        assert_eq!(r.header("connection"), Some("close"), "{name}");
    }
    gate.open();
    assert_eq!(held.join().unwrap(), "/held");
    drain.join().unwrap();
}

/// A TLS client trickling bytes of a record that never completes (so no request ever
/// arrives) does not restart the idle clock each time it wakes a parked connection.
#[test]
fn trickling_tls_bytes_do_not_keep_a_connection_alive() {
    use std::io::{Read, Write};
    let mut t = TlsSetup::new("trickle", Duration::from_millis(600));
    assert!(t.get("/").starts_with("HTTP/1.1 200"));
    // An application-data record header announcing 100 bytes, then its bytes one at a
    // time, straight on the TCP socket: nothing ever decrypts to a request.
    let mut raw = t.client.sock.try_clone().unwrap();
    let mut b = [0u8; 64];
    let start = Instant::now();
    let record: Vec<u8> = [&[0x17u8, 0x03, 0x03, 0x00, 0x64][..], &[0u8; 100][..]].concat();
    let mut closed = false;
    for byte in record.iter().take(20) {
        if raw.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    if !closed {
        raw.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        closed = match raw.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
    }
    assert!(
        closed,
        "still open after {:?} of trickling",
        start.elapsed()
    );
}
