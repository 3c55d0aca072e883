//! The acknowledgement seam: queue submitted batches, cut them into INSERTs, retry, and
//! tell each submitter how its rows ended.
//!
//! Two callers: with `ACK_MODE=clickhouse` a request is acknowledged when its rows are
//! committed ([`BatcherHandle::try_submit`] returns a [`Receipt`] that resolves then);
//! with `ACK_MODE=spool` the feeder submits durable spool frames
//! ([`BatcherHandle::submit_from`], which waits for room and names the frame so the
//! INSERT can carry a deduplication token) and acknowledges them in the spool when
//! their receipts resolve.
//!
//! # Rules
//!
//! - **Admission**: [`try_submit`](BatcherHandle::try_submit) never waits: `Closed`
//!   after [`close`](BatcherHandle::close) or shutdown; `Unavailable` while the sink is
//!   known to be down; `Full` when the rows queued or in flight would exceed
//!   `max_queue_rows`, or their encoded bytes `max_queue_bytes`. Those two counts are
//!   the queue's bounds and they cover every submitted batch until its receipt
//!   resolves. [`submit`](BatcherHandle::submit) (the spool's feeder) waits for room
//!   instead and queues even while the sink is down; the byte bound is what keeps its
//!   read-ahead within the spool's memory (`SPOOL_MEMORY_BYTES`) whatever the rows
//!   weigh.
//! - **Cutting**: an INSERT is cut when the queued rows reach `max_rows`, their bytes
//!   reach `max_bytes`, or the oldest queued batch is `max_age` old. A submitted batch
//!   is never split, so each request's rows land in one INSERT (all or nothing); an
//!   INSERT can therefore exceed `max_rows` by less than one request.
//! - **Concurrency**: up to `max_inflight_inserts` INSERTs run at once, each on its own
//!   task; meanwhile the next batch accumulates.
//! - **Retries**: a transient failure ([`SinkError::Unavailable`]) is retried with
//!   capped exponential backoff and jitter until `retry_budget` has passed since the
//!   first attempt; then every receipt of that INSERT fails with `Unavailable`. A budget
//!   of `Duration::MAX` retries for ever (the spool feeds the batcher: its rows are
//!   durable, so giving up would only throw them away). A permanent failure
//!   ([`SinkError::Rejected`]) of an INSERT holding several batches is retried once per
//!   batch, so that one bad request does not take the others down; a batch refused on
//!   its own fails its receipt at once (handing the batch back through
//!   [`Receipt::returning`]), is logged at error level with `batch_rows` and `error`,
//!   and counted in `rows_failed`.
//! - **Deduplication**: delivery is at-least-once: an INSERT that timed out may still
//!   have committed, and its retry then stores the rows twice — unless it carries an
//!   `insert_deduplication_token` the server honours (≥ 22.2, see [`dedup`]). An INSERT
//!   gets a token only when all its batches were submitted with
//!   [`submit_from`](BatcherHandle::submit_from) as one contiguous run of one spool's
//!   frames; every retry of that INSERT sends the same token, and the per-batch retries
//!   after a permanent failure send each frame's own token. Before a token is sent the
//!   first time, its frame range goes to the [`RangeLog`] given to
//!   [`record_ranges_in`](BatcherHandle::record_ranges_in); frames submitted again
//!   with such a range after a crash ([`submit_replayed`](BatcherHandle::submit_replayed))
//!   are cut as that range again (`cut.rs`).
//! - **Health**: a transient failure marks the sink down (reason, since when),
//!   unless the sink still takes INSERTs elsewhere ([`Sink::serves_elsewhere`]:
//!   another ClickHouse endpoint is up; the failure is then only retried). A
//!   background task pings ClickHouse every second until it answers, then marks it
//!   healthy and wakes sleeping retries; a successful INSERT also marks it healthy.
//!   While the sink is down, batches still queued longer than `retry_budget` fail with
//!   `Unavailable` instead of waiting for a slot and then a budget of their own.
//! - **Heartbeat**: the flush loop stamps [`BatcherHandle::heartbeat`] on every
//!   iteration and wakes at least every 500 ms, so a fresh heartbeat proves the loop is
//!   not stuck even when idle.
//! - **Stats**: `inserts` counts successful INSERT statements and `rows_inserted` their
//!   rows; `insert_failures` counts failed attempts (every retry); `rows_failed` counts
//!   rows whose receipts failed; `queue_rows` is rows submitted and not yet resolved;
//!   `last_flush_unix_ms` is the wall-clock time of the last successful INSERT.
//! - **Shutdown**: on `shutdown` cancellation or [`close`](BatcherHandle::close), new
//!   batches are refused, everything queued is flushed at once (with the usual retries
//!   and budget), every receipt is resolved, and the loop ends. All tasks are spawned
//!   on the caller's `TaskTracker`. A receipt whose task was dropped (runtime shut down)
//!   resolves to [`SinkError::Closed`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dedup::{FrameRange, Origin, RangeLog};
use super::{Sink, SinkDown, SinkError, SinkHealth};
use crate::codec::EncodedBatch;
use crate::config::BatchConfig;
use crate::stats::Stats;

