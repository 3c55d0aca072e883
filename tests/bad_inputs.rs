//! Every kind of bad input gets its documented status and error detail, and
//! ClickHouse holds none of those rows. Real worker binary, real ClickHouse.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use zero_logs::testing::ClickHouseServer;

const GOOD: &str = r#"{"service":"api","message":"fine"}"#;

struct Case {
    name: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
    /// Substring of the JSON error body (message or a detail).
    expect: &'static str,
    /// Expected `details[0].field`, when the error is about one record field.
    field: Option<&'static str>,
}

fn json(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    expect: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        headers: vec![("content-type", "application/json")],
        body: body.into(),
        status,
        expect,
        field,
    }
}

fn cases() -> Vec<Case> {
    let big_message = format!(r#"[{{"service":"a","message":"{}"}}]"#, "x".repeat(2048));
    let many_attrs =
        r#"[{"service":"a","message":"m","attributes":{"a":1,"b":2,"c":3,"d":4,"e":5}}]"#;
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let mut invalid_utf8 = br#"[{"service":"a","message":"bad "#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#""}]"#);
    let too_many = format!("[{}]", vec![GOOD; 101].join(","));
    let bomb = gzip(&vec![b' '; 50 << 20]);
    let over_limit = format!("[{}]", vec![GOOD; 40_000].join(","));
    vec![
        json("malformed JSON", r#"[{"service":"a","#, 400, "JSON", None),
        json("not an array or wrapper", r#""hello""#, 400, "", None),
        json(
            "service of wrong type",
            r#"[{"service":42,"message":"m"}]"#,
            400,
            "service",
            Some("service"),
        ),
        json(
            "missing service",
            r#"[{"message":"m"}]"#,
            400,
            "service",
            Some("service"),
        ),
        json(
            "missing message",
            r#"[{"service":"a"}]"#,
            400,
            "message",
            Some("message"),
        ),
        json(
            "unknown level",
            r#"[{"service":"a","message":"m","level":"loud"}]"#,
            400,
            "loud",
            Some("level"),
        ),
        json(
            "bad timestamp",
            r#"[{"service":"a","message":"m","timestamp":"yesterday"}]"#,
            400,
            "yesterday",
            Some("timestamp"),
        ),
        json(
            "timestamp out of range",
            r#"[{"service":"a","message":"m","timestamp":"1969-12-31T23:59:59Z"}]"#,
            400,
            "",
            Some("timestamp"),
        ),
        json("invalid UTF-8", invalid_utf8, 400, "UTF-8", None),
        json(
            "oversized message",
            big_message,
            400,
            "message",
            Some("message"),
        ),
        json(
            "too many attributes",
            many_attrs,
            400,
            "attributes",
            Some("attributes"),
        ),
        json(
            "nested attribute",
            r#"[{"service":"a","message":"m","attributes":{"a":{"b":1}}}]"#,
            400,
            "flat",
            Some("attributes.a"),
        ),
        json("deep nesting", deep, 400, "", None),
        json(
            "bad trace id",
            r#"[{"service":"a","message":"m","trace_id":"xyz"}]"#,
            400,
            "trace_id",
            Some("trace_id"),
        ),
        json("empty batch", "[]", 400, "", None),
        json("too many records", too_many, 413, "", None),
        json(
            "one bad record among good ones",
            format!(r#"[{GOOD},{{"service":"a"}},{GOOD}]"#),
            400,
            "rejected whole",
            Some("message"),
        ),
        Case {
            name: "bad NDJSON line",
            headers: vec![("content-type", "application/x-ndjson")],
            body: format!("{GOOD}\n{{oops\n{GOOD}\n").into_bytes(),
            status: 400,
            expect: "",
            field: Some(""),
        },
        Case {
            name: "wrong content type",
            headers: vec![("content-type", "text/xml")],
            body: b"<logs/>".to_vec(),
            status: 415,
            expect: "Content-Type",
            field: None,
        },
        Case {
            name: "unsupported content encoding",
            headers: vec![
                ("content-type", "application/json"),
                ("content-encoding", "br"),
            ],
            body: b"xx".to_vec(),
            status: 415,
            expect: "Content-Encoding",
            field: None,
        },
        Case {
            name: "gzip bomb",
            headers: vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            body: bomb,
            status: 413,
            expect: "after decompression",
            field: None,
        },
        Case {
            name: "corrupt gzip",
            headers: vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            body: b"definitely not gzip".to_vec(),
            status: 400,
            expect: "gzip",
            field: None,
        },
        json("body over the limit", over_limit, 413, "limit", None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_documented_errors_and_write_nothing() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = Worker::start(
        &ch,
        &db,
        &[
            ("MAX_MESSAGE_BYTES", "1024"),
            ("MAX_ATTRIBUTES", "4"),
            ("MAX_BATCH_RECORDS", "100"),
            ("MAX_BODY_BYTES", "1MiB"),
        ],
    )
    .await;
    let client = client();
    let url = format!("{}/api/v1/logs", worker.base);
    let cases = cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let (status, headers, body) = post(&client, &url, &case.headers, case.body.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let text = String::from_utf8_lossy(&body).to_string();
        let parsed: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                failures.push(format!("{}: body is not JSON: {text}", case.name));
                continue;
            }
        };
        if status != case.status {
            failures.push(format!(
                "{}: status {status}, want {} ({text})",
                case.name, case.status
            ));
        }
        if parsed["error"].as_str().unwrap_or_default().is_empty() {
            failures.push(format!("{}: no error message: {text}", case.name));
        }
        if !text.contains(case.expect) {
            failures.push(format!("{}: {text:?} lacks {:?}", case.name, case.expect));
        }
        if let Some(field) = case.field {
            let got = parsed["details"][0]["field"].as_str();
            if got != Some(field) {
                failures.push(format!(
                    "{}: details[0].field {got:?}, want {field:?} ({text})",
                    case.name
                ));
            }
        }
        assert_eq!(
            headers.get("content-type").unwrap(),
            "application/json",
            "{}",
            case.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The NDJSON error points at the bad line's record index.
    let (_, _, body) = post(
        &client,
        &url,
        &[("content-type", "application/x-ndjson")],
        format!("{GOOD}\n{{oops\n"),
    )
    .await
    .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed["details"][0]["index"], 1, "{parsed}");

    // Several bad records: every one reported with its index.
    let (_, _, body) = post(
        &client,
        &url,
        &[],
        format!(r#"[{GOOD},{{"service":"a"}},{{"message":"m"}}]"#),
    )
    .await
    .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let indexes: Vec<u64> = parsed["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![1, 2], "{parsed}");

    grpc_bad_inputs(&worker).await;

    // Nothing of any of those batches reached ClickHouse; a good one does.
    let (status, _, _) = post(&client, &url, &[], format!("[{GOOD}]")).await.unwrap();
    assert_eq!(status, 202);
    assert_eq!(
        wait_rows(&ch, &db, 1, Duration::from_secs(10)).await,
        1,
        "the good batch is stored"
    );
    // Give stray rows (there must be none) the time to arrive too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count_rows(&ch, &db),
        1,
        "only the one good batch may be stored"
    );
    let stats = worker.stats().await;
    assert!(
        stats["records_rejected"].as_u64().unwrap() >= cases.len() as u64 - 6,
        "{stats}"
    );
}

/// gRPC: bad records, empty batch and truncated protobuf are INVALID_ARGUMENT.
async fn grpc_bad_inputs(worker: &Worker) {
    use prost::Message;
    use zero_logs::proto::{IngestRequest, LogRecord, RecordErrors};

    let mut client =
        zero_logs::proto::log_service_client::LogServiceClient::connect(worker.base.clone())
            .await
            .expect("gRPC connect");
    let bad = IngestRequest {
        logs: vec![
            LogRecord {
                service: "a".into(),
                message: "ok".into(),
                ..Default::default()
            },
            LogRecord {
                service: "a".into(),
                message: "m".into(),
                level: "loud".into(),
                ..Default::default()
            },
        ],
    };
    let status = client.ingest(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = RecordErrors::decode(status.details()).expect("details decode");
    assert_eq!(details.errors.len(), 1);
    assert_eq!(
        (details.errors[0].index, details.errors[0].field.as_str()),
        (1, "level")
    );

    let status = client
        .ingest(IngestRequest { logs: vec![] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A length-prefixed frame whose protobuf is cut in the middle of a field.
    let full = IngestRequest {
        logs: vec![LogRecord {
            service: "svc".into(),
            message: "hello world".into(),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let cut = &full[..full.len() - 4];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(cut.len() as u32).to_be_bytes());
    frame.extend_from_slice(cut);
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::post(format!("{}/zerologs.v1.LogService/Ingest", worker.base))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)))
        .unwrap();
    let resp = h2.request(req).await.expect("raw gRPC request");
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let code = headers
        .get("grpc-status")
        .or_else(|| trailers.get("grpc-status"))
        .expect("grpc-status")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        code,
        (tonic::Code::InvalidArgument as i32).to_string(),
        "{headers:?} {trailers:?}"
    );
}
