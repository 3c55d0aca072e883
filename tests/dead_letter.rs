//! Dead letters (issue 19 item 4), with the real worker (`zero-logs serve`,
//! `ACK_MODE=spool`) and a real ClickHouse: the table is altered under the running
//! worker so that some rows become unacceptable; the good rows of the same requests
//! must land exactly once, every bad row must be in `<table>_rejected` (or, when that
//! table cannot be written, in the spool's `quarantine/dead-letter.jsonl`) with its
//! reason, code and record, counted by reason, and the spool must end empty.
//!
//! The check that refuses rows: a `CHECK` constraint on the 26.x engine (Code 469);
//! on 18.16, which has no constraints, a column whose default is
//! `throwIf(message LIKE '%poison%')` (Code 395).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::time::Instant;
use zero_logs::testing::{Engine, EngineKind, TestClickHouse};

/// Runs `async fn NAME(kind: EngineKind)` as `NAME::server` (18.16) and `NAME::chdb`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn server() {
                super::$name(EngineKind::Server).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn chdb() {
                super::$name(EngineKind::Chdb).await
            }
        }
    )*};
}

on_both_engines!(poison_rows_are_dead_lettered_and_good_rows_land_once);

/// Makes ClickHouse refuse every row whose message contains "poison"; returns the
/// exception code it then answers with.
fn refuse_poison(ch: &Engine, db: &str) -> u32 {
    match ch.kind() {
        EngineKind::Chdb => {
            ch.query(&format!(
                "ALTER TABLE {db}.logs ADD CONSTRAINT no_poison CHECK message NOT LIKE '%poison%'"
            ))
            .unwrap();
            469
        }
        EngineKind::Server => {
            ch.query(&format!(
                "ALTER TABLE {db}.logs ADD COLUMN no_poison UInt8 \
                 DEFAULT throwIf(message LIKE '%poison%')"
            ))
            .unwrap();
            395
        }
    }
}

/// One request: `n` records `<tag>/<k>`, those at `poison` with " poison" appended.
fn body(tag: &str, n: usize, poison: &[usize]) -> String {
    let records: Vec<String> = (0..n)
        .map(|k| {
            let bad = if poison.contains(&k) { " poison" } else { "" };
            format!(
                r#"{{"timestamp":"2024-05-01T12:00:00.{k:09}Z","level":"warn","service":"dlq","message":"{tag}/{k}{bad}","attributes":{{"k":{k}}}}}"#
            )
        })
        .collect();
    format!("[{}]", records.join(","))
}

fn lines(ch: &impl TestClickHouse, sql: &str) -> Vec<String> {
    ch.query(sql).unwrap().lines().map(str::to_string).collect()
}

fn number(ch: &impl TestClickHouse, sql: &str) -> u64 {
    ch.query(sql).unwrap().trim().parse().unwrap()
}

/// Polls `check` every 100 ms until it holds or `within` has passed; `false` then.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts every body at once (so that the batcher merges them into shared INSERTs);
/// each must be acknowledged.
async fn post_all(worker: &Worker, bodies: Vec<String>) {
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    let sends = bodies.into_iter().map(|body| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { post(&client, &url, &[], body).await })
    });
    for send in sends.collect::<Vec<_>>() {
        let (status, _, reply) = send.await.unwrap().unwrap();
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&reply));
    }
}

/// Waits until the worker's spool has nothing left to deliver; returns its stats.
async fn spool_drained(worker: &Worker) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = worker.stats().await;
        if stats["spool"]["unacked_frames"] == 0 || Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Files under every instance's `quarantine/` of the worker's spool root.
