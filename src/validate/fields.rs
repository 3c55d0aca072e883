//! Per-field rules, shared by the JSON path and [`check_record`](super::check_record).
//!
//! A [`Draft`] collects one record's fields as they arrive and reports every problem
//! it finds (not just the first), so a client can fix a record in one round trip.

use std::borrow::Cow;

use super::json::Value;
use super::{timestamp, RecordError, Shown};
use crate::codec::{BatchWriter, PlainRecord};
use crate::config::RecordLimits;
use crate::record::{Level, Record};

const NESTED: &str = "nested values are not allowed; attributes must be flat \
                      (string, number, boolean or null values)";
const LEVELS: &str = "expected trace|debug|info|warn|error|fatal (case-insensitive; aliases: \
                      verbose, dbg, information, informational, notice, warning, err, critical, \
                      crit, alert, emerg, emergency, panic)";

/// Limits, clock and the batch's error list; shared by all records of a request.
pub(super) struct Checker<'l> {
    pub(super) limits: &'l RecordLimits,
    pub(super) now_ns: i64,
    /// Listed problems; empty means every record so far was valid.
    pub(super) errors: Vec<RecordError>,
    cap: usize,
}

impl<'l> Checker<'l> {
    pub(super) fn new(limits: &'l RecordLimits, now_ns: i64, cap: usize) -> Checker<'l> {
        Checker {
            limits,
            now_ns,
            errors: Vec::new(),
            cap: cap.max(1),
        }
    }

    pub(super) fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    pub(super) fn report(&mut self, index: usize, field: impl Into<String>, reason: String) {
        if self.errors.len() < self.cap {
            self.errors.push(RecordError {
                index,
                field: field.into(),
                reason,
            });
        }
    }
}

/// The fields a record may set once; aliases map to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Timestamp,
    Level,
    Service,
    Message,
    TraceId,
    SpanId,
    Attributes,
}

impl Field {
    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn accepted_names(self) -> &'static str {
        match self {
            Field::Timestamp => "timestamp, time, ts",
            Field::Message => "message, msg",
            Field::Level => "level",
            Field::Service => "service",
            Field::TraceId => "trace_id",
            Field::SpanId => "span_id",
            Field::Attributes => "attributes",
        }
    }
}

/// One record being assembled. Its text is borrowed from the body where the body
/// holds it as is (no escapes), so an accepted record costs no allocation per field.
pub(super) struct Draft<'d> {
    index: usize,
    failed: bool,
    /// [`Field::bit`]s already set: a second occurrence is an error, not "last wins",
    /// because silently dropping one of two values hides client bugs.
    seen: u8,
    timestamp_ns: Option<i64>,
    level: Level,
    service: Option<Cow<'d, str>>,
    message: Option<Cow<'d, str>>,
    trace_id: Cow<'d, str>,
    span_id: Cow<'d, str>,
    attributes: Vec<Pair<'d>>,
    /// Unrecognised top-level scalars; they go after the explicit attributes.
    extra: Vec<Pair<'d>>,
    /// Non-null attributes seen, kept or not: storing stops at the cap, counting does not.
    attribute_count: usize,
}

/// An attribute's key and value.
type Pair<'d> = (Cow<'d, str>, Cow<'d, str>);

