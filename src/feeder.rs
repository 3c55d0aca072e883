//! Delivery from the spool to ClickHouse (`ACK_MODE=spool`): the feeder moves durable
//! frames from the [`SpoolReader`] into the batcher and acknowledges each frame in the
//! spool once ClickHouse committed it; the adopter drains the spools of instances that
//! are gone into this one.
//!
//! ```text
//! SpoolReader ──frame──> BatcherHandle::submit ──INSERT (retried for ever)──> ClickHouse
//!      ^                                                      │
//!      └──────────── Spool::ack(seq) / Spool::reject ◄────────┘ receipt
//! ```
//!
//! - **Nothing is dropped.** A frame leaves the spool only through `ack` (committed) or
//!   `reject` (ClickHouse refused it for good: kept under `quarantine/`, counted). A
//!   frame refused for good goes to the [`Salvage`] first (when given): its good rows
//!   are inserted, the bad ones dead-lettered ([`crate::sink::dead_letter`]), and only
//!   rows that found no place are quarantined. The
//!   batcher of this mode retries transient failures without a budget, so a long outage
//!   only makes the spool grow until admission answers 429.
//! - **Bounded memory.** `submit` waits while the batcher's queue is full
//!   (`BATCH_MAX_QUEUE_ROWS`), so the feeder never holds more than that in flight; the
//!   backlog stays on disk.
//! - **Deduplication.** Each frame is submitted with its [`Origin`] (spool incarnation,
//!   sequence number, append time), from which the batcher builds the INSERT's
//!   `insert_deduplication_token` (see [`crate::sink::dedup`]). Where the server
//!   honours tokens, the batcher records each INSERT's frame range in the spool
//!   ([`record_ranges`]) and a replayed frame comes back with its range, so that the
//!   replay repeats the INSERT and its token.
//! - **Stop.** After appends are closed the feeder keeps delivering until the spool is
//!   empty or the drain budget is spent, then stops pulling frames and waits for the
//!   INSERTs it started. Frames not acknowledged by then replay at the next start (or
//!   are adopted by a sibling after scale-down); acks already received are persisted by
//!   [`Spool::shutdown`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::EncodedBatch;
use crate::sink::dead_letter::{Refused, Salvage, Salvaged};
use crate::sink::dedup::{FrameRange, RangeLog};
use crate::sink::{BatcherHandle, Origin, SinkError};
use crate::spool::{InflightRange, Spool, SpoolFrame, SpoolReader};

/// A frame handed to the batcher (its batch taken out; handed back if refused for
/// good) and how its INSERT ended.
type Delivery = Pin<
    Box<dyn Future<Output = (SpoolFrame, Result<(), (SinkError, Option<EncodedBatch>)>)> + Send>,
>;

/// Runs until the reader is exhausted (appends closed and every frame handed out) or
/// `stop_pulling` is cancelled, then waits for the INSERTs in flight. `stop_pulling` is
/// the drain deadline: cancel it to leave the rest of the spool on disk. `salvage`
/// places the rows of frames refused for good (`None`: such frames are quarantined whole).
pub async fn feed(
    spool: Spool,
    mut reader: SpoolReader,
    batcher: BatcherHandle,
    salvage: Option<Arc<dyn Salvage>>,
    stop_pulling: CancellationToken,
) {
    let mut inflight: FuturesUnordered<Delivery> = FuturesUnordered::new();
    let mut origins = Origins::default();
    let mut pulling = true;
    while pulling || !inflight.is_empty() {
        tokio::select! {
            frame = reader.next(), if pulling => match frame {
                Some(frame) => {
                    if let Some(delivery) = send(&batcher, &mut origins, frame).await {
                        inflight.push(delivery);
                    } else {
                        pulling = false;
                    }
                }
                None => pulling = false,
            },
            Some((frame, outcome)) = inflight.next(), if !inflight.is_empty() => {
                let salvage = salvage.as_deref().map(|s| (s, origins.of(&frame), &stop_pulling));
                settle(&spool, frame, outcome, salvage).await;
            }
            () = stop_pulling.cancelled(), if pulling => {
                tracing::info!(
                    inflight = inflight.len(),
                    "drain budget spent; the rest of the spool replays at the next start"
                );
                pulling = false;
            }
        }
    }
    tracing::debug!("spool feeder stopped");
}

/// Hands one frame to the batcher (waiting for room); `None` once the batcher is closed
/// (the frame stays unacknowledged and replays).
async fn send(
    batcher: &BatcherHandle,
    origins: &mut Origins,
    mut frame: SpoolFrame,
) -> Option<Delivery> {
    let batch = std::mem::take(&mut frame.batch);
    let origin = origins.of(&frame);
    let range = frame.replay_range.map(|r| FrameRange {
        first: r.first,
        last: r.last,
        last_appended_unix_ms: r.last_appended_unix_ms,
    });
    match batcher.submit_replayed(batch, origin, range).await {
        Ok(receipt) => Some(Box::pin(async move { (frame, receipt.returning().await) })),
        Err(err) => {
            tracing::info!(frame = %frame.id, error = %err, "batcher closed; frame left in the spool");
            None
        }
    }
}

/// Turns frames into batcher origins. The spool's name (`<instance>-<epoch>`, the
/// frame id without its sequence number) is formatted once and shared: a reader's
/// frames all come from one spool incarnation (adopted frames are re-appended first).
#[derive(Default)]
struct Origins {
    /// `(instance, epoch)` of the last frame and its formatted spool name.
    last: Option<(Arc<str>, u64, Arc<str>)>,
}

