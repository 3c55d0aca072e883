//! Issue 19's OpenTelemetry table layout, end to end on the ClickHouse 26.9 engine: a
//! real `zero-logs serve` with `CLICKHOUSE_SCHEMA=otel` creates the exporter's
//! `otel_logs`; the OpenTelemetry Python SDK logs to it over OTLP/gRPC, HTTP/protobuf
//! and HTTP/JSON, and every row matches what the SDK delivered, column by column, with
//! resource, scope and record attributes kept apart; records of the native JSON API
//! land there too; and the queries Grafana's ClickHouse plugin runs in OTel mode
//! (time filter on `TimestampTime`, log volume by `SeverityNumber`, logs of a trace)
//! read them.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::otel_sdk::{as_text, send};
use common::*;
use serde_json::{json, Value};
use zero_logs::testing::{Engine, EngineKind};

const COLUMNS: &str = "toString(toUnixTimestamp64Nano(Timestamp)) AS ns, TraceId, SpanId, \
    TraceFlags, SeverityText, SeverityNumber, ServiceName, Body, ResourceSchemaUrl, \
    ResourceAttributes, ScopeSchemaUrl, ScopeName, ScopeVersion, ScopeAttributes, \
    LogAttributes, EventName";

/// Rows of `otel_logs` matching `filter`, by body; each body must be stored once.
fn stored(ch: &Engine, db: &str, filter: &str) -> BTreeMap<String, Value> {
    let sql = format!("SELECT {COLUMNS} FROM {db}.otel_logs WHERE {filter} FORMAT JSONEachRow");
    let mut rows = BTreeMap::new();
    for line in ch.query(&sql).unwrap().lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let body = row["Body"].as_str().unwrap().to_string();
        assert!(rows.insert(body, row).is_none(), "a record stored twice");
    }
    rows
}