impl<'d> Draft<'d> {
    pub(super) fn new(index: usize) -> Draft<'d> {
        Draft {
            index,
            failed: false,
            seen: 0,
            timestamp_ns: None,
            level: Level::Info,
            service: None,
            message: None,
            trace_id: Cow::Borrowed(""),
            span_id: Cow::Borrowed(""),
            attributes: Vec::new(),
            extra: Vec::new(),
            attribute_count: 0,
        }
    }

    pub(super) fn fail(&mut self, chk: &mut Checker<'_>, field: impl Into<String>, reason: String) {
        self.failed = true;
        chk.report(self.index, field, reason);
    }

    /// Marks `field` as set; reports and returns false if it already was.
    pub(super) fn first_time(&mut self, chk: &mut Checker<'_>, field: Field, name: &str) -> bool {
        if self.seen & field.bit() == 0 {
            self.seen |= field.bit();
            return true;
        }
        let reason = format!(
            "duplicate field {}: this record already set it (accepted names: {}); send it once",
            Shown(name),
            field.accepted_names()
        );
        self.fail(chk, name, reason);
        false
    }

    /// A recognised top-level field from JSON. `null` always means "absent".
    pub(super) fn json_field(
        &mut self,
        chk: &mut Checker<'_>,
        field: Field,
        name: &str,
        value: Value<'d>,
    ) {
        if !self.first_time(chk, field, name) {
            return;
        }
        match (field, value) {
            (_, Value::Null) => {}
            (Field::Timestamp, Value::Str(text)) => self.text_timestamp(chk, name, &text),
            (Field::Timestamp, Value::U64(v)) => {
                self.put_timestamp(chk, name, timestamp::from_epoch_u64(v));
            }
            (Field::Timestamp, Value::I64(v)) => {
                self.put_timestamp(chk, name, timestamp::from_epoch_i64(v));
            }
            (Field::Timestamp, Value::F64(v)) => {
                self.put_timestamp(chk, name, timestamp::from_epoch_f64(v));
            }
            (Field::Timestamp, other) => {
                let reason = format!(
                    "{name} must be an RFC 3339 string or an epoch number, got {}",
                    other.describe()
                );
                self.fail(chk, name, reason);
            }
            (Field::Level, Value::Str(text)) => self.text_level(chk, name, &text),
            (Field::Level, Value::U64(n)) => self.number_level(chk, name, n as f64),
            (Field::Level, Value::I64(n)) => self.number_level(chk, name, n as f64),
            (Field::Level, Value::F64(n)) => self.number_level(chk, name, n),
            (Field::Service, Value::Str(text)) => self.text_service(chk, name, text),
            (Field::Message, Value::Str(text)) => self.text_message(chk, name, text),
            (Field::TraceId, Value::Str(text)) => self.text_trace_id(chk, name, text),
            (Field::SpanId, Value::Str(text)) => self.text_span_id(chk, name, text),
            (_, other) => {
                let reason = format!("{name} must be a string, got {}", other.describe());
                self.fail(chk, name, reason);
                // Placeholders, so that `finish` does not also call the field missing.
                match field {
                    Field::Service => self.service = Some(Cow::Borrowed("")),
                    Field::Message => self.message = Some(Cow::Borrowed("")),
                    _ => {}
                }
            }
        }
    }

    /// Timestamp text: "" means absent (as for gRPC, which cannot tell "unset" apart).
    pub(super) fn text_timestamp(&mut self, chk: &mut Checker<'_>, name: &str, text: &str) {
        if !text.is_empty() {
            self.put_timestamp(chk, name, timestamp::from_text(text));
        }
    }

    pub(super) fn put_timestamp(
        &mut self,
        chk: &mut Checker<'_>,
        name: &str,
        parsed: Result<i64, String>,
    ) {
        match parsed {
            Ok(ns) => self.timestamp_ns = Some(ns),
            Err(reason) => self.fail(chk, name, reason),
        }
    }

    /// "" means info, for the same reason as [`Draft::text_timestamp`].
    pub(super) fn text_level(&mut self, chk: &mut Checker<'_>, name: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        match Level::parse(text) {
            Some(level) => self.level = level,
            None => {
                let reason = format!("unknown level {}; {LEVELS}", Shown(text));
                self.fail(chk, name, reason);
            }
        }
    }

    /// A numeric level as pino and bunyan write them (the Node.js loggers this service
    /// most often replaces a pipeline for): 10 trace, 20 debug, 30 info, 40 warn,
    /// 50 error, 60 fatal. A custom level between two of them counts as the lower one.
    pub(super) fn number_level(&mut self, chk: &mut Checker<'_>, name: &str, n: f64) {
        match numeric_level(n) {
            Some(level) => self.level = level,
            None => {
                let reason = format!(
                    "numeric {name} {n} is out of range; numbers are pino/bunyan levels \
                     from 10 to 99 (10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal), \
                     or send a name: {LEVELS}"
                );
                self.fail(chk, name, reason);
            }
        }
    }

    pub(super) fn text_service(&mut self, chk: &mut Checker<'_>, name: &str, text: Cow<'d, str>) {
        let max = chk.limits.max_service_bytes;
        let problem = if text.is_empty() {
            format!("{name} is empty; it must be a non-empty string of at most {max} bytes")
        } else if text.len() > max {
            format!(
                "{name} {} is {} bytes; at most {max} bytes are accepted",
                Shown(&text),
                text.len()
            )
        } else {
            self.service = Some(text);
            return;
        };
        self.fail(chk, name, problem);
        self.service = Some(Cow::Borrowed(""));
    }

    pub(super) fn text_message(&mut self, chk: &mut Checker<'_>, name: &str, text: Cow<'d, str>) {
        let max = chk.limits.max_message_bytes;
        let problem = if text.is_empty() {
            format!("{name} is empty; it must be a non-empty string")
        } else if text.len() > max {
            format!(
                "{name} is {} bytes; at most {max} bytes are accepted (split or truncate it)",
                text.len()
            )
        } else {
            self.message = Some(text);
            return;
        };
        self.fail(chk, name, problem);
        self.message = Some(Cow::Borrowed(""));
    }

    pub(super) fn text_trace_id(&mut self, chk: &mut Checker<'_>, name: &str, text: Cow<'d, str>) {
        match hex_id(name, text, 32) {
            Ok(id) => self.trace_id = id,
            Err(reason) => self.fail(chk, name, reason),
        }
    }

    pub(super) fn text_span_id(&mut self, chk: &mut Checker<'_>, name: &str, text: Cow<'d, str>) {
        match hex_id(name, text, 16) {
            Ok(id) => self.span_id = id,
            Err(reason) => self.fail(chk, name, reason),
        }
    }

    /// The `attributes` value was not an object (`null` is fine: absent).
    pub(super) fn attributes_not_object(&mut self, chk: &mut Checker<'_>, value: Value<'_>) {
        if !matches!(value, Value::Null) {
            let reason = format!(
                "attributes must be a flat JSON object, got {}",
                value.describe()
            );
            self.fail(chk, "attributes", reason);
        }
    }

    /// One entry of the JSON `attributes` object.
    pub(super) fn json_attribute(
        &mut self,
        chk: &mut Checker<'_>,
        key: Cow<'d, str>,
        value: Value<'d>,
    ) {
        match value.into_text() {
            Ok(Some(text)) => self.attribute(chk, "attributes.", key, text, false),
            Ok(None) => {}
            Err(()) => {
                let field = prefixed("attributes.", &key);
                self.fail(chk, field, NESTED.to_owned());
            }
        }
    }

    /// An unrecognised top-level JSON field: kept as an attribute rather than lost.
    pub(super) fn json_extra(
        &mut self,
        chk: &mut Checker<'_>,
        name: Cow<'d, str>,
        value: Value<'d>,
    ) {
        match value.into_text() {
            Ok(Some(text)) => self.attribute(chk, "", name, text, true),
            Ok(None) => {}
            Err(()) => {
                let reason = format!(
                    "{NESTED}; unrecognised top-level fields are stored as attributes \
                     (recognised: timestamp, level, service, message, trace_id, span_id, \
                     attributes)"
                );
                self.fail(chk, prefixed("", &name), reason);
            }
        }
    }

    /// A level already decided by the caller (OTLP's severity number).
    pub(super) fn set_level(&mut self, level: Level) {
        self.level = level;
    }

    /// An OTLP attribute, already flattened to text: borrowed from the decoded request
    /// where it held it as is.
    pub(super) fn otlp_attribute(
        &mut self,
        chk: &mut Checker<'_>,
        key: Cow<'d, str>,
        value: Cow<'d, str>,
    ) {
        self.attribute(chk, "attributes.", key, value, false);
    }

    /// An attribute from a source whose values are already text (gRPC).
    pub(super) fn text_attribute(&mut self, chk: &mut Checker<'_>, key: &'d str, value: &'d str) {
        self.attribute(
            chk,
            "attributes.",
            Cow::Borrowed(key),
            Cow::Borrowed(value),
            false,
        );
    }

    fn attribute(
        &mut self,
        chk: &mut Checker<'_>,
        prefix: &str,
        key: Cow<'d, str>,
        value: Cow<'d, str>,
        top_level: bool,
    ) {
        let limits = chk.limits;
        self.attribute_count += 1;
        if key.is_empty() {
            let (field, what) = if top_level {
                ("", "a top-level field name")
            } else {
                ("attributes", "an attribute key")
            };
            let reason = format!(
                "{what} is empty; keys must be 1 to {} bytes",
                limits.max_attribute_key_bytes
            );
            self.fail(chk, field, reason);
        } else if key.len() > limits.max_attribute_key_bytes {
            let reason = format!(
                "key is {} bytes; at most {} bytes are accepted",
                key.len(),
                limits.max_attribute_key_bytes
            );
            self.fail(chk, prefixed(prefix, &key), reason);
        } else if value.len() > limits.max_attribute_value_bytes {
            let reason = format!(
                "value is {} bytes; at most {} bytes are accepted",
                value.len(),
                limits.max_attribute_value_bytes
            );
            self.fail(chk, prefixed(prefix, &key), reason);
        } else if self.attribute_count <= limits.max_attributes && !self.failed {
            let pair = (key, value);
            if top_level {
                self.extra.push(pair);
            } else {
                self.attributes.push(pair);
            }
        }
    }

    /// Checks what only the whole record can tell; `None` if anything failed.
    pub(super) fn finish(mut self, chk: &mut Checker<'_>) -> Option<Accepted<'d>> {
        if self.service.is_none() {
            self.service_from_logger_name(chk);
        }
        if self.service.is_none() {
            let reason = format!(
                "service is required: a non-empty string of at most {} bytes",
                chk.limits.max_service_bytes
            );
            self.fail(chk, "service", reason);
        }
        if self.message.is_none() {
            let reason =
                "message is required (accepted names: message, msg): a non-empty string".to_owned();
            self.fail(chk, "message", reason);
        }
        let max = chk.limits.max_attributes;
        if self.attribute_count > max {
            let reason = format!(
                "{} attributes; at most {max} are accepted (unrecognised top-level fields \
                 count too, as they are stored as attributes)",
                self.attribute_count
            );
            self.fail(chk, "attributes", reason);
        }
        self.check_duplicate_keys(chk);
        if self.failed {
            return None;
        }
        self.attributes.append(&mut self.extra);
        Some(Accepted {
            timestamp_ns: self.timestamp_ns.unwrap_or(chk.now_ns),
            level: self.level,
            service: self.service.unwrap_or_default(),
            message: self.message.unwrap_or_default(),
            trace_id: self.trace_id,
            span_id: self.span_id,
            attributes: self.attributes,
        })
    }

    /// pino and bunyan name the logger (`name`), which is what `service` means here: a
    /// record without `service` takes it from there (and then not as an attribute too).
    fn service_from_logger_name(&mut self, chk: &mut Checker<'_>) {
        let Some(at) = self.extra.iter().position(|(key, _)| key == "name") else {
            return;
        };
        let (_, name) = self.extra.remove(at);
        self.attribute_count -= 1;
        self.text_service(chk, "name", name);
    }

    /// Quadratic, but over at most `max_attributes` short keys, which beats hashing
    /// for the handful most records carry.
    fn check_duplicate_keys(&mut self, chk: &mut Checker<'_>) {
        let explicit = self.attributes.len();
        let total = explicit + self.extra.len();
        if total < 2 {
            return;
        }
        for i in 1..total {
            let (seen_before, k) = if i < explicit {
                (&self.attributes[..i], &self.attributes[i].0)
            } else {
                (&self.attributes[..], &self.extra[i - explicit].0)
            };
            let extra_before = &self.extra[..i.saturating_sub(explicit)];
            let dup = seen_before
                .iter()
                .chain(extra_before)
                .any(|(other, _)| other == k);
            if dup {
                let k = k.clone();
                let field = prefixed(if i < explicit { "attributes." } else { "" }, &k);
                let reason = format!(
                    "duplicate attribute key {}; keys must be unique across \"attributes\" \
                     and unrecognised top-level fields (which are stored as attributes)",
                    Shown(&k)
                );
                self.fail(chk, field, reason);
            }
        }
    }
}

