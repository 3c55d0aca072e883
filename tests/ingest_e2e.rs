//! End to end: HTTP (array, wrapped, NDJSON, gzip, zstd) and gRPC into a real
//! ClickHouse; the stored rows equal what was sent, field by field, including
//! nanosecond timestamps and attributes in order. On Debian's clickhouse-server 18.16
//! and on the 26.x engine behind the chdb test front (`zero_logs::testing::Engine`).

mod common;

use common::*;
use serde_json::Value;
use zero_logs::proto::{IngestRequest, LogRecord};
use zero_logs::testing::{ColumnsSql, Engine, EngineKind, TestClickHouse};

/// One stored row as the test compares it.
#[derive(Debug, PartialEq)]
struct Stored {
    timestamp_ns: i64,
    level: String,
    service: String,
    message: String,
    trace_id: String,
    span_id: String,
    attributes: Vec<(String, String)>,
}

fn stored(ch: &impl TestClickHouse, db: &str, service: &str) -> Vec<Stored> {
    // The legacy layout on 18.16, DateTime64 and Map on 26.x.
    let ColumnsSql { ns, keys, values } = ColumnsSql::of_table(ch, db, "logs");
    let sql = format!(
        "SELECT toString({ns}) AS ns, level, service, message, trace_id, span_id, \
         {keys} AS k, {values} AS v FROM {db}.logs \
         WHERE service = '{service}' ORDER BY {ns}, message FORMAT JSONEachRow"
    );
    ch.query(&sql)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let strs = |key: &str| -> Vec<String> {
                v[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect()
            };
            Stored {
                timestamp_ns: v["ns"].as_str().unwrap().parse().unwrap(),
                level: v["level"].as_str().unwrap().into(),
                service: v["service"].as_str().unwrap().into(),
                message: v["message"].as_str().unwrap().into(),
                trace_id: v["trace_id"].as_str().unwrap().into(),
                span_id: v["span_id"].as_str().unwrap().into(),
                attributes: strs("k").into_iter().zip(strs("v")).collect(),
            }
        })
        .collect()
}

