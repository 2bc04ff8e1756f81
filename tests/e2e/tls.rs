//! HTTPS backends: verification against a CA file, refusal of an untrusted
//! certificate (and `insecure`), SNI, pooled TLS connections, probes over TLS.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use switchyard::backend::{Backend, BackendId, BackendSet, Scheme, TlsOptions};

use crate::support::Scratch;
use crate::support::client::get;
use crate::support::tls::{TestCa, TlsBackend, self_signed};
use crate::support::{Balancer, Conn, eventually};

/// An `https://localhost:PORT` backend with these TLS options.
fn https(addr: SocketAddr, tls: TlsOptions) -> Backend {
    let address = format!("localhost:{}", addr.port());
    Backend {
        id: BackendId::of(&address),
        address,
        host: "localhost".into(),
        port: addr.port(),
        scheme: Scheme::Https,
        addrs: vec![addr],
        weight: 1,
        tls,
        protocol: Default::default(),
        max_connections: 0,
        proxy_protocol: None,
        name: None,
    }
}

fn balancer_for(b: Backend) -> crate::support::balancer::Started {
    // The builder needs one backend to build a config; it is then replaced.
    let placeholder = b.addrs[0];
    Balancer::new()
        .backend(placeholder)
        .with(move |c| c.backends = BackendSet::new(vec![b]))
        .start()
}

#[test]
fn backend_signed_by_a_ca_file_is_trusted_and_gets_sni() {
    let dir = Scratch::new("ca");
    let ca = TestCa::new(&dir);
    let be = TlsBackend::start(ca.server_cert(), "secure");
    let lb = balancer_for(https(
        be.addr,
        TlsOptions {
            ca_file: Some(ca.pem_path.clone()),
            insecure: false,
        },
    ));
    let mut c = Conn::open(lb.addr);
    for _ in 0..10 {
        let r = c.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "secure"));
    }
    assert_eq!(
        be.sni.lock().unwrap()[0].as_deref(),
        Some("localhost"),
        "SNI is the backend's host name"
    );
    assert_eq!(
        be.handshakes.load(SeqCst),
        1,
        "pooled TLS connection reused"
    );
    assert_eq!(be.requests.load(SeqCst), 10);
}

#[test]
fn untrusted_certificate_is_a_502_naming_the_error_unless_insecure() {
    let be = TlsBackend::start(self_signed(), "selfsigned");
    let lb = balancer_for(https(be.addr, TlsOptions::default()));
    let r = get(lb.addr, "/");
    r.assert_local_error(502);
    // The README's own example, word for word.
    assert_eq!(
        r.text().trim_end(),
        "502 Bad Gateway: TLS to the backend failed: invalid peer certificate: UnknownIssuer"
    );
    assert_eq!(be.requests.load(SeqCst), 0);

    let lb = balancer_for(https(
        be.addr,
        TlsOptions {
            ca_file: None,
            insecure: true,
        },
    ));
    let r = get(lb.addr, "/");
    assert_eq!((r.status, r.text().as_str()), (200, "selfsigned"));
}

#[test]
fn probes_speak_tls() {
    let dir = Scratch::new("probe");
    let ca = TestCa::new(&dir);
    let good = TlsBackend::start(ca.server_cert(), "good");
    let bad = TlsBackend::start(self_signed(), "bad");
    let ca_file = Some(ca.pem_path.clone());
    let (g, b) = (
        https(
            good.addr,
            TlsOptions {
                ca_file: ca_file.clone(),
                insecure: false,
            },
        ),
        https(
            bad.addr,
            TlsOptions {
                ca_file,
                insecure: false,
            },
        ),
    );
    let lb = Balancer::new()
        .backend(good.addr)
        .with(move |c| c.backends = BackendSet::new(vec![g, b]))
        .probes(Duration::from_millis(100))
        .start();
    // The untrusted one is marked down by its probes; the good one is probed over TLS.
    assert!(eventually(Duration::from_secs(3), || !lb.health().is_up(1)));
    assert!(eventually(Duration::from_secs(3), || good
        .requests
        .load(SeqCst)
        > 0));
    assert!(lb.health().is_up(0));
    for _ in 0..5 {
        assert_eq!(get(lb.addr, "/").text(), "good");
    }
}

