//! Timing rules against a scripted sink. Real (short) durations: the crate's tokio
//! has no `test-util`, so time cannot be paused here.

use super::*;
use crate::record::{Batch, Level, Record};
use std::sync::atomic::AtomicBool;

/// A sink whose answers are scripted; records every INSERT's row count.
#[derive(Default)]
struct FakeSink {
    script: Mutex<VecDeque<Result<(), SinkError>>>,
    /// Answer when the script is empty: `Some(reason)` → Unavailable.
    failing: Mutex<Option<String>>,
    inserts: Mutex<Vec<usize>>,
    /// The deduplication token of every attempt, in order.
    tokens: Mutex<Vec<Option<String>>>,
    attempts: AtomicUsize,
    ping_ok: AtomicBool,
    insert_delay: Mutex<Duration>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl FakeSink {
    fn new() -> Arc<FakeSink> {
        let sink = FakeSink::default();
        sink.ping_ok.store(true, Ordering::SeqCst);
        Arc::new(sink)
    }
    fn then(&self, answer: Result<(), SinkError>) {
        self.script.lock().unwrap().push_back(answer);
    }
    fn fail_all(&self, reason: Option<&str>) {
        *self.failing.lock().unwrap() = reason.map(str::to_string);
    }
    fn inserts(&self) -> Vec<usize> {
        self.inserts.lock().unwrap().clone()
    }
    fn tokens(&self) -> Vec<Option<String>> {
        self.tokens.lock().unwrap().clone()
    }
}

impl Sink for FakeSink {
    fn insert(
        &self,
        batches: &[EncodedBatch],
        token: Option<&str>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        let n: usize = batches.iter().map(EncodedBatch::len).sum();
        self.tokens.lock().unwrap().push(token.map(str::to_string));
        async move {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(running, Ordering::SeqCst);
            let delay = *self.insert_delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            let scripted = self.script.lock().unwrap().pop_front();
            let answer = scripted.unwrap_or_else(|| match &*self.failing.lock().unwrap() {
                Some(reason) => Err(SinkError::Unavailable {
                    reason: reason.clone(),
                }),
                None => Ok(()),
            });
            if answer.is_ok() {
                self.inserts.lock().unwrap().push(n);
            }
            answer
        }
    }
    fn ping(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        let ok = self.ping_ok.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok(())
            } else {
                Err(SinkError::Unavailable {
                    reason: "ping refused".into(),
                })
            }
        }
    }
}

fn batch(rows: usize) -> EncodedBatch {
    let record = Record {
        timestamp_ns: 1,
        level: Level::Info,
        service: "svc".into(),
        message: "m".into(),
        trace_id: String::new(),
        span_id: String::new(),
        attributes: Vec::new(),
        otel: None,
    };
    EncodedBatch::encode(&Batch::new(vec![record; rows]))
}

fn cfg(max_rows: usize, max_age_ms: u64) -> BatchConfig {
    BatchConfig {
        max_rows,
        max_bytes: usize::MAX,
        max_age: Duration::from_millis(max_age_ms),
        max_inflight_inserts: 2,
        max_queue_rows: 1_000,
        max_queue_bytes: usize::MAX,
    }
}

struct Harness {
    handle: BatcherHandle,
    stats: Arc<Stats>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

fn start(cfg: BatchConfig, budget_ms: u64, sink: &Arc<FakeSink>) -> Harness {
    let stats = Arc::new(Stats::default());
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let handle = Batcher::spawn(
        cfg,
        match budget_ms {
            u64::MAX => Duration::MAX,
            ms => Duration::from_millis(ms),
        },
        Arc::clone(sink),
        Arc::clone(&stats),
        &tracker,
        shutdown.clone(),
    );
    Harness {
        handle,
        stats,
        tracker,
        shutdown,
    }
}

impl Harness {
    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
            .await
            .expect("batcher tasks end after shutdown");
    }
}

async fn within<T>(ms: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_millis(ms), fut)
        .await
        .expect("resolved in time")
}

