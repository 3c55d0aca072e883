//! Where a request is acknowledged (`ACK_MODE`) and the spool's settings
//! (`SPOOL_*`): the typed [`SpoolConfig`] the [`crate::spool`] module runs on.

use std::path::PathBuf;
use std::time::Duration;

use super::settings as S;
use super::{ConfigError, Lookup, Reader};

/// When a `202`/gRPC OK is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Once the rows are `fdatasync`ed in the local spool (the default): low latency,
    /// ClickHouse outages absorbed up to `SPOOL_MAX_BYTES`, delivery at-least-once.
    Spool,
    /// Once ClickHouse committed the rows: nothing on local disk, but clients wait for
    /// the INSERT and get 503 while ClickHouse is down.
    ClickHouse,
}

impl AckMode {
    pub(crate) fn parse(text: &str) -> Result<AckMode, String> {
        match text.to_ascii_lowercase().as_str() {
            "spool" => Ok(AckMode::Spool),
            "clickhouse" => Ok(AckMode::ClickHouse),
            _ => Err("expected spool or clickhouse".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Spool => "spool",
            AckMode::ClickHouse => "clickhouse",
        }
    }
}

/// Where and how one instance spools.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// `SPOOL_DIR`: the root holding one directory per instance, e.g.
    /// `/var/lib/zero-logs/spool`. Siblings of this instance's directory are adopted
    /// when their owner is gone.
    pub root: PathBuf,
    /// This instance's directory name under `root` (`WORKER_ID`, systemd's `%i`).
    pub instance: String,
    /// `SPOOL_MAX_BYTES`: cap on segment bytes; appends beyond it get 429.
    pub max_bytes: u64,
    /// `SPOOL_SEGMENT_BYTES`: a segment is rotated once it would grow past this.
    pub segment_bytes: u64,
    /// `SPOOL_COMMIT_WINDOW`: how long the first append of a group may wait for
    /// companions to share its `fdatasync` (only while fewer arrived than last time).
    pub commit_window: Duration,
    /// Upper bound of one group's bytes (latency of one write).
    pub max_group_bytes: usize,
    /// `SPOOL_MEMORY_BYTES`: committed batches kept in memory for the batcher; beyond
    /// it they are read back from disk.
    pub memory_tail_bytes: usize,
    /// `SPOOL_ADOPT_IDLE`: a sibling directory must be unlocked and untouched this long
    /// before it is adopted, so a restarting instance replays its own spool.
    pub orphan_min_idle: Duration,
    /// `SPOOL_ADOPT_INTERVAL`: how often a worker looks for orphaned spools.
    pub adopt_interval: Duration,
    /// How long opening waits for the directory lock (an adopter may hold it briefly).
    pub lock_wait: Duration,
    /// `SPOOL_PREALLOCATE`: keep a zero-filled spare segment ready so appends overwrite
    /// written blocks (cheaper `fdatasync`); see `spool::prealloc`.
    pub preallocate: bool,
}

impl SpoolConfig {
    /// The settings table's defaults (1 GiB cap, 64 MiB segments, …), plus 16 MiB
    /// groups and 5 s of waiting for the lock, which have no setting.
    pub fn new(root: impl Into<PathBuf>, instance: impl Into<String>) -> SpoolConfig {
        SpoolConfig {
            root: root.into(),
            instance: instance.into(),
            max_bytes: S::SPOOL_MAX_BYTES.written_default(),
            segment_bytes: S::SPOOL_SEGMENT_BYTES.written_default(),
            commit_window: S::SPOOL_COMMIT_WINDOW.written_default(),
            max_group_bytes: 16 << 20,
            memory_tail_bytes: S::SPOOL_MEMORY_BYTES.written_default(),
            orphan_min_idle: S::SPOOL_ADOPT_IDLE.written_default(),
            adopt_interval: S::SPOOL_ADOPT_INTERVAL.written_default(),
            lock_wait: Duration::from_secs(5),
            preallocate: S::SPOOL_PREALLOCATE.written_default(),
        }
    }

    /// `<root>/<instance>`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.instance)
    }
}

/// The spool root when `SPOOL_DIR` is not set: systemd's `StateDirectory=`
/// (`$STATE_DIRECTORY/spool`), else the XDG state directory
/// (`$XDG_STATE_HOME/zero-logs/spool`, `~/.local/state/zero-logs/spool`), else
/// `/var/lib/zero-logs/spool`.
pub fn default_spool_root(env: &dyn Lookup) -> PathBuf {
    let set = |name: &str| env.get(name).filter(|v| !v.trim().is_empty());
    if let Some(state) = set("STATE_DIRECTORY") {
        // systemd passes several directories colon-separated; ours is the first.
        let first = state.split(':').next().unwrap_or(&state).to_string();
        return PathBuf::from(first).join("spool");
    }
    if let Some(xdg) = set("XDG_STATE_HOME") {
        return PathBuf::from(xdg).join("zero-logs/spool");
    }
    if let Some(home) = set("HOME") {
        return PathBuf::from(home).join(".local/state/zero-logs/spool");
    }
    PathBuf::from("/var/lib/zero-logs/spool")
}

pub(super) fn load(r: &Reader<'_>, instance: &str) -> Result<(AckMode, SpoolConfig), ConfigError> {
    let mode = r.get(&S::ACK_MODE)?;
    let d = SpoolConfig::new(default_spool_root(r.env), instance);
    let cfg = SpoolConfig {
        root: r.get_or(&S::SPOOL_DIR, || d.root.clone())?,
        max_bytes: r.get(&S::SPOOL_MAX_BYTES)?,
        segment_bytes: r.get(&S::SPOOL_SEGMENT_BYTES)?,
        commit_window: r.get(&S::SPOOL_COMMIT_WINDOW)?,
        memory_tail_bytes: r.get(&S::SPOOL_MEMORY_BYTES)?,
        orphan_min_idle: r.get(&S::SPOOL_ADOPT_IDLE)?,
        adopt_interval: r.get(&S::SPOOL_ADOPT_INTERVAL)?,
        preallocate: r.get(&S::SPOOL_PREALLOCATE)?,
        ..d
    };
    Ok((mode, cfg))
}