/// A record that passed every rule, its text still borrowed where it could be.
pub(super) struct Accepted<'d> {
    timestamp_ns: i64,
    level: Level,
    service: Cow<'d, str>,
    message: Cow<'d, str>,
    trace_id: Cow<'d, str>,
    span_id: Cow<'d, str>,
    attributes: Vec<Pair<'d>>,
}

impl Accepted<'_> {
    /// Appends the record to the batch being encoded: the hot path, no owned copy.
    pub(super) fn encode_into(&self, out: &mut BatchWriter) {
        out.push(&self.plain());
    }

    /// The record as the encoder takes it (OTLP adds its own fields around it).
    pub(super) fn plain(&self) -> PlainRecord<'_> {
        PlainRecord {
            timestamp_ns: self.timestamp_ns,
            level: self.level,
            service: &self.service,
            message: &self.message,
            trace_id: &self.trace_id,
            span_id: &self.span_id,
            attributes: &self.attributes,
        }
    }

    /// An owned [`Record`], for callers that keep it (gRPC).
    pub(super) fn into_record(self) -> Record {
        Record {
            timestamp_ns: self.timestamp_ns,
            level: self.level,
            service: self.service.into_owned(),
            message: self.message.into_owned(),
            trace_id: self.trace_id.into_owned(),
            span_id: self.span_id.into_owned(),
            attributes: self
                .attributes
                .into_iter()
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
            otel: None,
        }
    }
}

