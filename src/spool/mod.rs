//! The durable spool: where a request's rows are acknowledged, and what the batcher
//! reads from. "No acknowledged log is ever lost."
//!
//! ```text
//! ingest ── Spool::append(batch) ─> writer thread: group write + fdatasync ─> Ack (202)
//!                                        │ (frames become readable)
//! batcher <── SpoolReader::next() <──────┘ (memory, or disk for replay/backlog)
//! batcher ── ClickHouse committed ──> Spool::ack / commit_through ─> watermark
//!                                        └─> spool.state fdatasync, delete segments
//! ```
//!
//! # Use
//!
//! ```no_run
//! # use zero_logs::spool::{Spool, SpoolConfig, SpoolError};
//! # use zero_logs::codec::EncodedBatch;
//! # use zero_logs::record::Batch;
//! # async fn demo(batch: Batch) -> Result<(), SpoolError> {
//! let cfg = SpoolConfig::new("/var/lib/zero-logs/spool", "1");
//! let (spool, mut reader) = Spool::open(cfg).await?;
//! // ingest: respond 202 once this resolves; `e.is_full()` → 429
//! let seq = spool.append(EncodedBatch::encode(&batch)).await?;
//! // batcher: frames in order, replayed ones first
//! while let Some(frame) = reader.next().await {
//!     // … INSERT frame.batch.records(), then:
//!     spool.ack(frame.seq);
//! }
//! spool.shutdown().await;
//! # let _ = seq;
//! # Ok(())
//! # }
//! ```
//!
//! # Files
//!
//! - `mod.rs`: the public API ([`Spool`], [`SpoolReader`], [`SpoolConfig`],
//!   [`SpoolError`], [`SpoolStats`]) and the guarantees below.
//! - [`segment`]: the segment format (frame header, file names), the synchronous
//!   scanner, quarantine copies and the write seam.
//! - `state_file.rs`: `spool.state` (watermark, next sequence number, epoch).
//! - `inflight.rs`: `inflight.log`, the frame ranges delivered as one unit (an INSERT
//!   with a deduplication token) and not yet acknowledged, handed to the replay.
//! - `writer.rs`: the writer thread (group commit, rotation, `ENOSPC`, ack persistence).
//! - `reaper.rs`: the thread that deletes acknowledged segments (an `unlink` of a full
//!   segment takes milliseconds; appends must not wait for it).
//! - `replay.rs`: recovery at open and validated chunk reads (torn tails, quarantine).
//! - `reader.rs`: [`SpoolReader`], memory or disk, in sequence order.
//! - `acks.rs`: the low-watermark over out-of-order acks.
//! - `ledger.rs`: state shared by the above, counters, [`SpoolStats`].
//! - `lock.rs`: the `LOCK` file, one process per spool directory.
//! - `adopt.rs`: adoption of orphaned instance spools.
//!
//! # Directory
//!
//! ```text
//! <root>/<instance>/LOCK                      flock(2) while open; holds the owner's pid
//! <root>/<instance>/spool.state               acked_through, next_seq, epoch (2 slots)
//! <root>/<instance>/inflight.log              ranges delivered as one unit, not yet acked
//! <root>/<instance>/seg-<first seq:020>.zls   frames, append-only, rotated at segment_bytes
//! <root>/<instance>/quarantine/*.bad          corrupt segment tails, kept for inspection
//! <root>/.adopted-<instance>-<ms>/            an orphan being drained by another instance
//! ```
//!
//! A frame is a 40-byte header (magic, version, payload length, payload CRC, sequence
//! number, append time, header CRC) and one appended batch as payload; see
//! [`segment`] and [`codec`](crate::codec) for the byte layouts.
//!
//! # Guarantees
//!
//! - **Durable acknowledgement.** An [`Ack`] resolves `Ok` only after its frame was
//!   written and `fdatasync`ed (and, for a new segment, the directory `fsync`ed). A
//!   crash at any point loses no frame whose `Ack` resolved `Ok`.
//! - **Refusal, not loss.** Beyond `max_bytes` an append fails at once with
//!   [`SpoolError::Full`]; a full filesystem fails the group with
//!   [`SpoolError::NoSpace`] after cutting the segment back. Both mean "retry later"
//!   (429) and leave the spool consistent and usable.
//! - **Order.** The reader yields frames in sequence order: replayed ones first, then
//!   new ones. Sequence numbers never repeat within a spool directory's epoch.
//! - **At-least-once, not exactly-once.** ClickHouse 18.16 has no
//!   `insert_deduplication_token`, so a frame can reach ClickHouse twice: when its
//!   INSERT committed but the crash came before the ack was persisted (acks are
//!   persisted as a watermark within one writer round, ~ms), or when the INSERT's
//!   outcome was unknown (timeout) and it was retried. The first case is bounded by
//!   what is in flight: at most `max_inflight_inserts × max_rows` rows (acks above the
//!   watermark, from INSERTs that finished out of order, are not persisted and replay
//!   too). Every frame has a stable [`FrameId`] (`<instance>-<epoch>-<seq>`): on
//!   ClickHouse ≥ 22.2 an INSERT of a contiguous frame range carries a deduplication
//!   token built from it (`sink::dedup`), which drops retried INSERTs; and the range is
//!   noted in `inflight.log` first ([`Spool::note_in_flight`]), so that after a crash
//!   of the process the replay hands those frames out with their range
//!   ([`SpoolFrame::replay_range`]) and the INSERT repeats with its token. A power
//!   loss can lose the newest notes (not `fsync`ed): at-least-once again for those.
//!   Frames re-appended by adoption get new ids in the adopting spool.
//! - **Corruption is contained.** A bad frame never crashes the worker or blocks the
//!   spool: the valid prefix is delivered and the rest of that segment is moved to
//!   `quarantine/`, logged at error level and counted (`quarantined_frames`/`_bytes`).
//! - **One owner.** A directory is used by one process at a time (`flock`); an orphan
//!   is drained by exactly one adopter.
//!
//! # Start-up
//!
//! [`Spool::open`] takes the lock, reads `spool.state`, lists segments, deletes the
//! acknowledged ones and validates the last segment only (torn tail cut, corruption
//! quarantined); earlier segments are validated while the reader replays them, in the
//! background. So `READY=1` waits for at most one segment read (64 MiB by default),
//! never for the replay itself.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

