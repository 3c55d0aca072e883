//! Issue 18, items 4, 5 and 8: bad and borderline OTLP input gets the answer the OTLP
//! specification asks for, over OTLP/HTTP (protobuf and JSON) and OTLP/gRPC, and
//! ClickHouse holds exactly the records that were accepted. Real worker binary, real
//! ClickHouse; every request body is built with the `opentelemetry-proto` types
//! (only the deliberately corrupted ones are edited as bytes afterwards).
//!
//! Each case's records carry their own `service.name` (`case01` …), so what reached
//! ClickHouse is counted per case at the end.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use zero_logs::testing::ClickHouseServer;

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");
/// 2024-05-01T12:00:00Z in nanoseconds.
const T0: u64 = 1_714_564_800_000_000_000;

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// An info record at `T0 + i` ns whose body is `body`.
fn record(body: &str, i: u64) -> LogRecord {
    LogRecord {
        time_unix_nano: T0 + i,
        severity_number: 9,
        body: Some(string(body)),
        ..Default::default()
    }
}

/// One resource (`service.name` = `service`) with one scope holding `records`.
fn request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string(service))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A 16-byte trace id whose bytes all are `n`.
fn trace_id(n: u8) -> Vec<u8> {
    vec![n; 16]
}

/// One worker, one ClickHouse database and the clients the cases share (the worker
/// first: fields drop in order, and it goes before its ClickHouse).
struct Otlp {
    worker: Worker,
    http: HttpClient,
    ch: ClickHouseServer,
    db: String,
}

impl Otlp {
    async fn start(env: &[(&str, &str)]) -> Otlp {
        let ch = ClickHouseServer::start().expect("start ClickHouse");
        let db = ch.fresh_database();
        let worker = Worker::start(&ch, &db, env).await;
        Otlp {
            worker,
            http: client(),
            ch,
            db,
        }
    }

    async fn post_to(&self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        let url = format!("{}{path}", self.worker.base);
        post(&self.http, &url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    async fn post(&self, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        self.post_to("/v1/logs", headers, body).await
    }

    async fn post_protobuf(&self, request: &ExportLogsServiceRequest) -> Reply {
        self.post(&[PROTOBUF], request.encode_to_vec()).await
    }

    async fn grpc(&self) -> LogsServiceClient<Channel> {
        LogsServiceClient::connect(self.worker.base.clone())
            .await
            .expect("gRPC connect")
    }

    async fn records_rejected(&self) -> u64 {
        self.worker.stats().await["records_rejected"]
            .as_u64()
            .expect("records_rejected in /stats")
    }
}

fn content_type(reply: &Reply) -> &str {
    reply
        .1
        .get("content-type")
        .map_or("", |v| v.to_str().unwrap())
}

/// The `google.rpc.Status` of an OTLP/HTTP protobuf refusal.
fn rpc_status(reply: &Reply) -> tonic_types::Status {
    assert_eq!(content_type(reply), "application/x-protobuf", "{reply:?}");
    tonic_types::Status::decode(reply.2.clone())
        .unwrap_or_else(|e| panic!("body is not a google.rpc.Status ({e}): {reply:?}"))
}

/// The message of a final 400 `INVALID_ARGUMENT` (no `Retry-After`).
fn invalid_argument(reply: &Reply) -> String {
    assert_eq!(reply.0, 400, "{reply:?}");
    assert!(reply.1.get("retry-after").is_none(), "a 400 is final");
    let status = rpc_status(reply);
    assert_eq!(
        status.code,
        tonic::Code::InvalidArgument as i32,
        "{status:?}"
    );
    status.message
}

/// The `ExportLogsServiceResponse` of an accepted OTLP/HTTP protobuf request.
fn export_response(reply: &Reply) -> ExportLogsServiceResponse {
    assert_eq!(reply.0, 200, "{reply:?}");
    assert_eq!(content_type(reply), "application/x-protobuf", "{reply:?}");
    ExportLogsServiceResponse::decode(reply.2.clone()).expect("an ExportLogsServiceResponse")
}

fn json_body(reply: &Reply) -> Value {
    assert_eq!(content_type(reply), "application/json", "{reply:?}");
    serde_json::from_slice(&reply.2).unwrap_or_else(|e| panic!("body is not JSON ({e}): {reply:?}"))
}

/// One stored row.
#[derive(Debug)]
struct Row {
    ns: u64,
    level: String,
    message: String,
    trace_id: String,
    span_id: String,
    attributes: BTreeMap<String, String>,
}

/// The rows stored for `service`, by timestamp.
fn rows(t: &Otlp, service: &str) -> Vec<Row> {
    let sql = format!(
        "SELECT toString(timestamp_ns) AS ns, level, message, trace_id, span_id, \
         `attributes.key` AS k, `attributes.value` AS v FROM {}.logs \
         WHERE service = '{service}' ORDER BY timestamp_ns FORMAT JSONEachRow",
        t.db
    );
    let text = t.ch.query(&sql).unwrap();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let s = |key: &str| v[key].as_str().unwrap().to_string();
            let list = |key: &str| v[key].as_array().unwrap().clone();
            let attributes = list("k")
                .into_iter()
                .zip(list("v"))
                .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
                .collect();
            Row {
                ns: s("ns").parse().unwrap(),
                level: s("level"),
                message: s("message"),
                trace_id: s("trace_id"),
                span_id: s("span_id"),
                attributes,
            }
        })
        .collect()
}

