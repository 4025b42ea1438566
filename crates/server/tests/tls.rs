//! TLS on the client port with certificates generated in the test (rcgen): a rustls client
//! and `redis-cli --tls` talk to it; with `tls-ca-cert-file` a client without a certificate
//! signed by that CA is refused.

mod ops;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{self, pki_types};

struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ringkv test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    /// A leaf certificate for `names` with `usage`: (certificate, key).
    fn leaf(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert, key)
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn start(pki: &Pki, verify_clients: bool) -> (ops::Running, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = pki.leaf(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (mut config, dir) = ops::config();
    config.tls_port = Some(0);
    config.tls_cert_file = Some(write(files.path(), "server.pem", &cert.pem()));
    config.tls_key_file = Some(write(files.path(), "server.key", &key.serialize_pem()));
    write(files.path(), "ca.pem", &pki.ca.pem());
    if verify_clients {
        config.tls_ca_cert_file = Some(files.path().join("ca.pem"));
    }
    (ops::start(config, dir), files)
}

/// Sends raw RESP over TLS and returns the first reply bytes (or the error).
fn tls_exchange(
    addr: std::net::SocketAddr,
    pki: &Pki,
    client_cert: Option<(rcgen::Certificate, KeyPair)>,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match client_cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![cert.der().clone()],
                    pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = pki_types::ServerName::try_from("localhost").unwrap();
        let mut stream = connector.connect(name, tcp).await?;
        stream.write_all(request).await?;
        stream.flush().await?;
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("timeout"))??;
        buf.truncate(n);
        Ok(buf)
    })
}

#[test]
fn rustls_client_talks_resp_over_tls() {
    let pki = Pki::new();
    let (running, _files) = start(&pki, false);
    let tls = running.tls.expect("tls port");
    let reply = tls_exchange(
        tls,
        &pki,
        None,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n",
    )
    .unwrap();
    assert_eq!(reply, b"+OK\r\n");
    let reply = tls_exchange(tls, &pki, None, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    assert_eq!(reply, b"$2\r\nv1\r\n");
    // The plain port still serves the same data.
    let mut con = running.client();
    let value: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(value, "v1");
}

#[test]
fn redis_cli_tls() {
    let pki = Pki::new();
    let (running, files) = start(&pki, false);
    let tls = running.tls.expect("tls port");
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(files.path().join("ca.pem"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls.port().to_string(),
            "SET",
            "cli",
            "tls-ok",
        ])
        .output()
        .expect("redis-cli (apt-get install redis-tools)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(files.path().join("ca.pem"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls.port().to_string(),
            "GET",
            "cli",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tls-ok");
}

#[test]
fn client_certificates_are_verified_when_a_ca_is_set() {
    let pki = Pki::new();
    let (running, _files) = start(&pki, true);
    let tls = running.tls.expect("tls port");
    let ping = b"*1\r\n$4\r\nPING\r\n";
    // No client certificate: the handshake (or the first read) fails.
    let refused = tls_exchange(tls, &pki, None, ping);
    assert!(
        refused.as_ref().map_or(true, |r| r.is_empty()),
        "served without a client certificate: {refused:?}"
    );
    // A certificate from another CA is refused too.
    let stranger = Pki::new();
    let foreign = stranger.leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let refused = tls_exchange(tls, &pki, Some(foreign), ping);
    assert!(
        refused.as_ref().map_or(true, |r| r.is_empty()),
        "{refused:?}"
    );
    let good = pki.leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    assert_eq!(
        tls_exchange(tls, &pki, Some(good), ping).unwrap(),
        b"+PONG\r\n"
    );
}

#[test]
fn missing_key_file_is_named() {
    let pki = Pki::new();
    let files = tempfile::tempdir().unwrap();
    let (cert, _key) = pki.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let (mut config, _dir) = ops::config();
    config.tls_port = Some(0);
    config.tls_cert_file = Some(write(files.path(), "server.pem", &cert.pem()));
    config.tls_key_file = Some(files.path().join("missing.key"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime
        .block_on(ringkv_server::bind(config))
        .err()
        .expect("refuses to start");
    assert!(error.to_string().contains("tls-key-file"), "{error}");
}