fn quarantined(worker: &Worker) -> Vec<PathBuf> {
    let root = worker.spool_dir.as_ref().expect("test spool").path();
    let mut files = Vec::new();
    for instance in std::fs::read_dir(root).unwrap().flatten() {
        if let Ok(entries) = std::fs::read_dir(instance.path().join("quarantine")) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    files.sort();
    files
}

async fn poison_rows_are_dead_lettered_and_good_rows_land_once(kind: EngineKind) {
    let ch = Engine::start(kind).expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = Worker::start(&ch, &db, &[]).await;
    // Created by the worker at start-up, next to the log table.
    assert_eq!(
        number(&ch, &format!("SELECT count() FROM {db}.logs_rejected")),
        0
    );
    let code = refuse_poison(&ch, &db);

    // Eight requests of 25 records: request r has bad rows at r and r + 10 (request 7
    // none), plus one request that is entirely bad.
    let mut bodies = Vec::new();
    let mut bad = BTreeSet::new();
    let mut good = BTreeSet::new();
    for r in 0..8 {
        let poison: Vec<usize> = if r == 7 { vec![] } else { vec![r, r + 10] };
        for k in 0..25 {
            let message = format!("req{r}/{k}");
            if poison.contains(&k) {
                bad.insert(format!("{message} poison"));
            } else {
                good.insert(message);
            }
        }
        bodies.push(body(&format!("req{r}"), 25, &poison));
    }
    bodies.push(body("all-bad", 3, &[0, 1, 2]));
    bad.extend((0..3).map(|k| format!("all-bad/{k} poison")));
    post_all(&worker, bodies).await;

    let rows = |table: &str| number(&ch, &format!("SELECT count() FROM {db}.{table}"));
    let settled = eventually(Duration::from_secs(60), || {
        rows("logs") >= good.len() as u64 && rows("logs_rejected") >= bad.len() as u64
    })
    .await;
    let stats = spool_drained(&worker).await;
    assert!(
        settled,
        "logs {} of {}, rejected {} of {}; stats {stats}",
        rows("logs"),
        good.len(),
        rows("logs_rejected"),
        bad.len()
    );

    // Every good row exactly once, no bad one.
    let stored = lines(
        &ch,
        &format!("SELECT message FROM {db}.logs ORDER BY message"),
    );
    assert_eq!(stored.len(), good.len(), "no duplicates");
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), good);

    // Every bad row once in the dead-letter table, with why and its record.
    let letters: Vec<Value> = lines(
        &ch,
        &format!(
            "SELECT toUInt32(time) AS time, table_name, frame, reason, code, error, record \
             FROM {db}.logs_rejected FORMAT JSONEachRow"
        ),
    )
    .iter()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect();
    let mut messages = BTreeSet::new();
    for letter in &letters {
        assert_eq!(letter["reason"], "constraint", "{letter}");
        assert_eq!(letter["code"], code, "{letter}");
        assert_eq!(letter["table_name"], format!("{db}.logs"));
        let error = letter["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("Code: {code}")), "{error}");
        assert!(!letter["frame"].as_str().unwrap().is_empty());
        let record: Value = serde_json::from_str(letter["record"].as_str().unwrap()).unwrap();
        assert_eq!(record["service"], "dlq");
        assert_eq!(record["level"], "warn");
        let message = record["message"].as_str().unwrap();
        let k: u64 = message.split(['/', ' ']).nth(1).unwrap().parse().unwrap();
        assert_eq!(record["timestamp"], format!("2024-05-01T12:00:00.{k:09}Z"));
        assert_eq!(record["attributes"]["k"], k.to_string());
        messages.insert(message.to_string());
    }
    assert_eq!(letters.len(), bad.len(), "no duplicates");
    assert_eq!(messages, bad);

    // Counted by reason; nothing quarantined, nothing left in the spool.
    let n = bad.len() as u64;
    assert_eq!(stats["rows_dead_lettered_constraint"], n, "{stats}");
    for other in ["type_mismatch", "too_large", "other"] {
        assert_eq!(stats[format!("rows_dead_lettered_{other}")], 0, "{stats}");
    }
    assert_eq!(stats["rows_dead_letter_file"], 0, "{stats}");
    assert_eq!(stats["spool"]["unacked_frames"], 0, "{stats}");
    assert_eq!(stats["spool"]["rejected_frames"], 0, "{stats}");
    assert_eq!(quarantined(&worker), Vec::<PathBuf>::new());
    let (status, _, metrics) = get(&client(), &format!("{}/metrics", worker.base))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    let family = "zero_logs_rows_dead_lettered_total{worker_id=";
    let line = metrics
        .lines()
        .find(|l| l.starts_with(family) && l.contains("reason=\"constraint\""))
        .unwrap_or_else(|| panic!("no constraint sample in {metrics}"));
    assert!(line.ends_with(&format!(" {n}")), "{line}");
    eprintln!(
        "{kind:?}: {} good rows stored once, {n} dead letters (code {code}), \
         {} INSERTs, {} failed attempts",
        good.len(),
        stats["inserts"],
        stats["insert_failures"]
    );
}

/// The dead-letter table is gone (dropped, and nobody recreates it): the bad rows go
/// to the spool's `quarantine/dead-letter.jsonl`, counted; the records there can be
/// sent again as they are once the table takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_dead_letter_table_falls_back_to_the_file() {
    let ch = Engine::start(EngineKind::Chdb).expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = Worker::start(&ch, &db, &[]).await;
    ch.query(&format!("DROP TABLE {db}.logs_rejected")).unwrap();
    refuse_poison(&ch, &db);

    post_all(&worker, vec![body("file", 10, &[2, 3, 9])]).await;
    let stored = eventually(Duration::from_secs(30), || count_rows(&ch, &db) >= 7).await;
    let stats = spool_drained(&worker).await;
    assert!(stored, "{} of 7 rows; stats {stats}", count_rows(&ch, &db));
    assert_eq!(stats["rows_dead_lettered_constraint"], 3, "{stats}");
    assert_eq!(stats["rows_dead_letter_file"], 3, "{stats}");
    assert_eq!(stats["spool"]["unacked_frames"], 0, "{stats}");
    assert_eq!(stats["spool"]["rejected_frames"], 0, "{stats}");

    let files = quarantined(&worker);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].file_name().unwrap(), "dead-letter.jsonl");
    let letters: Vec<Value> = std::fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let messages: Vec<&str> = letters
        .iter()
        .map(|l| l["record"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["file/2 poison", "file/3 poison", "file/9 poison"]
    );
    for letter in &letters {
        assert_eq!(
            (&letter["reason"], &letter["code"]),
            (&Value::from("constraint"), &Value::from(469))
        );
    }

    // Once the table takes them again, the records are re-sent as they are.
    ch.query(&format!("ALTER TABLE {db}.logs DROP CONSTRAINT no_poison"))
        .unwrap();
    let records: Vec<Value> = letters.iter().map(|l| l["record"].clone()).collect();
    post_all(&worker, vec![Value::from(records).to_string()]).await;
    assert_eq!(wait_rows(&ch, &db, 10, Duration::from_secs(30)).await, 10);
    let back = number(
        &ch,
        &format!(
            "SELECT count() FROM {db}.logs WHERE message LIKE '%poison' \
             AND attributes['k'] IN ('2', '3', '9')"
        ),
    );
    assert_eq!(back, 3);
}