/// Stored rows per service.
fn stored_per_service(t: &Otlp) -> BTreeMap<String, u64> {
    let sql = format!(
        "SELECT service, count() FROM {}.logs GROUP BY service FORMAT TabSeparated",
        t.db
    );
    t.ch.query(&sql)
        .unwrap()
        .lines()
        .map(|line| {
            let (service, n) = line.split_once('\t').unwrap();
            (service.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// Case 1: a valid request cut in half: 400, `INVALID_ARGUMENT` naming the protobuf problem.
async fn truncated_protobuf(t: &Otlp) {
    let full = request("case01", (0..5).map(|i| record("cut", i)).collect()).encode_to_vec();
    let reply = t.post(&[PROTOBUF], full[..full.len() / 2].to_vec()).await;
    let message = invalid_argument(&reply);
    assert!(
        message.contains("malformed protobuf") && message.contains("decode"),
        "{message}"
    );
}

/// Case 2: `text/plain` is 415 in JSON; `application/grpc` over HTTP/1.1 is never a 200.
async fn wrong_content_type(t: &Otlp) {
    let body = request("case02", vec![record("plain", 0)]).encode_to_vec();
    let reply = t
        .post(&[("content-type", "text/plain")], body.clone())
        .await;
    assert_eq!(reply.0, 415, "{reply:?}");
    let json = json_body(&reply);
    assert_eq!(json["code"], tonic::Code::InvalidArgument as i32, "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(
        message.contains("application/x-protobuf") && message.contains("text/plain"),
        "{json}"
    );

    // gRPC is HTTP/2; this is an HTTP request with a content type OTLP/HTTP does not
    // take, not a 200 (`grpc-status: 12`) from the gRPC router that looks delivered.
    let reply = t.post(&[("content-type", "application/grpc")], body).await;
    assert_eq!(reply.0, 415, "{reply:?}");
    assert!(json_body(&reply)["message"]
        .as_str()
        .unwrap()
        .contains("application/grpc"));
}

/// Case 3: invalid UTF-8 inside a string value: 400.
async fn invalid_utf8(t: &Otlp) {
    let marker = "UTF8-MARKER";
    let mut bytes = request("case03", vec![record(marker, 0)]).encode_to_vec();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("the body's bytes");
    bytes[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    let message = invalid_argument(&t.post(&[PROTOBUF], bytes).await);
    assert!(message.contains("UTF-8"), "{message}");
}

/// `leaf` under `keys.len()` nested key-value lists (the first key outermost).
fn nested_kvlist(keys: &[&str], leaf: AnyValue) -> AnyValue {
    keys.iter().rev().fold(leaf, |inner, key| AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![kv(key, inner)],
        })),
    })
}

/// `leaf` inside `depth` nested arrays.
fn nested_array(depth: usize, leaf: Vec<AnyValue>) -> AnyValue {
    let mut value = AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue { values: leaf })),
    };
    for _ in 1..depth {
        value = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    value
}

