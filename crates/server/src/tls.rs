//! TLS on the client port (rustls): `tls-port` with `tls-cert-file` and
//! `tls-key-file` (PEM), and with `tls-ca-cert-file` clients must present a
//! certificate signed by that CA (Redis' `tls-auth-clients yes`).
//!
//! Only loading lives here (also the replica's client side, `tls-replication`); the
//! accepted stream goes to the same `connection::serve` as plain TCP.

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

fn file_error(setting: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        setting,
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The certificate chain in the PEM file `path` (at least one), named by `setting` in errors.
fn load_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let pem = read_pem(setting, path)?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(setting, path, e))?;
    if certs.is_empty() {
        return Err(file_error(setting, path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in `tls-key-file`.
fn load_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem("tls-key-file", path)?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| file_error("tls-key-file", path, e))?
        .ok_or_else(|| file_error("tls-key-file", path, "no private key in the file"))
}

/// The trusted roots in `tls-ca-cert-file`.
fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs("tls-ca-cert-file", path)? {
        roots
            .add(cert)
            .map_err(|e| file_error("tls-ca-cert-file", path, e))?;
    }
    Ok(roots)
}

/// Builds the acceptor from PEM files.
pub(crate) fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    ca_file: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certs("tls-cert-file", cert_file)?;
    let key = load_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match ca_file {
        Some(ca_file) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                load_roots(ca_file)?.into(),
                provider,
            )
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

/// The rustls client for `tls-replication`: trusts `ca_file`, and presents `cert_file` /
/// `key_file` when both are given (a leader with `tls-ca-cert-file` demands a client
/// certificate, as Redis' replicas present theirs).
pub(crate) fn client_config(
    ca_file: &Path,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_root_certificates(load_roots(ca_file)?);
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => builder
            .with_client_auth_cert(load_certs("tls-cert-file", cert_file)?, load_key(key_file)?)
            .map_err(|e| TlsError::Config(format!("TLS client certificate: {e}"))),
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// TLS between cluster members (`tls-cluster`): every connection, accepted or dialled,
/// presents this node's certificate and verifies the other side's against the CA (mutual
/// TLS). A dialled peer is named by its IP address, so each node's certificate must carry
/// its cluster address as an IP subject alternative name (docs/cluster.md, "TLS").
pub(crate) struct ClusterTls {
    acceptor: TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

impl ClusterTls {
    pub(crate) fn load(
        cert_file: &Path,
        key_file: &Path,
        ca_file: &Path,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            acceptor: acceptor(cert_file, key_file, Some(ca_file))?,
            connector: tokio_rustls::TlsConnector::from(Arc::new(client_config(
                ca_file,
                Some(cert_file),
                Some(key_file),
            )?)),
        })
    }
}

impl ringkv_cluster::transport::StreamLayer for ClusterTls {
    fn accept(
        &self,
        stream: ringkv_cluster::transport::BoxStream,
        _remote: std::net::SocketAddr,
    ) -> ringkv_cluster::transport::BoxFuture<
        'static,
        std::io::Result<ringkv_cluster::transport::BoxStream>,
    > {
        let accept = self.acceptor.accept(stream);
        Box::pin(async move {
            let stream = accept.await?;
            Ok(Box::new(stream) as ringkv_cluster::transport::BoxStream)
        })
    }

    fn connect(
        &self,
        stream: ringkv_cluster::transport::BoxStream,
        peer: std::net::SocketAddr,
    ) -> ringkv_cluster::transport::BoxFuture<
        'static,
        std::io::Result<ringkv_cluster::transport::BoxStream>,
    > {
        let name = rustls::pki_types::ServerName::IpAddress(peer.ip().into());
        let connect = self.connector.connect(name, stream);
        Box::pin(async move {
            let stream = connect.await?;
            Ok(Box::new(stream) as ringkv_cluster::transport::BoxStream)
        })
    }
}