/// What a submitter learns: committed, or why not (with the batch when the sink
/// refused it for good and the submitter may want to keep it).
type Outcome = Result<(), (SinkError, Option<EncodedBatch>)>;

/// The flush loop wakes at least this often, so its heartbeat stays fresh when idle.
const HEARTBEAT_PERIOD: Duration = Duration::from_millis(500);
/// How often a down sink is pinged.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Messages taken from the channel per loop iteration before re-checking the cut rules.
const RECV_BURST: usize = 1024;

/// Why [`BatcherHandle::try_submit`] refused a batch. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is at `max_queue_rows` (HTTP 429, retry later).
    #[error("the ClickHouse queue is full ({queued_rows} rows waiting)")]
    Full { queued_rows: usize },
    /// ClickHouse is known to be down (HTTP 503).
    #[error("ClickHouse unavailable: {reason}")]
    Unavailable { reason: String },
    /// The batcher is closed (HTTP 503).
    #[error("the ClickHouse sink is shutting down")]
    Closed,
}

/// Spawns the flush loop; see the module documentation for its rules.
pub struct Batcher;

impl Batcher {
    /// Starts the flush loop and the health prober on `tracker` and returns the handle
    /// used to submit batches. The loop ends after `shutdown` is cancelled (or
    /// [`BatcherHandle::close`] is called, or every handle is dropped) and everything
    /// queued has been resolved.
    pub fn spawn<S: Sink>(
        cfg: BatchConfig,
        retry_budget: Duration,
        sink: Arc<S>,
        stats: Arc<Stats>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> BatcherHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            max_queue_rows: cfg.max_queue_rows,
            queued_rows: AtomicUsize::new(0),
            max_queue_bytes: cfg.max_queue_bytes,
            queued_bytes: AtomicUsize::new(0),
            closing: shutdown.child_token(),
            stats,
            health: Mutex::new(HealthState::default()),
            went_down: Notify::new(),
            recovered: Notify::new(),
            room: Notify::new(),
            heartbeat_base: Instant::now(),
            heartbeat_ns: AtomicU64::new(0),
            room_waiters: AtomicUsize::new(0),
            range_log: OnceLock::new(),
            #[cfg(feature = "test-hooks")]
            stall_ms: AtomicU64::new(0),
        });
        let prober_stop = CancellationToken::new();
        tracker.spawn(insert::probe(
            Arc::clone(&sink),
            Arc::clone(&shared),
            prober_stop.clone(),
        ));
        let flusher = Flusher {
            max_inflight: cfg.max_inflight_inserts.max(1),
            cfg,
            retry_budget,
            sink,
            shared: Arc::clone(&shared),
            tracker: tracker.clone(),
            rx,
            pending: VecDeque::new(),
            pending_rows: 0,
            pending_bytes: 0,
            inflight: FuturesUnordered::new(),
            spent: None,
            last_received: Instant::now(),
        };
        tracker.spawn(async move {
            flusher.run().await;
            prober_stop.cancel();
        });
        BatcherHandle { tx, shared }
    }
}

