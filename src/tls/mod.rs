//! TLS on the ingest listeners (rustls, `ring` provider): which listeners are TLS,
//! the live server configuration, the handshake of one connection, and reloads.
//!
//! TLS only wraps the accepted stream: after the handshake the connection is served
//! exactly as a plaintext one ([`crate::serve`]), so HTTP/1.1, HTTP/2 (ALPN `h2`),
//! gRPC and OTLP share one TLS port as they share a plaintext one. The handshake
//! runs in the connection's own task, never in the accept loop, so a slow or silent
//! client holds up nobody else; it is bounded by [`HANDSHAKE_TIMEOUT`]. A failed
//! handshake (untrusted or missing client certificate, a plaintext request on the
//! TLS port, a timeout) closes the connection without reaching any request handler;
//! it is counted (`tls_handshake_failures`) and logged at debug level only, because
//! anyone who can reach the port can cause one.
//!
//! Which listeners: all of them once `TLS_CERT_FILE` is set, or only those whose
//! address is in `TLS_LISTEN_ADDRS` (see [`plan`]).
//!
//! # Files
//!
//! - `mod.rs`: [`TlsAcceptor`] (the configuration in use, swapped atomically),
//!   [`TlsListeners`] and [`plan`].
//! - `load.rs`: PEM files → `rustls::ServerConfig`, [`TlsError`].
//! - `reload.rs`: the watcher that reloads on file changes and SIGHUP.

mod load;
mod reload;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;
use crate::stats::Stats;

pub use load::{server_config, TlsError, ALPN};
pub use reload::{spawn_reloader, POLL_INTERVAL};

/// Longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Performs server handshakes with the configuration in use; cheap to clone.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ArcSwap<ServerConfig>>,
    stats: Arc<Stats>,
    /// [`HANDSHAKE_TIMEOUT`], shorter in tests.
    timeout: Duration,
}

impl TlsAcceptor {
    /// Reads the files of `cfg` (TLS must be on).
    pub fn load(cfg: &TlsConfig, stats: Arc<Stats>) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::new(server_config(cfg)?, stats))
    }

    /// Handshakes with `config` (its ALPN list as given: see [`ALPN`]).
    pub fn new(config: ServerConfig, stats: Arc<Stats>) -> TlsAcceptor {
        TlsAcceptor {
            config: Arc::new(ArcSwap::from_pointee(config)),
            stats,
            timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// The same, with handshakes limited to `timeout` instead of [`HANDSHAKE_TIMEOUT`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> TlsAcceptor {
        self.timeout = timeout;
        self
    }

    /// Handshakes from now on use `config`; those under way finish with the old one.
    pub fn replace(&self, config: ServerConfig) {
        self.config.store(Arc::new(config));
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// The server side of the handshake on `stream`, within the timeout; once
    /// `close_soon` is cancelled (drain, max age) a handshake still under way gets at most
    /// `linger` more, like an idle connection's last request. `None` when it failed:
    /// counted, logged at debug, and the connection is dropped.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        close_soon: &CancellationToken,
        linger: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let accept = tokio_rustls::TlsAcceptor::from(self.current()).accept(stream);
        tokio::pin!(accept);
        let mut deadline = tokio::time::Instant::now() + self.timeout;
        let mut draining = false;
        let failure = loop {
            tokio::select! {
                done = accept.as_mut() => match done {
                    Ok(tls) => return Some(tls),
                    Err(err) => break err.to_string(),
                },
                () = tokio::time::sleep_until(deadline) => {
                    break if draining {
                        "not finished when the connection had to close".to_string()
                    } else {
                        format!("not finished within {:?}", self.timeout)
                    };
                }
                () = close_soon.cancelled(), if !draining => {
                    draining = true;
                    deadline = deadline.min(tokio::time::Instant::now() + linger);
                }
            }
        };
        Stats::add(&self.stats.tls_handshake_failures, 1);
        tracing::debug!(peer = ?peer, error = %failure, "TLS handshake failed");
        None
    }
}

