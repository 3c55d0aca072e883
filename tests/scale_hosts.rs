//! Several zero-logs hosts behind one address (issue 22 item 4, docs/SCALE.md):
//! two hosts share a load through HAProxy, one of them dies with records in its
//! spool, and after its restart every acknowledged record is in ClickHouse once; or
//! it never returns and its spool directory, moved onto the other host, is adopted
//! there.
//!
//! Topology (all on this machine; traffic only on loopback and the test's veths):
//!
//! ```text
//!  test client ──HTTP──> 127.0.0.1:P  haproxy `ingest` (roundrobin, GET /health checks)
//!                                       │                         │
//!                        10.a.b.2:8080 (netns A)      10.a.b.6:8080 (netns B)
//!                        zero-logs, spool A            zero-logs, spool B
//!                                       │                         │
//!                        10.a.b.1:C  haproxy `ch_a`   10.a.b.5:C  haproxy `ch_b`
//!                                       └──── TCP ──> 127.0.0.1:C ClickHouse 18.16
//! ```
//!
//! A namespace cannot reach the test's loopback, so each host reaches the private
//! ClickHouse through a TCP frontend of the same haproxy on the test side of its
//! veth; putting `ch_b` in maintenance cuts host B off ClickHouse alone.
//!
//! Needs root (network namespaces) and Debian's `haproxy` (`scripts/install-deps`);
//! both missing are loud failures. Load is bounded in requests and time.

mod common;
mod hosts;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hosts::Rig;
use tokio::time::Instant;
use zero_logs::testing::ClickHouseServer;

/// Client connections posting at once (each has at most one request in flight).
const CONNS: usize = 8;
/// Records per request.
const PER_REQUEST: usize = 20;

