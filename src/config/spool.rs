//! Where a request is acknowledged (`ACK_MODE`) and the spool's settings
//! (`SPOOL_*`): the typed [`SpoolConfig`] the [`crate::spool`] module runs on.

use std::path::PathBuf;
use std::time::Duration;

use super::parse::{boolean, bytes, millis, Reader};
use super::{ConfigError, Lookup, ServeFlags};

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
    fn parse(text: &str) -> Result<AckMode, String> {
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
    /// Defaults: 1 GiB cap, 64 MiB segments, 2 ms window, 16 MiB groups, 16 MiB in
    /// memory, adopt after 30 s idle, look every 30 s, wait 5 s for the lock,
    /// preallocate segments.
    pub fn new(root: impl Into<PathBuf>, instance: impl Into<String>) -> SpoolConfig {
        SpoolConfig {
            root: root.into(),
            instance: instance.into(),
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            commit_window: Duration::from_millis(2),
            max_group_bytes: 16 << 20,
            memory_tail_bytes: 16 << 20,
            orphan_min_idle: Duration::from_secs(30),
            adopt_interval: Duration::from_secs(30),
            lock_wait: Duration::from_secs(5),
            preallocate: true,
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

pub(super) fn load(
    r: &Reader<'_>,
    flags: &ServeFlags,
    instance: &str,
) -> Result<(AckMode, SpoolConfig), ConfigError> {
    let mode = r.parse(
        &flags.ack_mode,
        "ack-mode",
        "ACK_MODE",
        AckMode::Spool,
        AckMode::parse,
    )?;
    let d = SpoolConfig::new(default_spool_root(r.env), instance);
    let cfg = SpoolConfig {
        root: r
            .raw(&flags.spool_dir, "spool-dir", "SPOOL_DIR")
            .map_or(d.root, |raw| PathBuf::from(raw.value)),
        max_bytes: r.parse(
            &flags.spool_max_bytes,
            "spool-max-bytes",
            "SPOOL_MAX_BYTES",
            d.max_bytes,
            spool_cap,
        )?,
        segment_bytes: r.parse(
            &flags.spool_segment_bytes,
            "spool-segment-bytes",
            "SPOOL_SEGMENT_BYTES",
            d.segment_bytes,
            segment_size,
        )?,
        commit_window: r.parse(
            &flags.spool_commit_window,
            "spool-commit-window",
            "SPOOL_COMMIT_WINDOW",
            d.commit_window,
            millis,
        )?,
        memory_tail_bytes: r.parse(
            &flags.spool_memory_bytes,
            "spool-memory-bytes",
            "SPOOL_MEMORY_BYTES",
            d.memory_tail_bytes,
            bytes,
        )?,
        orphan_min_idle: r.parse(
            &flags.spool_adopt_idle,
            "spool-adopt-idle",
            "SPOOL_ADOPT_IDLE",
            d.orphan_min_idle,
            millis,
        )?,
        adopt_interval: r.parse(
            &flags.spool_adopt_interval,
            "spool-adopt-interval",
            "SPOOL_ADOPT_INTERVAL",
            d.adopt_interval,
            positive_millis,
        )?,
        preallocate: r.parse(
            &flags.spool_preallocate,
            "spool-preallocate",
            "SPOOL_PREALLOCATE",
            d.preallocate,
            boolean,
        )?,
        ..d
    };
    Ok((mode, cfg))
}

fn spool_cap(text: &str) -> Result<u64, String> {
    at_least(text, 1 << 20, "1MiB")
}

fn segment_size(text: &str) -> Result<u64, String> {
    at_least(text, 64 << 10, "64KiB")
}

fn at_least(text: &str, min: u64, min_text: &str) -> Result<u64, String> {
    let n = bytes(text)? as u64;
    if n < min {
        return Err(format!("expected at least {min_text}"));
    }
    Ok(n)
}

fn positive_millis(text: &str) -> Result<Duration, String> {
    let every = millis(text)?;
    if every.is_zero() {
        return Err("expected milliseconds of at least 1".into());
    }
    Ok(every)
}
