//! Test certificates (rcgen) and an HTTPS GET for the status API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A private PKI in a temporary directory: a CA, the coordinator's certificate (127.0.0.1 and
/// localhost), a client certificate from the same CA, and one from an unrelated CA.
#[derive(Debug)]
pub struct TestPki {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The coordinator's certificate and key.
    pub server: (PathBuf, PathBuf),
    /// A client certificate and key the CA signed.
    pub client: (PathBuf, PathBuf),
    /// A client certificate and key another CA signed.
    pub rogue: (PathBuf, PathBuf),
}

fn ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    dir: &Path,
    name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut params = CertificateParams::new(
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>(),
    )?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, issuer)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, certificate.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((cert_path, key_path))
}

impl TestPki {
    /// Generates everything.
    pub fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let authority = ca("shoal test CA")?;
        let other = ca("someone else's CA")?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, authority.pem())?;
        let server = leaf(
            dir.path(),
            "coordinator",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &authority,
        )?;
        let client = leaf(
            dir.path(),
            "worker",
            &["worker"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &authority,
        )?;
        let rogue = leaf(
            dir.path(),
            "rogue",
            &["rogue"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &other,
        )?;
        Ok(Self {
            dir,
            ca,
            server,
            client,
            rogue,
        })
    }
}

/// An HTTPS/1.1 GET on `address` trusting only `ca`; returns the status code and the body.
pub async fn https_get(
    address: &str,
    path: &str,
    ca: &Path,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)? {
        roots.add(certificate?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let name = ServerName::try_from(host.to_owned())?;
    let mut stream = connector.connect(name, tcp).await?;
    stream
        .write_all(crate::processes::get_request(address, path, headers).as_bytes())
        .await?;
    let mut response = Vec::new();
    // A server closing without close_notify is fine once the response is complete.
    let _ = stream.read_to_end(&mut response).await;
    crate::processes::parse_response(&String::from_utf8_lossy(&response))
}
