//! `ACK_MODE=spool` under faults, one worker process at a time (the multi-instance
//! cases under systemd are in `tests/system_spool.rs`): a `202` means "on disk", so a
//! kill -9, a ClickHouse outage, a full filesystem, a corrupt segment or a stopped
//! sibling never lose an acknowledged record. Real worker binary, real ClickHouse,
//! loopback only, every load bounded in requests and time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use zero_logs::spool::segment::{FrameHeader, HEADER_LEN, QUARANTINE_DIR};
use zero_logs::testing::ClickHouseServer;

/// One request's body: `n` records whose messages are `<tag>/<k>`, unique per request.
fn batch(tag: &str, n: usize) -> String {
    let records: Vec<String> = (0..n)
        .map(|k| {
            format!(
                r#"{{"service":"spool","level":"info","message":"{tag}/{k}","attributes":{{"k":{k}}}}}"#
            )
        })
        .collect();
    format!("[{}]", records.join(","))
}

/// What a bounded load saw: the tags of acknowledged requests, answers by status, and
/// the first body of each non-202 status.
#[derive(Debug, Default)]
struct Seen {
    acked: Vec<String>,
    /// Sent, but the connection broke before an answer: outcome unknown.
    unanswered: u64,
    statuses: BTreeMap<u16, u64>,
    first_body: BTreeMap<u16, String>,
}

impl Seen {
    fn acked_records(&self, per_request: usize) -> u64 {
        (self.acked.len() * per_request) as u64
    }
}

