//! Keeps the keys in force equal to the key file: it is looked at every
//! [`POLL_INTERVAL`] (inode, size, modification and change times: an editor's
//! rename and an in-place write both show) and re-read at once on SIGHUP
//! (`systemctl reload`). A new version that does not load (bad line, wrong mode,
//! gone) is logged with the reason and the old keys stay in force.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{keys, Auth};

/// How often the file's metadata is compared.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What tells one version of the file from another.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature {
    inode: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn signature(path: &Path) -> Option<Signature> {
    let m = std::fs::metadata(path).ok()?;
    Some(Signature {
        inode: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// Re-reads the key file into `auth`; `false` (logged, old keys kept) if it failed.
pub fn reload_now(auth: &Auth, why: &str) -> bool {
    let cfg = auth.config();
    match keys::load(&cfg.keys_file, &cfg.defaults) {
        Ok(defs) => {
            let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
            tracing::info!(
                path = %cfg.keys_file.display(),
                keys = %names.join(","),
                why,
                "API keys reloaded"
            );
            auth.install(defs);
            auth.reloads.fetch_add(1, Relaxed);
            true
        }
        Err(err) => {
            auth.reload_failures.fetch_add(1, Relaxed);
            tracing::error!(error = %err, why, "the changed key file was not loaded; the previous keys stay in force");
            false
        }
    }
}

/// Watches the key file until `stop`; nothing to do when authentication is off.
pub async fn watch(auth: Arc<Auth>, stop: CancellationToken) {
    if !auth.enabled() {
        return;
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(err) => {
            tracing::warn!(error = %err, "no SIGHUP handler: the key file is reloaded on change only");
            None
        }
    };
    let path = auth.config().keys_file.clone();
    let mut seen = signature(&path);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match &mut hup {
                Some(hup) => hup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            _ = hangup => {
                seen = signature(&path);
                reload_now(&auth, "SIGHUP");
            }
            _ = tick.tick() => {
                let now = signature(&path);
                if now != seen {
                    seen = now;
                    reload_now(&auth, "the file changed");
                }
            }
        }
    }
}