#[tokio::test]
async fn submits_within_max_age_become_one_insert() {
    let sink = FakeSink::new();
    let h = start(cfg(1_000, 200), 1_000, &sink);
    let receipts: Vec<Receipt> = (0..3)
        .map(|_| h.handle.try_submit(batch(5)).unwrap())
        .collect();
    assert_eq!(h.handle.queued_rows(), 15);
    assert_eq!(h.stats.snapshot().queue_rows, 15);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(sink.inserts().is_empty(), "cut before max_age");
    for receipt in receipts {
        within(2_000, receipt).await.unwrap();
    }
    assert_eq!(sink.inserts(), vec![15]);
    let s = h.stats.snapshot();
    assert_eq!((s.inserts, s.rows_inserted, s.queue_rows), (1, 15, 0));
    assert!(s.last_flush_unix_ms > 0);
    assert!(h.handle.health().last_flush.is_some());
    h.stop().await;
}

#[tokio::test]
async fn max_rows_cuts_without_waiting_and_never_splits_a_batch() {
    let sink = FakeSink::new();
    let h = start(cfg(10, 60_000), 1_000, &sink);
    let a = h.handle.try_submit(batch(4)).unwrap();
    let b = h.handle.try_submit(batch(4)).unwrap();
    let c = h.handle.try_submit(batch(4)).unwrap();
    within(1_000, a).await.unwrap();
    within(1_000, b).await.unwrap();
    // 4 + 4 + 4 crossed max_rows: the first 8 went out, the third batch waits.
    assert_eq!(sink.inserts(), vec![8]);
    assert_eq!(h.handle.queued_rows(), 4);
    h.handle.close();
    within(1_000, c).await.unwrap();
    assert_eq!(sink.inserts(), vec![8, 4]);
    h.stop().await;
}

#[tokio::test]
async fn max_bytes_cuts() {
    let sink = FakeSink::new();
    let mut config = cfg(1_000, 60_000);
    let one = batch(1).byte_len();
    config.max_bytes = one * 3;
    let h = start(config, 1_000, &sink);
    let receipts: Vec<Receipt> = (0..3)
        .map(|_| h.handle.try_submit(batch(1)).unwrap())
        .collect();
    for receipt in receipts {
        within(1_000, receipt).await.unwrap();
    }
    assert_eq!(sink.inserts(), vec![3]);
    h.stop().await;
}

#[tokio::test]
async fn rejected_rows_fail_once_and_are_counted() {
    let sink = FakeSink::new();
    sink.then(Err(SinkError::Rejected {
        reason: "Code: 53 type mismatch".into(),
    }));
    let h = start(cfg(1, 10), 5_000, &sink);
    let err = within(1_000, h.handle.try_submit(batch(3)).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SinkError::Rejected {
            reason: "Code: 53 type mismatch".into()
        }
    );
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 1, "never retried");
    let s = h.stats.snapshot();
    assert_eq!(
        (s.rows_failed, s.insert_failures, s.inserts, s.queue_rows),
        (3, 1, 0, 0)
    );
    assert!(
        h.handle.health().is_healthy(),
        "a rejection is not an outage"
    );
    h.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_until_they_succeed() {
    let sink = FakeSink::new();
    for _ in 0..2 {
        sink.then(Err(SinkError::Unavailable {
            reason: "connection refused".into(),
        }));
    }
    let h = start(cfg(1, 10), 10_000, &sink);
    let receipt = h.handle.try_submit(batch(2)).unwrap();
    within(5_000, receipt).await.unwrap();
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 3);
    let s = h.stats.snapshot();
    assert_eq!(
        (s.insert_failures, s.inserts, s.rows_inserted, s.rows_failed),
        (2, 1, 2, 0)
    );
    assert!(
        h.handle.health().is_healthy(),
        "a successful insert marks it up"
    );
    h.stop().await;
}