mod acks;
mod adopt;
mod inflight;
mod ledger;
mod lock;
mod prealloc;
mod reader;
mod reaper;
mod replay;
pub mod segment;
mod state_file;
mod writer;

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;

pub use self::adopt::{AdoptReport, Orphan};
pub use self::inflight::InflightRange;
pub use self::ledger::SpoolStats;
pub use self::reader::{SpoolFrame, SpoolReader};

use self::acks::AckTracker;
use self::inflight::InflightLog;
use self::ledger::{Counters, Ledger, Shared};
use self::lock::DirLock;
use self::segment::{SegmentFs, HEADER_LEN, MAX_PAYLOAD_BYTES};
use self::state_file::{SpoolState, StateFile};
use self::writer::{AppendRequest, Writer, WriterMsg};
use crate::codec::EncodedBatch;

pub use crate::config::SpoolConfig;

/// A frame's sequence number: +1 per frame, never reused within a spool's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct SeqNo(pub u64);

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Stable identity of a frame: `<instance>-<epoch as 16 hex digits>-<seq>`. The
/// epoch is random per spool directory incarnation, so ids stay unique even if an
/// instance's directory is deleted (adopted) and created again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameId {
    pub instance: Arc<str>,
    pub epoch: u64,
    pub seq: u64,
}

impl fmt::Display for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:016x}-{}", self.instance, self.epoch, self.seq)
    }
}

