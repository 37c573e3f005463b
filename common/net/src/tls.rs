//! TLS material: the file layout `ordo certs` writes, loading it, and the rustls configurations
//! both sides build from it. Always mutual TLS, TLS 1.3 only, the `ring` provider.
//!
//! Layout of a TLS directory:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the cluster's certificate authority (keep `ca.key` offline in production) |
//! | `node-N.pem`, `node-N.key` | coordinator N: names `node-N.ordo` (its identity), `ordo`, `localhost`, 127.0.0.1 |
//! | `client-NAME.pem`, `client-NAME.key` | a client: names `client-NAME.ordo` only |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use ordo_common::NodeId;

/// The name every node certificate carries and every client dials, whichever node it is.
pub const CLUSTER_SERVER_NAME: &str = "ordo";

/// The name that proves a certificate belongs to node `id`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.ordo")
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source} (create the files with `ordo certs --dir <dir>`)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable private key: {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: path.to_path_buf(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsError::BadKey {
        path: path.to_path_buf(),
        detail: error.to_string(),
    })
}

pub fn root_store(dir: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(&dir.join("ca.pem"))? {
        roots
            .add(certificate)
            .map_err(|error| TlsError::Config(format!("CA: {error}")))?;
    }
    Ok(roots)
}

/// A certificate and key pair from a TLS directory, by file stem (`node-1`, `client-cli`).
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn load(dir: &Path, stem: &str) -> Result<Self, TlsError> {
        let chain = load_certificates(&dir.join(format!("{stem}.pem")))?;
        let key = load_key(&dir.join(format!("{stem}.key")))?;
        Ok(Self { chain, key })
    }

    /// The first client identity in `dir` (`client-*.pem`), for tools that take a directory.
    pub fn first_client(dir: &Path) -> Result<Self, TlsError> {
        let entries = std::fs::read_dir(dir).map_err(|source| TlsError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut stems: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".pem").map(str::to_string))
            .filter(|stem| stem.starts_with("client-"))
            .collect();
        stems.sort();
        let stem = stems.first().ok_or_else(|| TlsError::Read {
            path: dir.join("client-*.pem"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no client certificate"),
        })?;
        Self::load(dir, stem)
    }
}

/// A client-side TLS configuration presenting `identity`, trusting only the cluster CA.
pub fn client_config(
    roots: RootCertStore,
    identity: Identity,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain, identity.key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}
