//! The records the load generator sends, shared by `benches/ingest_load.rs` (the
//! load) and `benches/stages.rs` (per-stage micro-benchmarks), so both measure the
//! same bytes: varied ~220-byte records, as a JSON object or an OTLP `LogRecord`.
//!
//! Not every bench uses every item.
#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

pub const SERVICES: &[&str] = &[
    "checkout",
    "payments",
    "auth",
    "search",
    "inventory",
    "shipping",
    "frontend",
    "recommendation",
    "email",
    "cart",
    "ledger",
    "notifications",
];
pub const REGIONS: &[&str] = &[
    "eu-west-1",
    "eu-central-1",
    "us-east-1",
    "us-west-2",
    "ap-south-1",
];
pub const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
pub const ROUTES: &[&str] = &[
    "/api/v2/items",
    "/api/v2/cart",
    "/api/v2/orders",
    "/api/v2/users",
    "/healthz",
];

pub fn level(rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..100) {
        0..=69 => "info",
        70..=79 => "debug",
        80..=91 => "warn",
        92..=97 => "error",
        98 => "trace",
        _ => "fatal",
    }
}

pub fn message(rng: &mut StdRng) -> String {
    let id = rng.random_range(10_000..10_000_000u32);
    let ms = rng.random_range(1..2_500u32);
    match rng.random_range(0..8) {
        0 => format!("order {id} processed in {ms} ms"),
        1 => format!(
            "{} {}/{id} returned {} in {ms} ms",
            METHODS[rng.random_range(0..METHODS.len())],
            ROUTES[rng.random_range(0..ROUTES.len())],
            [200, 200, 201, 204, 400, 404, 500][rng.random_range(0..7)]
        ),
        2 => format!("cache miss product:{id}, loaded in {ms} ms"),
        3 => format!(
            "payment {id} declined (attempt {} of 3)",
            rng.random_range(1..4)
        ),
        4 => format!(
            "retrying upstream call in {ms} ms (attempt {})",
            rng.random_range(1..6)
        ),
        5 => format!(
            "queue depth {} exceeds soft limit {}",
            rng.random_range(1_000..50_000),
            1_000
        ),
        6 => format!("user {id} signed in, session {} s", ms * 10),
        _ => format!(
            "flushed {} rows to storage in {ms} ms",
            rng.random_range(1..100_000)
        ),
    }
}

pub fn hex(rng: &mut StdRng, len: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..len)
        .map(|_| DIGITS[rng.random_range(0..16)] as char)
        .collect()
}

/// RFC 3339 UTC with nanoseconds, from nanoseconds since the epoch.
pub fn rfc3339(epoch_ns: u128) -> String {
    zero_logs::record::format_rfc3339(epoch_ns as i128, 9)
}

