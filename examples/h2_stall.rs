//! An HTTP/2 client that opens streams and never reads them: the attack issue 13 measured
//! (20 connections x 200 zero-window streams asking for big responses pinned 151 MB of
//! switchyard's memory and 4,000 backend connections). Used by bench/h2_stall.sh.
//!
//!   cargo run --release --example h2_stall -- ADDR CA.pem CONNS STREAMS PATH SECONDS
//!
//! Connects over TLS (ALPN h2, server name `localhost`, trusting CA.pem), advertises a
//! receive window of 0, opens STREAMS streams on each of CONNS connections, and holds
//! them for SECONDS; prints how many streams got a response head, and how many of
//! those were not 200 (a queue's 503).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, ca, conns, streams, path, secs] = args.as_slice() else {
        return Err("usage: h2_stall ADDR CA.pem CONNS STREAMS PATH SECONDS".into());
    };
    let (conns, streams, secs): (usize, usize, u64) =
        (conns.parse()?, streams.parse()?, secs.parse()?);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca)?)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let heads = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..conns {
        let tcp = tokio::net::TcpStream::connect(addr.as_str()).await?;
        let server = ServerName::try_from("localhost")?;
        let handshake = async {
            let io = tls.connect(server, tcp).await?;
            h2::client::Builder::new()
                .initial_window_size(0)
                .handshake::<_, bytes::Bytes>(io)
                .await
                .map_err(std::io::Error::other)
        };
        let (client, conn) = match handshake.await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("connection refused: {e}");
                refused += 1;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        for _ in 0..streams {
            let Ok(mut client) = client.clone().ready().await else {
                break;
            };
            let req = http::Request::get(format!("https://localhost{path}")).body(())?;
            let (resp, _) = match client.send_request(req, true) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("stream refused: {e}");
                    break;
                }
            };
            let (heads, statuses) = (Arc::clone(&heads), Arc::clone(&statuses));
            // The response head is taken; the body is held and never read.
            held.push(tokio::spawn(async move {
                if let Ok(r) = resp.await {
                    heads.fetch_add(1, Relaxed);
                    if r.status() != 200 {
                        statuses.fetch_add(1, Relaxed);
                    }
                    let body = r.into_body();
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(body);
                }
            }));
        }
    }
    println!("opened {} x {streams} streams", conns - refused);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    println!(
        "response heads: {} ({} of them not 200)",
        heads.load(Relaxed),
        statuses.load(Relaxed)
    );
    Ok(())
}
