//! The OTLP mapping written straight into the encoding: what it writes must pass the
//! spool's full check (`EncodedBatch::from_payload`, which recomputes the shadowed
//! indexes) and be byte for byte what `encode_batch` writes for the decoded records,
//! with the refused records counted and the others intact.

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

pub(super) const NOW_NS: i64 = 1_750_000_000_000_000_000;

pub(super) fn options() -> OtlpOptions {
    OtlpOptions {
        default_service: "fallback".to_owned(),
    }
}

pub(super) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(super) fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.to_owned())
}

/// Maps `request`, checks the encoding against `encode_batch` and the full check,
/// and returns the decoded records with the refusals. The request's protobuf read by
/// our reader maps to the same bytes and refusals.
fn mapped(request: &ExportLogsServiceRequest, limits: &RecordLimits) -> (Batch, Rejected) {
    let view = LogsView::from_request(request);
    let (encoded, rejected) = otlp_encoded(&view, limits, &options(), NOW_NS);
    let checked = EncodedBatch::from_payload(encoded.payload().clone()).unwrap();
    assert_eq!(checked.len(), encoded.len());
    let batch = encoded.decode().unwrap();
    assert_eq!(EncodedBatch::encode(&batch).payload(), encoded.payload());
    assert_eq!(batch.len() + rejected.count, view.record_count());
    let body = request.encode_to_vec();
    let read = LogsView::decode(&body).expect("our reader reads what prost writes");
    let (from_wire, wire_rejected) = otlp_encoded(&read, limits, &options(), NOW_NS);
    assert_eq!(from_wire.payload(), encoded.payload());
    assert_eq!(wire_rejected, rejected);
    (batch, rejected)
}

pub(super) fn record(
    severity: i32,
    body: Option<any_value::Value>,
    attributes: Vec<KeyValue>,
) -> LogRecord {
    LogRecord {
        time_unix_nano: NOW_NS as u64,
        severity_number: severity,
        severity_text: "SEV".to_owned(),
        body: body.map(|value| AnyValue { value: Some(value) }),
        attributes,
        flags: 0x101,
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        ..Default::default()
    }
}

pub(super) fn scope_logs(
    name: &str,
    version: &str,
    attributes: Vec<KeyValue>,
    log_records: Vec<LogRecord>,
) -> ScopeLogs {
    ScopeLogs {
        scope: Some(InstrumentationScope {
            name: name.to_owned(),
            version: version.to_owned(),
            attributes,
            ..Default::default()
        }),
        log_records,
        schema_url: "https://opentelemetry.io/schemas/1.21.0".to_owned(),
    }
}

pub(super) fn resource_logs(attributes: Vec<KeyValue>, scope_logs: Vec<ScopeLogs>) -> ResourceLogs {
    ResourceLogs {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_logs,
        schema_url: "r:".to_owned(),
    }
}

