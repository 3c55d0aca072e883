//! The in-memory ledger shared by the writer thread, the reader and the [`Spool`]
//! handles: which segments exist and how much of each is durable, what the reader has
//! taken, which frames are acknowledged, the frames kept in memory for the reader,
//! and the counters behind [`SpoolStats`].
//!
//! One mutex guards the positions because they must change together (a frame becomes
//! durable and readable in one step); counters are plain atomics because only the
//! hot path writes them and readers only need them roughly consistent.
//!
//! [`Spool`]: super::Spool

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Notify;

use super::acks::AckTracker;
use super::inflight::InflightLog;
use super::lock::DirLock;
use super::SpoolConfig;
use crate::codec::EncodedBatch;
use crate::latency::LatencyHistogram;

/// One segment file as the ledger knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Bytes that may be read: durable frames only (for the segment being written,
    /// what the last group commit `fsync`ed).
    pub len: u64,
    /// Highest sequence number the segment can hold. For a sealed segment from an
    /// earlier run: the next segment's first number minus one (numbers are contiguous
    /// across segments); for the one being written: the last durable frame.
    pub last_seq: u64,
    /// No more frames will be appended (a later segment exists, or it is from an
    /// earlier run).
    pub sealed: bool,
    /// Append time of its first frame (Unix ms, 0 if unknown), for the age statistic.
    pub first_unix_ms: u64,
    /// Fully acknowledged and handed to the reaper thread (`reaper.rs`) for deletion.
    pub deleting: bool,
}

/// A durable frame kept in memory so the reader need not read it back from disk.
#[derive(Debug)]
pub struct HotFrame {
    pub seq: u64,
    pub appended_unix_ms: u64,
    pub batch: EncodedBatch,
    /// Where the next frame starts: the reader's disk position after this frame.
    pub seg_first: u64,
    pub end_offset: u64,
}

/// Positions and queues; see the module docs.
#[derive(Debug)]
pub struct Ledger {
    pub segments: BTreeMap<u64, SegmentMeta>,
    /// Highest sequence number that is durable (0: none). Frames up to it may be read.
    pub durable_through: u64,
    /// First sequence number appended by this process; lower ones are replayed.
    pub run_first_seq: u64,
    /// Durable frames for the reader, contiguous, starting at `reader_next` when not
    /// empty. Bounded by `hot_bytes <= memory_tail_bytes`; frames that do not fit are
    /// read back from disk instead.
    pub hot: VecDeque<HotFrame>,
    pub hot_bytes: usize,
    /// The next sequence number the reader will take (from `hot` or from disk).
    pub reader_next: u64,
    /// Highest sequence number handed to the reader; acks above it are ignored.
    pub delivered_through: u64,
    pub acks: AckTracker,
    /// Frames handed to the reader and maybe not yet acked, oldest first: (seq,
    /// append time). Pruned lazily; gives the oldest-unacked age.
    pub delivered: VecDeque<(u64, u64)>,
    /// No frame will be appended any more: the writer committed everything queued
    /// before `close_appends`, or stopped.
    pub appends_closed: bool,
    /// The writer thread has ended; acks are no longer persisted.
    pub writer_done: bool,
}

impl Ledger {
    /// Drops acknowledged frames from the front of `delivered` (what remains is
    /// bounded by the frames in flight).
    pub fn prune_delivered(&mut self) {
        while let Some(&(seq, _)) = self.delivered.front() {
            if !self.acks.is_resolved(seq) {
                break;
            }
            self.delivered.pop_front();
        }
    }

    /// Append time of the oldest frame not yet acknowledged (Unix ms), if any.
    pub fn oldest_unacked_unix_ms(&mut self) -> Option<u64> {
        self.prune_delivered();
        if let Some(&(_, ms)) = self.delivered.front() {
            return Some(ms);
        }
        if self.reader_next > self.durable_through {
            return None;
        }
        if let Some(frame) = self.hot.front() {
            return Some(frame.appended_unix_ms);
        }
        // Not read yet: the first frame of its segment is at least as old.
        self.segments
            .range(..=self.reader_next)
            .next_back()
            .map(|(_, meta)| meta.first_unix_ms)
            .filter(|&ms| ms > 0)
    }

