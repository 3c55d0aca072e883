//! Adopting the spools of instances that are gone (scaled down, or crashed and not
//! coming back).
//!
//! # Layout
//!
//! `<root>/<instance>/` per instance, each with its `LOCK` file held by whoever uses
//! the directory (see `lock.rs` for the protocol).
//!
//! # Adoption protocol
//!
//! 1. List `<root>/*` except our own directory; skip any whose `LOCK` is held, and any
//!    touched within `orphan_min_idle` (an instance that crashed and is restarting
//!    should replay its own spool).
//! 2. Take its lock, check the lock file is still the one at that path (a concurrent
//!    adopter may have renamed the directory in between), and rename the directory to
//!    `<root>/.adopted-<instance>-<unix_ms>` while holding the lock. From then on, the
//!    instance can start again with a fresh, empty spool under its own name.
//! 3. Open it like a spool (same recovery), and re-append every unacknowledged frame
//!    into **our** spool, acknowledging each in the orphan only after our append is
//!    durable. Our consumer then sees those frames like any other.
//! 4. When the orphan is drained, move its `quarantine/` files into ours and delete
//!    the directory, still holding the lock.
//!
//! The lock is held from step 2 to 4, so two adopters (or an adopter and a restarted
//! owner) never drain one spool concurrently. An adopter that dies mid-way leaves a
//! `.adopted-*` directory with a free lock and a persisted watermark; the next
//! adoption round continues it. A crash between our append and the orphan's ack
//! persistence duplicates at most those frames (at-least-once).
//!
//! An owner opening its directory while an adopter renames it starts over with a
//! fresh directory (`lock.rs`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::inflight::{INFLIGHT_FILE, INFLIGHT_TMP_FILE};
use super::ledger::{unix_ms, Counters};
use super::lock::{try_lock_dir, DirLock, LOCK_FILE};
use super::prealloc::{RECYCLE_FILE, SPARE_FILE, SPARE_TMP_FILE};
use super::segment::{list_segments, sync_dir, QUARANTINE_DIR};
use super::state_file::STATE_FILE;
use super::{Spool, SpoolConfig, SpoolError};

/// Prefix of a directory being (or having been) drained by an adopter.
const ADOPTED_PREFIX: &str = ".adopted-";
/// Backoff while our own spool is full during adoption.
const FULL_BACKOFF: Duration = Duration::from_millis(200);

/// A spool directory of another instance, locked by us and ready to be drained with
/// [`Spool::adopt`]. Dropping it releases the lock without draining.
#[derive(Debug)]
pub struct Orphan {
    dir: PathBuf,
    instance: String,
    lock: DirLock,
}

impl Orphan {
    /// Where it is now (already renamed to `.adopted-…`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The instance that wrote it.
    pub fn instance(&self) -> &str {
        &self.instance
    }
}

/// What an adoption moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdoptReport {
    pub spools: u64,
    pub frames: u64,
    pub records: u64,
}

/// Locks every sibling of `own_dir` under `root` that is free and idle; see the
/// module docs (steps 1 and 2).
pub(crate) fn claim_orphans(
    root: &Path,
    own_dir: &Path,
    min_idle: Duration,
) -> Result<Vec<Orphan>, SpoolError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SpoolError::Io {
                path: root.to_path_buf(),
                source,
            })
        }
    };
    let mut orphans = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if dir == own_dir || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match claim(root, &dir, &name, min_idle) {
            Ok(Some(orphan)) => orphans.push(orphan),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot claim an orphaned spool")
            }
        }
    }
    Ok(orphans)
}

fn claim(root: &Path, dir: &Path, name: &str, min_idle: Duration) -> io::Result<Option<Orphan>> {
    let Some(lock) = try_lock_dir(dir)? else {
        return Ok(None);
    };
    if newest_change(dir)?.elapsed().unwrap_or_default() < min_idle {
        return Ok(None);
    }
    if let Some(rest) = name.strip_prefix(ADOPTED_PREFIX) {
        // Left by an adopter that stopped; continue where it was.
        let instance = rest.rsplit_once('-').map_or(rest, |(i, _)| i).to_owned();
        return Ok(Some(Orphan {
            dir: dir.to_path_buf(),
            instance,
            lock,
        }));
    }
    let renamed = root.join(format!("{ADOPTED_PREFIX}{name}-{}", unix_ms()));
    fs::rename(dir, &renamed)?;
    sync_dir(root)?;
    tracing::info!(instance = name, dir = %renamed.display(), "adopting an orphaned spool");
    Ok(Some(Orphan {
        dir: renamed,
        instance: name.to_owned(),
        lock,
    }))
}

/// The latest modification time of a directory and its files.
fn newest_change(dir: &Path) -> io::Result<SystemTime> {
    let mut newest = fs::metadata(dir)?.modified()?;
    for entry in fs::read_dir(dir)?.flatten() {
        if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
            newest = newest.max(modified);
        }
    }
    Ok(newest)
}

impl Spool {
    /// Finds sibling spool directories whose owner is gone and locks them for
    /// [`adopt`](Self::adopt). Never returns a directory some process still holds.
    pub async fn claim_orphans(&self) -> Result<Vec<Orphan>, SpoolError> {
        let root = self.shared.cfg.root.clone();
        let own = self.shared.dir.clone();
        let min_idle = self.shared.cfg.orphan_min_idle;
        tokio::task::spawn_blocking(move || claim_orphans(&root, &own, min_idle))
            .await
            .map_err(|_| SpoolError::Closed)?
    }