/// Case 4: 10 levels of maps in an attribute flatten to one dotted key; 10 levels of arrays
/// as the body are stored as compact JSON.
async fn deep_any_values(t: &Otlp) {
    let keys = ["b", "c", "d", "e", "f", "g", "h", "i", "j", "k"];
    let mut deep_attribute = record("deep attribute", 0);
    deep_attribute.attributes = vec![kv("a", nested_kvlist(&keys, string("bottom")))];
    let leaf = vec![
        string("x"),
        AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        },
    ];
    let deep_body = LogRecord {
        body: Some(nested_array(10, leaf)),
        ..record("", 1)
    };
    let reply = t
        .post_protobuf(&request("case04", vec![deep_attribute, deep_body]))
        .await;
    assert_eq!(export_response(&reply).partial_success, None, "{reply:?}");

    let rows = wait_for_rows(t, "case04", 2).await;
    assert_eq!(rows[0].message, "deep attribute");
    assert_eq!(
        rows[0]
            .attributes
            .get("a.b.c.d.e.f.g.h.i.j.k")
            .map(String::as_str),
        Some("bottom"),
        "{:?}",
        rows[0]
    );
    assert_eq!(rows[1].message, r#"[[[[[[[[[["x",1]]]]]]]]]]"#);
}

/// Case 5: 20 000 records in one request: 413 (final, no `Retry-After`); over gRPC
/// `RESOURCE_EXHAUSTED` without `RetryInfo` (which the SDKs do not retry).
async fn too_many_records(t: &Otlp) {
    let big = request("case05", (0..20_000).map(|i| record("many", i)).collect());
    let reply = t.post_protobuf(&big).await;
    assert_eq!(reply.0, 413, "{:?}", (reply.0, &reply.1));
    assert!(reply.1.get("retry-after").is_none(), "a 413 is final");
    let status = rpc_status(&reply);
    assert!(
        status.message.contains("20000") && status.message.contains("MAX_BATCH_RECORDS"),
        "{status:?}"
    );

    let status = t.grpc().await.export(big).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("MAX_BATCH_RECORDS"), "{status:?}");
    let retry = status.get_details_retry_info();
    assert!(
        retry.is_none(),
        "final: the SDKs retry RESOURCE_EXHAUSTED that carries RetryInfo ({retry:?})"
    );
}

/// Ten records of which the fourth has a 5-byte trace id.
fn one_bad_trace_id(service: &str) -> ExportLogsServiceRequest {
    let records = (0..10u8)
        .map(|i| LogRecord {
            trace_id: if i == 3 { vec![7; 5] } else { trace_id(i + 1) },
            ..record(&format!("trace {i}"), u64::from(i))
        })
        .collect();
    request(service, records)
}

/// Case 6: a trace id of 5 bytes refuses that record only, in `partial_success`.
async fn wrong_trace_id_length(t: &Otlp) {
    let before = t.records_rejected().await;
    let reply = t.post_protobuf(&one_bad_trace_id("case06http")).await;
    let partial = export_response(&reply)
        .partial_success
        .expect("partial_success");
    assert_eq!(partial.rejected_log_records, 1, "{partial:?}");
    assert!(
        partial.error_message.contains("trace_id") && partial.error_message.contains("5 bytes"),
        "{partial:?}"
    );
    assert_eq!(
        t.records_rejected().await - before,
        1,
        "/stats records_rejected"
    );

    let response = t
        .grpc()
        .await
        .export(one_bad_trace_id("case06grpc"))
        .await
        .expect("gRPC export")
        .into_inner();
    let partial = response.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_log_records, 1, "{partial:?}");
    assert!(partial.error_message.contains("trace_id"), "{partial:?}");
    assert_eq!(
        t.records_rejected().await - before,
        2,
        "/stats records_rejected"
    );

    for service in ["case06http", "case06grpc"] {
        let rows = wait_for_rows(t, service, 9).await;
        let messages: Vec<&str> = rows.iter().map(|r| r.message.as_str()).collect();
        assert!(!messages.contains(&"trace 3"), "{messages:?}");
        assert_eq!(rows[0].trace_id, "01".repeat(16));
        assert_eq!(rows[8].trace_id, "0a".repeat(16));
    }
}

/// Case 7: 50 MiB of zeros gzipped: 413 once decompressed past the cap; the worker lives.
async fn gzip_bomb(t: &Otlp) {
    let bomb = gzip(&vec![0u8; 50 << 20]);
    assert!(bomb.len() < 1 << 20, "a bomb, not a big body");
    let reply = t
        .post(&[PROTOBUF, ("content-encoding", "gzip")], bomb)
        .await;
    assert_eq!(reply.0, 413, "{reply:?}");
    let status = rpc_status(&reply);
    assert!(status.message.contains("after decompression"), "{status:?}");
    t.worker.wait_healthy(Duration::from_secs(5)).await;
}

