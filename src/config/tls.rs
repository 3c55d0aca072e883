//! The TLS settings (`TLS_*`): the typed [`TlsConfig`] that [`crate::tls`] runs on.
//!
//! Only the settings' shape is checked here (which ones go together); the files
//! themselves are read by [`crate::tls`] when the worker starts, so that
//! `zero-logs config` and `zero-logs-ctl validate`, run as another user, do not
//! depend on being able to read a private key.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::reader::Show;
use super::settings as S;
use super::{ConfigError, Reader};

/// TLS on the ingest listeners; off when `cert_file` is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `TLS_CERT_FILE`: PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// `TLS_KEY_FILE`: PEM private key of the chain's first certificate.
    pub key_file: Option<PathBuf>,
    /// `TLS_CLIENT_CA_FILE`: client certificates required and verified against these.
    pub client_ca_file: Option<PathBuf>,
    /// `TLS_LISTEN_ADDRS`: the TLS listeners; empty = every listener.
    pub listen_addrs: Vec<SocketAddr>,
}

impl TlsConfig {
    /// Whether TLS is on at all.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

impl Show for Vec<SocketAddr> {
    fn show(&self) -> String {
        let addrs: Vec<String> = self.iter().map(ToString::to_string).collect();
        addrs.join(",")
    }
}

/// Reads the `TLS_*` settings and checks that they make sense together.
pub(super) fn load(r: &Reader<'_>) -> Result<TlsConfig, ConfigError> {
    let tls = TlsConfig {
        cert_file: r.get_or(&S::TLS_CERT_FILE, || None)?,
        key_file: r.get_or(&S::TLS_KEY_FILE, || None)?,
        client_ca_file: r.get_or(&S::TLS_CLIENT_CA_FILE, || None)?,
        listen_addrs: r.get_or(&S::TLS_LISTEN_ADDRS, Vec::new)?,
    };
    let missing = |var: &str, value: String, reason: &str| ConfigError {
        source_name: var.to_string(),
        value,
        reason: reason.to_string(),
    };
    let shown = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => {
            return Err(missing(
                S::TLS_CERT_FILE.meta.var,
                shown(&tls.cert_file).unwrap_or_default(),
                "needs TLS_KEY_FILE, the certificate's private key (PEM); set both or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(missing(
                S::TLS_KEY_FILE.meta.var,
                shown(&tls.key_file).unwrap_or_default(),
                "is set without TLS_CERT_FILE; set both to turn TLS on, or neither",
            ))
        }
        _ => {}
    }
    if !tls.enabled() {
        if let Some(ca) = shown(&tls.client_ca_file) {
            return Err(missing(
                S::TLS_CLIENT_CA_FILE.meta.var,
                ca,
                "client certificates need TLS: set TLS_CERT_FILE and TLS_KEY_FILE too",
            ));
        }
        if !tls.listen_addrs.is_empty() {
            return Err(missing(
                S::TLS_LISTEN_ADDRS.meta.var,
                tls.listen_addrs.show(),
                "TLS listeners need a certificate: set TLS_CERT_FILE and TLS_KEY_FILE too",
            ));
        }
    }
    Ok(tls)
}