/// Why the spool refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The cap is reached (HTTP 429 / `RESOURCE_EXHAUSTED`; retry later).
    #[error("the spool is full ({used_bytes} of {max_bytes} bytes used)")]
    Full { used_bytes: u64, max_bytes: u64 },
    /// The filesystem is full (`ENOSPC`/`EDQUOT`); treated like `Full`. The spool cut
    /// the partial write back and works again once space returns.
    #[error("no space left on the spool's filesystem ({path})")]
    NoSpace { path: PathBuf },
    /// One batch larger than a frame may be (1 GiB encoded); cannot happen with the
    /// request body caps.
    #[error("a batch of {bytes} encoded bytes exceeds the spool's frame limit")]
    TooLarge { bytes: usize },
    /// Another process holds this spool directory.
    #[error("spool directory {path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("spool I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Found when reading; the frames were quarantined (see the module docs), so this
    /// is informational for callers of lower-level functions.
    #[error("corrupt spool data in {path} at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Appends are closed or the writer has stopped (HTTP 503).
    #[error("the spool is closed")]
    Closed,
}

impl SpoolError {
    /// `Full` or `NoSpace`: refuse with 429 and `Retry-After`.
    pub fn is_full(&self) -> bool {
        matches!(self, SpoolError::Full { .. } | SpoolError::NoSpace { .. })
    }
}

/// Resolves when the appended batch is durable (`Ok(seq)`), or with why not.
/// Dropping it does not cancel the append.
#[derive(Debug)]
#[must_use = "an Ack tells whether the batch is on disk"]
pub struct Ack {
    state: AckState,
}

#[derive(Debug)]
enum AckState {
    Ready(Option<Result<SeqNo, SpoolError>>),
    Waiting(oneshot::Receiver<Result<SeqNo, SpoolError>>),
}

impl Ack {
    fn ready(result: Result<SeqNo, SpoolError>) -> Ack {
        Ack {
            state: AckState::Ready(Some(result)),
        }
    }
}

impl Future for Ack {
    type Output = Result<SeqNo, SpoolError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            AckState::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err(SpoolError::Closed)))
            }
            AckState::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|result| result.unwrap_or(Err(SpoolError::Closed))),
        }
    }
}