/// Lower-case hex of exactly `digits` digits; "" means absent.
/// pino/bunyan numbers: a decade per level, custom levels in between round down;
/// below 10 or from 100 on (no logger uses those) is an error, not a guess.
fn numeric_level(n: f64) -> Option<Level> {
    if !(10.0..100.0).contains(&n) {
        return None;
    }
    Some(match n as u32 / 10 {
        1 => Level::Trace,
        2 => Level::Debug,
        3 => Level::Info,
        4 => Level::Warn,
        5 => Level::Error,
        _ => Level::Fatal,
    })
}

fn hex_id<'d>(name: &str, text: Cow<'d, str>, digits: usize) -> Result<Cow<'d, str>, String> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Ok(text);
    }
    // One branch-free pass over every id of every record (this was ~6 % of the
    // worker's CPU as three iterator passes plus a lowercase pass).
    let (mut hex, mut nonzero, mut upper) = (true, false, false);
    for &b in bytes {
        let lower = b | 0x20;
        hex &= b.is_ascii_digit() | (b'a'..=b'f').contains(&lower);
        nonzero |= b != b'0';
        upper |= b.is_ascii_uppercase();
    }
    let well_formed = hex && bytes.len() == digits;
    if well_formed && nonzero {
        return Ok(if upper {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            text
        });
    }
    if let Some((at, c)) = text.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "{name} {} has a non-hex character {c:?} at position {at}; expected {digits} hex \
             digits (0-9, a-f)",
            Shown(&text)
        ));
    }
    if !well_formed {
        return Err(format!(
            "{name} {} has {} hex digits; expected exactly {digits}",
            Shown(&text),
            text.len()
        ));
    }
    Err(format!(
        "{name} is all zeros, which W3C Trace Context defines as invalid; omit it instead"
    ))
}