/// The TLS side of a worker's listeners: the certificate in use and which listeners
/// use it.
pub struct TlsListeners {
    /// `None` with TLS off.
    pub acceptor: Option<TlsAcceptor>,
    /// Whether the listener at the same index is TLS.
    is_tls: Vec<bool>,
}

impl TlsListeners {
    /// Reads the TLS files and decides, for the listeners at `locals`, which are TLS
    /// (see [`plan`]). Errors are invalid settings: the worker must not start.
    pub fn load(
        cfg: &TlsConfig,
        locals: &[SocketAddr],
        stats: &Arc<Stats>,
    ) -> Result<TlsListeners, TlsError> {
        let is_tls = plan(cfg, locals)?;
        let acceptor = match cfg.enabled() {
            true => Some(TlsAcceptor::load(cfg, stats.clone())?),
            false => None,
        };
        if acceptor.is_some() {
            let tls_addrs: Vec<&SocketAddr> = locals
                .iter()
                .zip(&is_tls)
                .filter_map(|(addr, tls)| tls.then_some(addr))
                .collect();
            tracing::info!(
                ?tls_addrs,
                cert_file = ?cfg.cert_file,
                client_certificates = cfg.client_ca_file.is_some(),
                "TLS on"
            );
        }
        Ok(TlsListeners { acceptor, is_tls })
    }

    /// The acceptor of the listener at `index`; `None` for a plaintext one.
    pub fn for_listener(&self, index: usize) -> Option<TlsAcceptor> {
        let tls = self.is_tls.get(index).copied().unwrap_or(false);
        self.acceptor.clone().filter(|_| tls)
    }
}

/// Which of the listeners at `locals` serve TLS (`true` at the same index): all of
/// them when `TLS_LISTEN_ADDRS` is empty, else those matching one of its addresses
/// (see [`addr_matches`]). Every `TLS_LISTEN_ADDRS` entry must match a listener: a
/// typo must not leave the TLS port out silently.
pub fn plan(cfg: &TlsConfig, locals: &[SocketAddr]) -> Result<Vec<bool>, TlsError> {
    if !cfg.enabled() {
        return Ok(vec![false; locals.len()]);
    }
    if cfg.listen_addrs.is_empty() {
        return Ok(vec![true; locals.len()]);
    }
    if let Some(missing) = cfg
        .listen_addrs
        .iter()
        .find(|want| !locals.iter().any(|have| addr_matches(**want, *have)))
    {
        let listeners: Vec<String> = locals.iter().map(ToString::to_string).collect();
        return Err(TlsError::NoSuchListener {
            addr: missing.to_string(),
            listeners: listeners.join(", "),
        });
    }
    Ok(locals
        .iter()
        .map(|have| {
            cfg.listen_addrs
                .iter()
                .any(|want| addr_matches(*want, *have))
        })
        .collect())
}

/// Same port, and the same IP or an unspecified one on either side: systemd's
/// `ListenStream=4443` is `[::]:4443`, which `0.0.0.0:4443` or `[::]:4443` in
/// `TLS_LISTEN_ADDRS` should pick.
fn addr_matches(want: SocketAddr, have: SocketAddr) -> bool {
    want.port() == have.port()
        && (want.ip() == have.ip() || want.ip().is_unspecified() || have.ip().is_unspecified())
}

/// The addresses a worker binds itself (no systemd sockets): `LISTEN_ADDRS`, then the
/// `TLS_LISTEN_ADDRS` not among them.
pub fn bind_addrs(listen: &[SocketAddr], cfg: &TlsConfig) -> Vec<SocketAddr> {
    let mut addrs = listen.to_vec();
    if cfg.enabled() {
        for addr in &cfg.listen_addrs {
            if !addrs.contains(addr) {
                addrs.push(*addr);
            }
        }
    }
    addrs
}
