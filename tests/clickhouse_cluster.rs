//! `CLICKHOUSE_CLUSTER` (issue 22 item 2) on two private ClickHouse 18.16 servers, the
//! two shards of one cluster, and a private ZooKeeper for `ON CLUSTER` DDL: a real
//! `zero-logs serve` creates the per-shard and the `Distributed` tables on both servers,
//! inserts through the `Distributed` table, and every acknowledged record is stored
//! exactly once, spread over both shards; a restart finds the tables and runs no DDL;
//! a restart after SIGKILL replays without losing anything. And the misconfigurations
//! (unknown cluster, no ZooKeeper) stop the worker at start with the fix, while tables
//! created by hand on each shard work without ZooKeeper. Loopback only, bounded.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use zero_logs::testing::{ClickHouseCluster, ClickHouseServer};

const CLUSTER: &str = "zl_pair";
const PER_REQUEST: usize = 50;

/// One request's records, messages `<tag>-<k>`, over a few services.
fn body(tag: &str) -> String {
    let records: Vec<String> = (0..PER_REQUEST)
        .map(|k| {
            format!(
                r#"{{"service":"svc{}","level":"info","message":"{tag}-{k}"}}"#,
                k % 3
            )
        })
        .collect();
    format!("[{}]", records.join(","))
}

/// Posts `requests` requests of [`PER_REQUEST`] records tagged `tag-<i>`; returns how
/// many records were acknowledged (`202`). Every request must be answered.
async fn send(worker: &Worker, tag: &str, requests: usize) -> u64 {
    let client = client();
    let mut acked = 0;
    for i in 0..requests {
        let url = format!("{}/api/v1/logs", worker.base);
        let reply = post(
            &client,
            &url,
            &[("content-type", "application/json")],
            body(&format!("{tag}-{i}")),
        )
        .await;
        match reply {
            Ok((202, _, _)) => acked += PER_REQUEST as u64,
            Ok((status, _, body)) => panic!("request {tag}-{i}: HTTP {status}: {body:?}"),
            Err(error) => panic!("request {tag}-{i}: {error}"),
        }
    }
    acked
}

fn number(server: &ClickHouseServer, sql: &str) -> u64 {
    let text = server.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{sql}: {text:?}"))
}

/// Rows of each shard's local table, and of the Distributed table seen from shard 0.
fn counts(cluster: &ClickHouseCluster, db: &str) -> (Vec<u64>, u64) {
    let local = cluster
        .shards()
        .iter()
        .map(|s| number(s, &format!("SELECT count() FROM {db}.logs_local")))
        .collect();
    (
        local,
        number(cluster.shard(0), &format!("SELECT count() FROM {db}.logs")),
    )
}

