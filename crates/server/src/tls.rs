//! TLS on the client port (rustls): `tls-port` with `tls-cert-file` and
//! `tls-key-file` (PEM), and with `tls-ca-cert-file` clients must present a
//! certificate signed by that CA (Redis' `tls-auth-clients yes`).
//!
//! Only loading lives here; the accepted stream goes to the same
//! `connection::serve` as plain TCP.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Longest a TLS handshake may take before the connection is dropped, so half-open handshakes
/// cannot hold connection slots.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS settings could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or held no usable PEM item.
    #[error("{setting} {path}: {why}")]
    File {
        /// The setting that named the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// What was wrong.
        why: String,
    },
    /// rustls refused the certificate/key pair or the CA.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read_pem(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        setting,
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// Builds the acceptor from PEM files.
pub(crate) fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    ca_file: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    let file_error = |setting: &'static str, path: &Path, why: String| TlsError::File {
        setting,
        path: path.display().to_string(),
        why,
    };
    let cert_pem = read_pem("tls-cert-file", cert_file)?;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("tls-cert-file", cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(
            "tls-cert-file",
            cert_file,
            "no certificate in the file".into(),
        ));
    }
    let key_pem = read_pem("tls-key-file", key_file)?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| file_error("tls-key-file", key_file, e.to_string()))?
        .ok_or_else(|| {
            file_error(
                "tls-key-file",
                key_file,
                "no private key in the file".into(),
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match ca_file {
        Some(ca_file) => {
            let ca_pem = read_pem("tls-ca-cert-file", ca_file)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
                let cert =
                    cert.map_err(|e| file_error("tls-ca-cert-file", ca_file, e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| file_error("tls-ca-cert-file", ca_file, e.to_string()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
