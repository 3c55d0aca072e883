//! The drain step, once the shutdown token is cancelled: `STOPPING=1`, wait for the
//! accept loops and in-flight requests, deliver what the spool holds while ClickHouse
//! takes it, close the batcher, wait for every task — all bounded by the deadline —
//! then, however that ended, close the spool, stop the supervisor and remove the
//! admin socket.

use std::time::Duration;

use super::build::{SpoolDelivery, Worker};
use crate::notify;
use crate::sink::BatcherHandle;
use crate::spool::Spool;
use crate::watchdog::StopReason;

/// ClickHouse down for this long ends the spool's delivery at a stop.
const CLICKHOUSE_DOWN_AT_STOP: Duration = Duration::from_secs(1);

impl Worker {
    /// Drains within `deadline` (`GRACEFUL_SHUTDOWN_TIMEOUT`) and logs which way it ended.
    pub(super) async fn drain(mut self, deadline: Duration) {
        notify::stopping();
        if let Some(StopReason::MemoryLimit { rss, limit }) = self.supervisor.stop_reason() {
            tracing::info!(
                rss_bytes = rss,
                limit_bytes = limit,
                "draining for a memory-limit restart"
            );
        }
        let drained = tokio::time::timeout(deadline, self.finish_tasks(deadline)).await;
        self.log_drained(drained.is_ok(), deadline);
        if let Some(delivery) = &self.delivery {
            close_spool(&delivery.spool).await;
        }
        self.supervisor.stop();
        if let Some(path) = &self.admin_socket {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Requests, then the spool's rest, then the batcher and every task.
    async fn finish_tasks(&mut self, deadline: Duration) {
        self.server.wait().await;
        if let Some(delivery) = &mut self.delivery {
            delivery.deliver_rest(&self.batcher, deadline).await;
        }
        self.batcher.close();
        self.hard_stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn log_drained(&self, finished: bool, deadline: Duration) {
        let counters = self.stats.snapshot();
        if finished {
            tracing::info!(
                rows_inserted = counters.rows_inserted,
                records_accepted = counters.records_accepted,
                "drained; exiting"
            );
        } else if self.delivery.is_some() {
            tracing::warn!(
                timeout_ms = deadline.as_millis() as u64,
                queue_rows = counters.queue_rows,
                "drain did not finish within GRACEFUL_SHUTDOWN_TIMEOUT; every request was answered, \
                 batches not yet in ClickHouse stay in the spool (replayed at the next start or \
                 adopted by a running instance)"
            );
        } else {
            tracing::warn!(
                timeout_ms = deadline.as_millis() as u64,
                queue_rows = counters.queue_rows,
                "drain did not finish within GRACEFUL_SHUTDOWN_TIMEOUT; unacknowledged requests were cut off"
            );
        }
    }
}

impl SpoolDelivery {
    /// Closes appends and adoption, then lets the feeder deliver the rest while
    /// ClickHouse takes it: up to half the budget, or until it has been down for a
    /// second (the spool keeps the rest).
    async fn deliver_rest(&mut self, batcher: &BatcherHandle, deadline: Duration) {
        self.spool.close_appends();
        self.stop_adopting.cancel();
        let give_up = async {
            tokio::select! {
                () = tokio::time::sleep(deadline / 2) => "drain budget spent",
                () = clickhouse_down_for(batcher, CLICKHOUSE_DOWN_AT_STOP) => "ClickHouse is down",
            }
        };
        tokio::select! {
            _ = &mut self.feeder => {}
            why = give_up => {
                tracing::info!(reason = why, "leaving the rest of the spool for the next start");
                self.stop_pulling.cancel();
                batcher.close();
                let _ = (&mut self.feeder).await;
            }
        }
    }
}

/// Persists the acknowledgements received, even after a drain timeout, so that only
/// frames really not committed replay.
async fn close_spool(spool: &Spool) {
    spool.shutdown().await;
    let s = spool.stats();
    tracing::info!(
        unacked_frames = s.unacked_frames,
        bytes = s.bytes,
        "spool closed; unacknowledged frames replay at the next start"
    );
}

/// Resolves once the batcher has reported ClickHouse down for `long` without a break.
async fn clickhouse_down_for(batcher: &BatcherHandle, long: Duration) {
    let mut down_since: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if batcher.health().is_healthy() {
            down_since = None;
        } else if now - *down_since.get_or_insert(now) >= long {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