/// Submits batches to the flush loop. Cheap to clone.
#[derive(Clone)]
pub struct BatcherHandle {
    tx: mpsc::UnboundedSender<Submission>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatcherHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatcherHandle")
            .field(
                "queued_rows",
                &self.shared.queued_rows.load(Ordering::Relaxed),
            )
            .field("closed", &self.shared.closing.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl BatcherHandle {
    /// Queues a validated batch without waiting. `Err(Full)` when the queued rows would
    /// exceed `max_queue_rows` (→ 429), `Err(Unavailable)` at once while the sink is
    /// known down (→ 503), `Err(Closed)` after close or shutdown (→ 503). An empty
    /// batch is accepted and its receipt is already resolved.
    pub fn try_submit(&self, batch: EncodedBatch) -> Result<Receipt, SubmitError> {
        self.shared.open_and_up()?;
        if batch.is_empty() {
            return Ok(Receipt::ready(Ok(())));
        }
        if let Err(queued_rows) = self.shared.reserve(batch.len(), batch.byte_len()) {
            return Err(SubmitError::Full { queued_rows });
        }
        self.enqueue(batch, None, None)
    }

    /// Whether [`try_submit`](Self::try_submit) would take `rows` rows now, answered as
    /// it would: `Closed`, `Unavailable`, `Full`. Reserves nothing: `try_submit` checks
    /// again, so concurrent callers can all pass here (admission asks this before
    /// handing a batch over).
    pub fn check_room(&self, rows: usize) -> Result<(), SubmitError> {
        self.shared.open_and_up()?;
        let queued_rows = self.shared.queued_rows.load(Ordering::Acquire);
        if rows > 0 && queued_rows.saturating_add(rows) > self.shared.max_queue_rows {
            return Err(SubmitError::Full { queued_rows });
        }
        Ok(())
    }

    /// Queues a batch, waiting while the queue is full; queues even while the sink is
    /// down (its INSERT then retries). Only `Err(Closed)` after close or shutdown. For
    /// durable batches that must not be refused.
    pub async fn submit(&self, batch: EncodedBatch) -> Result<Receipt, SubmitError> {
        self.submit_with(batch, None, None).await
    }

    /// [`submit`](Self::submit) for the spool's feeder: the batch is the frame `origin`,
    /// which lets INSERTs of contiguous frames carry a deduplication token.
    pub async fn submit_from(
        &self,
        batch: EncodedBatch,
        origin: Origin,
    ) -> Result<Receipt, SubmitError> {
        self.submit_with(batch, Some(origin), None).await
    }

    /// [`submit_from`](Self::submit_from) for a replayed frame that an earlier run sent
    /// as part of the INSERT of `range` (the spool's in-flight log says so): it is sent
    /// in one INSERT with the other frames of that range again, under the same token.
    pub async fn submit_replayed(
        &self,
        batch: EncodedBatch,
        origin: Origin,
        range: Option<FrameRange>,
    ) -> Result<Receipt, SubmitError> {
        self.submit_with(batch, Some(origin), range).await
    }

    /// Records the range of every INSERT sent with a token in `log` before sending it.
    /// Set once, by the worker, when the server honours tokens; later calls are ignored.
    pub fn record_ranges_in(&self, log: Arc<dyn RangeLog>) {
        let _ = self.shared.range_log.set(log);
    }

    async fn submit_with(
        &self,
        batch: EncodedBatch,
        origin: Option<Origin>,
        range: Option<FrameRange>,
    ) -> Result<Receipt, SubmitError> {
        let shared = &*self.shared;
        if batch.is_empty() {
            return Ok(Receipt::ready(Ok(())));
        }
        // A batch larger than the whole queue still goes in, alone.
        let rows = batch.len().min(shared.max_queue_rows);
        let bytes = batch.byte_len().min(shared.max_queue_bytes);
        loop {
            if shared.closing.is_cancelled() {
                return Err(SubmitError::Closed);
            }
            let room = shared.room.notified();
            if shared.reserve(rows, bytes).is_ok() {
                break;
            }
            // Seen by the flush loop: a replayed range it holds back cannot grow now.
            shared.room_waiters.fetch_add(1, Ordering::AcqRel);
            let closed = tokio::select! {
                () = room => false,
                () = shared.closing.cancelled() => true,
            };
            shared.room_waiters.fetch_sub(1, Ordering::AcqRel);
            if closed {
                return Err(SubmitError::Closed);
            }
        }
        let extra = batch.len() - rows;
        if extra > 0 {
            shared.queued_rows.fetch_add(extra, Ordering::AcqRel);
        }
        let extra = batch.byte_len() - bytes;
        if extra > 0 {
            shared.queued_bytes.fetch_add(extra, Ordering::AcqRel);
        }
        self.enqueue(batch, origin, range)
    }

    /// Sends a batch whose rows are reserved to the flush loop.
    fn enqueue(
        &self,
        batch: EncodedBatch,
        origin: Option<Origin>,
        range: Option<FrameRange>,
    ) -> Result<Receipt, SubmitError> {
        let (rows, bytes) = (batch.len(), batch.byte_len());
        self.shared
            .stats
            .queue_rows
            .fetch_add(rows as i64, Ordering::Relaxed);
        let (done, receipt) = oneshot::channel();
        let submission = Submission {
            batch,
            origin,
            range,
            submitted: Instant::now(),
            done,
        };
        if self.tx.send(submission).is_err() {
            // The loop closed its queue between our check and the send.
            self.shared.release(rows, bytes);
            return Err(SubmitError::Closed);
        }
        Ok(Receipt::waiting(receipt))
    }

    /// Healthy, or down with reason and since when; plus the last successful flush.
    pub fn health(&self) -> SinkHealth {
        self.shared.health().clone()
    }

    /// The last time the flush loop ran an iteration (at least every 500 ms when idle).
    pub fn heartbeat(&self) -> Instant {
        let ns = self.shared.heartbeat_ns.load(Ordering::Relaxed);
        self.shared.heartbeat_base + Duration::from_nanos(ns)
    }

    /// Rows submitted and not yet committed or failed.
    pub fn queued_rows(&self) -> usize {
        self.shared.queued_rows.load(Ordering::Relaxed)
    }

    /// Encoded bytes of the batches submitted and not yet committed or failed.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }

    /// Stops taking batches; the loop flushes everything queued, then ends.
    /// Test hook (feature `test-hooks`, never in release packages): the flush loop
    /// hangs for `duration` at its next iteration, so its heartbeat goes stale.
    #[cfg(feature = "test-hooks")]
    pub fn stall_flusher(&self, duration: Duration) {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.shared.stall_ms.store(ms, Ordering::Relaxed);
    }

    pub fn close(&self) {
        self.shared.closing.cancel();
    }

    /// Whether [`close`](Self::close) was called or shutdown began.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.is_cancelled()
    }
}

/// Resolves when the submitted batch's rows are committed (`Ok`), or failed:
/// `Rejected` (permanent), `Unavailable` (retry budget spent, or ClickHouse down while
/// it waited), `Closed` (dropped during shutdown).
#[derive(Debug)]
#[must_use = "a receipt tells whether the rows reached ClickHouse"]
pub struct Receipt {
    state: ReceiptState,
}

#[derive(Debug)]
enum ReceiptState {
    Ready(Option<Outcome>),
    Waiting(oneshot::Receiver<Outcome>),
}

impl Receipt {
    fn ready(result: Result<(), SinkError>) -> Receipt {
        Receipt {
            state: ReceiptState::Ready(Some(result.map_err(|e| (e, None)))),
        }
    }

