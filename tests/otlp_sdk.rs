//! Issue 18's acceptance: the official OpenTelemetry Python SDK (pinned in
//! `tests/otel/requirements.txt`, installed by `scripts/install-deps` into
//! `target/otel-venv`) logs through a `LoggingHandler` to a real `zero-logs serve`
//! over OTLP/gRPC, OTLP/HTTP protobuf and OTLP/HTTP JSON; every row read back from a
//! real ClickHouse matches what the SDK delivered, field by field (timestamp, level,
//! service, body, trace and span id, attributes flattened as the README says).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::otel_sdk::{as_text, send};
use common::*;
use serde_json::Value;
use zero_logs::testing::ClickHouseServer;

/// One stored row, as compared.
#[derive(Debug, PartialEq)]
struct Row {
    ns: u64,
    level: String,
    service: String,
    message: String,
    trace_id: String,
    span_id: String,
    attributes: BTreeMap<String, String>,
}

fn stored(ch: &ClickHouseServer, db: &str, run_id: &str) -> BTreeMap<String, Row> {
    let sql = format!(
        "SELECT toString(timestamp_ns) AS ns, level, service, message, trace_id, span_id, \
         `attributes.key` AS k, `attributes.value` AS v FROM {db}.logs \
         WHERE position(message, 'run={run_id} ') > 0 FORMAT JSONEachRow"
    );
    let text = ch.query(&sql).unwrap();
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let s = |key: &str| v[key].as_str().unwrap().to_string();
        let list = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        };
        let row = Row {
            ns: s("ns").parse().unwrap(),
            level: s("level"),
            service: s("service"),
            message: s("message"),
            trace_id: s("trace_id"),
            span_id: s("span_id"),
            attributes: list("k").into_iter().zip(list("v")).collect(),
        };
        assert!(
            rows.insert(row.message.clone(), row).is_none(),
            "a record stored twice"
        );
    }
    rows
}

/// The row the README's mapping makes of one delivered record.
fn expected(record: &Value) -> Row {
    let s = |key: &str| record[key].as_str().unwrap().to_string();
    let mut attributes: BTreeMap<String, String> = record["attributes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), as_text(v)))
        .collect();
    let scope = &record["scope"];
    for (key, field) in [
        ("otel.scope.name", "name"),
        ("otel.scope.version", "version"),
    ] {
        let value = scope[field].as_str().unwrap_or("");
        if !value.is_empty() {
            attributes
                .entry(key.to_string())
                .or_insert(value.to_string());
        }
    }
    for (key, typed) in record["resource_attributes"].as_object().unwrap() {
        if key != "service.name" {
            attributes
                .entry(key.clone())
                .or_insert_with(|| as_text(typed));
        }
    }
    Row {
        ns: record["time_unix_nano"].as_u64().unwrap(),
        level: s("level"),
        service: s("service"),
        message: s("body"),
        trace_id: s("trace_id"),
        span_id: s("span_id"),
        attributes,
    }
}

async fn check_protocol(
    ch: &ClickHouseServer,
    worker: &Worker,
    db: &str,
    protocol: &str,
    extra: &[&str],
) {
    let run_id = format!("{}-{}", protocol.replace('/', "-"), extra.len());
    let count = 150;
    let sent = send(&worker.base, protocol, &run_id, count, extra);
    let records = sent["records"].as_array().unwrap();
    assert_eq!(records.len(), count, "the sender delivered every record");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut rows = stored(ch, db, &run_id);
    while rows.len() < count && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rows = stored(ch, db, &run_id);
    }
    assert_eq!(rows.len(), count, "{protocol}: rows in ClickHouse");
    let mut with_trace = 0;
    for record in records {
        let want = expected(record);
        let got = rows
            .get(&want.message)
            .unwrap_or_else(|| panic!("{protocol}: no row for {:?}", want.message));
        assert_eq!(got, &want, "{protocol}: record {}", record["index"]);
        assert!(got.attributes.len() >= 10, "{got:?}");
        with_trace += usize::from(!want.trace_id.is_empty());
    }
    assert!(
        with_trace > 0 && with_trace < count,
        "some records carry a trace id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_logs_land_field_by_field_over_grpc_http_protobuf_and_http_json() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = Worker::start(&ch, &db, &[]).await;
    check_protocol(&ch, &worker, &db, "grpc", &[]).await;
    check_protocol(&ch, &worker, &db, "http/protobuf", &[]).await;
    check_protocol(&ch, &worker, &db, "http/json", &[]).await;
    // Compressed as the SDKs send it when OTEL_EXPORTER_OTLP_COMPRESSION=gzip.
    check_protocol(&ch, &worker, &db, "grpc", &["--gzip"]).await;
    check_protocol(&ch, &worker, &db, "http/protobuf", &["--gzip"]).await;
    let stats = worker.stats().await;
    assert_eq!(stats["records_rejected"], 0, "{stats}");
    assert_eq!(stats["records_accepted"], 750, "{stats}");
    // 150 records in batches of at most 64: at least 3 export requests per run.
    let otlp = stats["otlp_requests"].as_u64().unwrap();
    assert!(
        otlp >= 15 && otlp == stats["requests"].as_u64().unwrap(),
        "{stats}"
    );
}
