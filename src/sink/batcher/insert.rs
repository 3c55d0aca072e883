//! One INSERT's task (retries, per-request fallback after a refusal, resolving the
//! receipts) and the health probe; the batcher's rules are in its module docs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cut::Plan;
use super::{unix_ms, Outcome, Shared, Submission, PING_INTERVAL};
use crate::codec::EncodedBatch;
use crate::sink::dedup::Origin;
use crate::sink::retry::Backoff;
use crate::sink::{Sink, SinkError};
use crate::stats::Stats;

/// Releases an INSERT's rows and bytes from the queue counts however its task ends
/// (even by panic or cancellation), so the admission bounds cannot leak.
struct QueuedRows {
    shared: Arc<Shared>,
    rows: usize,
    bytes: usize,
}

impl Drop for QueuedRows {
    fn drop(&mut self) {
        self.shared.release(self.rows, self.bytes);
    }
}

pub(super) async fn insert_with_retries<S: Sink>(
    sink: Arc<S>,
    shared: Arc<Shared>,
    submissions: Vec<Submission>,
    plan: Plan,
    (row_count, byte_count): (usize, usize),
    retry_budget: Duration,
) {
    let _queued = QueuedRows {
        shared: Arc::clone(&shared),
        rows: row_count,
        bytes: byte_count,
    };
    let Plan {
        token,
        range,
        record,
    } = plan;
    let range_log = range.and(shared.range_log.get());
    if let (Some(log), Some(range), true) = (range_log, range, record) {
        // Before the first attempt: a crash after it must find the range (dedup).
        log.sending(range);
    }
    let mut receipts = Vec::with_capacity(submissions.len());
    let mut batches = Vec::with_capacity(submissions.len());
    let mut origins = Vec::with_capacity(submissions.len());
    for submission in submissions {
        receipts.push(submission.done);
        batches.push(submission.batch);
        origins.push(submission.origin);
    }
    match insert_one(&*sink, &shared, &batches, token.as_deref(), retry_budget).await {
        Err(SinkError::Rejected { reason }) if receipts.len() > 1 => {
            tracing::warn!(
                batch_rows = row_count,
                batches = receipts.len(),
                error = %reason,
                "ClickHouse rejected an insert; retrying its requests one by one"
            );
            if let (Some(log), Some(range)) = (range_log, range) {
                log.splitting(range);
            }
            for ((receipt, batch), origin) in receipts.into_iter().zip(batches).zip(origins) {
                // The merged token named all the frames; each retry names its own.
                let token = origin.as_ref().map(Origin::token);
                let one = std::slice::from_ref(&batch);
                let outcome =
                    insert_one(&*sink, &shared, one, token.as_deref(), retry_budget).await;
                resolve(&shared, receipt, outcome, batch);
            }
        }
        outcome => match receipts.len() {
            1 => resolve(&shared, receipts.remove(0), outcome, batches.remove(0)),
            _ => {
                if outcome.is_err() {
                    Stats::add(&shared.stats.rows_failed, row_count as u64);
                }
                for receipt in receipts {
                    // A submitter that stopped waiting is fine: the outcome is counted.
                    let _ = receipt.send(outcome.clone().map_err(|e| (e, None)));
                }
            }
        },
    }
}

/// Tells one submitter how its rows ended, handing back a batch refused for good.
fn resolve(
    shared: &Shared,
    receipt: oneshot::Sender<Outcome>,
    outcome: Result<(), SinkError>,
    batch: EncodedBatch,
) {
    let outcome = match outcome {
        Ok(()) => Ok(()),
        Err(error) => {
            Stats::add(&shared.stats.rows_failed, batch.len() as u64);
            let batch = matches!(error, SinkError::Rejected { .. }).then_some(batch);
            Err((error, batch))
        }
    };
    let _ = receipt.send(outcome);
}

/// One INSERT with retries of transient failures until `retry_budget` is spent
/// (`Duration::MAX`: for ever). Every attempt sends the same `token`, so that a retry
/// of an attempt that did commit is dropped by a server that deduplicates. Counts
/// inserts and failed attempts; the caller counts failed rows.
async fn insert_one<S: Sink>(
    sink: &S,
    shared: &Shared,
    batches: &[EncodedBatch],
    token: Option<&str>,
    retry_budget: Duration,
) -> Result<(), SinkError> {
    let stats = &shared.stats;
    let row_count: usize = batches.iter().map(EncodedBatch::len).sum();
    let deadline = Instant::now().checked_add(retry_budget);
    let mut backoff = Backoff::for_inserts();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let reason = match sink.insert(batches, token).await {
            Ok(()) => {
                Stats::add(&stats.inserts, 1);
                Stats::add(&stats.rows_inserted, row_count as u64);
                stats.last_flush_unix_ms.store(unix_ms(), Ordering::Relaxed);
                shared.mark_flushed();
                return Ok(());
            }
            Err(SinkError::Rejected { reason }) => {
                Stats::add(&stats.insert_failures, 1);
                tracing::error!(
                    batch_rows = row_count,
                    error = %reason,
                    "ClickHouse rejected an insert; not retrying it"
                );
                return Err(SinkError::Rejected { reason });
            }
            Err(SinkError::Unavailable { reason }) => reason,
            Err(SinkError::Closed) => SinkError::Closed.to_string(),
        };
        Stats::add(&stats.insert_failures, 1);
        if !sink.serves_elsewhere() {
            shared.mark_down(&reason);
        }
        if retry_budget == Duration::MAX && shared.closing.is_cancelled() {
            // Unlimited retries mean the rows are durable upstream (the spool): at a
            // stop, waiting for ClickHouse would only hold the stop up; they replay at
            // the next start (or are adopted by a running instance).
            return Err(SinkError::Closed);
        }
        let now = Instant::now();
        let mut delay = backoff.next_delay();
        if let Some(deadline) = deadline {
            if now >= deadline {
                tracing::error!(
                    batch_rows = row_count,
                    attempts,
                    error = %reason,
                    "ClickHouse unavailable for the whole retry budget; failing the insert's requests"
                );
                return Err(SinkError::Unavailable {
                    reason: format!(
                        "{reason} (gave up after {attempts} attempts in {retry_budget:?})"
                    ),
                });
            }
            delay = delay.min(deadline - now);
        }
        tracing::debug!(
            batch_rows = row_count,
            attempts,
            delay_ms = delay.as_millis() as u64,
            error = %reason,
            "insert failed; retrying"
        );
        let recovered = shared.recovered.notified();
        let durable_upstream = retry_budget == Duration::MAX;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = recovered => {}
            // One last attempt, then the check above ends it.
            () = shared.closing.cancelled(), if durable_upstream => {}
        }
    }
}

/// Pings the sink every [`PING_INTERVAL`] while it is down; marks it up when it answers.
pub(super) async fn probe<S: Sink>(sink: Arc<S>, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = shared.went_down.notified() => {}
        }
        while shared.is_down() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PING_INTERVAL) => {}
            }
            match sink.ping().await {
                Ok(()) => shared.mark_up(),
                Err(error) => tracing::debug!(error = %error, "ClickHouse still down"),
            }
        }
    }
}
