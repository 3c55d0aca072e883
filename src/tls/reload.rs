//! Reloading the certificate without a restart: the files are polled (mtime, size,
//! inode, device: cheap `stat`s, and an atomic rename or a symlink swap changes the
//! inode) every [`POLL_INTERVAL`], and SIGHUP (`systemctl reload`) forces a reload.
//!
//! A reload builds a whole new `ServerConfig` and swaps it in for new handshakes;
//! connections already established keep theirs. New files that do not load (missing,
//! unparsable, key not matching the certificate) are logged as a warning naming the
//! file and the reason, counted (`tls_reload_failures`), and the configuration in use
//! is kept; the same bad files are not reported again until they change.
//!
//! The SIGHUP listener is installed even with TLS off: SIGHUP's default action would
//! end the process, and the unit's `ExecReload=` sends it to every worker.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{server_config, TlsAcceptor};
use crate::config::TlsConfig;
use crate::stats::Stats;

/// How often the files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// After a change is seen, time for the rest of a multi-file update (the key after the
/// certificate) to land before the files are read.
const SETTLE: Duration = Duration::from_millis(250);

/// What identifies one version of a file; `None` while it cannot be `stat`ed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

type Versions = Vec<Option<Version>>;

fn versions(files: &[PathBuf]) -> Versions {
    files
        .iter()
        .map(|path| {
            std::fs::metadata(path).ok().map(|m| Version {
                modified: m.modified().ok(),
                len: m.len(),
                inode: m.ino(),
                device: m.dev(),
            })
        })
        .collect()
}

/// Starts the reload task (until `stop`): with TLS on, it watches `cfg`'s files and
/// swaps `acceptor`'s configuration; without, it only answers SIGHUP. The signal
/// listener exists when this returns, so a SIGHUP right after `READY=1` is safe.
pub fn spawn_reloader(
    cfg: &TlsConfig,
    acceptor: Option<TlsAcceptor>,
    stats: Arc<Stats>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) {
    let hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; TLS files are still reloaded when they change");
            None
        }
    };
    let reloader = Reloader {
        files: [&cfg.cert_file, &cfg.key_file, &cfg.client_ca_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        cfg: cfg.clone(),
        acceptor,
        stats,
    };
    tracker.spawn(reloader.run(hangup, stop));
}

struct Reloader {
    cfg: TlsConfig,
    files: Vec<PathBuf>,
    acceptor: Option<TlsAcceptor>,
    stats: Arc<Stats>,
}

impl Reloader {
    async fn run(self, mut hangup: Option<Signal>, stop: CancellationToken) {
        // The versions the configuration in use (or the last refused one) was read from.
        let mut seen = versions(&self.files);
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                () = stop.cancelled() => return,
                _ = poll.tick(), if self.acceptor.is_some() => false,
                Some(()) = recv(&mut hangup) => true,
            };
            let Some(acceptor) = &self.acceptor else {
                tracing::info!("SIGHUP: TLS is off (TLS_CERT_FILE unset), nothing to reload");
                continue;
            };
            if !forced {
                if versions(&self.files) == seen {
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
            }
            seen = versions(&self.files);
            self.reload(acceptor, forced);
        }
    }

    fn reload(&self, acceptor: &TlsAcceptor, forced: bool) {
        let why = if forced { "SIGHUP" } else { "files changed" };
        match server_config(&self.cfg) {
            Ok(config) => {
                acceptor.replace(config);
                Stats::add(&self.stats.tls_reloads, 1);
                tracing::info!(
                    cert_file = ?self.cfg.cert_file,
                    reason = why,
                    "TLS certificate reloaded; new connections use it"
                );
            }
            Err(err) => {
                Stats::add(&self.stats.tls_reload_failures, 1);
                tracing::warn!(
                    file = %err.file().map(|p| p.display().to_string()).unwrap_or_default(),
                    error = %err,
                    reason = why,
                    "TLS reload refused: keeping the certificate in use"
                );
            }
        }
    }
}

/// The next SIGHUP; never, without a listener.
async fn recv(hangup: &mut Option<Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