/// Case 8: an empty request succeeds without `partial_success` on every wire.
async fn empty_request(t: &Otlp) {
    let empty = ExportLogsServiceRequest::default();
    let reply = t.post_protobuf(&empty).await;
    assert_eq!(export_response(&reply).partial_success, None);

    let reply = t.post(&[JSON], "{}").await;
    assert_eq!(reply.0, 200, "{reply:?}");
    assert_eq!(json_body(&reply), serde_json::json!({}), "{reply:?}");

    let response = t.grpc().await.export(empty).await.expect("gRPC export");
    assert_eq!(response.into_inner().partial_success, None);
}

/// Case 9: OTLP/JSON written by hand as the spec has it: hex ids, integer enums, 64-bit
/// integers as strings or numbers.
async fn hand_written_json(t: &Otlp) {
    let body = r#"{"resourceLogs":[{
        "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"case09"}}]},
        "scopeLogs":[{"scope":{"name":"fixture"},"logRecords":[
          {"timeUnixNano":"1714564800123456789","severityNumber":17,
           "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
           "body":{"stringValue":"time as a string"},
           "attributes":[{"key":"http.status","value":{"intValue":"503"}},
                         {"key":"cached","value":{"boolValue":false}}]},
          {"timeUnixNano":1714564800987654321,"severityNumber":13,
           "body":{"stringValue":"time as a number"},
           "attributes":[{"key":"retries","value":{"intValue":3}}]}
        ]}]}]}"#;
    let reply = t.post(&[JSON], body).await;
    assert_eq!(reply.0, 200, "{reply:?}");
    assert_eq!(json_body(&reply), serde_json::json!({}), "{reply:?}");

    let rows = wait_for_rows(t, "case09", 2).await;
    let (first, second) = (&rows[0], &rows[1]);
    assert_eq!(first.ns, 1_714_564_800_123_456_789);
    assert_eq!(first.level, "error");
    assert_eq!(first.message, "time as a string");
    assert_eq!(first.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(first.span_id, "eee19b7ec3c1b174");
    let attributes: Vec<(&str, &str)> = first
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        attributes,
        [
            ("cached", "false"),
            ("http.status", "503"),
            ("otel.scope.name", "fixture")
        ]
    );
    assert_eq!(second.ns, 1_714_564_800_987_654_321);
    assert_eq!(second.level, "warn");
    assert_eq!(second.trace_id, "");
    assert_eq!(
        second.attributes.get("retries").map(String::as_str),
        Some("3")
    );

    // A rejected record in JSON: `partialSuccess` in the JSON answer.
    let bad = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
        {"severityNumber":99,"body":{"stringValue":"bad severity"}}]}]}]}"#;
    let reply = t.post(&[JSON], bad).await;
    assert_eq!(reply.0, 200, "{reply:?}");
    let json = json_body(&reply);
    assert_eq!(json["partialSuccess"]["rejectedLogRecords"], 1, "{json}");
    let message = json["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("severity_number"), "{json}");
}

/// Case 10: unknown path: JSON 404; wrong method: JSON 405 with `Allow`; the native API
/// still answers.
async fn paths_and_methods(t: &Otlp) {
    let reply = t.post_to("/v2/nothing", &[PROTOBUF], "x").await;
    assert_eq!(reply.0, 404, "{reply:?}");
    assert!(json_body(&reply)["error"]
        .as_str()
        .unwrap()
        .contains("/v2/nothing"));

    let url = format!("{}/v1/logs", t.worker.base);
    let reply = get(&t.http, &url).await.unwrap();
    assert_eq!(reply.0, 405, "{reply:?}");
    assert_eq!(reply.1.get("allow").unwrap(), "POST");
    assert!(json_body(&reply)["error"].is_string());

    let native = r#"[{"service":"case10","message":"native"}]"#;
    let reply = t.post_to("/api/v1/logs", &[JSON], native).await;
    assert_eq!(reply.0, 202, "{reply:?}");
    assert_eq!(wait_for_rows(t, "case10", 1).await[0].message, "native");
}

