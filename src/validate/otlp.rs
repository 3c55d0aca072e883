//! OTLP logs (`ExportLogsServiceRequest`, from protobuf or OTLP/JSON) into an
//! [`EncodedBatch`], record by record: unlike the native API, one bad record does not
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
//! flags, event name, scope, schema URLs) travel with the record (the `otel` part of
//! the encoding, [`OtelFields`](crate::record::OtelFields) once decoded) for the
//! OpenTelemetry table layout.
//!
//! Records are validated straight into the encoding ([`BatchWriter::push_otlp`]) with
//! their text borrowed from the decoded request: a string attribute or body is copied
//! once, into the payload. A resource's and a scope's attributes are flattened and
//! checked once, and written for each of their records from that one copy.

use std::borrow::Cow;

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::fields::{Checker, Draft};
use super::{timestamp, RecordError};
use crate::codec::{BatchWriter, EncodedBatch, OtelShared, OtlpRecord, TextPair};
use crate::config::RecordLimits;
use crate::record::{Batch, Level};

#[cfg(test)]
mod tests;

/// Record errors listed per request (the count of rejected records is exact).
const LISTED: usize = 100;

/// Encoded bytes to reserve per record beyond what it inherits: the fixed fields, ids,
/// a short message and a few attributes. The load generator's records take ~136; a
/// wrong guess costs a reallocation, or a shrink when the batch is finished.
const RECORD_BYTES_GUESS: usize = 144;

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

/// Maps every record of `request` with the native limits, straight into the encoding
/// the spool and the sink read; the invalid ones are counted and described in
/// [`Rejected`].
pub fn otlp_encoded(
    request: &ExportLogsServiceRequest,
    limits: &RecordLimits,
    options: &OtlpOptions,
    now_ns: i64,
) -> (EncodedBatch, Rejected) {
    let mut chk = Checker::new(limits, now_ns, LISTED);
    // One reservation for the request's own bytes; a scope's shared text adds its own.
    let mut out = BatchWriter::with_capacity(record_count(request) * RECORD_BYTES_GUESS);
    let mut rejected = 0;
    let mut index = 0;
    for resource_logs in &request.resource_logs {
        let resource = Part::resource(
            resource_logs.resource.as_ref(),
            &resource_logs.schema_url,
            limits,
        );
        let service = resource
            .service
            .as_deref()
            .unwrap_or(&options.default_service);
        for scope_logs in &resource_logs.scope_logs {
            let scope = Part::scope(scope_logs.scope.as_ref(), &scope_logs.schema_url, limits);
            let shared = OtelShared::new(
                scope.name,
                scope.version,
                scope.schema_url,
                resource.schema_url,
                &scope.attributes,
                &resource.attributes,
            );
            let logs = &scope_logs.log_records;
            out.reserve(logs.len() * shared.extra_len());
            let context = Context {
                service,
                shared: &shared,
                inherited: scope.attributes.len() + resource.attributes.len(),
                problem: resource.problem.as_ref().or(scope.problem.as_ref()),
            };
            for log in logs {
                if !map_record(&mut chk, index, log, &context, &mut out) {
                    rejected += 1;
                }
                index += 1;
            }
        }
    }
    let rejected = Rejected {
        count: rejected,
        errors: chk.errors,
    };
    (out.finish(), rejected)
}

/// [`otlp_encoded`] as owned records, for tests and tools.
pub fn otlp_batch(
    request: ExportLogsServiceRequest,
    limits: &RecordLimits,
    options: &OtlpOptions,
    now_ns: i64,
) -> (Batch, Rejected) {
    let (encoded, mut rejected) = otlp_encoded(&request, limits, options, now_ns);
    match encoded.decode() {
        Ok(batch) => (batch, rejected),
        // Not expected (the writer and the decoder share the layout); if it happens,
        // nothing is accepted and every record says why.
        Err(err) => {
            rejected.count += encoded.len();
            rejected.errors.push(RecordError {
                index: 0,
                field: String::new(),
                reason: format!("internal error: the accepted records did not encode ({err})"),
            });
            (Batch::default(), rejected)
        }
    }
}

/// The `service` [`otlp_encoded`] gives the records of `resource` (the last
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
        .map_or_else(
            || default.to_owned(),
            |kv| text_of(kv.value.as_ref()).into_owned(),
        )
}

/// What a record inherits from its resource and scope.
struct Context<'c> {
    service: &'c str,
    shared: &'c OtelShared<'c>,
    /// The scope's and the resource's attribute count.
    inherited: usize,
    /// The first field of the resource or scope over a limit: refuses every record.
    problem: Option<&'c (String, String)>,
}

/// A resource or a scope: its attributes flattened and checked once for all its
/// records, and its text fields, borrowed from the request.
#[derive(Debug, Default)]
struct Part<'a> {
    attributes: Vec<TextPair<'a>>,
    /// The resource's `service.name`.
    service: Option<Cow<'a, str>>,
    /// The scope's name and version.
    name: &'a str,
    version: &'a str,
    schema_url: &'a str,
    /// The first field over a limit, with the reason: refuses every record of the part.
    problem: Option<(String, String)>,
}