    pub fn segment_bytes(&self) -> u64 {
        self.segments.values().map(|m| m.len).sum()
    }
}

/// Live counters (plain atomics; see the module docs).
#[derive(Debug, Default)]
pub struct Counters {
    pub appended_frames: AtomicU64,
    pub appended_records: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub groups: AtomicU64,
    pub replayed_frames: AtomicU64,
    pub quarantined_frames: AtomicU64,
    pub quarantined_bytes: AtomicU64,
    pub torn_tails: AtomicU64,
    pub full_refusals: AtomicU64,
    pub no_space_errors: AtomicU64,
    pub io_errors: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub rejected_frames: AtomicU64,
    pub adopted_spools: AtomicU64,
    pub adopted_frames: AtomicU64,
    /// Append → durable (queued for the writer until its group's `fdatasync` returned).
    pub commit_latency: LatencyHistogram,
    /// One `fdatasync` of a group (the disk's part of `commit_latency`).
    pub sync_latency: LatencyHistogram,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Everything the writer, the reader and the handles share.
pub struct Shared {
    pub dir: PathBuf,
    /// Directory name, the first part of every frame id.
    pub instance: Arc<str>,
    /// Random id of this spool directory's incarnation (see `spool.state`).
    pub epoch: u64,
    pub cfg: SpoolConfig,
    /// `cfg.preallocate` and not on a memory filesystem, decided once at open: the
    /// reaper then keeps an acknowledged segment for the next spare (`prealloc`).
    pub recycles_segments: bool,
    pub ledger: Mutex<Ledger>,
    /// Wakes the reader when frames become durable or appends close.
    pub data_ready: Notify,
    pub counters: Counters,
    /// Bytes of segment files plus bytes reserved by appends not yet written; the cap
    /// is checked against it before anything is queued.
    pub used_bytes: AtomicU64,
    /// Cleared by `close_appends`; checked before queueing.
    pub appends_open: AtomicBool,
    /// Acks changed since the writer last persisted them.
    pub maintain_pending: AtomicBool,
    /// Units delivered and not yet acknowledged through (`inflight.rs`); pruned with
    /// every state write.
    pub inflight: InflightLog,
    /// Held for as long as anything can touch the directory.
    pub _lock: DirLock,
}

impl Shared {
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // Critical sections only move numbers and queue entries: a panic cannot leave
        // them half-done in a way that matters more than the panic itself.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn release(&self, bytes: u64) {
        self.used_bytes.fetch_sub(bytes, Relaxed);
    }

