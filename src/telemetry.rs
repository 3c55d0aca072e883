//! Where the worker's own logs go.
//!
//! Under systemd (`JOURNAL_STREAM` names our stderr) entries go to journald over
//! its native protocol, with structured fields and `WORKER_ID` on every entry,
//! so `journalctl -u 'zero-logs@*' WORKER_ID=3` works. Otherwise a
//! human-readable format goes to stderr. `RUST_LOG` filters (default `info`).

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where logs went, for the start-up line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Journald,
    Stderr,
}

/// Installs the worker's global subscriber (`zero-logs`, with `WORKER_ID` on every
/// journal entry). Call once, early in `main`.
pub fn init(worker_id: &str) -> LogTarget {
    init_with("zero-logs", &[("WORKER_ID", worker_id)])
}

/// Installs a global subscriber: journald under the syslog identifier `identifier`
/// with `fields` on every entry (no field prefix, so an event's `event` field is
/// `EVENT=`), or stderr. A second call does nothing.
pub fn init_with(identifier: &str, fields: &[(&str, &str)]) -> LogTarget {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier(identifier.to_string())
                    .with_custom_fields(fields.iter().map(|(k, v)| (*k, v.as_bytes())));
                let _ = registry.with(layer).try_init();
                return LogTarget::Journald;
            }
            Err(err) => eprintln!("journald is not reachable ({err}); logging to stderr"),
        }
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init();
    LogTarget::Stderr
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` of the stream it connected;
/// it applies only if our stderr is still that stream (not redirected since).
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
