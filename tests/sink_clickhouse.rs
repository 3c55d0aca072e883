//! The ClickHouse sink against a real ClickHouse that each test starts for itself:
//! field-by-field round trip, batching, permanent rejections, outage and recovery,
//! start-up errors, deduplication of replayed INSERTs.
//!
//! The core cases run twice ([`on_both_engines!`]): `…::server` against Debian's
//! clickhouse-server 18.16 (legacy layout, no deduplication token) and `…::chdb`
//! against the 26.x engine behind the chdb test front (DateTime64(9), LowCardinality,
//! Map, `insert_deduplication_token`); see `zero_logs::testing::Engine`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zero_logs::codec::EncodedBatch;
use zero_logs::config::{BatchConfig, ClickHouseConfig, Compression, TableSchema};
use zero_logs::record::{Batch, Level, Record};
use zero_logs::sink::{
    Batcher, BatcherHandle, ClickHouseSink, Layout, Origin, ServerVersion, SinkError, SubmitError,
};
use zero_logs::stats::Stats;
use zero_logs::testing::{ColumnsSql, Engine, EngineKind};

zero_logs::on_both_engines!(
    round_trip_keeps_every_field,
    bulk_insert_spans_many_chunks,
    connect_is_repeatable_and_checks_the_table,
    batches_by_rows_and_by_age,
    permanent_rejection_fails_fast_and_is_counted,
    outage_gives_unavailable_after_budget_then_recovers,
    wrong_credentials_are_rejected_at_connect,
    insert_only_users_need_no_ddl_rights,
    a_replayed_insert_is_stored_once_where_tokens_work,
);

fn config(ch_url: &str, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: ch_url.to_string(),
        database: database.to_string(),
        table: "logs".to_string(),
        user: "default".to_string(),
        password: String::new(),
        create_table: true,
        retry_budget: Duration::from_millis(1500),
        insert_timeout: Duration::from_secs(5),
        // LZ4 here (auto would pick none for loopback): the end-to-end tests cover none.
        compression: Compression::Lz4,
        schema: TableSchema::Native,
        ttl_days: 0,
        cluster: None,
    }
}

fn record(ns: i64, level: Level, service: &str, message: &str) -> Record {
    Record {
        timestamp_ns: ns,
        level,
        service: service.to_string(),
        message: message.to_string(),
        trace_id: String::new(),
        span_id: String::new(),
        attributes: Vec::new(),
        otel: None,
    }
}

fn encoded(records: Vec<Record>) -> EncodedBatch {
    EncodedBatch::encode(&Batch::new(records))
}

fn records(n: usize, tag: &str) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut r = record(
                1_700_000_000_000_000_000 + i as i64,
                Level::Info,
                "batching",
                &format!("{tag} {i}"),
            );
            r.attributes = vec![("i".into(), i.to_string())];
            r
        })
        .collect()
}

fn count(ch: &Engine, db: &str) -> u64 {
    ch.query(&format!("SELECT count() FROM {db}.logs"))
        .expect("count rows")
        .trim()
        .parse()
        .expect("a number")
}

struct Pipeline {
    handle: BatcherHandle,
    stats: Arc<Stats>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Pipeline {
    fn start(sink: ClickHouseSink, batch: BatchConfig, retry_budget: Duration) -> Pipeline {
        let stats = Arc::new(Stats::default());
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let handle = Batcher::spawn(
            batch,
            retry_budget,
            Arc::new(sink),
            Arc::clone(&stats),
            &tracker,
            shutdown.clone(),
        );
        Pipeline {
            handle,
            stats,
            tracker,
            shutdown,
        }
    }

    async fn shut_down(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(20), self.tracker.wait())
            .await
            .expect("batcher drains and stops");
    }
}

fn batch_config(max_rows: usize, max_age: Duration) -> BatchConfig {
    BatchConfig {
        max_rows,
        max_bytes: 32 * 1024 * 1024,
        max_age,
        max_inflight_inserts: 2,
        max_queue_rows: 100_000,
        max_queue_bytes: usize::MAX,
    }
}