/// One request's records; each message, `<tag>-<k>`, names its record.
fn body(tag: &str) -> String {
    let records: Vec<String> = (0..PER_REQUEST)
        .map(|k| format!(r#"{{"service":"scale","level":"info","message":"{tag}-{k}"}}"#))
        .collect();
    format!("[{}]", records.join(","))
}

/// What the clients saw: tags of the requests acknowledged (`202`), and the
/// requests that failed. A failed request's records may or may not be stored.
#[derive(Default)]
struct Tally {
    acked: Vec<String>,
    failed: Vec<Failure>,
}

#[derive(Debug)]
struct Failure {
    tag: String,
    why: String,
    /// When the request was sent.
    sent: Instant,
}

impl Tally {
    fn acked_records(&self) -> u64 {
        (self.acked.len() * PER_REQUEST) as u64
    }

    fn merge(&mut self, other: Tally) {
        self.acked.extend(other.acked);
        self.failed.extend(other.failed);
    }
}

/// `CONNS` connections each posting up to `per_conn` requests to `url`, until
/// `stop` is set; `pause` between requests keeps a long phase light on the CPU.
async fn load(
    client: HttpClient,
    url: String,
    phase: &'static str,
    per_conn: usize,
    stop: Arc<AtomicBool>,
    pause: Duration,
) -> Tally {
    let mut tasks = Vec::new();
    for conn in 0..CONNS {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for i in 0..per_conn {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let tag = format!("{phase}-c{conn}-{i}");
                let sent = Instant::now();
                let why = match post(&client, &url, &[], body(&tag)).await {
                    Ok((202, _, _)) => {
                        tally.acked.push(tag);
                        continue;
                    }
                    Ok((status, _, body)) => {
                        format!("{status}: {}", String::from_utf8_lossy(&body).trim())
                    }
                    Err(err) => err,
                };
                tally.failed.push(Failure { tag, why, sent });
                tokio::time::sleep(pause).await;
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        all.merge(t.await.unwrap());
    }
    all
}

/// Every message in the table with how often it is stored.
fn stored(ch: &ClickHouseServer, db: &str) -> HashMap<String, u64> {
    ch.query(&format!(
        "SELECT message, count() FROM {db}.logs GROUP BY message"
    ))
    .unwrap()
    .lines()
    .map(|l| {
        let (m, n) = l.split_once('\t').unwrap();
        (m.to_string(), n.parse().unwrap())
    })
    .collect()
}

fn records(tags: impl IntoIterator<Item = impl AsRef<str>>) -> HashSet<String> {
    tags.into_iter()
        .flat_map(|t| (0..PER_REQUEST).map(move |k| format!("{}-{k}", t.as_ref())))
        .collect()
}

/// Checks ClickHouse against what the clients saw: every acknowledged record stored
/// exactly once, a failed request's records once or not at all, nothing else.
/// Returns the rows stored and how many of them came from failed requests.
fn assert_stored_once(ch: &ClickHouseServer, db: &str, tally: &Tally) -> (u64, u64) {
    let stored = stored(ch, db);
    let acked = records(&tally.acked);
    let failed = records(tally.failed.iter().map(|f| &f.tag));
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "records stored more than once: {twice:?}");
    let lost: Vec<_> = acked
        .iter()
        .filter(|m| !stored.contains_key(*m))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "acknowledged records not stored: {lost:?}");
    let strays: Vec<_> = stored
        .keys()
        .filter(|m| !acked.contains(*m) && !failed.contains(*m))
        .take(5)
        .collect();
    assert!(strays.is_empty(), "stored records nobody sent: {strays:?}");
    let failed_stored = failed.iter().filter(|m| stored.contains_key(*m)).count() as u64;
    let total = count_rows(ch, db);
    assert_eq!(total, acked.len() as u64 + failed_stored);
    (total, failed_stored)
}

/// Polls `f` until it holds, at most `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_the_load_and_a_dead_hosts_spool_lands_after_restart() {
    let started = Instant::now();
    let rig = Rig::start();
    let (ch, db) = (&rig.ch, rig.db.as_str());
    let a = rig.worker("a", &[]).await;
    let mut b = rig.worker("b", &[]).await;
    rig.wait_in_rotation("a", true);
    rig.wait_in_rotation("b", true);
    let set_up = started.elapsed();

    let client = client();
    let url = rig.ingest_url();
    let never = Arc::new(AtomicBool::new(false));

    // 1. Both hosts take a share; everything acknowledged is stored, nothing fails.
    let phase = Instant::now();
    let mut all = load(
        client.clone(),
        url.clone(),
        "p1",
        40,
        never.clone(),
        Duration::ZERO,
    )
    .await;
    let p1_time = phase.elapsed();
    let p1_records = all.acked_records();
    assert!(
        all.failed.is_empty(),
        "failed through the balancer: {:?}",
        &all.failed[..all.failed.len().min(5)]
    );
    let (a1, b1) = (a.accepted().await, b.accepted().await);
    assert!(a1 > 0 && b1 > 0, "a host got no records: A {a1}, B {b1}");
    assert_eq!(a1 + b1, all.acked_records());
    let rows = wait_rows(ch, db, all.acked_records(), Duration::from_secs(20)).await;
    assert_eq!(
        rows,
        all.acked_records(),
        "stored != acknowledged after phase 1"
    );

    // 2. B loses ClickHouse (no INSERT of it is in flight: all its rows are stored),
    // keeps acknowledging into its spool, and dies under load.
    tokio::task::block_in_place(|| rig.lb.block_clickhouse("b"));
    let stop = Arc::new(AtomicBool::new(false));
    let load2 = tokio::spawn(load(
        client.clone(),
        url.clone(),
        "p2",
        5000,
        stop.clone(),
        Duration::from_millis(2),
    ));
    // Degraded is still healthy for the balancer (200, not 503): B keeps taking
    // requests into its spool, which is what the spool is for.
    let cut = Instant::now();
    let health_url = format!("{}/health", b.base);
    until(
        "B's /health: 200 degraded",
        Duration::from_secs(15),
        || async {
            let (status, _, body) = get(&client, &health_url).await.unwrap();
            assert_eq!(
                status, 200,
                "B's /health while cut off ClickHouse: {body:?}"
            );
            String::from_utf8_lossy(&body).contains("degraded")
        },
    )
    .await;
    let degraded_after = cut.elapsed();
    until(
        "B spooling records it cannot deliver",
        Duration::from_secs(15),
        || async { b.unacked_frames().await >= 10 },
    )
    .await;
    let b_spooled = b.unacked_frames().await;
    let a_before_kill = a.accepted().await;
    let killed = Instant::now();
    b.kill();
    let dead = Instant::now();
    let out_after = rig.wait_in_rotation("b", false);
    let a_at_out = a.accepted().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a_after = a.accepted().await;
    stop.store(true, Ordering::Relaxed);
    let p2 = load2.await.unwrap();
    let since_kill = killed.elapsed();
    assert!(
        a_after > a_at_out,
        "A accepted nothing in the second after B was taken out ({a_at_out} → {a_after})"
    );
    // Only a request B had taken when it died can fail (no answer, and not retried:
    // B may have spooled it), so none sent after it was dead, and at most one per
    // connection. Later ones find B's port closed, and haproxy retries them on A.
    let p2_failed = p2.failed.len();
    let p2_why = p2.failed.first().map(|f| f.why.clone()).unwrap_or_default();
    let late: Vec<_> = p2.failed.iter().filter(|f| f.sent >= dead).collect();
    assert!(
        late.is_empty(),
        "requests sent after B was dead failed: {late:?}"
    );
    assert!(
        p2_failed <= CONNS,
        "{p2_failed} requests failed around B's death, more than the {CONNS} in flight: {:?}",
        &p2.failed[..p2_failed.min(5)]
    );
    all.merge(p2);

    // What B acknowledged but could not deliver stays on its disk while it is down.
    until(
        "A delivering its spool",
        Duration::from_secs(20),
        || async { a.unacked_frames().await == 0 },
    )
    .await;
    let acked = records(&all.acked);
    let before_restart = stored(ch, db);
    let on_b_disk = acked
        .iter()
        .filter(|m| !before_restart.contains_key(*m))
        .count();
    assert!(
        on_b_disk > 0,
        "no acknowledged record was missing while B was down"
    );

    // 3. B returns on the same spool and delivers it; it is back in rotation.
    tokio::task::block_in_place(|| rig.lb.unblock_clickhouse("b"));
    let restarted = Instant::now();
    let b = rig.worker("b", &[]).await;
    let back_in = rig.wait_in_rotation("b", true);
    let replayed = b.stats().await["spool"]["replayed_frames"]
        .as_u64()
        .unwrap();
    assert!(replayed > 0, "B replayed nothing from its spool");
    let expected = all.acked_records();
    wait_rows(ch, db, expected, Duration::from_secs(30)).await;
    let delivered_after = restarted.elapsed();
    let p3 = load(client.clone(), url.clone(), "p3", 10, never, Duration::ZERO).await;
    assert!(
        p3.failed.is_empty(),
        "failed after B returned: {:?}",
        p3.failed
    );
    let b3 = b.accepted().await;
    assert!(b3 > 0, "B got no requests after it returned");
    all.merge(p3);
    until(
        "A and B delivering their spools",
        Duration::from_secs(20),
        || async { a.unacked_frames().await == 0 && b.unacked_frames().await == 0 },
    )
    .await;

    let (total, failed_stored) = assert_stored_once(ch, db, &all);

    eprintln!(
        "scale_hosts: set-up {set_up:.1?}; phase 1 {} records in {p1_time:.1?} (A {a1}, B {b1}), \
         0 failed; B cut off ClickHouse: /health 200 degraded after {degraded_after:.1?}, SIGKILL with \
         {b_spooled} frames unconfirmed: \
         out of rotation after {out_after:.0?}, {p2_failed} of the phase's requests failed \
         (first: {p2_why}), \
         A accepted {} records in the {since_kill:.1?} after the kill; {on_b_disk} acknowledged \
         records waited on B's disk; B back in rotation {back_in:.0?} after its restart, \
         {replayed} frames replayed, all stored {delivered_after:.1?} after the restart; \
         phase 3: B took {b3}; total {total} stored = {} acknowledged + {failed_stored} of \
         {} failed-request records, none twice; whole test {:.1?}",
        p1_records,
        a_after - a_before_kill,
        all.acked_records(),
        all.failed.len() * PER_REQUEST,
        started.elapsed()
    );
}

