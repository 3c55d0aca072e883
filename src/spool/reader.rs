//! The consumer side: [`SpoolReader`] hands out durable frames in sequence order —
//! first those left by earlier runs, then new ones as they are committed.
//!
//! Frames come from memory when the reader keeps up (the writer leaves each committed
//! batch in the ledger's hot queue, bounded by `memory_tail_bytes`), and from disk
//! otherwise: replay after a restart, or a consumer that fell behind (ClickHouse down)
//! while the spool grew beyond memory. Disk reads run on the blocking pool in chunks of
//! about 4 MiB and validate every frame (see `replay.rs`).
//!
//! The reader never acknowledges anything itself: the consumer calls
//! [`Spool::ack`](super::Spool::ack) / [`commit_through`](super::Spool::commit_through)
//! once ClickHouse has committed a frame.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::inflight::{InflightRange, ReplayRanges};
use super::ledger::{Counters, Shared};
use super::replay::{self, ChunkOutcome, ChunkRequest, Cursor};
use super::{FrameId, SeqNo};
use crate::codec::EncodedBatch;

/// Bytes of frames read from disk per blocking task.
const CHUNK_BYTES: u64 = 4 << 20;
/// Pause after a failed disk read before trying again.
const READ_RETRY: Duration = Duration::from_secs(1);

/// One durable frame: a batch exactly as it was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolFrame {
    pub seq: SeqNo,
    /// Stable id (`<instance>-<epoch>-<seq>`), the base of the INSERT deduplication
    /// token (`sink::dedup`).
    pub id: FrameId,
    pub batch: EncodedBatch,
    /// When the frame was committed (Unix ms).
    pub appended_unix_ms: u64,
    /// Written by an earlier run (or another instance) and replayed now.
    pub replayed: bool,
    /// A replayed frame that an earlier run delivered as part of this unit (see
    /// `inflight.rs`): deliver it in the same unit again, so that the unit's
    /// deduplication token repeats. `None` for frames never sent as a unit.
    pub replay_range: Option<InflightRange>,
}

/// Reads frames in sequence order; one per spool. See the module docs.
pub struct SpoolReader {
    shared: Arc<Shared>,
    local: VecDeque<SpoolFrame>,
    cursor: Option<Cursor>,
    /// A disk read in flight. Kept here so that dropping a `next()` future (e.g. in a
    /// `select!`) loses nothing: the next call picks the result up.
    pending: Option<JoinHandle<ChunkOutcome>>,
    retry_at: Option<Instant>,
    /// The units of the previous run's in-flight ranges, for replayed frames.
    replay_ranges: ReplayRanges,
}

enum Step {
    /// Frames were moved into `local`.
    Took,
    Read(ChunkRequest),
    Wait,
    Done,
}