async fn round_trip_keeps_every_field(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let sink = ClickHouseSink::connect(&config(&ch.http_url(), &db)).await?;
    let version = ServerVersion::parse(sink.server_version())
        .with_context(|| format!("version {:?}", sink.server_version()))?;
    if version < ServerVersion::new(20, 1, 0) {
        assert_eq!(sink.layout(), Layout::Legacy, "{}", sink.server_version());
    }
    if version >= ServerVersion::new(22, 2, 0) {
        assert_eq!(sink.layout(), Layout::DateTime64Map, "{version}");
        assert!(sink.sends_dedup_token(), "{version}");
    }
    if kind == EngineKind::Chdb {
        assert!(version >= ServerVersion::new(26, 1, 0), "{version}");
    }

    let levels = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];
    let messages = [
        "plain ascii",
        "ünïcödé — 日本語 — עברית — emoji 🚀🔥",
        "tab\tnewline\nquote' double\" backslash\\ backtick`",
        "",
        "nul \u{0} inside",
        "last one",
    ];
    let mut sent = Vec::new();
    for (i, (level, message)) in levels.iter().zip(messages).enumerate() {
        let mut r = record(
            1_700_000_000_123_456_789 + i as i64 * 1_000_000_001,
            *level,
            "round-trip",
            message,
        );
        if i % 2 == 0 {
            r.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
            r.span_id = "00f067aa0ba902b7".into();
        }
        r.attributes = match i {
            0 => vec![],
            1 => vec![("z".into(), "last".into()), ("a".into(), "first".into())],
            2 => vec![
                ("dup".into(), "1".into()),
                ("dup".into(), "2".into()),
                ("ключ".into(), "значение 🙂".into()),
                ("empty".into(), String::new()),
            ],
            _ => vec![("i".into(), i.to_string())],
        };
        sent.push(r);
    }
    sink.insert(&[encoded(sent.clone())], None).await?;

    let ColumnsSql { ns, keys, values } = ColumnsSql::of(sink.layout());
    let body = ch.query(&format!(
        "SELECT toString({ns}) AS ns, toString(toUInt32(timestamp)) AS secs, level, service, \
         message, trace_id, span_id, {keys} AS k, {values} AS v \
         FROM {db}.logs ORDER BY {ns} FORMAT JSONEachRow"
    ))?;
    let rows: Vec<Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), sent.len());
    for (got, want) in rows.iter().zip(&sent) {
        let ns: i64 = got["ns"].as_str().unwrap().parse()?;
        assert_eq!(ns, want.timestamp_ns, "nanoseconds survive");
        let secs: i64 = got["secs"].as_str().unwrap().parse()?;
        assert_eq!(
            secs,
            want.timestamp_ns / 1_000_000_000,
            "DateTime holds the seconds"
        );
        assert_eq!(got["level"], want.level.as_str());
        assert_eq!(got["service"], want.service.as_str());
        assert_eq!(got["message"], want.message.as_str());
        assert_eq!(got["trace_id"], want.trace_id.as_str());
        assert_eq!(got["span_id"], want.span_id.as_str());
        let strings = |key: &str| -> Vec<String> {
            got[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let attributes: Vec<(String, String)> =
            strings("k").into_iter().zip(strings("v")).collect();
        assert_eq!(
            attributes, want.attributes,
            "attributes in order, duplicates kept"
        );
    }
    assert_eq!(
        rows[0]["ns"].as_str(),
        Some("1700000000123456789"),
        "the …123456789 timestamp exactly"
    );
    Ok(())
}

async fn bulk_insert_spans_many_chunks(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let sink = ClickHouseSink::connect(&config(&ch.http_url(), &db)).await?;
    let rows: Vec<Record> = records(100_000, "bulk");
    // As the batcher sends them: many requests' batches in one INSERT.
    let batches: Vec<EncodedBatch> = rows.chunks(100).map(|c| encoded(c.to_vec())).collect();
    let started = Instant::now();
    sink.insert(&batches, None).await?;
    let elapsed = started.elapsed();
    eprintln!(
        "inserted {} rows in {elapsed:?} ({:.0} rows/s, debug build, includes the server)",
        rows.len(),
        rows.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(count(&ch, &db), 100_000);
    let values = ColumnsSql::of(sink.layout()).values;
    let max = ch.query(&format!("SELECT max(toUInt64({values}[1])) FROM {db}.logs"))?;
    assert_eq!(max.trim(), "99999");
    Ok(())
}

async fn connect_is_repeatable_and_checks_the_table(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let cfg = config(&ch.http_url(), &db);
    ClickHouseSink::connect(&cfg).await?;
    // CREATE … IF NOT EXISTS: a second worker (or a restart) connects to the same table.
    ClickHouseSink::connect(&cfg).await?;
    let existing = ClickHouseConfig {
        create_table: false,
        ..cfg.clone()
    };
    ClickHouseSink::connect(&existing).await?;

    let missing = ClickHouseConfig {
        create_table: false,
        table: "absent".into(),
        ..cfg.clone()
    };
    match ClickHouseSink::connect(&missing).await {
        Err(SinkError::Rejected { reason }) => {
            assert!(
                reason.contains("`absent`") && reason.contains("does not exist"),
                "{reason}"
            )
        }
        other => panic!("expected Rejected for a missing table, got {other:?}"),
    }

    // A table the test made with an incompatible column type is refused at start-up,
    // before any RowBinary could be misread.
    ch.query(&format!(
        "CREATE TABLE {db}.wrong (timestamp DateTime, timestamp_ns UInt64, level UInt8, \
         service String, message String, trace_id String, span_id String, \
         attributes Nested(key String, value String)) ENGINE = MergeTree \
         ORDER BY timestamp"
    ))?;
    let wrong = ClickHouseConfig {
        table: "wrong".into(),
        ..cfg
    };
    match ClickHouseSink::connect(&wrong).await {
        Err(SinkError::Rejected { reason }) => {
            assert!(
                reason.contains("column `level` is UInt8, expected String"),
                "{reason}"
            )
        }
        other => panic!("expected Rejected for an incompatible table, got {other:?}"),
    }
    Ok(())
}

async fn batches_by_rows_and_by_age(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let sink = ClickHouseSink::connect(&config(&ch.http_url(), &db)).await?;
    let max_age = Duration::from_millis(1500);
    let p = Pipeline::start(sink, batch_config(100, max_age), Duration::from_secs(5));

    // By rows: 50 + 50 reaches max_rows, so one INSERT goes out long before max_age.
    let started = Instant::now();
    let a = p.handle.try_submit(encoded(records(50, "rows-a")))?;
    let b = p.handle.try_submit(encoded(records(50, "rows-b")))?;
    a.await?;
    b.await?;
    assert!(
        started.elapsed() < max_age,
        "row cut took {:?}",
        started.elapsed()
    );
    assert_eq!(p.stats.snapshot().inserts, 1);
    assert_eq!(count(&ch, &db), 100);

    // By age: three small submits wait for max_age and become one more INSERT.
    let started = Instant::now();
    let receipts: Vec<_> = (0..3)
        .map(|i| {
            p.handle
                .try_submit(encoded(records(10, &format!("age-{i}"))))
        })
        .collect::<Result<_, _>>()?;
    for receipt in receipts {
        receipt.await?;
    }
    let waited = started.elapsed();
    assert!(
        waited >= max_age - Duration::from_millis(50),
        "age cut after {waited:?}"
    );
    let stats = p.stats.snapshot();
    assert_eq!((stats.inserts, stats.rows_inserted), (2, 130), "{stats:?}");
    assert_eq!(stats.queue_rows, 0);
    assert!(stats.last_flush_unix_ms > 0);
    assert_eq!(count(&ch, &db), 130);

    // Shutdown flushes what is queued without waiting for max_age.
    let last = p.handle.try_submit(encoded(records(7, "shutdown")))?;
    let handle = p.handle.clone();
    let started = Instant::now();
    p.shut_down().await;
    last.await?;
    assert!(
        started.elapsed() < max_age,
        "shutdown flush took {:?}",
        started.elapsed()
    );
    assert_eq!(count(&ch, &db), 137);
    assert_eq!(
        handle.try_submit(encoded(records(1, "late"))).unwrap_err(),
        SubmitError::Closed
    );
    Ok(())
}

async fn permanent_rejection_fails_fast_and_is_counted(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let sink = ClickHouseSink::connect(&config(&ch.http_url(), &db)).await?;
    // The schema drifts under a running worker: ClickHouse now refuses every INSERT
    // naming that column (Code: 16, NO_SUCH_COLUMN_IN_TABLE).
    ch.query(&format!("ALTER TABLE {db}.logs DROP COLUMN span_id"))?;

    let retry_budget = Duration::from_secs(10);
    let p = Pipeline::start(
        sink,
        batch_config(1, Duration::from_millis(10)),
        retry_budget,
    );
    let started = Instant::now();
    let receipt = p.handle.try_submit(encoded(records(3, "poison")))?;
    match receipt.await {
        Err(SinkError::Rejected { reason }) => {
            eprintln!("rejected: {reason}");
            assert!(reason.contains("Code: 16"), "{reason}");
            assert!(reason.contains("span_id"), "{reason}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not retried: {:?}",
        started.elapsed()
    );
    let stats = p.stats.snapshot();
    assert_eq!(
        (stats.rows_failed, stats.insert_failures, stats.inserts),
        (3, 1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.queue_rows, 0);
    assert!(
        p.handle.health().is_healthy(),
        "a rejection is not an outage"
    );
    // The pipeline is not blocked behind the poison batch.
    assert!(p.handle.try_submit(encoded(records(1, "next"))).is_ok());
    p.shut_down().await;
    Ok(())
}

async fn outage_gives_unavailable_after_budget_then_recovers(kind: EngineKind) -> Result<()> {
    let mut ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let cfg = config(&ch.http_url(), &db);
    let sink = ClickHouseSink::connect(&cfg).await?;
    let p = Pipeline::start(
        sink,
        batch_config(1, Duration::from_millis(10)),
        cfg.retry_budget,
    );
    p.handle.try_submit(encoded(records(5, "before")))?.await?;

    ch.stop();
    let started = Instant::now();
    let receipt = p.handle.try_submit(encoded(records(4, "during")))?;
    match receipt.await {
        Err(SinkError::Unavailable { reason }) => {
            assert!(reason.contains(&ch.http_url()), "names the URL: {reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= cfg.retry_budget,
        "gave up before the budget: {waited:?}"
    );
    assert!(
        waited < cfg.retry_budget + Duration::from_secs(6),
        "took {waited:?}"
    );

    let health = p.handle.health();
    let down = health.down.as_ref().expect("health is down");
    assert!(down.reason.contains(&ch.http_url()), "{}", down.reason);
    assert!(health.last_flush.is_some());
    let started = Instant::now();
    match p.handle.try_submit(encoded(records(1, "refused"))) {
        Err(SubmitError::Unavailable { .. }) => {}
        other => panic!("expected an immediate Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(50));
    let stats = p.stats.snapshot();
    assert!(stats.insert_failures >= 2, "retried: {stats:?}");
    assert_eq!(
        (stats.rows_failed, stats.rows_inserted),
        (4, 5),
        "{stats:?}"
    );

    ch.restart()?;
    let started = Instant::now();
    while !p.handle.health().is_healthy() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still down after restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.handle.try_submit(encoded(records(6, "after")))?.await?;
    assert_eq!(count(&ch, &db), 11, "exactly the committed rows");
    p.shut_down().await;
    Ok(())
}

#[tokio::test]
async fn connect_to_a_dead_port_is_a_clear_error() -> Result<()> {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    match ClickHouseSink::connect(&config(&url, "nowhere")).await {
        Err(SinkError::Unavailable { reason }) => {
            eprintln!("connect error: {reason}");
            assert!(reason.contains(&url), "names the URL: {reason}");
            assert!(reason.contains("refused"), "gives the cause: {reason}");
            assert!(
                reason.contains("check CLICKHOUSE_URL"),
                "says what to do: {reason}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

async fn wrong_credentials_are_rejected_at_connect(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let cfg = ClickHouseConfig {
        password: "not-the-password".into(),
        ..config(&ch.http_url(), "x")
    };
    match ClickHouseSink::connect(&cfg).await {
        Err(SinkError::Rejected { reason }) => {
            assert!(reason.contains("CLICKHOUSE_PASSWORD"), "{reason}");
            assert!(
                !reason.contains("not-the-password"),
                "leaks the password: {reason}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    Ok(())
}

async fn insert_only_users_need_no_ddl_rights(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    ClickHouseSink::connect(&config(&ch.http_url(), &db)).await?;
    // users.xml's `readonly` user may read but not write: start-up finds the existing
    // table without issuing DDL, and the INSERT is refused permanently (Code: 164).
    let cfg = ClickHouseConfig {
        user: "readonly".into(),
        ..config(&ch.http_url(), &db)
    };
    let sink = ClickHouseSink::connect(&cfg).await?;
    match sink.insert(&[encoded(records(2, "readonly"))], None).await {
        Err(SinkError::Rejected { reason }) => assert!(reason.contains("Code: 164"), "{reason}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    sink.ping().await?;
    Ok(())
}

/// A current server gets the modern table (issue 19): nanosecond `DateTime64` in UTC,
/// `LowCardinality` strings, a `Map` of attributes and a deduplication window, and the
/// rows read back with full nanoseconds and every attribute.
#[tokio::test]
async fn a_current_engine_gets_the_modern_table() -> Result<()> {
    let ch = Engine::start(EngineKind::Chdb)?;
    let db = ch.fresh_database();
    let sink = ClickHouseSink::connect(&config(&ch.http_url(), &db)).await?;
    assert_eq!(sink.layout(), Layout::DateTime64Map);
    assert!(sink.sends_dedup_token());

    let columns = ch.query(&format!(
        "SELECT name, type FROM system.columns WHERE database = '{db}' AND table = 'logs' \
         ORDER BY position FORMAT TabSeparatedRaw"
    ))?;
    assert_eq!(
        columns,
        "timestamp\tDateTime64(9, 'UTC')\n\
         level\tLowCardinality(String)\n\
         service\tLowCardinality(String)\n\
         message\tString\n\
         trace_id\tString\n\
         span_id\tString\n\
         attributes\tMap(String, String)\n"
    );
    let table = ch.query(&format!(
        "SELECT engine, partition_key, sorting_key, \
         extract(engine_full, 'non_replicated_deduplication_window = (\\\\d+)') \
         FROM system.tables WHERE database = '{db}' AND name = 'logs' FORMAT TabSeparatedRaw"
    ))?;
    assert_eq!(
        table,
        "MergeTree\ttoDate(timestamp)\tservice, timestamp\t1000\n"
    );

    let mut first = record(1, Level::Trace, "modern", "one nanosecond after the epoch");
    first.attributes = vec![("empty".into(), String::new())];
    let mut second = record(1_700_000_000_123_456_789, Level::Warn, "modern", "2023");
    second.attributes = vec![
        ("http.status".into(), "503".into()),
        ("ключ 🔑".into(), "значение".into()),
        ("z".into(), "last".into()),
    ];
    // The last instant DateTime64(9) holds: i64::MAX nanoseconds.
    let last = record(i64::MAX, Level::Fatal, "modern", "2262");
    sink.insert(&[encoded(vec![first, second, last])], None)
        .await?;
    let rows = ch.query(&format!(
        "SELECT toString(timestamp), toUnixTimestamp64Nano(timestamp), level, message, \
         attributes['http.status'], attributes['ключ 🔑'], length(attributes), \
         toString(mapKeys(attributes)) FROM {db}.logs ORDER BY timestamp \
         FORMAT TabSeparatedRaw"
    ))?;
    assert_eq!(
        rows,
        "1970-01-01 00:00:00.000000001\t1\ttrace\tone nanosecond after the epoch\t\t\t1\t['empty']\n\
         2023-11-14 22:13:20.123456789\t1700000000123456789\twarn\t2023\t503\tзначение\t3\t\
         ['http.status','ключ 🔑','z']\n\
         2262-04-11 23:47:16.854775807\t9223372036854775807\tfatal\t2262\t\t\t0\t[]\n"
    );
    Ok(())
}

/// A spool frame delivered twice (replayed after a crash between INSERT and
/// acknowledgement) carries the same `insert_deduplication_token`: a server that knows
/// tokens stores its rows once; 18.16 stores them twice (the documented at-least-once
/// window). The token, not the content, decides: the same rows under another token are
/// stored again.
async fn a_replayed_insert_is_stored_once_where_tokens_work(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let cfg = config(&ch.http_url(), &db);
    let sink = ClickHouseSink::connect(&cfg).await?;
    let dedup = sink.sends_dedup_token();
    assert_eq!(dedup, kind == EngineKind::Chdb, "{}", sink.server_version());

    // Through the batcher, as the spool's feeder submits frames.
    let p = Pipeline::start(
        sink,
        batch_config(10_000, Duration::from_millis(20)),
        Duration::from_secs(5),
    );
    let spool: Arc<str> = "1-00000000000000ab".into();
    let frame = |seq: u64, rows: usize| {
        let origin = Origin {
            spool: Arc::clone(&spool),
            seq,
            appended_unix_ms: 1_700_000_000_000 + seq,
        };
        (encoded(records(rows, &format!("frame {seq}"))), origin)
    };
    for (seq, rows) in [(7, 3), (7, 3), (8, 2)] {
        let (batch, origin) = frame(seq, rows);
        p.handle.submit_from(batch, origin).await?.await?;
    }
    assert_eq!(p.stats.snapshot().inserts, 3, "one INSERT per submission");
    p.shut_down().await;
    assert_eq!(count(&ch, &db), if dedup { 5 } else { 8 });

    // One INSERT sent again with its token, then the same rows under another token.
    let sink = ClickHouseSink::connect(&cfg).await?;
    let (batch, origin) = frame(9, 4);
    for token in [origin.token(), origin.token(), "another-token".to_string()] {
        sink.insert(std::slice::from_ref(&batch), Some(&token))
            .await?;
    }
    let frame_9 = format!("SELECT count() FROM {db}.logs WHERE message LIKE 'frame 9 %'");
    let stored = ch.query(&frame_9)?;
    assert_eq!(stored.trim(), if dedup { "8" } else { "12" });
    Ok(())
}
