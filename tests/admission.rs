//! Admission: a full worker answers 429 / RESOURCE_EXHAUSTED with a retry
//! hint instead of queueing without bound; the admin unix socket addresses
//! one instance. Real worker binary, real ClickHouse.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use zero_logs::proto::{IngestRequest, LogRecord};
use zero_logs::testing::ClickHouseServer;

fn batch(n: usize) -> String {
    let records: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"service":"adm","message":"record {i}"}}"#))
        .collect();
    format!("[{}]", records.join(","))
}

/// A batch that waits for a slow flush holds its budget; the next one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_gives_429_with_retry_after_on_both_protocols() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = Worker::start(
        &ch,
        &db,
        &[
            // The batcher's queue is the admission bound when acknowledging after the INSERT.
            ("ACK_MODE", "clickhouse"),
            ("BATCH_MAX_AGE", "3000"),
            ("BATCH_MAX_QUEUE_ROWS", "10"),
            // Inline validation: the same admission rules without the pool.
            ("ENABLE_WORKER_VALIDATION", "false"),
        ],
    )
    .await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    let first = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { post(&client, &url, &[], batch(8)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, headers, body) = post(&client, &url, &[], batch(8)).await.unwrap();
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers.get("retry-after").unwrap(), "1");

    let mut grpc =
        zero_logs::proto::log_service_client::LogServiceClient::connect(worker.base.clone())
            .await
            .unwrap();
    let logs = (0..8)
        .map(|i| LogRecord {
            service: "adm".into(),
            message: format!("g{i}"),
            ..Default::default()
        })
        .collect();
    let status = grpc.ingest(IngestRequest { logs }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1");

    let (status, _, _) = first.await.unwrap().unwrap();
    assert_eq!(
        status, 202,
        "the admitted batch is acknowledged once flushed"
    );
    assert_eq!(count_rows(&ch, &db), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_byte_budget_gives_429() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let body = batch(20);
    let worker = Worker::start(
        &ch,
        &db,
        &[
            ("ACK_MODE", "clickhouse"),
            ("BATCH_MAX_AGE", "3000"),
            ("MAX_BODY_BYTES", &(body.len() + 100).to_string()),
            ("MAX_INFLIGHT_BYTES", &(body.len() + 100).to_string()),
        ],
    )
    .await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    let first = tokio::spawn({
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move { post(&client, &url, &[], body).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, headers, text) = post(&client, &url, &[], body).await.unwrap();
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&text));
    assert!(String::from_utf8_lossy(&text).contains("MAX_INFLIGHT_BYTES"));
    assert!(headers.get("retry-after").is_some());
    assert_eq!(first.await.unwrap().unwrap().0, 202);
}

/// `GET path` over a unix socket; returns (status, body).
fn unix_get(path: &std::path::Path, target: &str) -> (u16, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("connect admin socket");
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_socket_serves_health_stats_and_metrics_of_this_instance() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/admin.sock");
    let mut worker = Worker::start(
        &ch,
        &db,
        &[
            ("ADMIN_SOCKET", socket.to_str().unwrap()),
            ("WORKER_ID", "7"),
        ],
    )
    .await;
    let (status, body) = unix_get(&socket, "/health");
    assert_eq!(status, 200, "{body}");
    let (status, body) = unix_get(&socket, "/stats");
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| {
        // Chunked encoding: the JSON sits between the chunk size lines.
        let json = body.lines().find(|l| l.starts_with('{')).unwrap();
        serde_json::from_str(json).unwrap()
    });
    assert_eq!(stats["worker_id"], "7");
    assert_eq!(stats["pid"], worker.pid());
    let (status, body) = unix_get(&socket, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("zero_logs_requests_total{worker_id=\"7\"}"),
        "{body}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert!(worker.terminate().success());
    assert!(!socket.exists(), "the admin socket is removed on exit");
}