/// One generated record, before it is written as JSON or as an OTLP `LogRecord`.
pub struct Rec {
    /// Nanoseconds since the epoch.
    pub ts_ns: u128,
    pub level: &'static str,
    pub service: &'static str,
    pub message: String,
    /// Trace and span id: 32 and 16 lower-case hex digits.
    pub ids: Option<(String, String)>,
    pub attributes: Vec<(&'static str, Attr)>,
}

/// An attribute value: JSON writes `Int` as a number, OTLP as an `int_value`.
pub enum Attr {
    Str(String),
    Int(i64),
}

/// A varied record. The draws from `rng` come in a fixed order, so a seed gives the
/// same records whatever the protocol.
pub fn record(rng: &mut StdRng, now_ns: u128) -> Rec {
    let ts_ns = now_ns - rng.random_range(0..60_000_000_000u128);
    let mut attributes = Vec::new();
    if rng.random_bool(0.5) {
        let region = REGIONS[rng.random_range(0..REGIONS.len())];
        attributes.push(("region", Attr::Str(region.into())));
    }
    if rng.random_bool(0.5) {
        let status: i32 = [200, 201, 404, 500][rng.random_range(0..4)];
        attributes.push(("status", Attr::Int(status.into())));
    }
    if rng.random_bool(0.25) {
        let host: i32 = rng.random_range(1..40);
        attributes.push(("host", Attr::Str(format!("web-{host}"))));
    }
    // In key order, as serde_json writes an object: OTLP then sends them in the
    // order of the JSON bodies, and both loads store identical rows.
    attributes.sort_unstable_by_key(|(key, _)| *key);
    let level = level(rng);
    let service = SERVICES[rng.random_range(0..SERVICES.len())];
    let message = message(rng);
    let ids = rng.random_bool(0.7).then(|| (hex(rng, 32), hex(rng, 16)));
    Rec {
        ts_ns,
        level,
        service,
        message,
        ids,
        attributes,
    }
}

impl Rec {
    /// The record in zero-logs' JSON shape.
    pub fn json(&self) -> Value {
        let mut r = json!({
            "timestamp": rfc3339(self.ts_ns),
            "level": self.level,
            "service": self.service,
            "message": self.message,
        });
        if let Some((trace_id, span_id)) = &self.ids {
            r["trace_id"] = trace_id.as_str().into();
            r["span_id"] = span_id.as_str().into();
        }
        if !self.attributes.is_empty() {
            let attributes: serde_json::Map<String, Value> = self
                .attributes
                .iter()
                .map(|(key, value)| {
                    let value = match value {
                        Attr::Str(s) => Value::from(s.as_str()),
                        Attr::Int(i) => Value::from(*i),
                    };
                    ((*key).to_owned(), value)
                })
                .collect();
            r["attributes"] = attributes.into();
        }
        r
    }
}

// === OTLP request bodies ===

/// One encoded `ExportLogsServiceRequest`.
pub struct Encoded {
    pub body: Vec<u8>,
    /// The records' own encoded size (`LogRecord`s, without resource and framing).
    pub record_bytes: usize,
    /// `ResourceLogs` in the request: one per distinct service.
    pub resources: usize,
}

/// `records` as an `ExportLogsServiceRequest`, encoded. `observed_ns`: when the
/// records were "observed" (the pool's generation time).
pub fn request_body(records: &[Rec], observed_ns: u128) -> Encoded {
    let mut services: Vec<&'static str> = Vec::new();
    let mut groups: Vec<Vec<LogRecord>> = Vec::new();
    let mut record_bytes = 0;
    for rec in records {
        let log = log_record(rec, observed_ns);
        record_bytes += log.encoded_len();
        let group = match services.iter().position(|s| *s == rec.service) {
            Some(i) => i,
            None => {
                services.push(rec.service);
                groups.push(Vec::new());
                services.len() - 1
            }
        };
        groups[group].push(log);
    }
    let resources = services.len();
    let request = ExportLogsServiceRequest {
        resource_logs: services
            .into_iter()
            .zip(groups)
            .map(|(service, log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![key_value("service.name", string(service))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    Encoded {
        body: request.encode_to_vec(),
        record_bytes,
        resources,
    }
}

fn log_record(rec: &Rec, observed_ns: u128) -> LogRecord {
    let (trace_id, span_id) = match &rec.ids {
        Some((trace, span)) => (unhex(trace), unhex(span)),
        None => (Vec::new(), Vec::new()),
    };
    LogRecord {
        time_unix_nano: nanos(rec.ts_ns),
        observed_time_unix_nano: nanos(observed_ns),
        severity_number: severity(rec.level) as i32,
        severity_text: rec.level.to_owned(),
        body: Some(string(&rec.message)),
        attributes: rec
            .attributes
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Attr::Str(s) => string(s),
                    Attr::Int(i) => AnyValue {
                        value: Some(any_value::Value::IntValue(*i)),
                    },
                };
                key_value(key, value)
            })
            .collect(),
        // The W3C trace flags' sampled bit when in a trace, as the SDKs set it.
        flags: u32::from(rec.ids.is_some()),
        trace_id,
        span_id,
        ..Default::default()
    }
}

/// The level's OTLP severity: the first number of its range (INFO = 9, ...).
fn severity(level: &str) -> SeverityNumber {
    match level {
        "trace" => SeverityNumber::Trace,
        "debug" => SeverityNumber::Debug,
        "info" => SeverityNumber::Info,
        "warn" => SeverityNumber::Warn,
        "error" => SeverityNumber::Error,
        "fatal" => SeverityNumber::Fatal,
        other => unreachable!("the generator draws no level {other:?}"),
    }
}

fn nanos(ns: u128) -> u64 {
    u64::try_from(ns).expect("nanoseconds since 1970 fit in u64 until 2554")
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

/// Bytes of the generator's lower-case hex ids.
fn unhex(hex: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => unreachable!("the generator writes lower-case hex"),
    };
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| (digit(pair[0]) << 4) | digit(pair[1]))
        .collect()
}
