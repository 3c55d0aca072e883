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
//!   `service.name`); in the native layouts a key already taken keeps the earlier
//!   value, the OpenTelemetry layout keeps the three apart. Values are text: strings
//!   as is, numbers and booleans as JSON writes them, bytes as base64, arrays as
//!   compact JSON; a map value is flattened into `key.subkey` entries. The native
//!   limits apply: key and value sizes to each attribute (a resource's or scope's
//!   attribute over a limit refuses all its records), the count to the three lists
//!   together; severity text, event name, scope name and version and schema URLs are
//!   held to the value size.
//!
//! The OTLP fields the native row has no column for (severity number and text, trace
//! flags, event name, scope, schema URLs) travel with the record in
//! [`OtelFields`] for the OpenTelemetry table layout.

use std::borrow::Cow;

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::fields::{Checker, Draft};
use super::{timestamp, RecordError};
use crate::config::RecordLimits;
use crate::record::{Batch, Level, OtelFields};

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
        let resource = Part::resource(resource_logs.resource, resource_logs.schema_url, limits);
        let service = resource
            .service
            .clone()
            .unwrap_or_else(|| options.default_service.clone());
        for scope_logs in resource_logs.scope_logs {
            let scope = Part::scope(scope_logs.scope, scope_logs.schema_url, limits);
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

/// The `service` [`otlp_batch`] gives the records of `resource` (the last
/// `service.name` attribute, else `default`): what an API key's services are checked
/// against before mapping.
pub fn resource_service(resource: Option<&Resource>, default: &str) -> String {
    resource
        .and_then(|r| {
            r.attributes
                .iter()
                .rev()
                .find(|kv| kv.key == "service.name")
        })
        .map_or_else(|| default.to_owned(), |kv| text_of(kv.value.clone()))
}

/// What a record inherits from its resource and scope.
struct Context<'a> {
    service: &'a str,
    scope: &'a Part,
    resource: &'a Part,
}

/// A resource or a scope: its attributes flattened and checked once for all its
/// records, and its text fields.
#[derive(Debug, Default)]
struct Part {
    attributes: Vec<(String, String)>,
    /// The resource's `service.name`.
    service: Option<String>,
    /// The scope's name and version.
    name: String,
    version: String,
    schema_url: String,
    /// The first field over a limit, with the reason: refuses every record of the part.
    problem: Option<(String, String)>,
}

impl Part {
    fn resource(resource: Option<Resource>, schema_url: String, limits: &RecordLimits) -> Part {
        let mut part = Part {
            schema_url,
            ..Part::default()
        };
        let mut flat = Flat::default();
        for kv in resource.map(|r| r.attributes).unwrap_or_default() {
            if kv.key == "service.name" {
                part.service = Some(text_of(kv.value));
            } else {
                flat.push_kv(kv);
            }
        }
        part.attributes = flat.0;
        part.check("resource", limits);
        part
    }

    fn scope(
        scope: Option<InstrumentationScope>,
        schema_url: String,
        limits: &RecordLimits,
    ) -> Part {
        let mut part = Part {
            schema_url,
            ..Part::default()
        };
        if let Some(scope) = scope {
            let mut flat = Flat::default();
            scope.attributes.into_iter().for_each(|kv| flat.push_kv(kv));
            part.attributes = flat.0;
            part.name = scope.name;
            part.version = scope.version;
        }
        part.check("scope", limits);
        part
    }

    /// The native key and value limits, and the value limit for the text fields.
    fn check(&mut self, what: &str, limits: &RecordLimits) {
        let (max_key, max_value) = (
            limits.max_attribute_key_bytes,
            limits.max_attribute_value_bytes,
        );
        let texts = [
            ("schema_url", &self.schema_url),
            ("name", &self.name),
            ("version", &self.version),
        ];
        for (name, text) in texts {
            if text.len() > max_value {
                let reason = format!("is {} bytes; at most {max_value} are accepted", text.len());
                self.problem = Some((format!("{what}.{name}"), reason));
                return;
            }
        }
        for (key, value) in &self.attributes {
            let reason = if key.is_empty() || key.len() > max_key {
                format!(
                    "key is {} bytes; keys must be 1 to {max_key} bytes",
                    key.len()
                )
            } else if value.len() > max_value {
                format!(
                    "value is {} bytes; at most {max_value} are accepted",
                    value.len()
                )
            } else {
                continue;
            };
            self.problem = Some((format!("{what}.attributes.{key}"), reason));
            return;
        }
    }
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
        None => log.event_name.clone(),
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
    let max_value = chk.limits.max_attribute_value_bytes;
    for (name, text) in [
        ("severity_text", &log.severity_text),
        ("event_name", &log.event_name),
    ] {
        if text.len() > max_value {
            let reason = format!("is {} bytes; at most {max_value} are accepted", text.len());
            draft.fail(chk, name, reason);
        }
    }
    let mut record = draft.finish(chk)?.into_record();
    if let Some((field, reason)) = context
        .resource
        .problem
        .iter()
        .chain(&context.scope.problem)
        .next()
    {
        chk.report(index, field.clone(), reason.clone());
        return None;
    }
    let own = record.attributes.len();
    let (scope, resource) = (&context.scope.attributes, &context.resource.attributes);
    let total = own + scope.len() + resource.len();
    if total > chk.limits.max_attributes {
        let reason = format!(
            "{total} attributes with the scope's and the resource's; at most {} are accepted",
            chk.limits.max_attributes
        );
        chk.report(index, "attributes", reason);
        return None;
    }
    record.attributes.reserve(scope.len() + resource.len());
    record
        .attributes
        .extend(scope.iter().chain(resource).cloned());
    record.otel = Some(Box::new(OtelFields {
        // A valid number is 0..=24 (checked by `level`).
        severity_number: u8::try_from(log.severity_number).unwrap_or(0),
        severity_text: log.severity_text,
        trace_flags: (log.flags & 0xff) as u8,
        event_name: log.event_name,
        scope_name: context.scope.name.clone(),
        scope_version: context.scope.version.clone(),
        scope_schema_url: context.scope.schema_url.clone(),
        resource_schema_url: context.resource.schema_url.clone(),
        own_attributes: own,
        scope_attributes: scope.len(),
    }));
    Some(record)
}

fn level(chk: &mut Checker<'_>, draft: &mut Draft<'_>, number: i32, text: &str) {
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
fn id_hex(
    chk: &mut Checker<'_>,
    draft: &mut Draft<'_>,
    name: &str,
    id: &[u8],
    len: usize,
) -> String {
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