    fn waiting(rx: oneshot::Receiver<Outcome>) -> Receipt {
        Receipt {
            state: ReceiptState::Waiting(rx),
        }
    }

    /// Like awaiting the receipt, but a batch the sink refused for good
    /// ([`SinkError::Rejected`]) comes back with the error, so that its owner can keep
    /// it (the spool quarantines it).
    pub fn returning(self) -> Returning {
        Returning(self)
    }

    fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut self.state {
            ReceiptState::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err((SinkError::Closed, None))))
            }
            ReceiptState::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|result| result.unwrap_or(Err((SinkError::Closed, None)))),
        }
    }
}

impl Future for Receipt {
    type Output = Result<(), SinkError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut()
            .poll_outcome(cx)
            .map(|outcome| outcome.map_err(|(error, _)| error))
    }
}

/// [`Receipt::returning`]: resolves to `Err((error, Some(batch)))` when the sink
/// refused the batch for good.
#[derive(Debug)]
#[must_use = "a receipt tells whether the rows reached ClickHouse"]
pub struct Returning(Receipt);

impl Future for Returning {
    type Output = Result<(), (SinkError, Option<EncodedBatch>)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().0.poll_outcome(cx)
    }
}

// === Shared state ===

struct Submission {
    batch: EncodedBatch,
    /// The spool frame it is, for the INSERT's deduplication token.
    origin: Option<Origin>,
    /// The INSERT an earlier run sent this (replayed) frame in.
    range: Option<FrameRange>,
    submitted: Instant,
    done: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct HealthState {
    down: Option<SinkDown>,
    last_flush: Option<Instant>,
    last_flush_unix_ms: Option<u64>,
}

impl HealthState {
    fn clone(&self) -> SinkHealth {
        SinkHealth {
            down: self.down.clone(),
            last_flush: self.last_flush,
            last_flush_unix_ms: self.last_flush_unix_ms,
        }
    }
}

struct Shared {
    max_queue_rows: usize,
    /// Rows submitted and not yet resolved (queued or in flight).
    queued_rows: AtomicUsize,
    max_queue_bytes: usize,
    /// Encoded bytes of those rows' batches.
    queued_bytes: AtomicUsize,
    /// Cancelled by `close()` or by the caller's shutdown token (its parent).
    closing: CancellationToken,
    stats: Arc<Stats>,
    health: Mutex<HealthState>,
    /// Wakes the prober when the sink goes down.
    went_down: Notify,
    /// Wakes retries sleeping in backoff when the sink is back.
    recovered: Notify,
    /// Wakes a [`BatcherHandle::submit`] waiting for queue room.
    room: Notify,
    heartbeat_base: Instant,
    heartbeat_ns: AtomicU64,
    /// Submitters waiting for queue room now.
    room_waiters: AtomicUsize,
    /// Where ranges sent under a token are recorded (servers that honour tokens).
    range_log: OnceLock<Arc<dyn RangeLog>>,
    /// Test hook: milliseconds the loop must hang at its next iteration.
    #[cfg(feature = "test-hooks")]
    stall_ms: AtomicU64,
}

impl Shared {
    fn health(&self) -> MutexGuard<'_, HealthState> {
        // The critical sections cannot panic half-way; a poisoned lock is still sound.
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(Closed)` after close or shutdown, `Err(Unavailable)` while the sink is down.
    fn open_and_up(&self) -> Result<(), SubmitError> {
        if self.closing.is_cancelled() {
            return Err(SubmitError::Closed);
        }
        if let Some(down) = &self.health().down {
            return Err(SubmitError::Unavailable {
                reason: down.reason.clone(),
            });
        }
        Ok(())
    }

    fn is_down(&self) -> bool {
        self.health().down.is_some()
    }

    fn down_reason(&self) -> Option<String> {
        self.health().down.as_ref().map(|d| d.reason.clone())
    }

    fn beat(&self) {
        let ns = u64::try_from(self.heartbeat_base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.heartbeat_ns.store(ns, Ordering::Relaxed);
    }

    /// Reserves room for a batch of `rows` rows and `bytes` encoded bytes before
    /// queueing, so concurrent submitters cannot overshoot `max_queue_rows` or
    /// `max_queue_bytes`; `Err(queued rows)` when there is none.
    fn reserve(&self, rows: usize, bytes: usize) -> Result<(), usize> {
        let fits = |count: &AtomicUsize, more: usize, max: usize| {
            count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued.checked_add(more).filter(|&total| total <= max)
            })
        };
        fits(&self.queued_rows, rows, self.max_queue_rows)?;
        if fits(&self.queued_bytes, bytes, self.max_queue_bytes).is_err() {
            let queued = self.queued_rows.fetch_sub(rows, Ordering::AcqRel);
            return Err(queued - rows);
        }
        Ok(())
    }

    fn release(&self, rows: usize, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.queued_rows.fetch_sub(rows, Ordering::AcqRel);
        self.stats
            .queue_rows
            .fetch_sub(rows as i64, Ordering::Relaxed);
        // One waiter at most (the spool feeder); a stored permit covers a race.
        self.room.notify_one();
    }

    fn mark_down(&self, reason: &str) {
        let mut health = self.health();
        match &mut health.down {
            Some(down) => {
                // Keep `since`; the latest reason is the most useful one to show.
                if down.reason != reason {
                    down.reason = reason.to_string();
                }
            }
            None => {
                health.down = Some(SinkDown {
                    reason: reason.to_string(),
                    since: Instant::now(),
                    since_unix_ms: unix_ms(),
                });
                drop(health);
                tracing::warn!(
                    error = %reason,
                    "ClickHouse marked down; refusing new batches until it answers"
                );
                self.went_down.notify_one();
            }
        }
    }

    fn mark_up(&self) {
        let down = self.health().down.take();
        if let Some(down) = down {
            tracing::info!(
                down_ms = down.since.elapsed().as_millis() as u64,
                "ClickHouse reachable again"
            );
            self.recovered.notify_waiters();
        }
    }

    fn mark_flushed(&self) {
        {
            let mut health = self.health();
            health.last_flush = Some(Instant::now());
            health.last_flush_unix_ms = Some(unix_ms());
        }
        self.mark_up();
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// === Flush loop ===

struct Flusher<S> {
    cfg: BatchConfig,
    max_inflight: usize,
    retry_budget: Duration,
    sink: Arc<S>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    rx: mpsc::UnboundedReceiver<Submission>,
    pending: VecDeque<Submission>,
    pending_rows: usize,
    pending_bytes: usize,
    inflight: FuturesUnordered<JoinHandle<()>>,
    /// A replayed range cut before it was gathered: its later frames go without token.
    spent: Option<FrameRange>,
    /// When the last submission arrived (a replayed range waits for the rest).
    last_received: Instant,
}

impl<S: Sink> Flusher<S> {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(HEARTBEAT_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = false;
        let mut queue_open = true;
        loop {
            #[cfg(feature = "test-hooks")]
            {
                let stall = self.shared.stall_ms.swap(0, Ordering::Relaxed);
                if stall > 0 {
                    tracing::warn!(stall_ms = stall, "test hook: flush loop stalled on purpose");
                    tokio::time::sleep(Duration::from_millis(stall)).await;
                }
            }
            self.shared.beat();
            let now = Instant::now();
            self.expire_while_down(now);
            while self.inflight.len() < self.max_inflight && self.should_cut(now, closing) {
                self.start_insert();
            }
            if closing && !queue_open && self.pending.is_empty() && self.inflight.is_empty() {
                break;
            }
            let wake_at = self.next_deadline();
            tokio::select! {
                Some(joined) = self.inflight.next(), if !self.inflight.is_empty() => {
                    if let Err(error) = joined {
                        // Its receipts resolve to Closed and its rows were released by the guard.
                        tracing::error!(error = %error, "an insert task ended abnormally");
                    }
                }
                received = self.rx.recv(), if queue_open => match received {
                    Some(submission) => {
                        self.push(submission);
                        for _ in 1..RECV_BURST {
                            match self.rx.try_recv() {
                                Ok(submission) => self.push(submission),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every handle is gone: nobody can submit, so finish up.
                    None => {
                        queue_open = false;
                        closing = true;
                    }
                },
                () = self.shared.closing.cancelled(), if !closing => {
                    closing = true;
                    // Refuse further sends; what is already queued is still received.
                    self.rx.close();
                }
                () = tokio::time::sleep_until(wake_at.unwrap_or(now)), if wake_at.is_some() => {}
                _ = tick.tick() => {}
            }
        }
        tracing::debug!("batcher flushed everything and stopped");
    }

    fn push(&mut self, submission: Submission) {
        self.last_received = Instant::now();
        self.pending_rows += submission.batch.len();
        self.pending_bytes += submission.batch.byte_len();
        self.pending.push_back(submission);
    }

    fn should_cut(&self, now: Instant, closing: bool) -> bool {
        let Some(oldest) = self.pending.front() else {
            return false;
        };
        if let Some(due) = self.replay_cut_due(now, closing) {
            return due;
        }
        closing
            || self.pending_rows >= self.cfg.max_rows
            || self.pending_bytes >= self.cfg.max_bytes
            || now >= oldest.submitted + self.cfg.max_age
    }

    /// When the loop must wake for a time-based rule (besides the heartbeat tick).
    fn next_deadline(&self) -> Option<Instant> {
        let oldest = self.pending.front()?.submitted;
        let age_cut = if self.inflight.len() >= self.max_inflight {
            None
        } else if self.front_range().is_some() {
            self.replay_wake()
        } else {
            Some(oldest + self.cfg.max_age)
        };
        let expiry = self
            .shared
            .is_down()
            .then(|| oldest.checked_add(self.retry_budget))
            .flatten();
        match (age_cut, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// While the sink is down, fails batches that have waited longer than the retry
    /// budget: they would otherwise wait for a slot and then spend a budget of their own.
    fn expire_while_down(&mut self, now: Instant) {
        let Some(oldest) = self.pending.front() else {
            return;
        };
        // `Duration::MAX` (the spool's batcher): nothing expires.
        let Some(expires) = oldest.submitted.checked_add(self.retry_budget) else {
            return;
        };
        if now < expires {
            return;
        }
        let Some(reason) = self.shared.down_reason() else {
            return;
        };
        let mut expired_rows = 0usize;
        let mut expired_bytes = 0usize;
        let mut expired_batches = 0usize;
        while let Some(front) = self.pending.front() {
            if now < front.submitted + self.retry_budget {
                break;
            }
            let Some(submission) = self.pending.pop_front() else {
                break;
            };
            let rows = submission.batch.len();
            self.pending_rows -= rows;
            self.pending_bytes -= submission.batch.byte_len();
            expired_rows += rows;
            expired_bytes += submission.batch.byte_len();
            expired_batches += 1;
            let _ = submission.done.send(Err((
                SinkError::Unavailable {
                    reason: format!(
                        "{reason} (queued for {:?} while ClickHouse was down)",
                        self.retry_budget
                    ),
                },
                None,
            )));
        }
        self.shared.release(expired_rows, expired_bytes);
        Stats::add(&self.shared.stats.rows_failed, expired_rows as u64);
        tracing::error!(
            batch_rows = expired_rows,
            batches = expired_batches,
            error = %reason,
            "ClickHouse down longer than the retry budget; failing queued requests"
        );
    }

    /// Cuts one INSERT from the front of the queue and starts it on its own task.
    fn start_insert(&mut self) {
        let group = self.front_group();
        let mut taken = Vec::new();
        let mut rows = 0usize;
        let mut bytes = 0usize;
        while let Some(front) = self.pending.front() {
            if !taken.is_empty() && !self.joins(group, front, rows, bytes) {
                break;
            }
            let Some(submission) = self.pending.pop_front() else {
                break;
            };
            rows += submission.batch.len();
            bytes += submission.batch.byte_len();
            taken.push(submission);
        }
        self.pending_rows -= rows;
        self.pending_bytes -= bytes;
        let plan = cut::plan(group, &taken);
        let job = insert::insert_with_retries(
            Arc::clone(&self.sink),
            Arc::clone(&self.shared),
            taken,
            plan,
            (rows, bytes),
            self.retry_budget,
        );
        self.inflight.push(self.tracker.spawn(job));
    }
}

mod cut;
mod insert;

#[cfg(test)]
mod tests;
