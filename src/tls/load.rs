//! Reading the PEM files of the `TLS_*` settings into a `rustls::ServerConfig`,
//! with errors that name the setting, the file, what is wrong and what to do.
//!
//! Used at start (an error is fatal, exit status 2) and by every reload (an error
//! is logged and the running configuration kept), so both say the same thing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsConfig;

/// What the file permissions advice says, in every read error.
const READABLE: &str = "the file must exist and be readable by the user the worker runs as \
     (zero-logs under systemd: e.g. /etc/zero-logs/tls/, group zero-logs, mode 0640)";

/// ALPN protocols offered, preferred first: gRPC needs `h2`.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {var}={path}: {source}; {READABLE}", path = path.display())]
    Read {
        var: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{var}={path} is not valid PEM ({reason}); it must hold {wanted} as PEM text (-----BEGIN …----- blocks)", path = path.display())]
    Pem {
        var: &'static str,
        path: PathBuf,
        reason: String,
        wanted: &'static str,
    },
    #[error("{var}={path} holds no {wanted}; point {var} at the PEM file that holds it", path = path.display())]
    Empty {
        var: &'static str,
        path: PathBuf,
        wanted: &'static str,
    },
    #[error("TLS_KEY_FILE={key} cannot be used with TLS_CERT_FILE={cert}: {reason}; the key must be the private key of the first certificate in TLS_CERT_FILE (RSA, ECDSA P-256/P-384 or Ed25519)", key = key.display(), cert = cert.display())]
    KeyRejected {
        cert: PathBuf,
        key: PathBuf,
        reason: rustls::Error,
    },
    #[error("TLS_CLIENT_CA_FILE={path} cannot verify client certificates: {reason}; it must hold the CA certificate(s) that issue the clients' certificates", path = path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS_LISTEN_ADDRS names {addr}, but no listener has that address (listeners: {listeners}); add it to zero-logs.socket (ListenStream=) or to LISTEN_ADDRS, or remove it from TLS_LISTEN_ADDRS")]
    NoSuchListener { addr: String, listeners: String },
}

impl TlsError {
    /// The file this error is about, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            TlsError::Read { path, .. }
            | TlsError::Pem { path, .. }
            | TlsError::Empty { path, .. }
            | TlsError::ClientCa { path, .. } => Some(path),
            TlsError::KeyRejected { key, .. } => Some(key),
            TlsError::NoSuchListener { .. } => None,
        }
    }
}

/// The `ring` provider, named rather than process-wide: nothing else can change it.
///
/// rustls 0.23.48 deprecated it for lacking post-quantum key exchange (X25519MLKEM768,
/// which only its aws-lc-rs provider has); aws-lc-rs needs a C toolchain build we
/// avoid for now. Switching is this one function (and the crates' features).
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the files of `cfg` (TLS must be on) into a server configuration offering
/// ALPN `h2` and `http/1.1`, requiring client certificates when a client CA is set.
pub fn server_config(cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&cfg.cert_file, &cfg.key_file) else {
        unreachable!("server_config is only called with TLS_CERT_FILE and TLS_KEY_FILE set");
    };
    let chain = certificates(
        "TLS_CERT_FILE",
        cert_file,
        "the server's certificate (chain)",
    )?;
    let key = private_key(key_file)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions");
    let builder = match &cfg.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => builder.with_client_cert_verifier(client_verifier(ca_file, provider)?),
    };
    let mut config =
        builder
            .with_single_cert(chain, key)
            .map_err(|reason| TlsError::KeyRejected {
                cert: cert_file.clone(),
                key: key_file.clone(),
                reason,
            })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn read(var: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        var,
        path: path.to_path_buf(),
        source,
    })
}

/// Every `CERTIFICATE` block of the file, in order.
fn certificates(
    var: &'static str,
    path: &Path,
    wanted: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(var, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            var,
            path: path.to_path_buf(),
            reason: err.to_string(),
            wanted,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            var,
            path: path.to_path_buf(),
            wanted: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

/// The file's first private key (PKCS#8, PKCS#1 or SEC1).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let var = "TLS_KEY_FILE";
    let pem = read(var, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            var,
            path: path.to_path_buf(),
            wanted: "private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        },
        other => TlsError::Pem {
            var,
            path: path.to_path_buf(),
            reason: other.to_string(),
            wanted: "a private key",
        },
    })
}

/// Clients must present a certificate issued by one of the file's CAs.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let cas = certificates("TLS_CLIENT_CA_FILE", path, "CA certificate(s)")?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|err| TlsError::ClientCa {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|err| TlsError::ClientCa {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })
}