#[tokio::test]
async fn outage_fails_after_the_budget_refuses_submits_then_recovers() {
    let sink = FakeSink::new();
    sink.fail_all(Some("connection refused"));
    sink.ping_ok.store(false, Ordering::SeqCst);
    let h = start(cfg(1, 10), 400, &sink);
    let started = Instant::now();
    let err = within(3_000, h.handle.try_submit(batch(2)).unwrap())
        .await
        .unwrap_err();
    let waited = started.elapsed();
    match &err {
        SinkError::Unavailable { reason } => {
            assert!(reason.contains("connection refused"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(400),
        "gave up early: {waited:?}"
    );
    assert!(sink.attempts.load(Ordering::SeqCst) >= 2, "retried");
    let health = h.handle.health();
    let down = health.down.expect("marked down");
    assert!(down.reason.contains("connection refused"));
    assert!(down.since_unix_ms > 0);
    assert_eq!(
        h.handle.try_submit(batch(1)).unwrap_err(),
        SubmitError::Unavailable {
            reason: "connection refused".into()
        }
    );
    assert_eq!(
        h.handle.check_room(1),
        Err(SubmitError::Unavailable {
            reason: "connection refused".into()
        })
    );
    assert_eq!(h.stats.snapshot().rows_failed, 2);
    assert_eq!(h.stats.snapshot().queue_rows, 0);

    // ClickHouse comes back: the prober notices within about a second.
    sink.fail_all(None);
    sink.ping_ok.store(true, Ordering::SeqCst);
    within(3_000, async {
        while !h.handle.health().is_healthy() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    within(2_000, h.handle.try_submit(batch(1)).unwrap())
        .await
        .unwrap();
    h.stop().await;
}

#[tokio::test]
async fn retries_wake_up_when_the_sink_recovers() {
    let sink = FakeSink::new();
    sink.fail_all(Some("down"));
    sink.ping_ok.store(false, Ordering::SeqCst);
    let h = start(cfg(1, 10), 60_000, &sink);
    let receipt = h.handle.try_submit(batch(1)).unwrap();
    // Let it fail a few times so the backoff grows to seconds.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    sink.fail_all(None);
    sink.ping_ok.store(true, Ordering::SeqCst);
    // Prober (≤ 1 s) marks it up and wakes the sleeping retry.
    within(2_500, receipt).await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn queued_batches_expire_while_down() {
    let sink = FakeSink::new();
    sink.fail_all(Some("down"));
    sink.ping_ok.store(false, Ordering::SeqCst);
    let mut config = cfg(1, 10);
    config.max_inflight_inserts = 1;
    let h = start(config, 300, &sink);
    let first = h.handle.try_submit(batch(1)).unwrap();
    let second = h.handle.try_submit(batch(1)).unwrap();
    // Both fail within about one budget, not two.
    let started = Instant::now();
    assert!(matches!(
        within(2_000, first).await,
        Err(SinkError::Unavailable { .. })
    ));
    assert!(matches!(
        within(2_000, second).await,
        Err(SinkError::Unavailable { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.stats.snapshot().rows_failed, 2);
    assert_eq!(h.handle.queued_rows(), 0);
    h.stop().await;
}

#[tokio::test]
async fn full_queue_refuses_without_queueing() {
    let sink = FakeSink::new();
    let mut config = cfg(1_000, 60_000);
    config.max_queue_rows = 10;
    let h = start(config, 1_000, &sink);
    let _a = h.handle.try_submit(batch(6)).unwrap();
    // Admission's question gets the answer try_submit gives, and reserves nothing.
    assert_eq!(h.handle.check_room(4), Ok(()));
    assert_eq!(
        h.handle.check_room(5),
        Err(SubmitError::Full { queued_rows: 6 })
    );
    assert_eq!(
        h.handle.try_submit(batch(5)).unwrap_err(),
        SubmitError::Full { queued_rows: 6 }
    );
    let _b = h.handle.try_submit(batch(4)).unwrap();
    assert_eq!(h.handle.queued_rows(), 10);
    // An empty batch needs no room and is done at once.
    within(100, h.handle.try_submit(EncodedBatch::default()).unwrap())
        .await
        .unwrap();
    h.stop().await;
    assert_eq!(sink.inserts(), vec![10], "shutdown flushed the queue");
}

#[tokio::test]
async fn inflight_inserts_are_capped() {
    let sink = FakeSink::new();
    *sink.insert_delay.lock().unwrap() = Duration::from_millis(100);
    let h = start(cfg(1, 10), 5_000, &sink);
    let receipts: Vec<Receipt> = (0..6)
        .map(|_| h.handle.try_submit(batch(1)).unwrap())
        .collect();
    for receipt in receipts {
        within(3_000, receipt).await.unwrap();
    }
    assert_eq!(sink.max_running.load(Ordering::SeqCst), 2);
    assert_eq!(sink.inserts().iter().sum::<usize>(), 6);
    h.stop().await;
}

#[tokio::test]
async fn close_flushes_everything_and_refuses_new_batches() {
    let sink = FakeSink::new();
    let h = start(cfg(1_000, 60_000), 1_000, &sink);
    let receipts: Vec<Receipt> = (0..4)
        .map(|_| h.handle.try_submit(batch(2)).unwrap())
        .collect();
    h.handle.close();
    assert!(h.handle.is_closed());
    assert_eq!(h.handle.check_room(1), Err(SubmitError::Closed));
    assert_eq!(
        h.handle.try_submit(batch(1)).unwrap_err(),
        SubmitError::Closed
    );
    for receipt in receipts {
        within(1_000, receipt).await.unwrap();
    }
    assert_eq!(sink.inserts(), vec![8]);
    h.tracker.close();
    within(2_000, h.tracker.wait()).await;
}

#[tokio::test]
async fn shutdown_token_closes_and_drains() {
    let sink = FakeSink::new();
    let h = start(cfg(1_000, 60_000), 1_000, &sink);
    let receipt = h.handle.try_submit(batch(3)).unwrap();
    let handle = h.handle.clone();
    h.stop().await;
    within(100, receipt).await.unwrap();
    assert_eq!(
        handle.try_submit(batch(1)).unwrap_err(),
        SubmitError::Closed
    );
    assert_eq!(sink.inserts(), vec![3]);
}

#[tokio::test]
async fn heartbeat_ticks_while_idle() {
    let sink = FakeSink::new();
    let h = start(cfg(1_000, 60_000), 1_000, &sink);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = h.handle.heartbeat();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let later = h.handle.heartbeat();
    assert!(later > first, "heartbeat did not move while idle");
    assert!(later.elapsed() < Duration::from_millis(700));
    h.stop().await;
}

#[tokio::test]
async fn dropped_loop_resolves_receipts_as_closed() {
    let (tx, rx) = oneshot::channel::<Outcome>();
    drop(tx);
    assert_eq!(Receipt::waiting(rx).await, Err(SinkError::Closed));
}

#[tokio::test]
async fn a_rejected_merged_insert_is_retried_per_batch_and_the_bad_one_returned() {
    let sink = FakeSink::new();
    // The merged INSERT fails, then batch 1 alone succeeds, batch 2 alone fails.
    sink.then(Err(SinkError::Rejected {
        reason: "Code: 27 cannot parse".into(),
    }));
    sink.then(Ok(()));
    sink.then(Err(SinkError::Rejected {
        reason: "Code: 27 cannot parse".into(),
    }));
    let h = start(cfg(100, 50), 5_000, &sink);
    let good = h.handle.try_submit(batch(2)).unwrap();
    let bad = h.handle.try_submit(batch(3)).unwrap().returning();
    within(1_000, good).await.unwrap();
    let (err, returned) = within(1_000, bad).await.unwrap_err();
    assert!(matches!(err, SinkError::Rejected { .. }), "{err:?}");
    assert_eq!(
        returned.map(|b| b.len()),
        Some(3),
        "the refused batch comes back"
    );
    assert_eq!(sink.inserts(), vec![2]);
    let s = h.stats.snapshot();
    assert_eq!((s.rows_inserted, s.rows_failed, s.queue_rows), (2, 3, 0));
    h.stop().await;
}

#[tokio::test]
async fn submit_waits_for_room_and_queues_while_the_sink_is_down() {
    let sink = FakeSink::new();
    sink.fail_all(Some("connection refused"));
    sink.ping_ok.store(false, Ordering::SeqCst);
    let mut c = cfg(10, 10);
    c.max_queue_rows = 10;
    // Duration::MAX: retry for ever, as the spool's batcher does.
    let h = start(c, u64::MAX, &sink);
    let first = within(500, h.handle.submit(batch(10))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!h.handle.health().is_healthy());
    assert!(
        h.handle.try_submit(batch(1)).is_err(),
        "try_submit refuses while down"
    );
    let handle = h.handle.clone();
    let second = tokio::spawn(async move { handle.submit(batch(5)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "submit waits while the queue is full"
    );
    sink.fail_all(None);
    sink.ping_ok.store(true, Ordering::SeqCst);
    within(5_000, first).await.unwrap();
    let second = within(5_000, second).await.unwrap().unwrap();
    within(5_000, second).await.unwrap();
    assert_eq!(h.stats.snapshot().rows_failed, 0, "nothing given up");
    h.stop().await;
}

#[tokio::test]
async fn the_read_ahead_is_bounded_in_bytes_as_well_as_rows() {
    let sink = FakeSink::new();
    *sink.insert_delay.lock().unwrap() = Duration::from_millis(300);
    let one = batch(10).byte_len();
    let mut c = cfg(1_000, 10);
    c.max_queue_rows = 1_000;
    // Room for two batches of 10 rows by bytes, a hundred by rows.
    c.max_queue_bytes = 2 * one;
    let h = start(c, u64::MAX, &sink);
    let first = within(500, h.handle.submit(batch(10))).await.unwrap();
    let second = within(500, h.handle.submit(batch(10))).await.unwrap();
    assert_eq!(h.handle.queued_bytes(), 2 * one);
    assert_eq!(
        h.handle.try_submit(batch(10)).unwrap_err(),
        SubmitError::Full { queued_rows: 20 },
        "try_submit refuses on bytes, and leaves the rows as they were"
    );
    assert_eq!(h.handle.queued_rows(), 20);
    let handle = h.handle.clone();
    let third = tokio::spawn(async move { handle.submit(batch(10)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !third.is_finished(),
        "submit waits while the queued bytes are at the bound"
    );
    within(2_000, first).await.unwrap();
    within(2_000, second).await.unwrap();
    let third = within(2_000, third).await.unwrap().unwrap();
    within(2_000, third).await.unwrap();
    assert_eq!((h.handle.queued_rows(), h.handle.queued_bytes()), (0, 0));
    // A batch larger than the whole bound still goes in, alone.
    let big = within(500, h.handle.submit(batch(50))).await.unwrap();
    within(2_000, big).await.unwrap();
    assert_eq!(sink.inserts().iter().sum::<usize>(), 80);
    assert_eq!((h.handle.queued_rows(), h.handle.queued_bytes()), (0, 0));
    h.stop().await;
}

#[tokio::test]
async fn close_ends_unlimited_retries_with_closed_so_a_stop_does_not_wait() {
    let sink = FakeSink::new();
    sink.fail_all(Some("connection refused"));
    sink.ping_ok.store(false, Ordering::SeqCst);
    let h = start(cfg(10, 10), u64::MAX, &sink);
    let receipt = within(500, h.handle.submit(batch(10))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sink.attempts.load(Ordering::SeqCst);
    assert!(before >= 1, "the INSERT was tried");
    h.handle.close();
    // Woken from its backoff: one last attempt, then Closed (the spool keeps the rows).
    let outcome = within(2_000, receipt).await;
    assert!(matches!(outcome, Err(SinkError::Closed)), "{outcome:?}");
    assert!(sink.attempts.load(Ordering::SeqCst) <= before + 1);
    assert!(sink.inserts().is_empty());
    h.stop().await;
}

mod dedup;
mod replay;