/// `prefix` + key, the key cut to a readable length (it may be the oversized thing).
fn prefixed(prefix: &str, key: &str) -> String {
    match key.char_indices().nth(64) {
        Some((cut, _)) => format!("{prefix}{}…", &key[..cut]),
        None => format!("{prefix}{key}"),
    }
}

#[cfg(test)]
mod hex_tests {
    use super::hex_id;
    use std::borrow::Cow;

    #[test]
    fn hex_id_agrees_with_the_standard_check_for_every_byte() {
        for b in 0..=255u8 {
            let mut bytes = *b"00f067aa0ba902b7";
            bytes[3] = b;
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue; // not a &str; the decoder never gets here with it
            };
            let got = hex_id("span_id", text.into(), 16);
            if b.is_ascii_hexdigit() {
                let expected = text.to_ascii_lowercase();
                assert_eq!(got, Ok(Cow::Borrowed(expected.as_str())), "byte {b:#04x}");
                // Borrowed unless it had to be lower-cased.
                assert_eq!(matches!(got, Ok(Cow::Borrowed(_))), !b.is_ascii_uppercase());
            } else {
                assert!(got.is_err(), "byte {b:#04x} accepted");
            }
        }
        assert!(hex_id("span_id", "0000000000000000".into(), 16).is_err());
        assert!(hex_id("span_id", "00f067aa0ba902b".into(), 16).is_err());
        assert_eq!(hex_id("span_id", "".into(), 16), Ok(Cow::Borrowed("")));
    }
}