/// curl, over TLS to the listener: HTTP/2 by ALPN (HTTP/1.1 when asked), the
/// certificate chosen by SNI, and `X-Forwarded-Proto: https` for the backend.
#[test]
fn listener_terminates_tls_with_sni_and_http2() {
    use switchyard::config::{CertificatePaths, ListenTls};
    let dir = Scratch::new("listen");
    let ca = TestCa::new(&dir);
    let (a_cert, a_key) = ca.server_cert_for(&["a.test"]).write(&dir, "a");
    let (b_cert, b_key) = ca.server_cert_for(&["b.test"]).write(&dir, "b");
    let be = crate::support::TestBackend::start(|r| {
        crate::support::Reply::ok(&format!(
            "{} {}",
            r.header("x-forwarded-proto").unwrap_or_default(),
            r.version
        ))
    });
    let tls = ListenTls::load(vec![
        CertificatePaths {
            cert: a_cert,
            key: a_key,
        },
        CertificatePaths {
            cert: b_cert,
            key: b_key,
        },
    ])
    .unwrap();
    let lb = Balancer::new()
        .backend(be.addr)
        .with(move |c| c.listeners[0].tls = Some(tls))
        .start();
    let port = lb.addr.port();
    let curl = |host: &str, extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--cacert", ca.pem_path.to_str().unwrap()])
            .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
            .args(["-w", "\n%{http_version}"])
            .args(extra)
            .arg(format!("https://{host}:{port}/"))
            .output()
            .expect("curl is needed for this test");
        if !out.status.success() {
            return format!("curl to {host}: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Both names verify: each got its own certificate.
    assert_eq!(curl("a.test", &["--http2"]), "https HTTP/1.1\n2");
    assert_eq!(curl("b.test", &["--http2"]), "https HTTP/1.1\n2");
    assert_eq!(curl("a.test", &["--http1.1"]), "https HTTP/1.1\n1.1");
    // Plain HTTP to the TLS port: a 400 with a text body, as nginx answers, then close.
    let plain = crate::support::client::get(lb.addr, "/");
    assert_eq!(plain.status, 400, "{}", plain.text());
    assert_eq!(
        plain.text(),
        "400 Bad Request: this port speaks HTTPS (TLS); use https://\n"
    );
    assert_eq!(curl("a.test", &["--http1.1"]), "https HTTP/1.1\n1.1");

    // A reload that drops `listen.tls` must not turn the HTTPS port into plain HTTP
    // (TLS on/off is restart-only); the rest of the reload applies.
    let other = crate::support::TestBackend::named("other");
    lb.reload(move |c| {
        c.listeners[0].tls = None;
        c.backends = BackendSet::new(vec![switchyard::demo::backend_at(other.addr, 1)]);
    });
    assert!(
        eventually(Duration::from_secs(5), || curl("a.test", &["--http2"])
            == "other\n2"),
        "{}",
        curl("a.test", &["--http2"])
    );
}

/// An HTTP/2 client connection stays open while a stream is in flight (longer than
/// the idle timeout), and is closed once it has been idle, with no stream, for
/// `client_idle`.
#[test]
fn http2_client_connection_idles_out_only_without_streams() {
    use switchyard::config::{CertificatePaths, ListenTls};
    let dir = Scratch::new("h2idle");
    let ca = TestCa::new(&dir);
    let (cert, key) = ca.server_cert().write(&dir, "lb");
    let be = crate::support::TestBackend::start(|r| {
        if r.target == "/slow" {
            std::thread::sleep(Duration::from_millis(900));
        }
        crate::support::Reply::ok("ok")
    });
    let tls = ListenTls::load(vec![CertificatePaths { cert, key }]).unwrap();
    let lb = Balancer::new()
        .backend(be.addr)
        .client_idle(Duration::from_millis(400))
        .with(move |c| c.listeners[0].tls = Some(tls))
        .start();
    let config = crate::support::tls::client_config(&ca, &[b"h2"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
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
        let conn = tokio::spawn(conn);
        let get = |path: &str| {
            hyper::Request::get(format!("https://localhost{path}"))
                .body(http_body_util::Empty::new())
                .unwrap()
        };
        let r = send.send_request(get("/slow")).await.expect("slow stream");
        assert_eq!(
            r.status(),
            200,
            "a stream longer than client_idle is not cut"
        );
        drop(r);
        let r = send.send_request(get("/")).await.expect("second stream");
        assert_eq!(r.status(), 200);
        drop(r);
        let idle = std::time::Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
        assert!(closed.is_ok(), "idle HTTP/2 connection never closed");
        assert!(
            idle.elapsed() >= Duration::from_millis(300),
            "{:?}",
            idle.elapsed()
        );
        assert!(send.is_closed());
    });
}

/// An h2c backend is probed over HTTP/2: an HTTP/1.1 probe would never reach it as a
/// request and would mark it down.
#[test]
fn h2c_backend_passes_its_probes() {
    let be = crate::support::tls::H2Backend::start(None, Duration::ZERO);
    let mut b = switchyard::demo::backend_at(be.addr, 1);
    b.protocol = switchyard::backend::Protocol::H2c;
    probed_over_http2(&be, b);
}

/// Probes every 100 ms to `b` (served by `be`): they must reach it as HTTP/2 requests
/// and keep it up; a request through the balancer then gets there over HTTP/2 too.
fn probed_over_http2(be: &crate::support::tls::H2Backend, b: Backend) {
    let lb = Balancer::new()
        .backend(be.addr)
        .with(move |c| c.backends = BackendSet::new(vec![b]))
        .probes(Duration::from_millis(100))
        .start();
    assert!(
        eventually(Duration::from_secs(3), || be.requests.load(SeqCst) >= 3),
        "no HTTP/2 probe reached the backend"
    );
    assert!(lb.health().is_up(0));
    assert_eq!(get(lb.addr, "/p").text(), "HTTP/2.0 /p");
}

/// Concurrent HTTP/1.1 clients in front of an HTTP/2 backend: one connection, many
/// streams at once.
fn multiplexed(be: &crate::support::tls::H2Backend, lb: &crate::support::balancer::Started) {
    let addr = lb.addr;
    let clients: Vec<_> = (0..6)
        .map(|i| std::thread::spawn(move || get(addr, &format!("/r{i}"))))
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let r = c.join().unwrap();
        assert_eq!((r.status, r.text()), (200, format!("HTTP/2.0 /r{i}")));
    }
    assert_eq!(
        be.connections.load(SeqCst),
        1,
        "one shared HTTP/2 connection"
    );
    assert!(
        be.max_in_flight.load(SeqCst) >= 2,
        "streams were not multiplexed: {}",
        be.max_in_flight.load(SeqCst)
    );
}

#[test]
fn h2c_backend_multiplexes_streams() {
    let be = crate::support::tls::H2Backend::start(None, Duration::from_millis(300));
    let mut b = switchyard::demo::backend_at(be.addr, 1);
    b.protocol = switchyard::backend::Protocol::H2c;
    let lb = Balancer::new()
        .backend(be.addr)
        .with(move |c| c.backends = BackendSet::new(vec![b]))
        .start();
    multiplexed(&be, &lb);
}

/// HTTP/2 clients' requests reach HTTP/1.1 backends through our own client: a body
/// held whole (with its length) and one streamed past 64 KiB (chunked to the backend),
/// both whole, on a pooled connection the second time.
#[test]
fn http2_client_uploads_reach_an_http1_backend_whole() {
    use switchyard::config::{CertificatePaths, ListenTls};
    let dir = Scratch::new("h2up");
    let ca = TestCa::new(&dir);
    let (cert, key) = ca.server_cert_for(&["a.test"]).write(&dir, "a");
    let be = crate::support::TestBackend::start(|r| {
        crate::support::Reply::ok(&format!(
            "{} {} {}",
            r.target,
            r.body.len(),
            r.header("transfer-encoding").unwrap_or_else(|| "-".into())
        ))
    });
    let tls = ListenTls::load(vec![CertificatePaths { cert, key }]).unwrap();
    let lb = Balancer::new()
        .backend(be.addr)
        .with(move |c| c.listeners[0].tls = Some(tls))
        .start();
    let port = lb.addr.port();
    let body = dir.join("body");
    std::fs::write(&body, vec![b'x'; 200_000]).unwrap();
    let curl = |path: &str, data: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--http2", "--cacert", ca.pem_path.to_str().unwrap()])
            .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
            .args(["-H", "Content-Type: application/octet-stream"])
            .args(["--data-binary", data])
            .arg(format!("https://a.test:{port}{path}"))
            .output()
            .expect("curl is needed for this test");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("/small", "hello"), "/small 5 -");
    let big = format!("@{}", body.display());
    assert_eq!(curl("/big", &big), "/big 200000 -");
    assert_eq!(curl("/again", "hello"), "/again 5 -");
    // From a pipe curl knows no length: the HTTP/2 request has none, so the body goes
    // to the backend chunked.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {} | curl -sS --http2 --cacert {} --resolve a.test:{port}:127.0.0.1 -T - https://a.test:{port}/piped",
            body.display(),
            ca.pem_path.display()
        ))
        .output()
        .expect("sh and curl are needed for this test");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/piped 200000 chunked"
    );
}