impl<'a> Part<'a> {
    fn resource(
        resource: Option<&'a Resource>,
        schema_url: &'a str,
        limits: &RecordLimits,
    ) -> Part<'a> {
        let mut part = Part {
            schema_url,
            ..Part::default()
        };
        for kv in resource.map_or(&[][..], |r| r.attributes.as_slice()) {
            if kv.key == "service.name" {
                part.service = Some(text_of(kv.value.as_ref()));
            } else {
                flatten_kv(kv, &mut |k, v| part.attributes.push((k, v)));
            }
        }
        part.check("resource", limits);
        part
    }

    fn scope(
        scope: Option<&'a InstrumentationScope>,
        schema_url: &'a str,
        limits: &RecordLimits,
    ) -> Part<'a> {
        let mut part = Part {
            schema_url,
            ..Part::default()
        };
        if let Some(scope) = scope {
            for kv in &scope.attributes {
                flatten_kv(kv, &mut |k, v| part.attributes.push((k, v)));
            }
            part.name = &scope.name;
            part.version = &scope.version;
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
            ("schema_url", self.schema_url),
            ("name", self.name),
            ("version", self.version),
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

/// Validates one record and, if it passes, appends it to `out`; false if refused.
fn map_record(
    chk: &mut Checker<'_>,
    index: usize,
    log: &LogRecord,
    context: &Context<'_>,
    out: &mut BatchWriter,
) -> bool {
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
    let message = match &log.body {
        Some(body) => text_of(Some(body)),
        None => Cow::Borrowed(log.event_name.as_str()),
    };
    if message.is_empty() {
        let reason = "body is empty and the record has no event_name; send a body".to_owned();
        draft.fail(chk, "body", reason);
    } else {
        draft.text_message(chk, "body", message);
    }
    // Hex of the right length by construction: not the draft's text check, and
    // written from the stack.
    let trace_id = id_hex::<16, 32>(chk, &mut draft, "trace_id", &log.trace_id);
    let span_id = id_hex::<8, 16>(chk, &mut draft, "span_id", &log.span_id);
    for kv in &log.attributes {
        flatten_kv(kv, &mut |k, v| draft.otlp_attribute(chk, k, v));
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
    let Some(accepted) = draft.finish(chk) else {
        return false;
    };
    if let Some((field, reason)) = context.problem {
        chk.report(index, field.clone(), reason.clone());
        return false;
    }
    let mut plain = accepted.plain();
    let total = plain.attributes.len() + context.inherited;
    if total > chk.limits.max_attributes {
        let reason = format!(
            "{total} attributes with the scope's and the resource's; at most {} are accepted",
            chk.limits.max_attributes
        );
        chk.report(index, "attributes", reason);
        return false;
    }
    plain.trace_id = trace_id.as_str();
    plain.span_id = span_id.as_str();
    let record = OtlpRecord {
        plain,
        // A valid number is 0..=24 (checked by `level`).
        severity_number: u8::try_from(log.severity_number).unwrap_or(0),
        trace_flags: (log.flags & 0xff) as u8,
        severity_text: &log.severity_text,
        event_name: &log.event_name,
    };
    out.push_otlp(&record, context.shared);
    true
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

/// An id's lower-case hex, on the stack: `HEX` digits (twice `LEN`) or none.
struct HexId<const HEX: usize> {
    digits: [u8; HEX],
    len: usize,
}

impl<const HEX: usize> HexId<HEX> {
    fn as_str(&self) -> &str {
        // Only ASCII hex digits are written.
        std::str::from_utf8(&self.digits[..self.len]).unwrap_or("")
    }
}

/// Lower-case hex of an id of `LEN` bytes; "" when absent (empty or all zero).
fn id_hex<const LEN: usize, const HEX: usize>(
    chk: &mut Checker<'_>,
    draft: &mut Draft<'_>,
    name: &str,
    id: &[u8],
) -> HexId<HEX> {
    let mut out = HexId {
        digits: [0; HEX],
        len: 0,
    };
    if id.iter().all(|&b| b == 0) {
        return out;
    }
    if id.len() != LEN {
        let reason = format!(
            "{name} is {} bytes; it must be {LEN} bytes (or empty)",
            id.len()
        );
        draft.fail(chk, name, reason);
        return out;
    }
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, &b) in out.digits.chunks_exact_mut(2).zip(id) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    out.len = HEX;
    out
}

/// An attribute flattened to text pairs, in order, each handed to `sink`.
fn flatten_kv<'a>(kv: &'a KeyValue, sink: &mut impl FnMut(Cow<'a, str>, Cow<'a, str>)) {
    flatten(Cow::Borrowed(&kv.key), kv.value.as_ref(), sink);
}

/// A map value becomes `key.subkey` entries; anything else one entry.
fn flatten<'a>(
    key: Cow<'a, str>,
    value: Option<&'a AnyValue>,
    sink: &mut impl FnMut(Cow<'a, str>, Cow<'a, str>),
) {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::KvlistValue(list)) => {
            for kv in &list.values {
                flatten(
                    Cow::Owned(format!("{key}.{}", kv.key)),
                    kv.value.as_ref(),
                    sink,
                );
            }
        }
        None => {}
        Some(_) => sink(key, text_of(value)),
    }
}

/// A value as stored text: strings as is (borrowed), everything else as compact JSON
/// (bytes as base64, as OTLP/JSON writes them).
fn text_of(value: Option<&AnyValue>) -> Cow<'_, str> {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s),
        Some(any_value::Value::BytesValue(b)) => {
            Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(any_value::Value::IntValue(i)) => Cow::Owned(i.to_string()),
        Some(any_value::Value::BoolValue(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        None => Cow::Borrowed(""),
        other => Cow::Owned(json_of(other).to_string()),
    }
}

fn json_of(value: Option<&any_value::Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        None | Some(any_value::Value::StringValueStrindex(_)) => J::Null,
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| J::String(d.to_string()), J::Number)
        }
        Some(any_value::Value::BytesValue(b)) => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(any_value::Value::ArrayValue(a)) => {
            J::Array(a.values.iter().map(|v| json_of(v.value.as_ref())).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => J::Object(
            list.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        json_of(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                    )
                })
                .collect(),
        ),
    }
}