    pub fn stats(&self) -> SpoolStats {
        let c = &self.counters;
        let [commit_p50_us, commit_p99_us] = c.commit_latency.quantiles_us([0.50, 0.99]);
        let [fsync_p50_us, fsync_p99_us] = c.sync_latency.quantiles_us([0.50, 0.99]);
        let mut ledger = self.ledger();
        let watermark = ledger.acks.watermark();
        let unacked = ledger
            .durable_through
            .saturating_sub(watermark)
            .saturating_sub(ledger.acks.resolved_above());
        let oldest_ms = ledger.oldest_unacked_unix_ms();
        let stats = SpoolStats {
            bytes: ledger.segment_bytes(),
            max_bytes: self.cfg.max_bytes,
            segments: ledger.segments.len() as u64,
            last_seq: ledger.durable_through,
            acked_through: watermark,
            unacked_frames: unacked,
            oldest_unacked_age_ms: oldest_ms.map_or(0, |ms| unix_ms().saturating_sub(ms)),
            replay_pending: ledger.reader_next < ledger.run_first_seq
                && ledger.reader_next <= ledger.durable_through,
            appended_frames: c.appended_frames.load(Relaxed),
            appended_records: c.appended_records.load(Relaxed),
            appended_bytes: c.appended_bytes.load(Relaxed),
            fsyncs: c.fsyncs.load(Relaxed),
            group_commits: c.groups.load(Relaxed),
            replayed_frames: c.replayed_frames.load(Relaxed),
            quarantined_frames: c.quarantined_frames.load(Relaxed),
            quarantined_bytes: c.quarantined_bytes.load(Relaxed),
            torn_tails_truncated: c.torn_tails.load(Relaxed),
            full_refusals: c.full_refusals.load(Relaxed),
            no_space_errors: c.no_space_errors.load(Relaxed),
            io_errors: c.io_errors.load(Relaxed),
            segments_deleted: c.segments_deleted.load(Relaxed),
            rejected_frames: c.rejected_frames.load(Relaxed),
            adopted_spools: c.adopted_spools.load(Relaxed),
            adopted_frames: c.adopted_frames.load(Relaxed),
            commit_p50_us,
            commit_p99_us,
            fsync_p50_us,
            fsync_p99_us,
        };
        drop(ledger);
        stats
    }
}

/// A snapshot of one spool, for `/stats` (JSON) and `/metrics`; which fields are
/// metrics, and under what names, is declared in `crate::stats::report::SPOOL_METRICS`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of segment files (durable frames).
    pub bytes: u64,
    /// The cap (`SpoolConfig::max_bytes`).
    pub max_bytes: u64,
    pub segments: u64,
    /// Highest durable sequence number.
    pub last_seq: u64,
    /// Every frame up to this sequence number is acknowledged.
    pub acked_through: u64,
    /// Durable frames not yet acknowledged (delivered or not).
    pub unacked_frames: u64,
    /// Age of the oldest unacknowledged frame (0 when none). While the reader has not
    /// reached it yet this is an upper bound (its segment's first frame).
    pub oldest_unacked_age_ms: u64,
    /// Frames from earlier runs are still waiting to be delivered.
    pub replay_pending: bool,
    pub appended_frames: u64,
    pub appended_records: u64,
    /// Frame bytes appended (headers included).
    pub appended_bytes: u64,
    /// `fdatasync` calls on segments (group commits that reached the disk).
    pub fsyncs: u64,
    /// Groups committed; `appended_frames / group_commits` is the batching factor.
    pub group_commits: u64,
    /// Frames from earlier runs delivered to the reader.
    pub replayed_frames: u64,
    /// Sequence numbers moved to `quarantine/` (1 per region when unknown).
    pub quarantined_frames: u64,
    pub quarantined_bytes: u64,
    /// Torn last frames cut off at start-up (crash during a write; never acknowledged).
    pub torn_tails_truncated: u64,
    /// Appends refused because the cap was reached.
    pub full_refusals: u64,
    /// Appends refused because the filesystem was full (`ENOSPC`/`EDQUOT`).
    pub no_space_errors: u64,
    /// Other I/O errors (each also logged).
    pub io_errors: u64,
    pub segments_deleted: u64,
    /// Frames ClickHouse refused for good, kept in `quarantine/rejected-*.zls`.
    pub rejected_frames: u64,
    /// Orphaned spool directories of other instances drained into this one.
    pub adopted_spools: u64,
    pub adopted_frames: u64,
    /// Append → durable over the last 30–60 s, p50 and p99, as the upper bound of a
    /// [`LatencyHistogram`] bucket (at most 25 % above the true value).
    pub commit_p50_us: u64,
    pub commit_p99_us: u64,
    /// One group's `fdatasync`, likewise.
    pub fsync_p50_us: u64,
    pub fsync_p99_us: u64,
}

/// Wall-clock now in Unix milliseconds (frame stamps and ages, not timing).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