/// `conns` connections, each posting `per_request`-record batches at most
/// `max_requests` times, `pause` apart, until `stop`.
fn start_load(
    url: &str,
    conns: usize,
    per_request: usize,
    max_requests: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Seen>>, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = client();
    let tasks = (0..conns)
        .map(|conn| {
            let (client, url, seen, stop) =
                (client.clone(), url.to_string(), seen.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0..max_requests {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let tag = format!("c{conn}-{i}");
                    let reply = post(&client, &url, &[], batch(&tag, per_request)).await;
                    if !record(&seen, tag, reply) {
                        break;
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();
    (seen, tasks)
}

/// Counts one answer; `false` once the worker is gone.
fn record(seen: &Mutex<Seen>, tag: String, reply: Result<Reply, String>) -> bool {
    let mut seen = seen.lock().unwrap();
    match reply {
        Ok((status, _, body)) => {
            *seen.statuses.entry(status).or_default() += 1;
            if status == 202 {
                seen.acked.push(tag);
            } else {
                seen.first_body
                    .entry(status)
                    .or_insert_with(|| String::from_utf8_lossy(&body).into());
            }
            true
        }
        Err(_) => {
            // The worker is gone: this request's fate is unknown.
            seen.unanswered += 1;
            false
        }
    }
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.unwrap();
    }
}

/// Request tags stored (a tag is stored when its record 0 is) and the duplicate rows.
fn stored_tags(ch: &ClickHouseServer, db: &str) -> (BTreeSet<String>, u64) {
    let tags = ch
        .query(&format!(
            "SELECT DISTINCT message FROM {db}.logs WHERE message LIKE '%/0'"
        ))
        .unwrap()
        .lines()
        .map(|m| m.trim_end_matches("/0").to_string())
        .collect();
    let dups: u64 = ch
        .query(&format!(
            "SELECT count() - uniqExact(message) FROM {db}.logs"
        ))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (tags, dups)
}

fn assert_all_acked_stored(ch: &ClickHouseServer, db: &str, acked: &[String]) -> u64 {
    let (tags, dups) = stored_tags(ch, db);
    let missing: Vec<&String> = acked.iter().filter(|t| !tags.contains(*t)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged requests missing from ClickHouse, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    dups
}

fn spool_stats(stats: &serde_json::Value) -> &serde_json::Value {
    &stats["spool"]
}

/// Segment files of one instance's spool, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "zls"))
                .collect()
        })
        .unwrap_or_default();
    segs.sort();
    segs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_loses_no_acknowledged_record() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_str().unwrap();
    let env = [("SPOOL_DIR", spool_dir), ("BATCH_MAX_AGE", "100")];
    let mut worker = Worker::start(&ch, &db, &env).await;
    let url = format!("{}/api/v1/logs", worker.base);
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, tasks) = start_load(&url, 16, 20, 5_000, Duration::ZERO, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = seen.lock().unwrap().acked.len();
    assert!(before > 0, "nothing acknowledged before the kill");
    let mut child = worker.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL, by PID
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    finish(tasks).await;

    let restarted = Instant::now();
    let worker = Worker::start(&ch, &db, &env).await;
    // Every load task has ended: take the tally out of the mutex.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let acked = seen.acked_records(20);
    let stored = wait_rows(&ch, &db, acked, Duration::from_secs(30)).await;
    let dups = assert_all_acked_stored(&ch, &db, &seen.acked);
    let stats = worker.stats().await;
    eprintln!(
        "kill -9: acknowledged {acked} records in {} requests, {} requests unanswered at the kill, \
         stored {stored} rows ({dups} duplicate rows), replayed frames {}, back and caught up in {:?}",
        seen.acked.len(),
        seen.unanswered,
        spool_stats(&stats)["replayed_frames"],
        restarted.elapsed()
    );
    // Duplicates are possible, never required: frames whose INSERT committed after the
    // last persisted ack watermark replay (at-least-once; see docs/SPOOL.md). They are
    // bounded by what was in flight: BATCH_MAX_INFLIGHT_INSERTS × BATCH_MAX_ROWS.
    assert!(
        dups <= 2 * 100_000,
        "{dups} duplicates exceed the in-flight bound"
    );
    assert_eq!(seen.statuses.keys().copied().collect::<Vec<_>>(), vec![202]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_30s_spools_until_the_cap_then_429_then_drains() {
    let mut ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let cap: u64 = 4 << 20;
    let worker = Worker::start(
        &ch,
        &db,
        &[
            ("SPOOL_MAX_BYTES", "4MiB"),
            ("SPOOL_SEGMENT_BYTES", "256KiB"),
        ],
    )
    .await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    ch.stop();
    let outage = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // ~4 × 40 requests/s of 50 records: the 4 MiB cap is reached within seconds.
    let (seen, tasks) = start_load(&url, 4, 50, 2_000, Duration::from_millis(25), stop.clone());
    let mut peak_rss = 0u64;
    let mut health = BTreeMap::<String, u64>::new();
    while outage.elapsed() < Duration::from_secs(30) {
        let stats = worker.stats().await;
        peak_rss = peak_rss.max(stats["rss_bytes"].as_u64().unwrap());
        let (status, _, body) = get(&client, &format!("{}/health", worker.base))
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        *health
            .entry(format!(
                "{status} {}",
                body["status"].as_str().unwrap_or("?")
            ))
            .or_default() += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    finish(tasks).await;
    let stats = worker.stats().await;
    let full_at = spool_stats(&stats)["bytes"].as_u64().unwrap();
    eprintln!(
        "outage 30 s: answers {:?}, health {health:?}, spool {full_at} of {cap} bytes, peak RSS {} MiB",
        seen.lock().unwrap().statuses,
        peak_rss >> 20
    );
    {
        let seen = seen.lock().unwrap();
        let statuses: Vec<u16> = seen.statuses.keys().copied().collect();
        assert_eq!(statuses, vec![202, 429], "only 202 then 429: {seen:?}");
        // The 429 came from the cap, not from anything else.
        let refusal = &seen.first_body[&429];
        assert!(refusal.contains("spool is full"), "{refusal}");
        assert!(
            full_at + (64 << 10) >= cap,
            "429 while the spool held only {full_at} of {cap} bytes"
        );
    }
    assert!(health.contains_key("200 degraded"), "{health:?}");
    assert!(health.contains_key("503 unavailable"), "{health:?}");
    // Stated bound: the spool's memory tail is what grows; 4 MiB here plus the base.
    assert!(peak_rss < 150 << 20, "peak RSS {peak_rss} bytes");

    ch.restart().expect("restart ClickHouse");
    let drained = Instant::now();
    let acked = seen.lock().unwrap().acked_records(50);
    let stored = wait_rows(&ch, &db, acked, Duration::from_secs(60)).await;
    let dups = assert_all_acked_stored(&ch, &db, &seen.lock().unwrap().acked);
    assert_eq!((stored, dups), (acked, 0), "exactly the acknowledged rows");
    eprintln!(
        "after the outage: {acked} acknowledged records stored in {:?}",
        drained.elapsed()
    );
    // The spool empties (segments deleted) and requests are welcome again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = worker.stats().await;
        let s = spool_stats(&stats);
        if s["unacked_frames"] == 0 && s["bytes"].as_u64().unwrap() < cap / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "spool did not drain: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, _) = post(&client, &url, &[], batch("after", 5)).await.unwrap();
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_gives_429_no_crash_and_recovers() {
    let mut ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    // The worker runs in its own mount namespace with a 1 MiB tmpfs as its spool.
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount -t tmpfs -o size=1m zero-logs-test "$SPOOL_DIR" && exec "$@""#,
        "sh",
    ];
    let mut worker =
        Worker::start_wrapped(&ch, &db, &[("SPOOL_SEGMENT_BYTES", "128KiB")], &wrapper).await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    ch.stop();
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..1_000 {
        let tag = format!("fill-{i}");
        let (status, _, body) = post(&client, &url, &[], batch(&tag, 50)).await.unwrap();
        match status {
            202 => acked.push(tag),
            429 => {
                refusal = Some(String::from_utf8_lossy(&body).to_string());
                break;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    let refusal = refusal.expect("no 429 although the filesystem is 1 MiB");
    assert!(refusal.contains("no space left"), "{refusal}");
    let stats = worker.stats().await;
    let s = spool_stats(&stats);
    eprintln!(
        "tmpfs full after {} acknowledged requests: {refusal}; spool {s}",
        acked.len()
    );
    assert!(s["no_space_errors"].as_u64().unwrap() >= 1, "{s}");
    // Still serving: another request is refused the same way, health answers.
    let (status, _, _) = post(&client, &url, &[], batch("again", 50)).await.unwrap();
    assert_eq!(status, 429);

    ch.restart().expect("restart ClickHouse");
    let expected = (acked.len() * 50) as u64;
    let stored = wait_rows(&ch, &db, expected, Duration::from_secs(60)).await;
    assert_eq!(stored, expected);
    // Space comes back once delivered segments are deleted.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = Vec::new();
    while after.len() < 10 {
        let tag = format!("after-{}", after.len());
        let (status, _, body) = post(&client, &url, &[], batch(&tag, 50)).await.unwrap();
        if status == 202 {
            after.push(tag);
        } else {
            assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
            assert!(
                Instant::now() < deadline,
                "no space even after the spool drained"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    acked.extend(after);
    let expected = (acked.len() * 50) as u64;
    assert_eq!(
        wait_rows(&ch, &db, expected, Duration::from_secs(30)).await,
        expected
    );
    assert_eq!(assert_all_acked_stored(&ch, &db, &acked), 0);
    let stats = worker.stats().await;
    assert_eq!(
        spool_stats(&stats)["quarantined_frames"],
        0,
        "no corruption"
    );
    let status = worker.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_segment_delivers_its_valid_prefix_and_quarantines_the_rest() {
    let mut ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let spool = tempfile::tempdir().unwrap();
    let env = [("SPOOL_DIR", spool.path().to_str().unwrap())];
    let mut worker = Worker::start(&ch, &db, &env).await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    ch.stop();
    // 40 requests of 10 records: 40 frames, none delivered.
    for i in 0..40 {
        let (status, _, _) = post(&client, &url, &[], batch(&format!("f{i:02}"), 10))
            .await
            .unwrap();
        assert_eq!(status, 202);
    }
    let mut child = worker.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    // Flip one payload byte of the 21st frame.
    let dir = spool.path().join("1");
    let segs = segments(&dir);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    let mut offset = 0usize;
    for _ in 0..20 {
        let header: &[u8; HEADER_LEN] = bytes[offset..offset + HEADER_LEN].try_into().unwrap();
        let header = FrameHeader::decode(header).expect("a valid frame");
        offset += header.frame_len() as usize;
    }
    bytes[offset + HEADER_LEN + 7] ^= 0xff;
    std::fs::write(&segs[0], &bytes).unwrap();

    ch.restart().expect("restart ClickHouse");
    let worker = Worker::start(&ch, &db, &env).await;
    let stored = wait_rows(&ch, &db, 200, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tags, dups) = stored_tags(&ch, &db);
    let want: BTreeSet<String> = (0..20).map(|i| format!("f{i:02}")).collect();
    assert_eq!((stored, dups), (200, 0));
    assert_eq!(tags, want, "exactly the frames before the corrupt one");
    let quarantined: Vec<_> = std::fs::read_dir(dir.join(QUARANTINE_DIR))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(!quarantined.is_empty(), "nothing in quarantine/");
    let stats = worker.stats().await;
    let s = spool_stats(&stats);
    eprintln!("corrupt frame 21 of 40: stored {stored}, quarantine {quarantined:?}, spool {s}");
    assert!(s["quarantined_frames"].as_u64().unwrap() >= 1, "{s}");
    // And it serves.
    let (status, _, _) = post(
        &client,
        &format!("{}/api/v1/logs", worker.base),
        &[],
        batch("after", 10),
    )
    .await
    .unwrap();
    assert_eq!(status, 202);
    assert_eq!(wait_rows(&ch, &db, 210, Duration::from_secs(10)).await, 210);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_siblings_spool_is_adopted_and_delivered() {
    let mut ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let root = tempfile::tempdir().unwrap();
    let root_str = root.path().to_str().unwrap();
    let common_env = [
        ("SPOOL_DIR", root_str),
        ("SPOOL_ADOPT_IDLE", "1000"),
        ("SPOOL_ADOPT_INTERVAL", "300"),
        ("GRACEFUL_SHUTDOWN_TIMEOUT", "30000"),
    ];
    let with_id = |id: &'static str| {
        let mut env = common_env.to_vec();
        env.push(("WORKER_ID", id));
        env
    };
    let survivor = Worker::start(&ch, &db, &with_id("1")).await;
    let mut leaving = Worker::start(&ch, &db, &with_id("2")).await;
    let client = client();
    ch.stop();
    let mut acked = Vec::new();
    for i in 0..20 {
        let tag = format!("orphan-{i}");
        let (status, _, _) = post(
            &client,
            &format!("{}/api/v1/logs", leaving.base),
            &[],
            batch(&tag, 10),
        )
        .await
        .unwrap();
        assert_eq!(status, 202);
        acked.push(tag);
    }
    // Scale-down while ClickHouse is down: the drain gives up once ClickHouse has been
    // down for a second instead of retrying for the whole 30 s; the spool stays.
    let stopping = Instant::now();
    let status = tokio::task::spawn_blocking(move || leaving.terminate())
        .await
        .unwrap();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}");
    eprintln!("stop of instance 2 with ClickHouse down took {took:?}");
    assert!(
        took < Duration::from_secs(8),
        "a stop with ClickHouse down waited {took:?} (GRACEFUL_SHUTDOWN_TIMEOUT is 30 s)"
    );
    let orphan = root.path().join("2");
    assert!(!segments(&orphan).is_empty(), "instance 2 left no spool");

    ch.restart().expect("restart ClickHouse");
    let back = Instant::now();
    let stored = wait_rows(&ch, &db, 200, Duration::from_secs(30)).await;
    let dups = assert_all_acked_stored(&ch, &db, &acked);
    assert_eq!(
        (stored, dups),
        (200, 0),
        "each orphaned record exactly once"
    );
    eprintln!(
        "orphan of instance 2: 200 records delivered by instance 1 {:?} after ClickHouse returned",
        back.elapsed()
    );
    // The adopter removes the orphan once its frames are durable in its own spool,
    // which can trail the delivery by a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = survivor.stats().await;
        let s = spool_stats(&stats).clone();
        let leftovers: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "1")
            .collect();
        if s["adopted_spools"] == 1 && leftovers.is_empty() {
            assert_eq!(s["adopted_frames"], 20, "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphan not adopted and removed: {s} {leftovers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!orphan.exists());
}