/// Case 11: `time_unix_nano` in milliseconds is refused for what it is; with
/// `time_unix_nano` 0 the observed time is the timestamp.
async fn milliseconds_and_observed_time(t: &Otlp) {
    let millis = LogRecord {
        time_unix_nano: 1_700_000_000_000,
        ..record("millis", 0)
    };
    let observed = LogRecord {
        time_unix_nano: 0,
        observed_time_unix_nano: T0 + 42,
        ..record("observed", 0)
    };
    let reply = t
        .post_protobuf(&request("case11", vec![millis, observed]))
        .await;
    let partial = export_response(&reply)
        .partial_success
        .expect("partial_success");
    assert_eq!(partial.rejected_log_records, 1, "{partial:?}");
    assert!(
        partial.error_message.contains("time_unix_nano")
            && partial.error_message.contains("milliseconds"),
        "{partial:?}"
    );
    let rows = wait_for_rows(t, "case11", 1).await;
    assert_eq!(
        (rows[0].message.as_str(), rows[0].ns),
        ("observed", T0 + 42)
    );
}

/// The rows of `service` once there are at least `n`.
async fn wait_for_rows(t: &Otlp, service: &str, n: usize) -> Vec<Row> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = rows(t, service);
        if rows.len() >= n || tokio::time::Instant::now() >= deadline {
            assert_eq!(rows.len(), n, "{service}: {rows:?}");
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otlp_input_gets_the_spec_answer_and_only_good_records_are_stored() {
    let t = Otlp::start(&[]).await;
    truncated_protobuf(&t).await;
    wrong_content_type(&t).await;
    invalid_utf8(&t).await;
    deep_any_values(&t).await;
    too_many_records(&t).await;
    wrong_trace_id_length(&t).await;
    gzip_bomb(&t).await;
    empty_request(&t).await;
    hand_written_json(&t).await;
    paths_and_methods(&t).await;
    milliseconds_and_observed_time(&t).await;

    // Everything accepted has arrived (each case waited for its rows); give stray
    // rows of the refused requests (there must be none) the time to arrive too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expected: BTreeMap<String, u64> = [
        ("case04", 2),
        ("case06grpc", 9),
        ("case06http", 9),
        ("case09", 2),
        ("case10", 1),
        ("case11", 1),
    ]
    .into_iter()
    .map(|(s, n)| (s.to_string(), n))
    .collect();
    assert_eq!(stored_per_service(&t), expected);
    t.worker.wait_healthy(Duration::from_secs(5)).await;
}

/// Case 12: a full worker: OTLP/HTTP answers 429 with `Retry-After` and a
/// `google.rpc.Status`; OTLP/gRPC answers `UNAVAILABLE` with `RetryInfo`, both of
/// which the SDKs retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_answers_otlp_with_a_retryable_refusal() {
    // Acknowledged after the INSERT, the batcher's queue (10 rows, flushed after 3 s)
    // is the bound: 8 rows waiting leave no room for 8 more.
    let t = Otlp::start(&[
        ("ACK_MODE", "clickhouse"),
        ("BATCH_MAX_AGE", "3000"),
        ("BATCH_MAX_QUEUE_ROWS", "10"),
    ])
    .await;
    let eight = |service: &str| request(service, (0..8).map(|i| record("full", i)).collect());
    let first = tokio::spawn({
        let (http, url) = (t.http.clone(), format!("{}/v1/logs", t.worker.base));
        let body = eight("case12first").encode_to_vec();
        async move { post(&http, &url, &[PROTOBUF], body).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while t.worker.stats().await["queue_rows"] != 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first 8 rows never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let reply = t.post_protobuf(&eight("case12http")).await;
    assert!(matches!(reply.0, 429 | 503), "{reply:?}");
    let after = reply.1.get("retry-after").expect("Retry-After");
    assert!(
        after.to_str().unwrap().parse::<u64>().unwrap() >= 1,
        "{after:?}"
    );
    let status = rpc_status(&reply);
    assert_ne!(status.code, 0, "{status:?}");
    assert!(status.message.contains("retry later"), "{status:?}");

    let status = t
        .grpc()
        .await
        .export(eight("case12grpc"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let retry = status.get_details_retry_info().expect("RetryInfo detail");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d >= Duration::from_secs(1)),
        "{retry:?}"
    );

    let reply = first.await.unwrap().unwrap();
    assert_eq!(
        reply.0, 200,
        "the admitted request is acknowledged once flushed"
    );
    assert_eq!(
        stored_per_service(&t),
        BTreeMap::from([("case12first".to_string(), 8)]),
        "only the admitted request is stored"
    );
}