/// Handle to one open spool. Cheap to clone; the writer thread stops after
/// [`shutdown`](Self::shutdown) or when every clone is dropped.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    tx: mpsc::Sender<WriterMsg>,
    /// Joined by `shutdown`, so that when it returns the thread no longer holds the
    /// directory (the lock goes as soon as the handles and the reader are dropped).
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (creating if needed) `<root>/<instance>`: lock, state, recovery of the last
    /// segment, writer thread. Returns the handle and the one reader, which starts with
    /// the unacknowledged frames of earlier runs. Blocking work runs on the blocking
    /// pool; it takes at most one segment read (see "Start-up" above).
    pub async fn open(cfg: SpoolConfig) -> Result<(Spool, SpoolReader), SpoolError> {
        Self::open_with(cfg, Arc::new(segment::RealFs)).await
    }

    pub(crate) async fn open_with(
        cfg: SpoolConfig,
        fs: Arc<dyn SegmentFs>,
    ) -> Result<(Spool, SpoolReader), SpoolError> {
        tokio::task::spawn_blocking(move || {
            let mut cfg = cfg;
            // The active segment is never deleted, so it must stay well below the cap
            // or a spool whose frames are all acknowledged could still refuse appends.
            let largest = (cfg.max_bytes / 4).max(HEADER_LEN as u64 * 2);
            if cfg.segment_bytes > largest {
                tracing::warn!(
                    segment_bytes = cfg.segment_bytes,
                    max_bytes = cfg.max_bytes,
                    "spool segment size lowered to a quarter of the cap"
                );
                cfg.segment_bytes = largest;
            }
            let dir = cfg.dir();
            let lock = lock::lock_own_dir(&dir, cfg.lock_wait)?;
            let instance: Arc<str> = cfg.instance.as_str().into();
            Spool::open_locked(cfg, dir, instance, lock, fs)
        })
        .await
        .map_err(|_| SpoolError::Closed)?
    }

    /// Opens a directory whose lock we hold (our own, or a claimed orphan). Blocking.
    fn open_locked(
        cfg: SpoolConfig,
        dir: PathBuf,
        instance: Arc<str>,
        lock: DirLock,
        fs: Arc<dyn SegmentFs>,
    ) -> Result<(Spool, SpoolReader), SpoolError> {
        let io_err = |path: &Path, source| SpoolError::Io {
            path: path.to_path_buf(),
            source,
        };
        let quarantine = dir.join(segment::QUARANTINE_DIR);
        std::fs::create_dir_all(&quarantine).map_err(|e| io_err(&quarantine, e))?;
        let fresh = SpoolState {
            acked_through: 0,
            next_seq: 1,
            epoch: rand::random(),
        };
        let (state, reset) = StateFile::open(&dir, fresh).map_err(|e| io_err(&dir, e))?;
        if reset {
            tracing::error!(
                dir = %dir.display(),
                "spool.state unreadable; replaying every frame on disk (duplicates possible)"
            );
        }
        let persisted = state.get();
        let (inflight, replay_ranges) =
            InflightLog::open(&dir, persisted.acked_through, reset).map_err(|e| io_err(&dir, e))?;
        let counters = Counters::default();
        let recovered = replay::recover(&dir, persisted.acked_through, &counters)?;
        let next_seq = persisted
            .next_seq
            .max(recovered.last_seq + 1)
            .max(persisted.acked_through + 1);
        let used: u64 = recovered.segments.values().map(|m| m.len).sum();
        let ledger = Ledger {
            segments: recovered.segments,
            durable_through: next_seq - 1,
            run_first_seq: next_seq,
            hot: Default::default(),
            hot_bytes: 0,
            reader_next: persisted.acked_through + 1,
            delivered_through: persisted.acked_through,
            acks: AckTracker::new(persisted.acked_through),
            delivered: Default::default(),
            appends_closed: false,
            writer_done: false,
        };
        tracing::info!(
            dir = %dir.display(),
            segments = ledger.segments.len(),
            bytes = used,
            acked_through = persisted.acked_through,
            next_seq,
            "spool opened"
        );
        let recycles_segments = cfg.preallocate && !prealloc::is_memory_fs(&dir);
        let shared = Arc::new(Shared {
            dir,
            instance,
            epoch: persisted.epoch,
            recycles_segments,
            cfg,
            ledger: Mutex::new(ledger),
            data_ready: Notify::new(),
            counters,
            used_bytes: AtomicU64::new(used),
            appends_open: AtomicBool::new(true),
            maintain_pending: AtomicBool::new(false),
            inflight,
            _lock: lock,
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(Arc::clone(&shared), rx, fs, state, next_seq);
        let thread = std::thread::Builder::new()
            .name(format!("spool-{}", shared.instance))
            .spawn(move || writer.run())
            .map_err(|e| io_err(&shared.dir, e))?;
        let reader = SpoolReader::new(Arc::clone(&shared), replay_ranges);
        let writer = Arc::new(Mutex::new(Some(thread)));
        Ok((Spool { shared, tx, writer }, reader))
    }

    /// Appends `batch` as one frame. The checksum and the cap check happen now, in the
    /// caller (so `Full` is immediate and checksums run in parallel across callers);
    /// the returned [`Ack`] resolves at the group commit that makes the frame durable.
    pub fn append(&self, batch: EncodedBatch) -> Ack {
        let shared = &*self.shared;
        let frame_len = match self.frame_len(&batch) {
            Ok(len) => len,
            Err(err) => return Ack::ready(Err(err)),
        };
        let max = shared.cfg.max_bytes;
        // Reserve before queueing, so concurrent appenders cannot overshoot the cap.
        if let Err(used) = shared.used_bytes.fetch_update(Relaxed, Relaxed, |used| {
            used.checked_add(frame_len).filter(|&total| total <= max)
        }) {
            return Ack::ready(Err(self.refuse_full(used)));
        }
        let (done, rx) = oneshot::channel();
        let request = AppendRequest {
            payload_crc: crc32fast::hash(batch.payload()),
            batch,
            enqueued: Instant::now(),
            done,
        };
        if self.tx.send(WriterMsg::Append(request)).is_err() {
            shared.release(frame_len);
            return Ack::ready(Err(SpoolError::Closed));
        }
        Ack {
            state: AckState::Waiting(rx),
        }
    }

    /// Whether [`append`](Self::append) would take `batch` now, answered as it would:
    /// `Closed`, `TooLarge`, or `Full` (counted like its refusals). Reserves nothing:
    /// `append` checks again, so concurrent callers can all pass here (admission asks
    /// this before handing a batch over).
    pub fn check_room(&self, batch: &EncodedBatch) -> Result<(), SpoolError> {
        let frame_len = self.frame_len(batch)?;
        let used = self.shared.used_bytes.load(Relaxed);
        if used.saturating_add(frame_len) > self.shared.cfg.max_bytes {
            return Err(self.refuse_full(used));
        }
        Ok(())
    }

    /// Whether a frame of about `payload_bytes` would fit now: `Closed`, or `Full`
    /// (counted like its refusals). Reserves nothing and needs no batch: admission asks
    /// this before a request's body is read, with an estimate of its encoded size, and
    /// [`check_room`](Self::check_room) once it is encoded.
    pub fn check_room_for(&self, payload_bytes: usize) -> Result<(), SpoolError> {
        if !self.shared.appends_open.load(Relaxed) {
            return Err(SpoolError::Closed);
        }
        let frame_len = (HEADER_LEN as u64).saturating_add(payload_bytes as u64);
        let used = self.shared.used_bytes.load(Relaxed);
        if used.saturating_add(frame_len) > self.shared.cfg.max_bytes {
            return Err(self.refuse_full(used));
        }
        Ok(())
    }

    /// The bytes `batch` takes as a frame, or why no append takes it (closed, too large).
    fn frame_len(&self, batch: &EncodedBatch) -> Result<u64, SpoolError> {
        if !self.shared.appends_open.load(Relaxed) {
            return Err(SpoolError::Closed);
        }
        if batch.byte_len() > MAX_PAYLOAD_BYTES as usize {
            return Err(SpoolError::TooLarge {
                bytes: batch.byte_len(),
            });
        }
        Ok((HEADER_LEN + batch.byte_len()) as u64)
    }

    /// Counts a refusal at the cap and says how full the spool is.
    fn refuse_full(&self, used_bytes: u64) -> SpoolError {
        Counters::add(&self.shared.counters.full_refusals, 1);
        SpoolError::Full {
            used_bytes,
            max_bytes: self.shared.cfg.max_bytes,
        }
    }

    /// The frame `seq` is committed in ClickHouse.
    pub fn ack(&self, seq: SeqNo) {
        self.ack_range(seq, seq);
    }

    /// Every frame in `first..=last` is committed in ClickHouse (one INSERT).
    pub fn ack_range(&self, first: SeqNo, last: SeqNo) {
        {
            let mut ledger = self.shared.ledger();
            // Only frames handed out can be acknowledged; anything else is a caller bug
            // that must not make undelivered frames disappear.
            let last = last.0.min(ledger.delivered_through);
            if first.0 > last {
                return;
            }
            ledger.acks.resolve(first.0, last);
            ledger.prune_delivered();
        }
        if !self.shared.maintain_pending.swap(true, Relaxed) {
            let _ = self.tx.send(WriterMsg::Maintain);
        }
    }

    /// The consumer is about to deliver frames `range.first..=range.last` as one unit
    /// whose outcome it cannot split (an INSERT with a deduplication token): recorded
    /// so that, after a crash before they are acknowledged, the reader hands them out
    /// with this range again ([`SpoolFrame::replay_range`]). One small `write(2)`, no
    /// `fsync` (see `inflight.rs`).
    pub fn note_in_flight(&self, range: InflightRange) {
        self.shared.inflight.sent(range);
    }

    /// The unit `range` (noted with [`note_in_flight`](Self::note_in_flight)) is being
    /// delivered frame by frame instead; after a crash its frames replay one by one.
    pub fn note_split(&self, range: InflightRange) {
        self.shared.inflight.split(range);
    }

    /// ClickHouse refused the frame for good (`SinkError::Rejected`): keep it as
    /// `quarantine/rejected-<seq>.zls` (one frame, same format, so it can be inspected or
    /// re-ingested), log and count it, then acknowledge it so it is not retried forever.
    pub async fn reject(&self, frame: &SpoolFrame, reason: &str) -> Result<(), SpoolError> {
        let payload = frame.batch.payload().clone();
        let header = segment::FrameHeader {
            payload_len: payload.len() as u32,
            payload_crc: crc32fast::hash(&payload),
            seq: frame.seq.0,
            appended_unix_ms: frame.appended_unix_ms,
        };
        let dir = self.shared.dir.join(segment::QUARANTINE_DIR);
        let path = dir.join(format!("rejected-{:020}.zls", frame.seq.0));
        let target = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut bytes = header.encode().to_vec();
            bytes.extend_from_slice(&payload);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&target, &bytes)?;
            std::fs::File::open(&target)?.sync_all()?;
            segment::sync_dir(&dir)
        })
        .await
        .map_err(|_| SpoolError::Closed)?
        .map_err(|source| SpoolError::Io {
            path: path.clone(),
            source,
        })?;
        tracing::error!(
            frame = %frame.id, rows = frame.batch.len(), reason, path = %path.display(),
            "ClickHouse rejected a spooled batch for good; kept in quarantine"
        );
        Counters::add(&self.shared.counters.rejected_frames, 1);
        self.ack(frame.seq);
        Ok(())
    }

    /// Every frame up to `seq` is committed in ClickHouse.
    pub fn commit_through(&self, seq: SeqNo) {
        self.ack_range(SeqNo(1), seq);
    }

    /// Persists acknowledgements and deletes fully acknowledged segments now; resolves
    /// when done (or at once if the writer has stopped).
    pub async fn checkpoint(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Checkpoint(done)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Refuses new appends (`Closed`) after those already queued; the reader returns
    /// `None` once it has handed out everything. Acks keep being persisted.
    pub fn close_appends(&self) {
        self.shared.appends_open.store(false, Relaxed);
        let _ = self.tx.send(WriterMsg::CloseAppends);
    }

    /// Commits what is queued, closes appends, persists acks, deletes acknowledged
    /// segments and stops the writer thread. Acks after this are not persisted (they
    /// replay after a restart). The lock is released when the last handle and the
    /// reader are dropped.
    pub async fn shutdown(&self) {
        self.shared.appends_open.store(false, Relaxed);
        let (done, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Shutdown(done)).is_ok() {
            let _ = rx.await;
        }
        let thread = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // It has answered, so this join is immediate; still off the runtime.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Every frame up to this sequence number is committed in ClickHouse (cheap).
    pub fn acked_through(&self) -> u64 {
        self.shared.ledger().acks.watermark()
    }
    /// The cap (`SPOOL_MAX_BYTES`).
    pub fn max_bytes(&self) -> u64 {
        self.shared.cfg.max_bytes
    }

    /// A snapshot of sizes, positions and counters.
    pub fn stats(&self) -> SpoolStats {
        self.shared.stats()
    }

    /// This spool's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}
