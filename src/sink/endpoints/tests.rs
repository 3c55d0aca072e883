//! The endpoint set against in-memory fakes (a supplement to the real-server tests in
//! `tests/clickhouse_endpoints.rs`): policy, down/up, probes under backoff, pins, the
//! whole-sink health. Real short durations: the crate's tokio has no `test-util`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;
use crate::record::{Batch, Level, Record};
use crate::sink::Batcher;
use crate::stats::Stats;
use crate::testing::MemorySink;

/// A [`MemorySink`] with a version, a token capability and a ping count.
#[derive(Default)]
struct Fake {
    memory: MemorySink,
    dedup: bool,
    pings: AtomicU64,
}

impl Sink for Fake {
    fn insert(
        &self,
        batches: &[EncodedBatch],
        token: Option<&str>,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.memory.insert(batches, token)
    }

    fn ping(&self) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.pings.fetch_add(1, Ordering::SeqCst);
        self.memory.ping()
    }
}

impl EndpointSink for Fake {
    fn version(&self) -> String {
        "99.1".into()
    }

    fn sends_dedup_token(&self) -> bool {
        self.dedup
    }
}

fn fakes(n: usize, dedup: bool) -> Vec<Arc<Fake>> {
    (0..n)
        .map(|_| {
            Arc::new(Fake {
                dedup,
                ..Fake::default()
            })
        })
        .collect()
}

/// Specs whose connect hands out the fake, or fails while `refuse[i]` holds a reason.
fn specs(
    fakes: &[Arc<Fake>],
    refuse: &Arc<Mutex<Vec<Option<SinkError>>>>,
) -> Vec<EndpointSpec<Fake>> {
    fakes
        .iter()
        .enumerate()
        .map(|(i, fake)| {
            let (fake, refuse) = (Arc::clone(fake), Arc::clone(refuse));
            EndpointSpec {
                url: format!("http://ch{i}:8123"),
                connect: Box::new(move || {
                    let answer = match refuse.lock().unwrap()[i].clone() {
                        Some(error) => Err(error),
                        None => Ok(Arc::clone(&fake)),
                    };
                    Box::pin(std::future::ready(answer))
                }),
            }
        })
        .collect()
}

fn quick() -> Timing {
    Timing {
        probe: Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
        pin_limit: Duration::from_millis(300),
    }
}

struct Set {
    endpoints: Arc<Endpoints<Fake>>,
    fakes: Vec<Arc<Fake>>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for Set {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tracker.close();
    }
}

async fn set(n: usize, dedup: bool, down_at_start: &[usize]) -> Result<Set, SinkError> {
    let fakes = fakes(n, dedup);
    let refuse: Vec<Option<SinkError>> = (0..n)
        .map(|i| {
            down_at_start.contains(&i).then(|| SinkError::Unavailable {
                reason: format!("ch{i} refused the connection"),
            })
        })
        .collect();
    let refuse = Arc::new(Mutex::new(refuse));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let endpoints =
        Endpoints::start(specs(&fakes, &refuse), quick(), &tracker, stop.clone()).await?;
    // Endpoints down at start-up answer the probes' connects from now on.
    refuse.lock().unwrap().iter_mut().for_each(|r| *r = None);
    Ok(Set {
        endpoints,
        fakes,
        stop,
        tracker,
    })
}

fn rows(n: usize) -> Vec<EncodedBatch> {
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
    vec![EncodedBatch::encode(&Batch::new(vec![record; n]))]
}