/// Polls until the Distributed table and the shards' tables hold `expected` rows (or
/// 30 s pass); more rows show as such.
async fn wait_total(cluster: &ClickHouseCluster, db: &str, expected: u64) -> (Vec<u64>, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (local, total) = counts(cluster, db);
        // Spooled records reach ClickHouse after their 202: wait for both views.
        let settled = total >= expected && local.iter().sum::<u64>() >= expected;
        if settled || Instant::now() >= deadline {
            return (local, total);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `ON CLUSTER` tasks ClickHouse put in ZooKeeper's DDL queue so far.
fn ddl_tasks(cluster: &ClickHouseCluster) -> u64 {
    number(
        cluster.shard(0),
        "SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/task_queue/ddl'",
    )
}

/// Messages stored more than once (a row's message is unique as sent).
fn duplicates(cluster: &ClickHouseCluster, db: &str) -> u64 {
    number(
        cluster.shard(1),
        &format!("SELECT count() - uniqExact(message) FROM {db}.logs"),
    )
}

fn engines(server: &ClickHouseServer, db: &str) -> BTreeMap<String, String> {
    let sql =
        format!("SELECT name, engine FROM system.tables WHERE database = '{db}' ORDER BY name");
    server
        .query(&sql)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, e)| (n.to_string(), e.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_behind_a_distributed_table_store_each_record_once() {
    let started = Instant::now();
    let mut cluster = ClickHouseCluster::start(CLUSTER, true).expect("start the cluster");
    let zk = cluster.zookeeper().expect("zookeeper");
    eprintln!(
        "[cluster] ZooKeeper {} ms, both shards up after {} ms",
        zk.startup_time().as_millis(),
        started.elapsed().as_millis()
    );
    let db = format!("zl_cluster_{}", std::process::id());
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_str().unwrap().to_string();
    let env = [
        ("CLICKHOUSE_CLUSTER", CLUSTER),
        ("SPOOL_DIR", spool_dir.as_str()),
    ];

    // First start: the worker creates everything, ON CLUSTER.
    let mut worker = Worker::start(cluster.shard(0), &db, &env).await;
    assert_eq!(
        ddl_tasks(&cluster),
        3,
        "CREATE DATABASE, local table, Distributed table"
    );
    for shard in cluster.shards() {
        let found = engines(shard, &db);
        assert_eq!(
            found.get("logs").map(String::as_str),
            Some("Distributed"),
            "{found:?}"
        );
        assert_eq!(
            found.get("logs_local").map(String::as_str),
            Some("MergeTree"),
            "{found:?}"
        );
    }
    let sending = Instant::now();
    let mut acked = send(&worker, "a", 40).await;
    let (local, total) = wait_total(&cluster, &db, acked).await;
    eprintln!(
        "[cluster] {acked} records acknowledged and stored in {} ms; per shard {local:?}",
        sending.elapsed().as_millis()
    );
    assert_eq!(
        total, acked,
        "the Distributed table holds what was acknowledged"
    );
    assert_eq!(
        local.iter().sum::<u64>(),
        acked,
        "the shards hold it between them"
    );
    assert!(
        local.iter().all(|&n| n > 0),
        "each shard holds a share: {local:?}"
    );
    // Either shard's Distributed table sees all of it.
    assert_eq!(
        number(cluster.shard(1), &format!("SELECT count() FROM {db}.logs")),
        acked
    );
    assert!(worker.terminate().success());

    // Second start, same spool: the tables exist, no DDL is queued again.
    let mut worker = Worker::start(cluster.shard(0), &db, &env).await;
    assert_eq!(
        ddl_tasks(&cluster),
        3,
        "a start with the tables in place runs no DDL"
    );
    acked += send(&worker, "b", 10).await;
    let (local, total) = wait_total(&cluster, &db, acked).await;
    assert_eq!(
        (total, local.iter().sum::<u64>()),
        (acked, acked),
        "{local:?}"
    );
    assert_eq!(duplicates(&cluster, &db), 0);

    // Shard 1 down: synchronous INSERTs through the Distributed table fail (and are
    // retried), while the spool acknowledges. Then SIGKILL: the next start replays the
    // spooled frames once shard 1 is back. 18.16 has no deduplication tokens, so rows a
    // failed INSERT left on shard 0 may be stored twice (at-least-once, docs/SPOOL.md
    // and docs/SCALE.md); nothing acknowledged may be missing.
    cluster.shard_mut(1).kill();
    acked += send(&worker, "c", 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let local_while_down = number(
        cluster.shard(0),
        &format!("SELECT count() FROM {db}.logs_local"),
    );
    signal(worker.pid(), "KILL");
    let _ = worker.child.take().map(|mut c| c.wait());
    cluster.shard_mut(1).restart().expect("restart shard 1");
    let worker = Worker::start(cluster.shard(0), &db, &env).await;
    let (local, total) = wait_total(&cluster, &db, acked).await;
    let replayed = worker.stats().await["spool"]["replayed_frames"]
        .as_u64()
        .unwrap_or(0);
    let distinct = number(
        cluster.shard(0),
        &format!("SELECT uniqExact(message) FROM {db}.logs"),
    );
    let twice = duplicates(&cluster, &db);
    eprintln!(
        "[cluster] shard 1 down: shard 0 held {local_while_down} rows; after SIGKILL and \
         replay ({replayed} frames): {total} rows, {distinct} distinct, {twice} stored \
         twice, per shard {local:?}"
    );
    assert!(replayed > 0, "the restart replayed the spooled frames");
    assert_eq!(distinct, acked, "every acknowledged record is stored");
    assert!(
        twice <= 10 * PER_REQUEST as u64,
        "only the last burst can repeat: {twice}"
    );
    assert_eq!(ddl_tasks(&cluster), 3);
    drop(worker);
    let zk_rss = cluster
        .zookeeper()
        .and_then(|zk| zk.pid())
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    eprintln!(
        "[cluster] whole test {} ms; ZooKeeper {zk_rss}",
        started.elapsed().as_millis()
    );
}

/// Runs `zero-logs serve` against `server` expecting it to stop by itself within 60 s;
/// returns its exit code and stderr.
fn serve_until_exit(server: &ClickHouseServer, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let spool = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zero-logs"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env_clear()
        .env("SPOOL_DIR", spool.path())
        .env("CLICKHOUSE_URL", server.http_url())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the worker did not stop by itself within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_zookeeper_the_worker_says_what_to_fix_and_hand_made_tables_work() {
    let cluster = ClickHouseCluster::start(CLUSTER, false).expect("start the cluster");
    let db = "zl_hand";

    // A cluster name the servers do not know.
    let (code, stderr) = serve_until_exit(
        cluster.shard(0),
        &[("CLICKHOUSE_CLUSTER", "nope"), ("CLICKHOUSE_DATABASE", db)],
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("CLICKHOUSE_CLUSTER=nope")
            && stderr.contains(CLUSTER)
            && stderr.contains("system.clusters"),
        "{stderr}"
    );

    // The right name, but no ZooKeeper: ON CLUSTER DDL cannot run.
    let (code, stderr) = serve_until_exit(
        cluster.shard(0),
        &[("CLICKHOUSE_CLUSTER", CLUSTER), ("CLICKHOUSE_DATABASE", db)],
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("<zookeeper>") && stderr.contains("CLICKHOUSE_CREATE_TABLE=false"),
        "{stderr}"
    );

    // The documented way without ZooKeeper: the same tables made on each shard by hand.
    for shard in cluster.shards() {
        shard.query(&format!("CREATE DATABASE {db}")).unwrap();
        let local = zero_logs::sink::schema::create_table_sql(
            db,
            "logs_local",
            zero_logs::sink::schema::Features::of(zero_logs::sink::schema::ServerVersion::new(
                18, 16, 1,
            )),
            0,
        );
        shard.query(&local).unwrap();
        shard
            .query(&format!(
                "CREATE TABLE {db}.logs AS {db}.logs_local ENGINE = Distributed('{CLUSTER}', '{db}', \
                 'logs_local', cityHash64(service, message, timestamp_ns))"
            ))
            .unwrap();
    }
    let env = [
        ("CLICKHOUSE_CLUSTER", CLUSTER),
        ("CLICKHOUSE_CREATE_TABLE", "false"),
    ];
    let worker = Worker::start(cluster.shard(1), db, &env).await;
    let acked = send(&worker, "h", 10).await;
    let (local, total) = wait_total(&cluster, db, acked).await;
    assert_eq!(
        (total, local.iter().sum::<u64>()),
        (acked, acked),
        "{local:?}"
    );
    assert!(local.iter().all(|&n| n > 0), "{local:?}");

    // A plain table where a Distributed one is expected is refused.
    shard_query_ok(
        cluster.shard(0),
        &format!("CREATE TABLE {db}.plain AS {db}.logs_local"),
    );
    let (code, stderr) = serve_until_exit(
        cluster.shard(0),
        &[
            ("CLICKHOUSE_CLUSTER", CLUSTER),
            ("CLICKHOUSE_DATABASE", db),
            ("CLICKHOUSE_TABLE", "plain"),
        ],
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("is a MergeTree table"), "{stderr}");
}

fn shard_query_ok(server: &ClickHouseServer, sql: &str) {
    server.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_at_the_first_start_stops_it_and_the_next_start_creates_the_tables() {
    let mut cluster = ClickHouseCluster::start(CLUSTER, true).expect("start the cluster");
    let db = "zl_late";
    cluster.shard_mut(1).kill();
    // INSERT timeout 3 s: start-up queries get 3 s, the server's DDL wait 2 s.
    let env = [
        ("CLICKHOUSE_CLUSTER", CLUSTER),
        ("CLICKHOUSE_DATABASE", db),
        ("CLICKHOUSE_INSERT_TIMEOUT", "3000"),
    ];
    let started = Instant::now();
    let (code, stderr) = serve_until_exit(cluster.shard(0), &env);
    eprintln!(
        "[cluster] with shard 1 down the worker stopped after {} ms: {stderr}",
        started.elapsed().as_millis()
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("ON CLUSTER") && stderr.contains("be up"),
        "{stderr}"
    );

    cluster.shard_mut(1).restart().expect("restart shard 1");
    let worker = Worker::start(cluster.shard(0), db, &env[..1]).await;
    let acked = send(&worker, "l", 4).await;
    let (local, total) = wait_total(&cluster, db, acked).await;
    assert_eq!(
        (total, local.iter().sum::<u64>()),
        (acked, acked),
        "{local:?}"
    );
    assert!(local.iter().all(|&n| n > 0), "{local:?}");
}
