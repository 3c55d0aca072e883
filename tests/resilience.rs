//! ClickHouse outages and stops under load: refusals are fast and honest
//! (503, not a hang), health follows the sink, and a SIGTERM loses nothing
//! that was acknowledged. Real worker binary, real ClickHouse.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use zero_logs::testing::ClickHouseServer;

fn batch(tag: &str, n: usize) -> String {
    let records: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"service":"load","level":"info","message":"{tag} record {i}","attributes":{{"i":{i}}}}}"#))
        .collect();
    format!("[{}]", records.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_gives_503_and_unhealthy_then_recovers() {
    let mut ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    // Acknowledging after the INSERT: the spool mode's outage is tests/spool_faults.rs.
    let worker = Worker::start(
        &ch,
        &db,
        &[
            ("ACK_MODE", "clickhouse"),
            ("CLICKHOUSE_RETRY_BUDGET", "2000"),
        ],
    )
    .await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    let (status, _, _) = post(&client, &url, &[], batch("before", 10)).await.unwrap();
    assert_eq!(status, 202);

    ch.stop();
    // The first request finds out (after the retry budget), later ones are refused at once.
    let started = Instant::now();
    let (status, headers, body) = post(&client, &url, &[], batch("during", 10)).await.unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(headers.get("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503 took {:?}",
        started.elapsed()
    );
    let (status, _, body) = get(&client, &format!("{}/health", worker.base))
        .await
        .unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("ClickHouse"));
    let started = Instant::now();
    let (status, _, _) = post(&client, &url, &[], batch("during", 10)).await.unwrap();
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusal while down took {:?}",
        started.elapsed()
    );

    ch.restart().expect("restart ClickHouse");
    worker.wait_healthy(Duration::from_secs(30)).await;
    let (status, _, body) = post(&client, &url, &[], batch("after", 10)).await.unwrap();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    // Exactly the acknowledged batches are stored: nothing from the refused ones.
    assert_eq!(count_rows(&ch, &db), 20);
    let stats = worker.stats().await;
    assert!(stats["insert_failures"].as_u64().unwrap() >= 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_record() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let mut worker = Worker::start(&ch, &db, &[("BATCH_MAX_AGE", "200")]).await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for conn in 0..16 {
        let (client, url, acked, sent, stop) = (
            client.clone(),
            url.clone(),
            acked.clone(),
            sent.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 2000 requests per connection, and only until the worker goes away.
            for i in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                sent.fetch_add(50, Ordering::Relaxed);
                match post(&client, &url, &[], batch(&format!("c{conn}-{i}"), 50)).await {
                    Ok((202, _, _)) => {
                        acked.fetch_add(50, Ordering::Relaxed);
                    }
                    Ok((503, _, _)) => {}
                    Ok((status, _, body)) => {
                        panic!("unexpected {status}: {}", String::from_utf8_lossy(&body))
                    }
                    // Connection refused/reset once the worker has exited: the load is over.
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acked.load(Ordering::Relaxed);
    assert!(before > 0, "no request was acknowledged before SIGTERM");
    let status = tokio::task::spawn_blocking(move || worker.terminate())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(status.success(), "worker exit status {status:?}");
    let acked = acked.load(Ordering::Relaxed);
    let stored = count_rows(&ch, &db);
    eprintln!(
        "SIGTERM under load: sent {} records, acknowledged {acked}, stored {stored}",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        stored >= acked,
        "lost acknowledged records: acknowledged {acked}, stored {stored}"
    );
    assert!(stored <= sent.load(Ordering::Relaxed));
}
