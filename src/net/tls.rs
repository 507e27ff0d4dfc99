//! TLS for STARTTLS and implicit-TLS listeners. The certificate sits behind a resolver
//! whose key can be swapped on SIGHUP, so live connections keep their session and new
//! handshakes get the new certificate without rebinding any socket.

use std::{
    fmt,
    path::Path,
    sync::{Arc, RwLock},
};

use rustls::{
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no usable certificate: {reason}")]
    Cert { path: String, reason: String },
    #[error("{path}: no usable private key: {reason}")]
    Key { path: String, reason: String },
}

/// Loads a certificate chain and its key from PEM files.
pub fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert {
            path: files.cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: files.cert.display().to_string(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: files.key.display().to_string(),
        reason: e.to_string(),
    })?;
    let signer = any_supported_type(&key).map_err(|e| TlsError::Key {
        path: files.key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(CertifiedKey::new(certs, signer))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Hands out the current certificate; `replace` swaps it for later handshakes.
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock only means a reload panicked mid-swap; the old key is still whole.
        Some(match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

/// The TLS side of the daemon: one acceptor shared by every listener.
#[derive(Clone)]
pub struct Tls {
    cert: Arc<ReloadableCert>,
    acceptor: TlsAcceptor,
}

impl Tls {
    pub fn new(files: &TlsFiles) -> Result<Tls, TlsError> {
        let cert = Arc::new(ReloadableCert {
            current: RwLock::new(Arc::new(load_certified_key(files)?)),
        });
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        Ok(Tls {
            cert,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), TlsError> {
        let key = Arc::new(load_certified_key(files)?);
        match self.cert.current.write() {
            Ok(mut k) => *k = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The server side of a handshake, bounded: a client that never starts one must not
    /// hold its connection slot forever. `None` (logged at debug) when it fails.
    pub async fn accept(
        &self,
        stream: tokio::net::TcpStream,
        limit: std::time::Duration,
    ) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        match tokio::time::timeout(limit, self.acceptor.accept(stream)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}
