//! TLS termination on the listener: certificates chosen by SNI, ALPN `h2` and
//! `http/1.1`.
//!
//! Every `listen.tls.certificates` item is a PEM chain and key; a handshake gets the
//! first certificate valid for the name the client sent (SNI), or the first one when
//! none matches or no name was sent. The acceptor is built from the config snapshot, so
//! a reload picks up new certificate files.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Loads one certificate and key; the error names the file that is wrong (`cert` or
/// `key`) and why.
pub fn load(p: &CertificatePaths) -> Result<CertifiedKey, (&'static str, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&p.cert)
        .map_err(|e| ("cert", format!("cannot read {}: {e}", p.cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                "cert",
                format!("{} is not valid PEM: {e}", p.cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(("cert", format!("{} holds no certificate", p.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&p.key).map_err(|e| {
        (
            "key",
            format!("cannot read a private key from {}: {e}", p.key.display()),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        (
            "key",
            format!("{} does not match its certificate: {e}", p.key.display()),
        )
    })
}

#[derive(Debug)]
struct BySni {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wanted = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_owned()).ok());
        if let Some(name) = wanted {
            for k in &self.keys {
                let matches = k
                    .end_entity_cert()
                    .ok()
                    .and_then(|c| ParsedCertificate::try_from(c).ok());
                if matches.is_some_and(|c| rustls::client::verify_server_name(&c, &name).is_ok()) {
                    return Some(Arc::clone(k));
                }
            }
        }
        self.keys.first().cloned()
    }
}

/// The server settings for `certificates`; the error names the failing item's index,
/// its file (`cert` or `key`) and why.
pub fn server_config(
    certificates: &[CertificatePaths],
) -> Result<Arc<ServerConfig>, (usize, &'static str, String)> {
    let mut keys = Vec::new();
    for (i, p) in certificates.iter().enumerate() {
        keys.push(Arc::new(load(p).map_err(|(which, e)| (i, which, e))?));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| (0, "cert", e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { keys }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The acceptor for `server` (cheap: the settings were built with the config).
pub fn acceptor(server: &Arc<ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(Arc::clone(server))
}

/// One certificate chain and its private key (PEM files): plain data, named in the
/// config and loaded here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}