/// Long uploads from an HTTP/1 client (Content-Length and chunked, past the 64 KiB
/// that is held) stream to an HTTP/2 backend whole, and the client connection carries
/// on.
#[test]
fn long_uploads_from_http1_reach_an_h2c_backend_whole() {
    let be = crate::support::tls::H2Backend::start(None, Duration::ZERO);
    let mut b = switchyard::demo::backend_at(be.addr, 1);
    b.protocol = switchyard::backend::Protocol::H2c;
    let lb = Balancer::new()
        .backend(be.addr)
        .with(move |c| c.backends = BackendSet::new(vec![b]))
        .start();
    let mut c = crate::support::Conn::open(lb.addr);
    let body = vec![b'x'; 200_000];
    c.send(b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n");
    c.send(&body);
    assert_eq!(c.read_response().text(), "HTTP/2.0 /cl 200000");
    c.send(b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..4 {
        c.send(b"c350\r\n");
        c.send(&body[..50_000]);
        c.send(b"\r\n");
    }
    c.send(b"0\r\n\r\n");
    assert_eq!(c.read_response().text(), "HTTP/2.0 /chunked 200000");
    assert_eq!(c.get("/after").text(), "HTTP/2.0 /after");
}

#[test]
fn tls_backend_negotiating_h2_multiplexes_streams() {
    let dir = Scratch::new("h2");
    let ca = TestCa::new(&dir);
    let be =
        crate::support::tls::H2Backend::start(Some(ca.server_cert()), Duration::from_millis(300));
    let b = https(
        be.addr,
        TlsOptions {
            ca_file: Some(ca.pem_path.clone()),
            insecure: false,
        },
    );
    let lb = balancer_for(b);
    // The first connection learns (by ALPN) that the backend speaks HTTP/2.
    assert_eq!(get(lb.addr, "/warm").text(), "HTTP/2.0 /warm");
    multiplexed(&be, &lb);
}

/// An HTTPS backend that offers only `h2` by ALPN (a gRPC server, say) is probed the
/// way live requests reach it, over HTTP/2, and stays up.
#[test]
fn h2_only_https_backend_passes_its_probes() {
    let dir = Scratch::new("h2probe");
    let ca = TestCa::new(&dir);
    let be = crate::support::tls::H2Backend::start(Some(ca.server_cert()), Duration::ZERO);
    let b = https(
        be.addr,
        TlsOptions {
            ca_file: Some(ca.pem_path.clone()),
            insecure: false,
        },
    );
    probed_over_http2(&be, b);
}

/// HTTP/2 clients' requests go through the same retry rule as HTTP/1 ones: a refused
/// backend is passed over (a POST too: nothing of it was sent), and a backend that
/// hangs up after every response costs no errors and sees each request once.
#[test]
fn http2_clients_fail_over_and_survive_backend_hangups() {
    use switchyard::config::{CertificatePaths, ListenTls};
    let dir = Scratch::new("h2retry");
    let ca = TestCa::new(&dir);
    let (cert, key) = ca.server_cert_for(&["a.test"]).write(&dir, "a");
    let be = crate::support::TestBackend::start(|_| {
        crate::support::Reply::RawThenClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        )
    });
    let tls = ListenTls::load(vec![CertificatePaths { cert, key }]).unwrap();
    let lb = Balancer::new()
        .backend(crate::support::dead_port())
        .backend(be.addr)
        .with(move |c| c.listeners[0].tls = Some(tls))
        .start();
    let port = lb.addr.port();
    let curl = |args: &[&str], paths: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--http2", "--cacert", ca.pem_path.to_str().unwrap()])
            .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
            .args(["-w", " %{http_code} %{http_version}\n"])
            .args(args)
            .args(paths.iter().map(|p| format!("https://a.test:{port}{p}")))
            .output()
            .expect("curl is needed for this test");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Eight requests on one connection: every one answered by the live backend.
    let paths = ["/1", "/2", "/3", "/4", "/5", "/6", "/7", "/8"];
    assert_eq!(curl(&[], &paths), "ok 200 2\n".repeat(8));
    assert_eq!(be.request_count(), 8);
    assert_eq!(curl(&["--data-binary", "hello"], &["/post"]), "ok 200 2\n");
    assert_eq!(
        be.request_count(),
        9,
        "the POST reached the live backend once"
    );
}

/// One HTTP/2 client connection gets at most 100 concurrent streams (hyper's default is
/// 200): 150 requests sent at once on one connection never have more than 100 at the
/// backend together, and all of them are answered.
#[test]
fn an_http2_connection_holds_at_most_100_streams() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use switchyard::config::{CertificatePaths, ListenTls};
    let dir = Scratch::new("h2streams");
    let ca = TestCa::new(&dir);
    let (cert, key) = ca.server_cert().write(&dir, "lb");
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (n, m) = (Arc::clone(&now), Arc::clone(&most));
    let be = crate::support::TestBackend::start(move |_| {
        let k = n.fetch_add(1, SeqCst) + 1;
        m.fetch_max(k, SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        n.fetch_sub(1, SeqCst);
        crate::support::Reply::ok("ok")
    });
    let tls = ListenTls::load(vec![CertificatePaths { cert, key }]).unwrap();
    let lb = Balancer::new()
        .backend(be.addr)
        .with(move |c| c.listeners[0].tls = Some(tls))
        .start();
    let config = crate::support::tls::client_config(&ca, &[b"h2"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        let io = hyper_util::rt::TokioIo::new(tls);
        let exec = hyper_util::rt::TokioExecutor::new();
        let (send, conn) =
            hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
                exec, io,
            )
            .await
            .unwrap();
        tokio::spawn(conn);
        let calls: Vec<_> = (0..150)
            .map(|i| {
                let mut send = send.clone();
                tokio::spawn(async move {
                    let req = hyper::Request::get(format!("https://localhost/{i}"))
                        .body(http_body_util::Empty::new())
                        .unwrap();
                    send.send_request(req).await.map(|r| r.status().as_u16())
                })
            })
            .collect();
        let mut ok = 0;
        for c in calls {
            if let Ok(Ok(200)) = c.await {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(ok, 150);
    let most = most.load(SeqCst);
    assert!(
        most <= 100,
        "{most} requests at the backend at once from one connection"
    );
    assert!(most > 50, "the streams did not run concurrently: {most}");
}
