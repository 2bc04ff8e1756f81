//! TLS to `https` backends: trust, verification, SNI.
//!
//! Certificates are verified by default against the system trust store (read once per
//! process with rustls-native-certs) plus an optional per-backend `tls.ca_file`.
//! `tls.insecure` (or `-k`) skips verification for that backend; the balancer warns
//! about it at start. SNI is the backend's host name (an IP address is sent as none,
//! as the TLS spec says). ALPN offers `h2` and `http/1.1` (only `http/1.1` with
//! `protocol: http1`, and for upgrades). One [`TlsConnector`] is built per
//! backend per worker snapshot and reused for every connection to it.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::backend::Backend;

/// The system trust store, loaded once.
fn system_roots() -> &'static Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut store = RootCertStore::empty();
        let (added, _ignored) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found.errors.first().map(|e| e.to_string()).unwrap_or_default();
            return Err(format!(
                "no system trust store found ({why}); install the ca-certificates package or set tls.ca_file"
            ));
        }
        Ok(Arc::new(store))
    })
}

/// Reads the CA certificates of a `tls.ca_file`; the error says what is wrong.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The connector for one TLS backend.
pub fn connector(backend: &Backend, offer_h2: bool) -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if backend.tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = match (system_roots(), &backend.tls.ca_file) {
            (Ok(system), _) => (**system).clone(),
            (Err(_), Some(_)) => RootCertStore::empty(),
            (Err(e), None) => return Err(e.clone()),
        };
        if let Some(path) = &backend.tls.ca_file {
            for cert in read_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = if offer_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name to verify and send as SNI: the backend's host.
pub fn server_name(backend: &Backend) -> Result<ServerName<'static>, String> {
    let host = backend.host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("'{host}' is not a valid TLS server name: {e}"))
}

/// Accepts any certificate (`tls.insecure`), still checking handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
