//! OTLP logs (`ExportLogsServiceRequest`, from protobuf or OTLP/JSON) into a
//! [`Batch`], record by record: unlike the native API, one bad record does not
//! refuse the request; it is counted in the response's `partial_success`, as the
//! OTLP specification asks, and the others are accepted.
//!
//! The mapping (the README's table):
//! - timestamp: `time_unix_nano`, else `observed_time_unix_nano`, else the receive
//!   time; values before 1971 are refused (a unit mistake, see
//!   [`super::timestamp`]);
//! - level: `severity_number` 1–4 trace, 5–8 debug, 9–12 info, 13–16 warn, 17–20
//!   error, 21–24 fatal; 0 (unspecified) reads `severity_text` (the native level
//!   names and aliases), else info;
//! - service: the resource attribute `service.name`, else `OTLP_DEFAULT_SERVICE`;
//! - message: the body (a string as is; any other value as compact JSON), else the
//!   record's `event_name`;
//! - trace/span ids: 16/8 bytes as lower-case hex; empty or all zero = absent;
//! - attributes: the record's, then the scope's (`otel.scope.name`,
//!   `otel.scope.version` and its attributes), then the resource's (except
//!   `service.name`); a key already taken keeps the earlier value. Values are text:
//!   strings as is, numbers and booleans as JSON writes them, bytes as base64, arrays
//!   as compact JSON; a map value is flattened into `key.subkey` entries. The
//!   native limits apply (count, key and value sizes).

use std::borrow::Cow;

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::fields::{Checker, Draft};
use super::{timestamp, RecordError};
use crate::config::RecordLimits;
use crate::record::{Batch, Level};

/// Record errors listed per request (the count of rejected records is exact).
const LISTED: usize = 100;

/// What the OTLP mapping needs beyond the record limits.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// `service` of records whose resource has no `service.name`.
    pub default_service: String,
}

/// The records of a request that were refused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Exact count, for `partial_success.rejected_log_records`.
    pub count: usize,
    /// The first problems (at most [`LISTED`]), each naming its record.
    pub errors: Vec<RecordError>,
}

impl Rejected {
    /// `partial_success.error_message`: the count and the first few reasons.
    pub fn message(&self) -> String {
        if self.count == 0 {
            return String::new();
        }
        let first: Vec<String> = self
            .errors
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        format!(
            "{} log record(s) rejected, the others accepted: {}",
            self.count,
            first.join("; ")
        )
    }
}

/// The number of log records in `request`.
pub fn record_count(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

/// Maps every record of `request` (consumed: strings move into the rows) with the
/// native limits; the invalid ones are counted and described in [`Rejected`].
pub fn otlp_batch(
    request: ExportLogsServiceRequest,
    limits: &RecordLimits,
    options: &OtlpOptions,
    now_ns: i64,
) -> (Batch, Rejected) {
    let mut chk = Checker::new(limits, now_ns, LISTED);
    let mut records = Vec::with_capacity(record_count(&request));
    let mut rejected = 0;
    let mut index = 0;
    for resource_logs in request.resource_logs {
        let mut resource = Flat::default();
        let mut service = None;
        for kv in resource_logs
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default()
        {
            if kv.key == "service.name" {
                service = Some(text_of(kv.value));
            } else {
                resource.push_kv(kv);
            }
        }
        let service = service.unwrap_or_else(|| options.default_service.clone());
        for scope_logs in resource_logs.scope_logs {
            let mut scope = Flat::default();
            if let Some(s) = scope_logs.scope {
                scope.push_text("otel.scope.name", s.name);
                scope.push_text("otel.scope.version", s.version);
                s.attributes.into_iter().for_each(|kv| scope.push_kv(kv));
            }
            for log in scope_logs.log_records {
                let context = Context {
                    service: &service,
                    scope: &scope,
                    resource: &resource,
                };
                match map_record(&mut chk, index, log, &context) {
                    Some(record) => records.push(record),
                    None => rejected += 1,
                }
                index += 1;
            }
        }
    }
    let rejected = Rejected {
        count: rejected,
        errors: chk.errors,
    };
    (Batch::new(records), rejected)
}

/// What a record inherits from its resource and scope.
struct Context<'a> {
    service: &'a str,
    scope: &'a Flat,
    resource: &'a Flat,
}