    /// Drains a claimed orphan into this spool (see the module docs), then deletes it.
    /// Waits while this spool is full. On `cancel` it stops between frames; what was
    /// moved stays moved and the rest stays in the orphan for a later adoption.
    pub async fn adopt(
        &self,
        orphan: Orphan,
        cancel: &CancellationToken,
    ) -> Result<AdoptReport, SpoolError> {
        let Orphan {
            dir,
            instance,
            lock,
        } = orphan;
        // Nothing is appended to an orphan: no spare segment for it.
        let cfg = SpoolConfig {
            preallocate: false,
            ..self.shared.cfg.clone()
        };
        let fs = std::sync::Arc::new(super::segment::RealFs);
        let source_dir = dir.clone();
        let (source, mut reader) = tokio::task::spawn_blocking(move || {
            Spool::open_locked(cfg, source_dir, instance.into(), lock, fs)
        })
        .await
        .map_err(|_| SpoolError::Closed)??;
        source.close_appends();
        let mut report = AdoptReport::default();
        let result = loop {
            let frame = tokio::select! {
                frame = reader.next() => frame,
                () = cancel.cancelled() => break Err(SpoolError::Closed),
            };
            let Some(frame) = frame else {
                break Ok(());
            };
            if let Err(err) = self.append_until_durable(&frame.batch, cancel).await {
                break Err(err);
            }
            source.ack(frame.seq);
            report.frames += 1;
            report.records += frame.batch.len() as u64;
        };
        source.shutdown().await;
        let c = &self.shared.counters;
        Counters::add(&c.adopted_frames, report.frames);
        result?;
        let own_quarantine = self.shared.dir.join(QUARANTINE_DIR);
        let done_dir = dir.clone();
        // Deleted while `source` (and so the lock) is still alive.
        let removed =
            tokio::task::spawn_blocking(move || remove_drained(&done_dir, &own_quarantine))
                .await
                .map_err(|_| SpoolError::Closed)?;
        drop(reader);
        drop(source);
        removed?;
        Counters::add(&c.adopted_spools, 1);
        report.spools = 1;
        tracing::info!(
            dir = %dir.display(), frames = report.frames, records = report.records,
            "orphaned spool drained and removed"
        );
        Ok(report)
    }

    /// Claims and drains every orphan, one after the other.
    pub async fn adopt_orphans(
        &self,
        cancel: &CancellationToken,
    ) -> Result<AdoptReport, SpoolError> {
        let mut total = AdoptReport::default();
        for orphan in self.claim_orphans().await? {
            let report = self.adopt(orphan, cancel).await?;
            total.spools += report.spools;
            total.frames += report.frames;
            total.records += report.records;
        }
        Ok(total)
    }

    async fn append_until_durable(
        &self,
        batch: &crate::codec::EncodedBatch,
        cancel: &CancellationToken,
    ) -> Result<(), SpoolError> {
        loop {
            match self.append(batch.clone()).await {
                Ok(_) => return Ok(()),
                Err(SpoolError::Closed) => return Err(SpoolError::Closed),
                Err(err) => {
                    if !err.is_full() {
                        tracing::warn!(error = %err, "adoption append failed; retrying");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(FULL_BACKOFF) => {}
                        () = cancel.cancelled() => return Err(SpoolError::Closed),
                    }
                }
            }
        }
    }
}

/// Removes a drained orphan directory, keeping its quarantined files (moved into ours).
fn remove_drained(dir: &Path, own_quarantine: &Path) -> Result<(), SpoolError> {
    let io_err = |path: &Path, source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    };
    let left = list_segments(dir).map_err(|e| io_err(dir, e))?;
    if !left.is_empty() {
        // Their deletion failed (logged by the writer); a later round retries.
        return Err(io_err(
            dir,
            io::Error::other(format!("{} segments left after draining", left.len())),
        ));
    }
    let quarantine = dir.join(QUARANTINE_DIR);
    if let Ok(entries) = fs::read_dir(&quarantine) {
        let prefix = dir.file_name().and_then(|n| n.to_str()).unwrap_or("orphan");
        fs::create_dir_all(own_quarantine).map_err(|e| io_err(own_quarantine, e))?;
        for entry in entries.flatten() {
            let target = own_quarantine.join(format!(
                "{}.{}",
                prefix.trim_start_matches('.'),
                entry.file_name().to_string_lossy()
            ));
            fs::rename(entry.path(), &target).map_err(|e| io_err(&target, e))?;
        }
        sync_dir(own_quarantine).map_err(|e| io_err(own_quarantine, e))?;
        fs::remove_dir(&quarantine).map_err(|e| io_err(&quarantine, e))?;
    }
    for name in [
        STATE_FILE,
        INFLIGHT_FILE,
        INFLIGHT_TMP_FILE,
        SPARE_FILE,
        SPARE_TMP_FILE,
        RECYCLE_FILE,
        LOCK_FILE,
    ] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, e)),
        }
    }
    fs::remove_dir(dir).map_err(|e| io_err(dir, e))?;
    if let Some(root) = dir.parent() {
        sync_dir(root).map_err(|e| io_err(root, e))?;
    }
    Ok(())
}