#[test]
fn every_value_kind_and_repeated_keys_encode_as_encode_batch_does() {
    let map = any_value::Value::KvlistValue(KeyValueList {
        values: vec![
            kv("user", text("42")),
            kv(
                "inner",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("deep", any_value::Value::BoolValue(false))],
                }),
            ),
        ],
    });
    let list = any_value::Value::ArrayValue(ArrayValue {
        values: vec![AnyValue {
            value: Some(any_value::Value::DoubleValue(1.5)),
        }],
    });
    let own = vec![
        kv("status", any_value::Value::IntValue(200)),
        kv("ok", any_value::Value::BoolValue(true)),
        kv("raw", any_value::Value::BytesValue(vec![0, 255])),
        kv("tags", list.clone()),
        kv("ctx", map.clone()),
        // Shadows the scope's name in the native view, and a resource attribute.
        kv("otel.scope.name", text("own")),
        kv("host.name", text("own-host")),
        KeyValue {
            key: "no.value".to_owned(),
            value: None,
            ..Default::default()
        },
    ];
    let request = ExportLogsServiceRequest {
        resource_logs: vec![
            resource_logs(
                vec![
                    kv("service.name", text("checkout")),
                    kv("host.name", text("web-3")),
                    kv("region", text("eu")),
                ],
                vec![
                    scope_logs(
                        "app.orders",
                        "1.2",
                        vec![kv("region", text("scope-eu")), kv("region", text("again"))],
                        vec![
                            record(9, Some(text("order 4711 processed")), own),
                            record(17, Some(map), vec![kv("x", text("y"))]),
                            record(10, Some(list), vec![]),
                            LogRecord {
                                event_name: "login".to_owned(),
                                ..Default::default()
                            },
                        ],
                    ),
                    scope_logs("", "", vec![], vec![record(5, Some(text("m")), vec![])]),
                ],
            ),
            ResourceLogs {
                resource: None,
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record(1, Some(text("no resource")), vec![])],
                    ..Default::default()
                }],
                ..Default::default()
            },
            resource_logs(
                vec![kv("service.name", any_value::Value::IntValue(7))],
                vec![scope_logs(
                    "s",
                    "",
                    vec![],
                    vec![record(13, Some(text("w")), vec![])],
                )],
            ),
        ],
    };
    let (batch, rejected) = mapped(&request, &RecordLimits::default());
    assert_eq!(rejected, Rejected::default());
    let records = &batch.records;
    assert_eq!(records.len(), 7);
    let first = &records[0];
    assert_eq!(first.service, "checkout");
    assert_eq!(first.trace_id, "0102030405060708090a0b0c0d0e0f10");
    assert_eq!(first.span_id, "0102030405060708");
    let attributes: Vec<(&str, &str)> = first
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        attributes,
        [
            ("status", "200"),
            ("ok", "true"),
            ("raw", "AP8="),
            ("tags", "[1.5]"),
            ("ctx.user", "42"),
            ("ctx.inner.deep", "false"),
            ("otel.scope.name", "own"),
            ("host.name", "own-host"),
            ("region", "scope-eu"),
            ("region", "again"),
            ("host.name", "web-3"),
            ("region", "eu"),
        ]
    );
    let otel = first.otel.as_ref().unwrap();
    assert_eq!((otel.own_attributes, otel.scope_attributes), (8, 2));
    assert_eq!((otel.severity_number, otel.trace_flags), (9, 1));
    assert_eq!(otel.scope_name, "app.orders");
    assert_eq!(otel.resource_schema_url, "r:");
    let body: serde_json::Value = serde_json::from_str(&records[1].message).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"user": "42", "inner": {"deep": false}})
    );
    assert_eq!(records[2].message, "[1.5]");
    assert_eq!(records[3].message, "login");
    assert_eq!(records[3].timestamp_ns, NOW_NS);
    assert_eq!(records[5].service, "fallback");
    assert_eq!(records[6].service, "7");
}

#[test]
fn refused_records_leave_the_others_intact() {
    let bad_span = LogRecord {
        span_id: vec![1, 2, 3],
        ..record(9, Some(text("bad span")), vec![])
    };
    let limits = RecordLimits::default();
    let big = "v".repeat(limits.max_attribute_value_bytes + 1);
    let request = ExportLogsServiceRequest {
        resource_logs: vec![
            resource_logs(
                vec![kv("service.name", text("a"))],
                vec![scope_logs(
                    "lib",
                    "1",
                    vec![kv("k", text("v"))],
                    vec![
                        record(9, Some(text("ok 0")), vec![kv("own", text("1"))]),
                        bad_span,
                        record(99, Some(text("bad severity")), vec![]),
                        record(9, None, vec![]),
                        record(9, Some(text("ok 4")), vec![kv("k", text("own"))]),
                    ],
                )],
            ),
            // A resource attribute over the limit refuses all its records.
            resource_logs(
                vec![kv("service.name", text("b")), kv("big", text(&big))],
                vec![scope_logs(
                    "",
                    "",
                    vec![],
                    vec![record(9, Some(text("x")), vec![])],
                )],
            ),
            resource_logs(
                vec![kv("service.name", text("c"))],
                vec![scope_logs(
                    "",
                    "",
                    vec![],
                    vec![record(9, Some(text("ok 6")), vec![])],
                )],
            ),
        ],
    };
    let (batch, rejected) = mapped(&request, &limits);
    let messages: Vec<&str> = batch.records.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(messages, ["ok 0", "ok 4", "ok 6"]);
    assert_eq!(rejected.count, 4);
    let fields: Vec<(usize, &str)> = rejected
        .errors
        .iter()
        .map(|e| (e.index, e.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (1, "span_id"),
            (2, "severity_number"),
            (3, "body"),
            // As before: the draft also finds no message.
            (3, "message"),
            (5, "resource.attributes.big"),
        ]
    );
}

/// Keys and values from few choices, so that keys collide across own, scope and
/// resource and some records or parts go over a limit; every kind of value, nested.
pub(super) fn random_value(rng: &mut StdRng, depth: u32) -> Option<AnyValue> {
    let value = match rng.random_range(0..12) {
        0 => return None,
        8 if depth < 2 => any_value::Value::ArrayValue(ArrayValue {
            values: (0..rng.random_range(0..3))
                .map(|_| random_value(rng, depth + 1).unwrap_or_default())
                .collect(),
        }),
        9 => any_value::Value::DoubleValue(
            [1.5, -0.0, f64::NAN, f64::INFINITY, 1e300, 3.0][rng.random_range(0..6)],
        ),
        10 => any_value::Value::StringValueStrindex(rng.random_range(-1..3)),
        11 => return Some(AnyValue { value: None }),
        1 => any_value::Value::IntValue(rng.random_range(-5..5)),
        2 => any_value::Value::BoolValue(rng.random()),
        3 => any_value::Value::BytesValue(vec![rng.random(); rng.random_range(0..3)]),
        4 if depth < 2 => any_value::Value::KvlistValue(KeyValueList {
            values: random_kvs(rng, depth + 1, 2),
        }),
        5 => any_value::Value::StringValue("x".repeat(rng.random_range(0..12))),
        _ => any_value::Value::StringValue(["", "v", "ü"][rng.random_range(0..3)].to_owned()),
    };
    Some(AnyValue { value: Some(value) })
}