fn map_record(
    chk: &mut Checker<'_>,
    index: usize,
    log: LogRecord,
    context: &Context<'_>,
) -> Option<crate::record::Record> {
    let mut draft = Draft::new(index);
    if log.time_unix_nano != 0 {
        let parsed = timestamp::from_unix_nanos(log.time_unix_nano);
        draft.put_timestamp(chk, "time_unix_nano", parsed);
    } else if log.observed_time_unix_nano != 0 {
        let parsed = timestamp::from_unix_nanos(log.observed_time_unix_nano);
        draft.put_timestamp(chk, "observed_time_unix_nano", parsed);
    }
    level(chk, &mut draft, log.severity_number, &log.severity_text);
    draft.text_service(chk, "resource.service.name", Cow::Borrowed(context.service));
    let message = match log.body {
        Some(body) => text_of(Some(body)),
        None => log.event_name,
    };
    if message.is_empty() {
        let reason = "body is empty and the record has no event_name; send a body".to_owned();
        draft.fail(chk, "body", reason);
    } else {
        draft.text_message(chk, "body", Cow::Owned(message));
    }
    let trace_id = id_hex(chk, &mut draft, "trace_id", &log.trace_id, 16);
    let span_id = id_hex(chk, &mut draft, "span_id", &log.span_id, 8);
    // Hex of the right length by construction: no second check.
    draft.set_ids(trace_id, span_id);
    let mut own = Flat::default();
    log.attributes.into_iter().for_each(|kv| own.push_kv(kv));
    for (key, value) in own.0 {
        draft.owned_attribute(chk, key, value);
    }
    for (key, value) in context.scope.0.iter().chain(&context.resource.0) {
        if !draft.has_attribute(key) {
            draft.owned_attribute(chk, key.clone(), value.clone());
        }
    }
    draft.finish(chk)
}

fn level(chk: &mut Checker<'_>, draft: &mut Draft, number: i32, text: &str) {
    let level = match number {
        0 => return draft.text_level(chk, "severity_text", text),
        1..=4 => Level::Trace,
        5..=8 => Level::Debug,
        9..=12 => Level::Info,
        13..=16 => Level::Warn,
        17..=20 => Level::Error,
        21..=24 => Level::Fatal,
        _ => {
            let reason = format!("severity_number {number} is outside 0..=24 (SeverityNumber)");
            return draft.fail(chk, "severity_number", reason);
        }
    };
    draft.set_level(level);
}

/// Lower-case hex of an id of `len` bytes; "" when absent (empty or all zero).
fn id_hex(chk: &mut Checker<'_>, draft: &mut Draft, name: &str, id: &[u8], len: usize) -> String {
    if id.iter().all(|&b| b == 0) {
        return String::new();
    }
    if id.len() != len {
        let reason = format!(
            "{name} is {} bytes; it must be {len} bytes (or empty)",
            id.len()
        );
        draft.fail(chk, name, reason);
        return String::new();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(len * 2);
    for &b in id {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// Attributes flattened to text pairs, in order.
#[derive(Debug, Default)]
struct Flat(Vec<(String, String)>);

impl Flat {
    fn push_text(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.push((key.to_owned(), value));
        }
    }

    fn push_kv(&mut self, kv: KeyValue) {
        self.push(kv.key, kv.value);
    }

    /// A map value becomes `key.subkey` entries; anything else one entry.
    fn push(&mut self, key: String, value: Option<AnyValue>) {
        match value.and_then(|v| v.value) {
            Some(any_value::Value::KvlistValue(list)) => {
                for kv in list.values {
                    self.push(format!("{key}.{}", kv.key), kv.value);
                }
            }
            None => {}
            value => self.0.push((key, text_of(Some(AnyValue { value })))),
        }
    }
}

/// A value as stored text: strings as is, everything else as compact JSON (bytes as
/// base64, as OTLP/JSON writes them).
fn text_of(value: Option<AnyValue>) -> String {
    match value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::BytesValue(b)) => {
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        None => String::new(),
        other => json_of(other).to_string(),
    }
}

fn json_of(value: Option<any_value::Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        None | Some(any_value::Value::StringValueStrindex(_)) => J::Null,
        Some(any_value::Value::StringValue(s)) => J::String(s),
        Some(any_value::Value::BoolValue(b)) => J::Bool(b),
        Some(any_value::Value::IntValue(i)) => J::from(i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(d).map_or_else(|| J::String(d.to_string()), J::Number)
        }
        Some(any_value::Value::BytesValue(b)) => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(any_value::Value::ArrayValue(a)) => {
            J::Array(a.values.into_iter().map(|v| json_of(v.value)).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => J::Object(
            list.values
                .into_iter()
                .map(|kv| (kv.key, json_of(kv.value.and_then(|v| v.value))))
                .collect(),
        ),
    }
}