impl Origins {
    fn of(&mut self, frame: &SpoolFrame) -> Origin {
        let id = &frame.id;
        let spool = match &self.last {
            Some((instance, epoch, name)) if *instance == id.instance && *epoch == id.epoch => {
                Arc::clone(name)
            }
            _ => {
                let name: Arc<str> = format!("{}-{:016x}", id.instance, id.epoch).into();
                self.last = Some((Arc::clone(&id.instance), id.epoch, Arc::clone(&name)));
                name
            }
        };
        Origin {
            spool,
            seq: id.seq,
            appended_unix_ms: frame.appended_unix_ms,
        }
    }
}

/// Makes `batcher` record the frame range of every INSERT it sends with a token in
/// `spool`'s in-flight log (only worth it where the server honours tokens).
pub fn record_ranges(spool: &Spool, batcher: &BatcherHandle) {
    batcher.record_ranges_in(Arc::new(SpoolRanges(spool.clone())));
}

/// The batcher's [`RangeLog`] over a spool's in-flight log.
struct SpoolRanges(Spool);

impl RangeLog for SpoolRanges {
    fn sending(&self, range: FrameRange) {
        self.0.note_in_flight(in_spool(range));
    }

    fn splitting(&self, range: FrameRange) {
        self.0.note_split(in_spool(range));
    }
}

fn in_spool(range: FrameRange) -> InflightRange {
    InflightRange {
        first: range.first,
        last: range.last,
        last_appended_unix_ms: range.last_appended_unix_ms,
    }
}

/// Acknowledges a committed frame, salvages (then quarantines what is left of) a
/// refused one, leaves the rest.
async fn settle(
    spool: &Spool,
    mut frame: SpoolFrame,
    outcome: Result<(), (SinkError, Option<EncodedBatch>)>,
    salvage: Option<(&dyn Salvage, Origin, &CancellationToken)>,
) {
    match outcome {
        Ok(()) => spool.ack(frame.seq),
        Err((SinkError::Rejected { mut reason }, Some(mut batch))) => {
            if let Some((salvage, origin, stop)) = salvage {
                let id = frame.id.to_string();
                let refused = Refused {
                    batch: &batch,
                    origin: &origin,
                    frame: &id,
                    reason: &reason,
                };
                match salvage.salvage(refused, stop).await {
                    Salvaged::Placed => return spool.ack(frame.seq),
                    // Unacknowledged: replays at the next start.
                    Salvaged::Stopped => return,
                    Salvaged::Unplaced {
                        batch: rest,
                        reason: why,
                    } => (batch, reason) = (rest, why),
                }
            }
            frame.batch = batch;
            if let Err(err) = spool.reject(&frame, &reason).await {
                // Not acknowledged: it replays at the next start and is tried again.
                tracing::error!(frame = %frame.id, error = %err, "cannot quarantine a rejected frame");
            }
        }
        Err((SinkError::Closed, _)) => {
            // A stop while ClickHouse does not answer: the frame replays at the next
            // start; the worker logs how many are left when it closes the spool.
            tracing::debug!(frame = %frame.id, "stopping; frame left in the spool");
        }
        Err((error, _)) => {
            // Given up (never with an unlimited budget): the frame is not acknowledged,
            // so it replays at the next start.
            tracing::warn!(frame = %frame.id, error = %error, "frame not delivered; it stays in the spool");
        }
    }
}

/// Looks for orphaned sibling spools now and then every `interval`, draining each into
/// this spool, until `cancel`.
pub async fn adopt_orphans(spool: Spool, interval: Duration, cancel: CancellationToken) {
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = cancel.cancelled() => return,
        }
        match spool.adopt_orphans(&cancel).await {
            Ok(report) if report.spools > 0 => tracing::info!(
                spools = report.spools,
                frames = report.frames,
                records = report.records,
                "adopted orphaned spools"
            ),
            Ok(_) => {}
            Err(err) if cancel.is_cancelled() => {
                tracing::debug!(error = %err, "adoption interrupted by shutdown");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "adopting orphaned spools failed; retrying later")
            }
        }
        next = Instant::now() + interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::FrameId;

    fn frame(instance: &str, epoch: u64, seq: u64) -> SpoolFrame {
        SpoolFrame {
            seq: crate::spool::SeqNo(seq),
            id: FrameId {
                instance: instance.into(),
                epoch,
                seq,
            },
            batch: EncodedBatch::default(),
            appended_unix_ms: 1_700_000_000_000,
            replayed: false,
            replay_range: None,
        }
    }

    #[test]
    fn a_frame_token_is_its_id_range_and_append_time() {
        // The token of a single frame starts with the frame id, as logged.
        let mut origins = Origins::default();
        let frame = frame("3", 0xab, 42);
        let token = origins.of(&frame).token();
        assert_eq!(token, format!("{}-42-1700000000000", frame.id));
        assert_eq!(token, "3-00000000000000ab-42-42-1700000000000");
    }

    #[test]
    fn the_spool_name_follows_instance_and_epoch() {
        let mut origins = Origins::default();
        let a = origins.of(&frame("1", 7, 1));
        let b = origins.of(&frame("1", 7, 2));
        assert!(Arc::ptr_eq(&a.spool, &b.spool), "formatted once");
        assert_eq!(&*origins.of(&frame("1", 8, 3)).spool, "1-0000000000000008");
        assert_eq!(&*origins.of(&frame("2", 8, 4)).spool, "2-0000000000000008");
    }
}