fn states(endpoints: &Endpoints<Fake>) -> Vec<String> {
    endpoints
        .board()
        .snapshot()
        .into_iter()
        .map(|e| e.state)
        .collect()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn equal_loads_are_served_in_turn() {
    let s = set(3, false, &[]).await.unwrap();
    for _ in 0..30 {
        s.endpoints.insert(&rows(2), None).await.unwrap();
    }
    let inserts: Vec<u64> = s.fakes.iter().map(|f| f.memory.inserts()).collect();
    assert_eq!(inserts, [10, 10, 10]);
    let board = s.endpoints.board().snapshot();
    assert!(board
        .iter()
        .all(|e| e.rows_inserted == 20 && e.inserts == 10 && e.inflight == 0));
    assert!(board.iter().all(|e| e.state == "up" && e.version == "99.1"));
}

#[tokio::test]
async fn the_least_loaded_endpoint_is_picked() {
    let s = set(3, false, &[]).await.unwrap();
    // Endpoint 0 has INSERTs running (a slow server): the others take the new ones.
    s.endpoints.slots[0]
        .status
        .inflight
        .store(4, Ordering::SeqCst);
    for _ in 0..10 {
        s.endpoints.insert(&rows(1), None).await.unwrap();
    }
    let inserts: Vec<u64> = s.fakes.iter().map(|f| f.memory.inserts()).collect();
    assert_eq!(inserts, [0, 5, 5]);
}

#[tokio::test]
async fn a_failing_endpoint_is_taken_out_and_probed_back() {
    let s = set(2, false, &[]).await.unwrap();
    s.fakes[0].memory.set_down(Some("connection refused"));
    for _ in 0..10 {
        // Each INSERT lands: the failed attempt moves on to the other endpoint.
        s.endpoints.insert(&rows(1), None).await.unwrap();
    }
    assert_eq!(s.fakes[1].memory.inserts(), 10);
    let board = s.endpoints.board().snapshot();
    assert_eq!(board[0].state, "down");
    assert_eq!(
        board[0].insert_failures, 1,
        "a down endpoint gets no INSERTs"
    );
    assert!(board[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("connection refused"));
    assert!(s.endpoints.serves_elsewhere());
    s.endpoints.ping().await.unwrap();

    // Probed under backoff while down (10 ms doubling to 40 ms: a handful in 300 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pings = s.fakes[0].pings.load(Ordering::SeqCst);
    assert!((4..=40).contains(&pings), "{pings} pings in 300 ms");
    assert_eq!(states(&s.endpoints), ["down", "up"]);

    s.fakes[0].memory.set_down(None);
    eventually("endpoint 0 back up", || {
        states(&s.endpoints) == ["up", "up"]
    })
    .await;
    assert_eq!(s.endpoints.board().snapshot()[0].reason, None);
    for _ in 0..10 {
        s.endpoints.insert(&rows(1), None).await.unwrap();
    }
    assert_eq!(s.fakes[0].memory.inserts(), 5, "back in turn");
}

#[tokio::test]
async fn the_sink_is_down_only_when_every_endpoint_is() {
    let s = set(2, false, &[]).await.unwrap();
    s.fakes[0].memory.set_down(Some("refused 0"));
    s.fakes[1].memory.set_down(Some("refused 1"));
    let error = s.endpoints.insert(&rows(1), None).await.unwrap_err();
    let SinkError::Unavailable { reason } = &error else {
        panic!("{error:?}");
    };
    assert!(
        reason.contains("all 2 ClickHouse endpoints are down"),
        "{reason}"
    );
    assert!(
        reason.contains("http://ch0:8123: ") && reason.contains("refused 1"),
        "{reason}"
    );
    assert!(!s.endpoints.serves_elsewhere());
    assert!(s.endpoints.ping().await.is_err());
    // While all are down every INSERT tries each (the batcher's retries probe too).
    s.endpoints.insert(&rows(1), None).await.unwrap_err();
    let failures = || -> Vec<u64> {
        let board = s.endpoints.board().snapshot();
        board.iter().map(|e| e.insert_failures).collect()
    };
    assert_eq!(failures(), [2, 2]);

    s.fakes[1].memory.set_down(None);
    s.endpoints.insert(&rows(1), None).await.unwrap();
    assert_eq!(failures(), [3, 2], "endpoint 0 first, then 1 takes it");
    assert_eq!(states(&s.endpoints), ["down", "up"]);
    assert!(s.endpoints.serves_elsewhere());
}

#[tokio::test]
async fn the_batcher_stays_healthy_while_one_endpoint_is_left() {
    let s = set(2, false, &[]).await.unwrap();
    let stats = Arc::new(Stats::default());
    let batch_cfg = crate::config::BatchConfig {
        max_rows: 1,
        max_bytes: usize::MAX,
        max_age: Duration::from_millis(1),
        max_inflight_inserts: 2,
        max_queue_rows: 1_000,
        max_queue_bytes: usize::MAX,
    };
    let handle = Batcher::spawn(
        batch_cfg,
        Duration::from_secs(2),
        Arc::clone(&s.endpoints),
        Arc::clone(&stats),
        &s.tracker,
        s.stop.clone(),
    );
    s.fakes[0].memory.set_down(Some("refused 0"));
    for _ in 0..6 {
        handle.try_submit(rows(1).remove(0)).unwrap().await.unwrap();
    }
    assert!(handle.health().is_healthy(), "{:?}", handle.health());
    s.fakes[1].memory.set_down(Some("refused 1"));
    let receipt = handle.try_submit(rows(1).remove(0)).unwrap();
    eventually("the batcher marks the sink down", || {
        !handle.health().is_healthy()
    })
    .await;
    s.fakes[1].memory.set_down(None);
    // The retry within the budget lands once endpoint 1 is probed back.
    receipt.await.unwrap();
    eventually("the batcher marks the sink up", || {
        handle.health().is_healthy()
    })
    .await;
    assert_eq!(s.fakes[1].memory.inserts(), 7);
    handle.close();
}

#[tokio::test]
async fn start_up_needs_one_endpoint_and_connects_the_others_later() {
    let s = set(2, false, &[1]).await.unwrap();
    assert_eq!(states(&s.endpoints)[0], "up");
    // The probe connects endpoint 1 once it answers (here: at once).
    eventually("endpoint 1 connected", || {
        states(&s.endpoints) == ["up", "up"]
    })
    .await;
    assert_eq!(s.endpoints.board().snapshot()[1].version, "99.1");

    let Err(error) = set(2, false, &[0, 1]).await else {
        panic!("started with every endpoint down");
    };
    assert_eq!(
        error,
        SinkError::Unavailable {
            reason: "ch0 refused the connection".into()
        },
        "none answers: the first endpoint's error"
    );
}

#[tokio::test]
async fn an_endpoint_that_refuses_at_start_up_stops_the_start() {
    let fakes = fakes(2, false);
    let refusal = SinkError::Rejected {
        reason: "table does not fit".into(),
    };
    let refuse = Arc::new(Mutex::new(vec![None, Some(refusal.clone())]));
    let tracker = TaskTracker::new();
    let result = Endpoints::start(
        specs(&fakes, &refuse),
        quick(),
        &tracker,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(result.unwrap_err(), refusal);
}

#[tokio::test]
async fn a_token_stays_with_the_server_that_deduplicates_it() {
    let s = set(2, true, &[]).await.unwrap();
    // The first pick is endpoint 0.
    s.fakes[0].memory.set_down(Some("timed out"));
    let token = Some("1-ab-0-3");
    let error = s.endpoints.insert(&rows(3), token).await.unwrap_err();
    assert!(
        error.to_string().contains("deduplication token applies"),
        "{error}"
    );
    assert_eq!(
        s.fakes[1].memory.inserts(),
        0,
        "not moved to another server"
    );
    // Retries go to endpoint 0 only, even though it is down and 1 is up …
    s.endpoints.insert(&rows(3), token).await.unwrap_err();
    assert_eq!(s.fakes[1].memory.inserts(), 0);
    // … other INSERTs go to endpoint 1, and the sink as a whole is not down.
    s.endpoints.insert(&rows(1), Some("other")).await.unwrap();
    assert_eq!(s.fakes[1].memory.inserts(), 1);
    assert!(s.endpoints.serves_elsewhere());
    // Back: the retry lands where the first attempt went, with its token.
    s.fakes[0].memory.set_down(None);
    s.endpoints.insert(&rows(3), token).await.unwrap();
    assert_eq!(s.fakes[0].memory.tokens(), [Some("1-ab-0-3".to_string())]);
}

#[tokio::test]
async fn a_pin_gives_way_after_its_limit() {
    let s = set(2, true, &[]).await.unwrap();
    s.fakes[0].memory.set_down(Some("timed out"));
    let token = Some("2-cd-0-1");
    s.endpoints.insert(&rows(1), token).await.unwrap_err();
    tokio::time::sleep(quick().pin_limit + Duration::from_millis(50)).await;
    s.endpoints.insert(&rows(1), token).await.unwrap();
    assert_eq!(s.fakes[1].memory.tokens(), [Some("2-cd-0-1".to_string())]);
}

#[test]
fn endpoint_metrics_are_labelled_per_endpoint() {
    let endpoints = vec![
        EndpointStats {
            url: "http://***@ch0:8123".into(),
            version: "18.16.1".into(),
            state: "up".into(),
            since_unix_ms: 1,
            reason: None,
            inserts: 7,
            insert_failures: 2,
            rows_inserted: 70,
            inflight: 1,
        },
        EndpointStats {
            url: "http://ch1:8123".into(),
            state: "down".into(),
            reason: Some("refused".into()),
            inserts: 3,
            ..EndpointStats::clone(&endpoints_template())
        },
    ];
    let mut out = String::new();
    prometheus(&mut out, "3", &endpoints);
    for line in [
        r#"zero_logs_clickhouse_endpoint_up{worker_id="3",endpoint="http://***@ch0:8123"} 1"#,
        r#"zero_logs_clickhouse_endpoint_up{worker_id="3",endpoint="http://ch1:8123"} 0"#,
        r#"zero_logs_clickhouse_endpoint_inserts_total{worker_id="3",endpoint="http://ch1:8123"} 3"#,
        r#"zero_logs_clickhouse_endpoint_insert_failures_total{worker_id="3",endpoint="http://***@ch0:8123"} 2"#,
        r#"zero_logs_clickhouse_endpoint_rows_inserted_total{worker_id="3",endpoint="http://***@ch0:8123"} 70"#,
        r#"zero_logs_clickhouse_endpoint_inflight_inserts{worker_id="3",endpoint="http://***@ch0:8123"} 1"#,
        "# TYPE zero_logs_clickhouse_endpoint_up gauge",
        "# TYPE zero_logs_clickhouse_endpoint_inserts_total counter",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line}:\n{out}");
    }
    let mut none = String::new();
    prometheus(&mut none, "3", &[]);
    assert!(none.is_empty());
}

fn endpoints_template() -> EndpointStats {
    EndpointStats {
        url: String::new(),
        version: String::new(),
        state: String::new(),
        since_unix_ms: 0,
        reason: None,
        inserts: 0,
        insert_failures: 0,
        rows_inserted: 0,
        inflight: 0,
    }
}