impl std::fmt::Debug for SpoolReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolReader")
            .field("dir", &self.shared.dir)
            .field("buffered", &self.local.len())
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl SpoolReader {
    pub(crate) fn new(shared: Arc<Shared>, replay_ranges: ReplayRanges) -> SpoolReader {
        SpoolReader {
            shared,
            local: VecDeque::new(),
            cursor: None,
            pending: None,
            retry_at: None,
            replay_ranges,
        }
    }

    /// The next frame in sequence order, waiting for one to be committed. `None` once
    /// appends are closed ([`Spool::close_appends`](super::Spool::close_appends),
    /// shutdown, or every handle dropped) and every durable frame was handed out.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<SpoolFrame> {
        loop {
            if let Some(frame) = self.local.pop_front() {
                return Some(frame);
            }
            if let Some(task) = self.pending.as_mut() {
                let outcome = task.await;
                self.pending = None;
                match outcome {
                    Ok(outcome) => self.apply(outcome),
                    Err(err) => {
                        tracing::error!(error = %err, "spool read task failed; retrying");
                        self.retry_at = Some(Instant::now() + READ_RETRY);
                    }
                }
                continue;
            }
            if let Some(at) = self.retry_at.take() {
                tokio::time::sleep_until(at).await;
            }
            match self.step() {
                Step::Took => {}
                Step::Read(req) => {
                    let shared = Arc::clone(&self.shared);
                    self.pending = Some(tokio::task::spawn_blocking(move || {
                        replay::read_chunk(&shared, req)
                    }));
                }
                // `notify_one` leaves a permit when nobody waits, so a commit between
                // `step` and here is not missed.
                Step::Wait => {
                    let shared = Arc::clone(&self.shared);
                    shared.data_ready.notified().await;
                }
                Step::Done => return None,
            }
        }
    }

    /// A frame that is already in memory, without waiting or reading the disk.
    pub fn try_next(&mut self) -> Option<SpoolFrame> {
        if self.local.is_empty() && self.pending.is_none() {
            let shared = Arc::clone(&self.shared);
            let mut ledger = shared.ledger();
            if !ledger.hot.is_empty() {
                self.take_hot(&mut ledger);
            }
        }
        self.local.pop_front()
    }

    fn step(&mut self) -> Step {
        let shared = Arc::clone(&self.shared);
        let mut ledger = shared.ledger();
        if !ledger.hot.is_empty() {
            self.take_hot(&mut ledger);
            return Step::Took;
        }
        if ledger.reader_next <= ledger.durable_through {
            return Step::Read(ChunkRequest {
                cursor: self.cursor,
                reader_next: ledger.reader_next,
                durable_through: ledger.durable_through,
                segments: ledger
                    .segments
                    .iter()
                    .map(|(&first, &meta)| (first, meta))
                    .collect(),
                max_bytes: CHUNK_BYTES,
            });
        }
        if ledger.appends_closed || ledger.writer_done {
            return Step::Done;
        }
        Step::Wait
    }

    /// Moves the whole hot queue into `local` (its front is always `reader_next`).
    fn take_hot(&mut self, ledger: &mut super::ledger::Ledger) {
        ledger.hot_bytes = 0;
        let run_first = ledger.run_first_seq;
        while let Some(hot) = ledger.hot.pop_front() {
            debug_assert_eq!(hot.seq, ledger.reader_next);
            ledger.reader_next = hot.seq + 1;
            ledger.delivered_through = hot.seq;
            ledger.delivered.push_back((hot.seq, hot.appended_unix_ms));
            self.cursor = Some(Cursor {
                seg_first: hot.seg_first,
                offset: hot.end_offset,
            });
            self.local.push_back(SpoolFrame {
                seq: SeqNo(hot.seq),
                id: frame_id(&self.shared, hot.seq),
                batch: hot.batch,
                appended_unix_ms: hot.appended_unix_ms,
                replayed: hot.seq < run_first,
                // Hot frames were appended by this run: never sent before.
                replay_range: None,
            });
        }
    }

    fn apply(&mut self, outcome: ChunkOutcome) {
        if let Some(err) = &outcome.error {
            tracing::error!(error = %err, "cannot read the spool; retrying in a second");
            self.retry_at = Some(Instant::now() + READ_RETRY);
        }
        self.cursor = outcome.cursor;
        let shared = Arc::clone(&self.shared);
        let mut ledger = shared.ledger();
        for &(first, new_len) in &outcome.shrunk {
            if let Some(meta) = ledger.segments.get_mut(&first) {
                shared.release(meta.len.saturating_sub(new_len));
                meta.len = new_len;
            }
        }
        let mut resolved_any = false;
        for &(first, last) in &outcome.resolved {
            ledger.acks.resolve(first, last);
            resolved_any = true;
        }
        let run_first = ledger.run_first_seq;
        let mut replayed = 0;
        for frame in outcome.frames {
            let seq = frame.header.seq;
            ledger.delivered_through = seq;
            ledger
                .delivered
                .push_back((seq, frame.header.appended_unix_ms));
            replayed += u64::from(seq < run_first);
            let appended_unix_ms = frame.header.appended_unix_ms;
            let replay_range = (seq < run_first)
                .then(|| self.replay_ranges.unit_of(seq, appended_unix_ms))
                .flatten();
            self.local.push_back(SpoolFrame {
                seq: SeqNo(seq),
                id: frame_id(&shared, seq),
                batch: frame.batch,
                appended_unix_ms,
                replayed: seq < run_first,
                replay_range,
            });
        }
        ledger.reader_next = ledger.reader_next.max(outcome.reader_next);
        ledger.delivered_through = ledger.delivered_through.max(ledger.reader_next - 1);
        drop(ledger);
        Counters::add(&shared.counters.replayed_frames, replayed);
        if resolved_any {
            // Persisted with the next writer round (append or ack).
            shared
                .maintain_pending
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn frame_id(shared: &Shared, seq: u64) -> FrameId {
    FrameId {
        instance: Arc::clone(&shared.instance),
        epoch: shared.epoch,
        seq,
    }
}
