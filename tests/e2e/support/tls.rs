//! Certificates made in the test (rcgen) and an HTTPS backend that records the SNI of
//! each handshake and counts its TLS connections; HTTP/2 and WebSocket-over-TLS
//! backends; and a TLS client call that reports which certificate the server showed
//! (for certificate reloads).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A server certificate (for `localhost` and 127.0.0.1) and its key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl ServerCert {
    /// Writes `NAME.pem` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }
}

/// A test CA, and where its certificate is written as PEM.
pub struct TestCa {
    pub pem_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(dir: &std::path::Path) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: OpenSSL (curl) takes a leaf whose issuer equals its subject
        // for self-signed.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchyard test CA");
        let cert = params.self_signed(&key).unwrap();
        let pem_path = dir.join("ca.pem");
        std::fs::write(&pem_path, cert.pem()).unwrap();
        TestCa {
            pem_path,
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, to trust it in a rustls client.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// A server certificate signed by this CA, for `localhost` and 127.0.0.1.
    pub fn server_cert(&self) -> ServerCert {
        self.server_cert_for(&["localhost", "127.0.0.1"])
    }

    /// A server certificate signed by this CA for these names.
    pub fn server_cert_for(&self, names: &[&str]) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A certificate signed by nobody anyone trusts.
pub fn self_signed() -> ServerCert {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    ServerCert {
        chain: vec![cert.der().clone()],
        key_der: key.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[derive(Debug)]
struct RecordSni {
    key: Arc<CertifiedKey>,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl ResolvesServerCert for RecordSni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.seen
            .lock()
            .unwrap()
            .push(hello.server_name().map(str::to_owned));
        Some(Arc::clone(&self.key))
    }
}

/// An HTTPS backend answering `200 NAME` to everything.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub sni: Arc<Mutex<Vec<Option<String>>>>,
    pub handshakes: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
}

impl TlsBackend {
    pub fn start(cert: ServerCert, name: &'static str) -> TlsBackend {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der));
        let certified = CertifiedKey::from_der(cert.chain, key, &provider).unwrap();
        let sni = Arc::new(Mutex::new(Vec::new()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(RecordSni {
                key: Arc::new(certified),
                seen: Arc::clone(&sni),
            }));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (h, r) = (Arc::clone(&handshakes), Arc::clone(&requests));
        let addr = accept_loop(move |tcp| {
            let acceptor = acceptor.clone();
            let (h, r) = (Arc::clone(&h), Arc::clone(&r));
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                h.fetch_add(1, SeqCst);
                let svc = service_fn(move |_req| {
                    r.fetch_add(1, SeqCst);
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            }
        });
        TlsBackend {
            addr,
            sni,
            handshakes,
            requests,
        }
    }
}

/// An HTTP/2 backend (h2c, or TLS with ALPN h2) that counts its connections and the
/// most streams it had in flight at once. Each request takes `delay`. It answers
/// `VERSION PATH`, plus ` LENGTH` when the request had a body (`usize::MAX` when the
/// body failed).
pub struct H2Backend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    /// Requests (streams) served.
    pub requests: Arc<AtomicUsize>,
}

impl H2Backend {
    pub fn start(tls: Option<ServerCert>, delay: std::time::Duration) -> H2Backend {
        let acceptor = tls.map(|cert| acceptor(cert, &[b"h2"]));
        let connections = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, m, r) = (
            Arc::clone(&connections),
            Arc::clone(&max_in_flight),
            Arc::clone(&requests),
        );
        let now = Arc::new(AtomicUsize::new(0));
        let addr = accept_loop(move |tcp| {
            c.fetch_add(1, SeqCst);
            let (m, now, r, acceptor) = (
                Arc::clone(&m),
                Arc::clone(&now),
                Arc::clone(&r),
                acceptor.clone(),
            );
            async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (m, now) = (Arc::clone(&m), Arc::clone(&now));
                    r.fetch_add(1, SeqCst);
                    async move {
                        let n = now.fetch_add(1, SeqCst) + 1;
                        m.fetch_max(n, SeqCst);
                        tokio::time::sleep(delay).await;
                        now.fetch_sub(1, SeqCst);
                        let (version, path) = (req.version(), req.uri().path().to_owned());
                        // A request body is read whole; its length joins the answer.
                        let len = match http_body_util::BodyExt::collect(req.into_body()).await {
                            Ok(b) => b.to_bytes().len(),
                            Err(_) => usize::MAX,
                        };
                        let body = match len {
                            0 => format!("{version:?} {path}"),
                            n => format!("{version:?} {path} {n}"),
                        };
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let builder =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                match acceptor {
                    None => {
                        let io = hyper_util::rt::TokioIo::new(tcp);
                        let _ = builder.serve_connection(io, svc).await;
                    }
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            let io = hyper_util::rt::TokioIo::new(tls);
                            let _ = builder.serve_connection(io, svc).await;
                        }
                    }
                }
            }
        });
        H2Backend {
            addr,
            connections,
            max_in_flight,
            requests,
        }
    }
}

/// An HTTPS backend offering `h2` and `http/1.1` by ALPN: over HTTP/2 it answers
/// `h2 PATH`; over HTTP/1.1 it takes a WebSocket handshake (answering 101 with
/// `accept`) and then echoes every byte.
pub fn ws_tls_backend(cert: ServerCert, accept: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = acceptor(cert, &[b"h2", b"http/1.1"]);
    accept_loop(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("h2 {}", req.uri().path());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                return;
            }
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if tls.read(&mut b).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(b[0]);
            }
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if tls.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 4096];
            loop {
                match tls.read(&mut buf).await {
                    Ok(n) if n > 0 => {
                        if tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        }
    })
}

/// A TLS acceptor for `cert`, offering `alpn`.
fn acceptor(cert: ServerCert, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(cert.chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Listens on 127.0.0.1:0 and runs `per_conn` on every accepted connection, each in a
/// task of a runtime on the listener's own thread. Returns the address.
fn accept_loop<F, Fut>(per_conn: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(per_conn(tcp));
            }
        });
    });
    addr
}

/// A TLS client config trusting `ca` and offering `alpn`.
pub fn client_config(ca: &TestCa, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// One HTTP/1.1 GET over TLS (SNI `name`, trusting what `config` trusts) to `addr`:
/// the certificate the server presented and the response's body.
pub fn https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
    path: &str,
) -> (CertificateDer<'static>, String) {
    use std::io::{Read, Write};
    let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(config, server).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    // A close without close_notify still ends the response (Connection: close).
    let _ = tls.read_to_end(&mut got);
    let cert = tls.conn.peer_certificates().expect("a certificate")[0].clone();
    let text = String::from_utf8_lossy(&got).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (cert, body)
}