/// [`stored`] once it holds at least `n` rows (the spool delivers shortly after the
/// acknowledgement), or what is there after 10 s.
async fn stored_eventually(
    ch: &impl TestClickHouse,
    db: &str,
    service: &str,
    n: usize,
) -> Vec<Stored> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = stored(ch, db, service);
        if rows.len() >= n || tokio::time::Instant::now() >= deadline {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn row(
    ns: i64,
    level: &str,
    service: &str,
    message: &str,
    trace: &str,
    span: &str,
    attrs: &[(&str, &str)],
) -> Stored {
    Stored {
        timestamp_ns: ns,
        level: level.into(),
        service: service.into(),
        message: message.into(),
        trace_id: trace.into(),
        span_id: span.into(),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// 2024-05-01T12:00:00Z in epoch nanoseconds.
const T0: i64 = 1_714_564_800_000_000_000;

/// Three records of `service` in JSON, and the rows they must become.
fn sample(service: &str) -> (Vec<String>, Vec<Stored>) {
    let json = vec![
        format!(
            r#"{{"timestamp":"2024-05-01T12:00:00.123456789Z","level":"info","service":"{service}","message":"order 1 placed","trace_id":"4BF92F3577B34DA6A3CE929D0E0E4736","span_id":"00F067AA0BA902B7","attributes":{{"http.status":200,"region":"eu-west-1","ok":true}}}}"#
        ),
        format!(
            r#"{{"timestamp":1714564801500,"level":"WARNING","service":"{service}","message":"größe ✓ 🚀 \"quoted\"\nnew line"}}"#
        ),
        format!(
            r#"{{"timestamp":"2024-05-01T14:00:02.000000001+02:00","level":"err","service":"{service}","message":"third","host":"web-1"}}"#
        ),
    ];
    let rows = vec![
        row(
            T0 + 123_456_789,
            "info",
            service,
            "order 1 placed",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            &[
                ("http.status", "200"),
                ("region", "eu-west-1"),
                ("ok", "true"),
            ],
        ),
        row(
            T0 + 1_500_000_000,
            "warn",
            service,
            "größe ✓ 🚀 \"quoted\"\nnew line",
            "",
            "",
            &[],
        ),
        row(
            T0 + 2_000_000_001,
            "error",
            service,
            "third",
            "",
            "",
            &[("host", "web-1")],
        ),
    ];
    (json, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_format_and_grpc_round_trip_field_by_field() {
    every_http_format_and_grpc_round_trip_on(EngineKind::Server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_format_and_grpc_round_trip_field_by_field_on_chdb() {
    every_http_format_and_grpc_round_trip_on(EngineKind::Chdb).await;
}

async fn every_http_format_and_grpc_round_trip_on(kind: EngineKind) {
    let ch = Engine::start(kind).expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = Worker::start(&ch, &db, &[]).await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);

    let send = |headers: Vec<(&'static str, &'static str)>, body: Vec<u8>| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let (status, _, body) = post(&client, &url, &headers, body).await.unwrap();
            let text = String::from_utf8_lossy(&body).to_string();
            assert_eq!(status, 202, "{text}");
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap()["accepted"],
                3,
                "{text}"
            );
        }
    };
    let json_ct = ("content-type", "application/json");
    let ndjson_ct = ("content-type", "application/x-ndjson");

    let (records, _) = sample("array");
    send(
        vec![json_ct],
        format!("[{}]", records.join(",")).into_bytes(),
    )
    .await;
    let (records, _) = sample("wrapped");
    send(
        vec![json_ct],
        format!(r#"{{"logs":[{}]}}"#, records.join(",")).into_bytes(),
    )
    .await;
    let (records, _) = sample("ndjson");
    send(
        vec![ndjson_ct],
        format!("{}\n", records.join("\n")).into_bytes(),
    )
    .await;
    let (records, _) = sample("gzip");
    send(
        vec![json_ct, ("content-encoding", "gzip")],
        gzip(format!("[{}]", records.join(",")).as_bytes()),
    )
    .await;
    let (records, _) = sample("zstd");
    let body = zstd::encode_all(records.join("\r\n").as_bytes(), 3).unwrap();
    send(vec![ndjson_ct, ("content-encoding", "zstd")], body).await;

    for service in ["array", "wrapped", "ndjson", "gzip", "zstd"] {
        let (_, want) = sample(service);
        assert_eq!(
            stored_eventually(&ch, &db, service, want.len()).await,
            want,
            "{service}"
        );
    }

    // gRPC on the same port, same semantics.
    let mut grpc =
        zero_logs::proto::log_service_client::LogServiceClient::connect(worker.base.clone())
            .await
            .expect("gRPC connect");
    let request = IngestRequest {
        logs: vec![
            LogRecord {
                time_unix_nano: (T0 + 7) as u64,
                level: "DEBUG".into(),
                service: "grpc".into(),
                message: "from grpc".into(),
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
                attributes: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            },
            LogRecord {
                timestamp: "2024-05-01T12:00:01.000000009Z".into(),
                service: "grpc".into(),
                message: "second".into(),
                ..Default::default()
            },
        ],
    };
    let reply = grpc
        .ingest(request)
        .await
        .expect("gRPC ingest")
        .into_inner();
    assert_eq!(reply.accepted, 2);
    assert_eq!(
        stored_eventually(&ch, &db, "grpc", 2).await,
        vec![
            row(
                T0 + 7,
                "debug",
                "grpc",
                "from grpc",
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "00f067aa0ba902b7",
                &[("k", "v")]
            ),
            row(T0 + 1_000_000_009, "info", "grpc", "second", "", "", &[]),
        ]
    );

    // /stats and /metrics agree with what happened.
    let stats = worker.stats().await;
    assert_eq!(stats["records_accepted"], 17, "{stats}");
    assert_eq!(stats["rows_inserted"], 17, "{stats}");
    assert_eq!(stats["requests"], 6, "{stats}");
    assert_eq!(stats["pid"], worker.pid(), "{stats}");
    assert!(stats["rss_bytes"].as_u64().unwrap() > 1 << 20, "{stats}");
    // Accepted requests were timed: a median, and a p99 no smaller than it.
    let p50 = stats["request_p50_us"].as_u64().unwrap();
    let p99 = stats["request_p99_us"].as_u64().unwrap();
    assert!(p50 > 0 && p99 >= p50, "{stats}");
    let (status, _, metrics) = get(&client, &format!("{}/metrics", worker.base))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("zero_logs_rows_inserted_total{worker_id=\"1\"} 17"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "zero_logs_request_seconds{{worker_id=\"1\",quantile=\"0.99\"}} {}",
            p99 as f64 / 1e6
        )),
        "{metrics}"
    );
}
