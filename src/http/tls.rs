//! Builds the TLS acceptor from PEM files: rustls with the ring provider, safe default protocol
//! versions, no client authentication, ALPN `http/1.1`.
//!
//! Files are read once, when the server starts; every loading problem is an [`Error`] naming the
//! file. Must not: reload certificates (a restart picks up rotated files) or accept client certs.

use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{crypto, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::{Error, TlsFiles};

/// Reads the certificate chain and key and builds an acceptor for them.
pub(super) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, Error> {
    let certs = load_certs(files)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| match source {
        pem::Error::NoItemsFound => Error::TlsNoKey {
            path: files.key.clone(),
        },
        source => Error::TlsKey {
            path: files.key.clone(),
            source,
        },
    })?;
    let config_error = |source| Error::TlsConfig {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(config_error)?;
    // The server speaks HTTP/1.1 only; advertising it lets ALPN-aware clients agree early.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The whole PEM chain, leaf first; an empty file is an error rather than a server that fails
/// every handshake.
fn load_certs(files: &TlsFiles) -> Result<Vec<CertificateDer<'static>>, Error> {
    let cert_error = |source| Error::TlsCert {
        path: files.cert.clone(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(cert_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_error)?;
    if certs.is_empty() {
        return Err(Error::TlsNoCert {
            path: files.cert.clone(),
        });
    }
    Ok(certs)
}