/// A host that does not come back: its spool directory, moved onto a running host
/// (the disk moved, or the files copied off it), is adopted there like the spool of
/// a scaled-down instance, and what it held is stored once. Adoption never looks
/// beyond a host's own `SPOOL_DIR`: this move is the operator's (docs/SCALE.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hosts_spool_moved_to_another_host_is_adopted_there() {
    let started = Instant::now();
    let rig = Rig::start();
    let (ch, db) = (&rig.ch, rig.db.as_str());
    // Short adoption delays, so the test need not wait the default 30 s.
    let a = rig
        .worker(
            "a",
            &[("SPOOL_ADOPT_IDLE", "300"), ("SPOOL_ADOPT_INTERVAL", "100")],
        )
        .await;
    let mut b = rig.worker("b", &[]).await;
    rig.wait_in_rotation("a", true);
    rig.wait_in_rotation("b", true);

    // B never reaches ClickHouse (cut off before any traffic: no INSERT of it can
    // have committed), so all it acknowledges stays in its spool; then it dies.
    tokio::task::block_in_place(|| rig.lb.block_clickhouse("b"));
    let never = Arc::new(AtomicBool::new(false));
    let sent = load(client(), rig.ingest_url(), "r", 20, never, Duration::ZERO).await;
    assert!(sent.failed.is_empty(), "failed: {:?}", sent.failed);
    let b_took = b.accepted().await;
    assert!(b_took > 0, "B got no requests");
    b.kill();
    rig.wait_in_rotation("b", false);
    until(
        "A delivering its share",
        Duration::from_secs(20),
        || async { a.unacked_frames().await == 0 },
    )
    .await;
    let acked = records(&sent.acked);
    let missing = acked.len() as u64 - count_rows(ch, db);
    assert_eq!(missing, b_took, "not exactly B's records were missing");

    // The move: B's instance directory into A's SPOOL_DIR, under a name of its own.
    let moved = Instant::now();
    std::fs::rename(
        rig.spool_root("b").join("b"),
        rig.spool_root("a").join("from-host-b"),
    )
    .expect("move B's spool directory");
    let rows = wait_rows(ch, db, acked.len() as u64, Duration::from_secs(20)).await;
    let delivered_after = moved.elapsed();
    let stats = a.stats().await;
    let adopted = stats["spool"]["adopted_spools"].as_u64().unwrap();
    assert_eq!(adopted, 1, "{stats}");

    assert_eq!(rows, acked.len() as u64);
    assert_stored_once(ch, db, &sent);
    assert!(
        !rig.spool_root("a").join("from-host-b").exists(),
        "the adopted directory is still there"
    );
    eprintln!(
        "scale_hosts (adoption): {} records acknowledged, {b_took} of them by B, which died \
         with them in its spool; moved to A's SPOOL_DIR, adopted and all stored \
         {delivered_after:.1?} later, none twice; whole test {:.1?}",
        acked.len(),
        started.elapsed()
    );
}
