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
//! their text borrowed from the request: a string attribute or body is copied once,
//! into the payload. A resource's and a scope's attributes are flattened and checked
//! once, and written for each of their records from that one copy.
//!
//! The mapping reads a [`LogsView`], which borrows either the protobuf body itself
//! (our reader, `wire`: OTLP/HTTP protobuf) or a request prost or serde decoded
//! (OTLP/JSON, gRPC): one set of rules and messages for every wire.

use std::borrow::Cow;

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

use super::fields::{Checker, Draft};
use super::{timestamp, RecordError};
use crate::codec::{BatchWriter, EncodedBatch, OtelShared, OtlpRecord, TextPair};
use crate::config::RecordLimits;
use crate::record::{Batch, Level};

mod view;
mod wire;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;

pub use view::{Attribute, LogsView, ResourceRef, Value};
pub use wire::WireError;

use view::{RecordView, ScopeLogsView};

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

/// Maps every record of `request` with the native limits, straight into the encoding
/// the spool and the sink read; the invalid ones are counted and described in
/// [`Rejected`].
pub fn otlp_encoded(
    request: &LogsView<'_>,
    limits: &RecordLimits,
    options: &OtlpOptions,
    now_ns: i64,
) -> (EncodedBatch, Rejected) {
    let mut chk = Checker::new(limits, now_ns, LISTED);
    // One reservation for the request's own bytes; a scope's shared text adds its own.
    let mut out = BatchWriter::with_capacity(request.record_count() * RECORD_BYTES_GUESS);
    let mut rejected = 0;
    let mut index = 0;
    for resource_logs in &request.resources {
        let resource = Part::resource(
            request.attributes_of(&resource_logs.attributes),
            resource_logs.schema_url,
            limits,
        );
        let service = resource
            .service
            .as_deref()
            .unwrap_or(&options.default_service);
        for scope_logs in &request.scopes[resource_logs.scopes.clone()] {
            let scope = Part::scope(
                scope_logs,
                request.attributes_of(&scope_logs.attributes),
                limits,
            );
            let shared = OtelShared::new(
                scope.name,
                scope.version,
                scope.schema_url,
                resource.schema_url,
                &scope.attributes,
                &resource.attributes,
            );
            let logs = &request.records[scope_logs.records.clone()];
            out.reserve(logs.len() * shared.extra_len());
            let context = Context {
                service,
                shared: &shared,
                inherited: scope.attributes.len() + resource.attributes.len(),
                problem: resource.problem.as_ref().or(scope.problem.as_ref()),
            };
            for log in logs {
                let own = request.attributes_of(&log.attributes);
                if !map_record(&mut chk, index, log, own, &context, &mut out) {
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

/// Reads an OTLP/HTTP protobuf body and hands its view to `map`: read in place by our
/// reader; a body it leaves to prost (a field sent twice that protobuf merges) or
/// refuses is decoded by prost, whose refusal is the one the client gets.
pub fn with_protobuf<T>(
    body: &[u8],
    map: impl FnOnce(LogsView<'_>) -> T,
) -> Result<T, prost::DecodeError> {
    match LogsView::decode(body) {
        Ok(view) => Ok(map(view)),
        Err(err) => {
            let request = ExportLogsServiceRequest::decode(body)?;
            if !matches!(err, WireError::Unsupported { .. }) {
                // Not expected: the two readers disagree (the fuzz target looks for this).
                tracing::warn!(
                    error = %err,
                    "an OTLP protobuf body our reader refused was accepted by prost; mapped \
                     from prost's decoding"
                );
            }
            Ok(map(LogsView::from_request(&request)))
        }
    }
}

/// [`otlp_encoded`] as owned records, for tests and tools.
pub fn otlp_batch(
    request: ExportLogsServiceRequest,
    limits: &RecordLimits,
    options: &OtlpOptions,
    now_ns: i64,
) -> (Batch, Rejected) {
    let view = LogsView::from_request(&request);
    let (encoded, mut rejected) = otlp_encoded(&view, limits, options, now_ns);
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
pub fn resource_service(resource: &ResourceRef<'_, '_>, default: &str) -> String {
    resource
        .attributes()
        .iter()
        .rev()
        .find(|kv| kv.key == "service.name")
        .map_or_else(|| default.to_owned(), |kv| text_of(kv.value).into_owned())
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
        attributes: &[Attribute<'a>],
        schema_url: &'a str,
        limits: &RecordLimits,
    ) -> Part<'a> {
        let mut part = Part {
            schema_url,
            ..Part::default()
        };
        for kv in attributes {
            if kv.key == "service.name" {
                part.service = Some(text_of(kv.value));
            } else {
                flatten_kv(kv, &mut |k, v| part.attributes.push((k, v)));
            }
        }
        part.check("resource", limits);
        part
    }

    fn scope(
        scope: &ScopeLogsView<'a>,
        attributes: &[Attribute<'a>],
        limits: &RecordLimits,
    ) -> Part<'a> {
        let mut part = Part {
            schema_url: scope.schema_url,
            name: scope.name,
            version: scope.version,
            ..Part::default()
        };
        for kv in attributes {
            flatten_kv(kv, &mut |k, v| part.attributes.push((k, v)));
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
    log: &RecordView<'_>,
    own: &[Attribute<'_>],
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
    level(chk, &mut draft, log.severity_number, log.severity_text);
    draft.text_service(chk, "resource.service.name", Cow::Borrowed(context.service));
    let message = match log.body {
        Some(body) => text_of(body),
        None => Cow::Borrowed(log.event_name),
    };
    if message.is_empty() {
        let reason = "body is empty and the record has no event_name; send a body".to_owned();
        draft.fail(chk, "body", reason);
    } else {
        draft.text_message(chk, "body", message);
    }
    // Hex of the right length by construction: not the draft's text check, and
    // written from the stack.
    let trace_id = id_hex::<16, 32>(chk, &mut draft, "trace_id", log.trace_id);
    let span_id = id_hex::<8, 16>(chk, &mut draft, "span_id", log.span_id);
    for kv in own {
        flatten_kv(kv, &mut |k, v| draft.otlp_attribute(chk, k, v));
    }
    let max_value = chk.limits.max_attribute_value_bytes;
    for (name, text) in [
        ("severity_text", log.severity_text),
        ("event_name", log.event_name),
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
        severity_text: log.severity_text,
        event_name: log.event_name,
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
fn flatten_kv<'a>(kv: &Attribute<'a>, sink: &mut impl FnMut(Cow<'a, str>, Cow<'a, str>)) {
    flatten(Cow::Borrowed(kv.key), kv.value, sink);
}

/// A map value becomes `key.subkey` entries; anything else one entry.
fn flatten<'a>(
    key: Cow<'a, str>,
    value: Value<'a>,
    sink: &mut impl FnMut(Cow<'a, str>, Cow<'a, str>),
) {
    match value {
        Value::Map(list) => {
            for kv in list.iter() {
                flatten(Cow::Owned(format!("{key}.{}", kv.key)), kv.value, sink);
            }
        }
        Value::Empty => {}
        _ => sink(key, text_of(value)),
    }
}

/// A value as stored text: strings as is (borrowed), everything else as compact JSON
/// (bytes as base64, as OTLP/JSON writes them).
fn text_of(value: Value<'_>) -> Cow<'_, str> {
    match value {
        Value::Str(s) => Cow::Borrowed(s),
        Value::Bytes(b) => Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        Value::Empty => Cow::Borrowed(""),
        other => Cow::Owned(json_of(other).to_string()),
    }
}

fn json_of(value: Value<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Empty | Value::StrIndex => J::Null,
        Value::Str(s) => J::String(s.to_owned()),
        Value::Bool(b) => J::Bool(b),
        Value::Int(i) => J::from(i),
        Value::Double(d) => {
            serde_json::Number::from_f64(d).map_or_else(|| J::String(d.to_string()), J::Number)
        }
        Value::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Array(a) => J::Array(a.iter().map(json_of).collect()),
        Value::Map(list) => J::Object(
            list.iter()
                .map(|kv| (kv.key.to_owned(), json_of(kv.value)))
                .collect(),
        ),
    }
}