pub(super) fn random_kvs(rng: &mut StdRng, depth: u32, max: usize) -> Vec<KeyValue> {
    const KEYS: [&str; 7] = [
        "a",
        "b",
        "",
        "otel.scope.name",
        "otel.scope.version",
        "service.name",
        "kkkkkkkkkk",
    ];
    (0..rng.random_range(0..=max))
        .map(|_| KeyValue {
            key: KEYS[rng.random_range(0..KEYS.len())].to_owned(),
            value: random_value(rng, depth),
            key_strindex: rng.random_range(0..2),
        })
        .collect()
}

pub(super) fn random_record(rng: &mut StdRng) -> LogRecord {
    let id = |rng: &mut StdRng, len: usize| match rng.random_range(0..4) {
        0 => Vec::new(),
        1 => vec![0; len],
        2 => vec![rng.random(); rng.random_range(1..20)],
        _ => (0..len).map(|_| rng.random()).collect(),
    };
    LogRecord {
        time_unix_nano: [0, 5, NOW_NS as u64][rng.random_range(0..3)],
        severity_number: rng.random_range(-1..27),
        severity_text: ["", "warn", "loud"][rng.random_range(0..3)].to_owned(),
        body: random_value(rng, 0),
        attributes: random_kvs(rng, 0, 5),
        event_name: ["", "ev"][rng.random_range(0..2)].to_owned(),
        flags: rng.random(),
        trace_id: id(rng, 16),
        span_id: id(rng, 8),
        observed_time_unix_nano: [0, NOW_NS as u64][rng.random_range(0..2)],
        dropped_attributes_count: rng.random_range(0..3),
    }
}

pub(super) fn random_request(rng: &mut StdRng) -> ExportLogsServiceRequest {
    let names = ["", "lib", "kkkkkkkkkkkkkkkkkkkkkkkkkkkk"];
    let resource_logs = (0..rng.random_range(0..3))
        .map(|_| ResourceLogs {
            resource: rng.random_bool(0.8).then(|| Resource {
                attributes: random_kvs(rng, 0, 4),
                dropped_attributes_count: rng.random_range(0..3),
                entity_refs: (0..rng.random_range(0..2))
                    .map(|_| EntityRef {
                        schema_url: names[rng.random_range(0..2)].to_owned(),
                        r#type: "host".to_owned(),
                        id_keys: vec!["host.id".to_owned()],
                        description_keys: vec![],
                    })
                    .collect(),
            }),
            scope_logs: (0..rng.random_range(0..3))
                .map(|_| ScopeLogs {
                    scope: rng.random_bool(0.8).then(|| InstrumentationScope {
                        name: names[rng.random_range(0..3)].to_owned(),
                        version: names[rng.random_range(0..2)].to_owned(),
                        attributes: random_kvs(rng, 0, 3),
                        dropped_attributes_count: rng.random_range(0..3),
                    }),
                    log_records: (0..rng.random_range(0..5))
                        .map(|_| random_record(rng))
                        .collect(),
                    schema_url: names[rng.random_range(0..2)].to_owned(),
                })
                .collect(),
            schema_url: names[rng.random_range(0..2)].to_owned(),
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

/// Small limits, so that the random inputs hit every one of them.
pub(super) fn small_limits() -> RecordLimits {
    RecordLimits {
        max_attributes: 8,
        max_attribute_key_bytes: 8,
        max_attribute_value_bytes: 10,
        ..RecordLimits::default()
    }
}

#[test]
fn random_requests_encode_as_encode_batch_does() {
    let mut rng = StdRng::seed_from_u64(21);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..2_000 {
        let request = random_request(&mut rng);
        for limits in [RecordLimits::default(), small_limits()] {
            let (batch, rejected) = mapped(&request, &limits);
            accepted += batch.len();
            refused += rejected.count;
            // The owned form says the same.
            let (owned, owned_rejected) = otlp_batch(request.clone(), &limits, &options(), NOW_NS);
            assert_eq!((owned, owned_rejected), (batch, rejected));
        }
    }
    // Both outcomes were exercised, many times.
    assert!(
        accepted > 200 && refused > 200,
        "{accepted} accepted, {refused} refused"
    );
}
