//! TLS for shoal's gRPC and HTTP (rustls, ring): the coordinator's identity, and with a client
//! CA, mutual TLS (every gRPC client must present a certificate that CA signed; use it for
//! workers in production). Clients (workers, the CLI) trust a CA file and may present their own
//! certificate. Files are PEM. Coordinator addresses become `https://…`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("read {flag} {path}: {source}")]
    Read {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A flag needs another.
    #[error("{0}")]
    Incomplete(&'static str),
    /// The certificate or key is not usable.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag naming it.
        flag: &'static str,
        /// Why.
        reason: String,
    },
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })
}

/// A certificate chain and its key, as PEM bytes.
type PemPair = (Vec<u8>, Vec<u8>);

/// The coordinator's TLS flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// PEM certificate chain the coordinator presents (gRPC and --http); TLS is off without it.
    #[arg(long, env = "SHOAL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SHOAL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signs client certificates: every gRPC client (workers, the CLI) must then
    /// present one (mutual TLS). The HTTP status API relies on the bearer token instead.
    #[arg(long, env = "SHOAL_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    fn identity_files(&self) -> Result<Option<PemPair>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Ok(Some((read("--tls-cert", cert)?, read("--tls-key", key)?)))
            }
            (None, None) => Ok(None),
            _ => Err(TlsError::Incomplete("--tls-cert and --tls-key go together")),
        }
    }

    /// The gRPC server's TLS configuration, or `None` when TLS is off.
    pub fn grpc(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        let Some((cert, key)) = self.identity_files()? else {
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(crate::connection::TLS_HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.tls_client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("--tls-client-ca", ca)?));
        }
        Ok(Some(config))
    }

    /// A rustls server configuration for the HTTP status API (HTTP/1.1, no client
    /// certificate), or `None` when TLS is off.
    pub fn http(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let Some((cert, key)) = self.identity_files()? else {
            return Ok(None);
        };
        let invalid = |flag: &'static str| {
            move |error: &dyn std::fmt::Display| TlsError::Invalid {
                flag,
                reason: error.to_string(),
            }
        };
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid("--tls-cert")(&error))?;
        let key =
            PrivateKeyDer::from_pem_slice(&key).map_err(|error| invalid("--tls-key")(&error))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid("--tls-cert")(&error))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| invalid("--tls-key")(&error))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// A gRPC client's TLS flags (workers and the CLI).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM CA that signed the coordinator's certificate (for an https:// coordinator; the
    /// system roots are not used).
    #[arg(long, env = "SHOAL_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate this client presents (coordinators with --tls-client-ca require one).
    #[arg(long, env = "SHOAL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SHOAL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The client TLS configuration for `address`: `None` for `http://`; an `https://` address
    /// needs --tls-ca.
    pub fn config(&self, address: &str) -> Result<Option<ClientTlsConfig>, TlsError> {
        if !address.starts_with("https://") {
            if self.tls_ca.is_some() || self.tls_cert.is_some() {
                return Err(TlsError::Incomplete(
                    "TLS flags were given but the coordinator address is not https://",
                ));
            }
            return Ok(None);
        }
        let ca = self.tls_ca.as_deref().ok_or(TlsError::Incomplete(
            "an https:// coordinator needs --tls-ca (the CA that signed its certificate)",
        ))?;
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.identity(Identity::from_pem(
                read("--tls-cert", cert)?,
                read("--tls-key", key)?,
            ));
        }
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn client_flags_must_match_the_address_scheme() {
        let none = ClientTlsArgs::default();
        assert!(none.config("http://127.0.0.1:7420").unwrap().is_none());
        let refused = none.config("https://127.0.0.1:7420").unwrap_err();
        assert!(refused.to_string().contains("needs --tls-ca"), "{refused}");
        let with_ca = ClientTlsArgs {
            tls_ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..ClientTlsArgs::default()
        };
        let mismatch = with_ca.config("http://127.0.0.1:7420").unwrap_err();
        assert!(mismatch.to_string().contains("not https://"), "{mismatch}");
        let unreadable = with_ca.config("https://127.0.0.1:7420").unwrap_err();
        assert!(
            unreadable
                .to_string()
                .starts_with("read --tls-ca /nonexistent/ca.pem"),
            "{unreadable}"
        );
    }

    #[test]
    fn a_server_without_a_certificate_serves_plaintext() {
        let args = ServerTlsArgs::default();
        assert!(!args.enabled());
        assert!(args.grpc().unwrap().is_none());
        assert!(args.http().unwrap().is_none());
    }
}