/// Polls until `count` rows match `filter`.
async fn wait_stored(ch: &Engine, db: &str, filter: &str, count: usize) -> BTreeMap<String, Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = stored(ch, db, filter);
        if rows.len() >= count || tokio::time::Instant::now() >= deadline {
            assert_eq!(rows.len(), count, "rows matching {filter}");
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Typed attributes from the sender as text, as zero-logs stores them.
fn texts(typed: &Value) -> Value {
    let map = typed.as_object().unwrap();
    map.iter()
        .map(|(k, v)| (k.clone(), json!(as_text(v))))
        .collect()
}

/// The `otel_logs` row the README's mapping makes of one record the SDK delivered.
fn expected(record: &Value) -> Value {
    let number = record["severity_number"].as_u64().unwrap();
    let text = record["severity_text"].as_str().unwrap();
    let scope = &record["scope"];
    json!({
        "ns": record["time_unix_nano"].as_u64().unwrap().to_string(),
        "TraceId": record["trace_id"],
        "SpanId": record["span_id"],
        "TraceFlags": record["trace_flags"],
        "SeverityText": text,
        "SeverityNumber": number,
        "ServiceName": record["service"],
        "Body": record["body"],
        "ResourceSchemaUrl": "",
        // service.name is in the SDK's resource attributes already.
        "ResourceAttributes": texts(&record["resource_attributes"]),
        "ScopeSchemaUrl": "",
        "ScopeName": scope["name"],
        "ScopeVersion": scope["version"],
        "ScopeAttributes": {},
        "LogAttributes": texts(&record["attributes"]),
        "EventName": "",
    })
}

async fn check_protocol(ch: &Engine, worker: &Worker, db: &str, protocol: &str) {
    let run_id = format!("otel-{}", protocol.replace('/', "-"));
    let count = 120;
    let sent = send(&worker.base, protocol, &run_id, count, &[]);
    let records = sent["records"].as_array().unwrap();
    assert_eq!(records.len(), count, "the sender delivered every record");
    let filter = format!("ResourceAttributes['zero_logs.run_id'] = '{run_id}'");
    let rows = wait_stored(ch, db, &filter, count).await;
    let mut levels = std::collections::BTreeSet::new();
    for record in records {
        let want = expected(record);
        let got = &rows[want["Body"].as_str().unwrap()];
        assert_eq!(got, &want, "{protocol}: record {}", record["index"]);
        levels.insert(want["SeverityNumber"].as_u64().unwrap());
    }
    assert!(levels.len() >= 4, "several severities: {levels:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_and_native_records_fill_the_exporters_table_and_grafana_reads_it() {
    let ch = Engine::start(EngineKind::Chdb).expect("start the ClickHouse 26.9 engine");
    let db = ch.fresh_database();
    let worker = Worker::start(&ch, &db, &[("CLICKHOUSE_SCHEMA", "otel")]).await;
    let engine = ch.query(&format!(
        "SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = 'otel_logs'"
    ));
    let engine = engine.unwrap();
    assert!(
        engine.contains("toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp"),
        "{engine}"
    );
    for protocol in ["grpc", "http/protobuf", "http/json"] {
        check_protocol(&ch, &worker, &db, protocol).await;
    }
    native_records_land_in_the_otel_layout(&ch, &worker, &db).await;
    grafana_queries_read_the_table(&ch, &db);
    let stats = worker.stats().await;
    assert_eq!(stats["records_rejected"], 0, "{stats}");
}

async fn native_records_land_in_the_otel_layout(ch: &Engine, worker: &Worker, db: &str) {
    let body = json!({"logs": [
        {"timestamp": "2026-12-06T10:00:00.123456789Z", "level": "warning", "service": "billing",
         "message": "native warn", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
         "span_id": "00f067aa0ba902b7", "attributes": {"user": "42", "é": "ü"}},
        {"timestamp": "2026-12-06T10:00:01Z", "level": "error", "service": "billing",
         "message": "native error"},
    ]});
    let url = format!("{}/api/v1/logs", worker.base);
    let (status, _, reply) = post(
        &client(),
        &url,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
    .unwrap();
    assert!(matches!(status, 200 | 202), "{status}: {reply:?}");
    let rows = wait_stored(ch, db, "ServiceName = 'billing'", 2).await;
    let warn = &rows["native warn"];
    assert_eq!(warn["ns"], "1796551200123456789");
    assert_eq!(
        (&warn["SeverityText"], &warn["SeverityNumber"]),
        (&json!("WARN"), &json!(13))
    );
    assert_eq!(warn["TraceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(warn["LogAttributes"], json!({"user": "42", "é": "ü"}));
    assert_eq!(
        warn["ResourceAttributes"],
        json!({"service.name": "billing"})
    );
    assert_eq!(
        (&warn["ScopeName"], &warn["ScopeAttributes"]),
        (&json!(""), &json!({}))
    );
    let error = &rows["native error"];
    assert_eq!(
        (&error["SeverityText"], &error["SeverityNumber"]),
        (&json!("ERROR"), &json!(17))
    );
    assert_eq!(error["LogAttributes"], json!({}));
}

/// The shapes of query Grafana's ClickHouse plugin (v4, OTel mode) runs on `otel_logs`.
fn grafana_queries_read_the_table(ch: &Engine, db: &str) {
    let table = format!("\"{db}\".\"otel_logs\"");
    // Logs panel: the time filter on TimestampTime (the ALIAS column), newest first.
    let logs = ch
        .query(&format!(
            "SELECT Timestamp as \"timestamp\", Body as \"body\", SeverityText as \"level\", \
             LogAttributes as \"labels\", TraceId as \"traceID\" FROM {table} \
             WHERE ( TimestampTime >= toDateTime('2026-12-06 10:00:00') \
             AND TimestampTime <= toDateTime('2026-12-06 10:00:01') ) \
             AND ( ServiceName IN ('billing') ) ORDER BY timestamp DESC LIMIT 1000 \
             FORMAT JSONEachRow"
        ))
        .unwrap();
    let bodies: Vec<String> = logs
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["body"]
                .as_str()
                .unwrap()
                .into()
        })
        .collect();
    assert_eq!(bodies, ["native error", "native warn"], "{logs}");
    // Log volume: counts per severity range over time buckets.
    let volume = ch
        .query(&format!(
            "SELECT toStartOfInterval(TimestampTime, INTERVAL 1 HOUR) AS time, \
             countIf(SeverityNumber BETWEEN 13 AND 16) AS warn, \
             countIf(SeverityNumber BETWEEN 17 AND 20) AS error FROM {table} \
             WHERE ServiceName = 'billing' GROUP BY time ORDER BY time FORMAT CSV"
        ))
        .unwrap();
    assert_eq!(volume.trim(), "\"2026-12-06 10:00:00\",1,1");
    // Logs of a trace (the trace view's link), through the bloom-filter index.
    let traced = ch
        .query(&format!(
            "SELECT count() FROM {table} WHERE TraceId = '4bf92f3577b34da6a3ce929d0e0e4736'"
        ))
        .unwrap();
    assert_eq!(traced.trim(), "1");
}
