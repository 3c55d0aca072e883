//! Idempotent replay on ClickHouse ≥ 22.2 (issue 19 item 3): the real worker binary,
//! on the 26.x engine, is killed with SIGKILL again and again under load and restarted
//! on the same spool. Frames whose INSERT ClickHouse committed but whose acknowledgement
//! was not yet persisted replay at every start; the INSERTs that carry them must repeat
//! the deduplication token of the INSERT that committed them, so each record is stored
//! once. Loopback only; load, kills and time are bounded.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use zero_logs::testing::{ColumnsSql, Engine, EngineKind};

/// Kills in one run.
const KILLS: usize = 20;
/// Connections posting at once.
const CONNS: usize = 4;
/// Records per request.
const PER_REQUEST: usize = 5;

/// One request's records: ids `<tag>-<k>`, in the message and as attribute `id`.
fn body(tag: &str) -> String {
    let records: Vec<String> = (0..PER_REQUEST)
        .map(|k| {
            format!(
                r#"{{"service":"dedup","level":"info","message":"{tag}-{k}","attributes":{{"id":"{tag}-{k}"}}}}"#
            )
        })
        .collect();
    format!("[{}]", records.join(","))
}

/// What the clients learnt: record ids acknowledged (`202`), and ids sent whose answer
/// never came (the worker died first: stored or not, both are correct).
#[derive(Debug, Default)]
struct Tally {
    acked: BTreeSet<String>,
    unanswered: BTreeSet<String>,
    other_statuses: Vec<u16>,
}

impl Tally {
    fn add(&mut self, tag: &str, reply: &Result<Reply, String>) -> bool {
        let ids = (0..PER_REQUEST).map(|k| format!("{tag}-{k}"));
        match reply {
            Ok((202, _, _)) => self.acked.extend(ids),
            Ok((status, _, _)) => self.other_statuses.push(*status),
            Err(_) => {
                self.unanswered.extend(ids);
                return false;
            }
        }
        true
    }
}

/// `CONNS` closed-loop connections until `stop` or the worker is gone.
fn start_load(
    url: &str,
    round: usize,
    tally: &Arc<Mutex<Tally>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = client();
    (0..CONNS)
        .map(|conn| {
            let (client, url, tally, stop) =
                (client.clone(), url.to_string(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let tag = format!("r{round}c{conn}i{i}");
                    let reply = post(&client, &url, &[], body(&tag)).await;
                    if !tally.lock().unwrap().add(&tag, &reply) {
                        break;
                    }
                }
            })
        })
        .collect()
}

/// The `inserts` counter of the worker's `/stats`.
async fn inserts(client: &HttpClient, base: &str) -> Option<u64> {
    let (_, _, body) = get(client, &format!("{base}/stats")).await.ok()?;
    let stats: serde_json::Value = serde_json::from_slice(&body).ok()?;
    stats["inserts"].as_u64()
}

/// Waits until an INSERT completes (the `inserts` counter moves), so that the kill
/// lands between ClickHouse's commit and the spool's persisted acknowledgement.
async fn until_an_insert_completes(client: &HttpClient, base: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let Some(before) = inserts(client, base).await else {
        return;
    };
    while Instant::now() < deadline {
        if inserts(client, base).await.is_some_and(|n| n > before) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Stored rows, distinct ids, and the ids themselves.
fn stored(ch: &Engine, db: &str) -> (u64, u64, BTreeSet<String>) {
    let cols = ColumnsSql::of_table(ch, db, "logs");
    let id = format!(
        "arrayElement({}, indexOf({}, 'id'))",
        cols.values, cols.keys
    );
    let counts = ch
        .query(&format!("SELECT count(), uniqExact({id}) FROM {db}.logs"))
        .unwrap();
    let mut counts = counts.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    let (rows, unique) = (counts.next().unwrap(), counts.next().unwrap());
    let ids = ch
        .query(&format!("SELECT DISTINCT {id} FROM {db}.logs"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (rows, unique, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_insert_and_ack_stores_every_record_once_on_26x() {
    let started = Instant::now();
    let ch = Engine::start(EngineKind::Chdb).expect("start the 26.x engine");
    let db = ch.fresh_database();
    let spool = tempfile::tempdir().unwrap();
    // Small, age-cut INSERTs (light load): the cut a replay cannot guess.
    let env = [
        ("SPOOL_DIR", spool.path().to_str().unwrap()),
        ("BATCH_MAX_AGE", "20"),
    ];
    let client = client();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut replayed = 0u64;
    for round in 0..KILLS {
        let mut worker = Worker::start(&ch, &db, &env).await;
        let stats = worker.stats().await;
        replayed += stats["spool"]["replayed_frames"].as_u64().unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{}/api/v1/logs", worker.base);
        let tasks = start_load(&url, round, &tally, &stop);
        // Varied moments: some after a pseudo-random stretch of load, some right after
        // an INSERT completed.
        let load_ms = 150 + (round as u64 * 7919) % 400;
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        if round % 2 == 1 {
            until_an_insert_completes(&client, &worker.base, Duration::from_millis(500)).await;
        }
        let mut child = worker.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL, by PID
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
    }

    // A last start delivers what the spool still holds; then stop it cleanly.
    let mut worker = Worker::start(&ch, &db, &env).await;
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let acked = tally.acked.len() as u64;
    let drained = wait_rows(&ch, &db, acked, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = worker.stats().await;
        if stats["spool"]["unacked_frames"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "spool not drained: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(worker.terminate().success());
    let (rows, unique, ids) = stored(&ch, &db);
    eprintln!(
        "{KILLS} kills: {acked} records acknowledged, {} unanswered at the kills, {rows} rows \
         stored ({drained} when the acknowledged count was reached), uniqExact(id) {unique}, \
         {} duplicate rows, {replayed} frames replayed, {:?} in all",
        tally.unanswered.len(),
        rows - unique,
        started.elapsed()
    );
    assert!(
        tally.other_statuses.is_empty(),
        "{:?}",
        tally.other_statuses
    );
    assert!(
        replayed > 0,
        "no kill left a frame to replay: the test proved nothing"
    );
    let lost: Vec<&String> = tally.acked.difference(&ids).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // Whatever else is stored was sent and never answered (the worker died after the
    // spool took it): at-least-once for those, never a record nobody sent.
    let extra: Vec<&String> = ids
        .difference(&tally.acked)
        .filter(|id| !tally.unanswered.contains(*id))
        .collect();
    assert!(extra.is_empty(), "rows nobody sent: {extra:?}");
    assert_eq!(rows, unique, "{} records stored twice", rows - unique);
    let unanswered_stored = ids.intersection(&tally.unanswered).count() as u64;
    assert_eq!(
        rows,
        acked + unanswered_stored,
        "count() = acknowledged + stored unanswered"
    );
}
