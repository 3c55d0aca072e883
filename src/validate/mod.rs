//! Decoding and validation of request bodies into a [`Batch`]: pure and synchronous.
//!
//! This module owns the wire format of a log record and every rule a record must
//! pass before it is accepted (see [`decode`] for the rules). It does no I/O and keeps
//! no state, so callers run it wherever they like (a CPU pool, a test) and pass in
//! the receive time as `now_ns`.
//!
//! A batch is all or nothing: one bad record rejects the whole request, but
//! validation still walks every record so the client learns about all of its
//! problems at once (up to [`MAX_LISTED_ERRORS`]).
//!
//! Layout: `json` walks bodies with sonic-rs, and with serde_json where sonic-rs gave
//! up (borrowing strings, never building a value tree), `fields` holds the per-field
//! rules shared with [`check_record`], and `timestamp` parses RFC 3339 and epoch times.

use std::fmt;

use serde::de::DeserializeSeed;

use crate::codec::{BatchWriter, EncodedBatch};
use crate::config::RecordLimits;
use crate::record::{Batch, Record};

mod fields;
mod json;
pub mod otlp;
mod timestamp;

#[cfg(test)]
mod tests;

use fields::{Accepted, Checker, Draft};
use json::{Element, Value};

/// At most this many [`RecordError`]s are listed in [`DecodeError::Invalid`]: enough
/// to show a client every kind of mistake, bounded for a 10 000-record batch.
pub const MAX_LISTED_ERRORS: usize = 100;

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A JSON array of records, or an object `{"logs": [...]}`.
    Json,
    /// One JSON record object per line; blank lines are ignored.
    Ndjson,
}

/// One problem with one record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordError {
    /// Position of the record in the batch (array element, or the NDJSON record
    /// number counting non-blank lines), from 0.
    pub index: usize,
    /// The field as the client named it (`timestamp`, `ts`, `attributes.region`,
    /// an unrecognised top-level name), or `""` for the record as a whole.
    pub field: String,
    /// What is wrong, quoting the offending value (cut to 64 characters), and what
    /// is accepted.
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "record {}: {}", self.index, self.reason)
        } else {
            write!(
                f,
                "record {}, field {:?}: {}",
                self.index, self.field, self.reason
            )
        }
    }
}

/// Why a body was rejected. Nothing of a rejected body is accepted.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Body is not valid JSON / NDJSON / UTF-8, or has the wrong shape. `index` = record
    /// index (NDJSON line's record number, or array element) when known.
    #[error("malformed request body{}: {reason}", at_record(*.index))]
    Malformed {
        index: Option<usize>,
        reason: String,
    },
    /// The body holds no records (`[]`, `{"logs": []}`, empty or blank).
    #[error("the request body contains no log records")]
    Empty,
    /// More records than `RecordLimits::max_records`; counted without validating
    /// the excess.
    #[error("the request body has {count} records; at most {max} are accepted per request, send smaller batches")]
    TooManyRecords { count: usize, max: usize },
    /// Per-record problems, in body order. The list is capped at
    /// [`MAX_LISTED_ERRORS`]; a record may have several entries.
    #[error("{}", invalid_summary(.0))]
    Invalid(Vec<RecordError>),
}

fn at_record(index: Option<usize>) -> String {
    index.map_or_else(String::new, |i| format!(" at record {i}"))
}

fn invalid_summary(errors: &[RecordError]) -> String {
    let Some(first) = errors.first() else {
        return "invalid records".to_owned();
    };
    match errors.len() {
        1 => format!("invalid record: {first}"),
        n if n >= MAX_LISTED_ERRORS => format!(
            "invalid records: {n} or more problems (the first {MAX_LISTED_ERRORS} are listed); \
             first: {first}"
        ),
        n => format!("invalid records: {n} problems; first: {first}"),
    }
}

/// Decodes and validates a whole (already decompressed) body.
///
/// Record rules, per JSON object:
/// - `timestamp` (or `time`, `ts`): RFC 3339 text (`T`, `t` or space between date and
///   time, 1–9 fractional digits, `Z`/`z` or `±HH:MM` required), or an epoch number
///   (JSON integer, float, or `digits[.digits]` text) whose magnitude picks the unit:
///   below 1e11 seconds, below 1e14 ms, below 1e17 µs, else ns. Floats are rounded to
///   the microsecond. Must lie in 1970-01-01T00:00:00Z ≤ t < 2106-01-01T00:00:00Z.
///   Absent, `null` or `""` → `now_ns`.
/// - `level`: a string for [`Level::parse`](crate::record::Level::parse); absent,
///   `null` or `""` → info.
/// - `service` (≤ `max_service_bytes`) and `message` (or `msg`, ≤ `max_message_bytes`):
///   required non-empty strings.
/// - `trace_id` / `span_id`: 32 / 16 hex digits, stored lower-case, not all zeros;
///   `null` or `""` = absent.
/// - `attributes`: a flat object; values string, number (stored as JSON prints it),
///   boolean (`true`/`false`) or `null` (skipped).
/// - Any other top-level field with a scalar value is appended to the attributes
///   after the explicit ones (a `null` is skipped, an object or array rejected).
/// - Attribute caps (`max_attributes`, key and value bytes) cover both kinds.
/// - A field or attribute key given twice (including `ts` next to `timestamp`, or a
///   top-level field named like an attribute) is an error, not "last wins".
///
/// A UTF-8 byte order mark at the start of the body is ignored.
///
/// Owned records, for tests and tools; the ingest path uses [`decode_encoded`].
pub fn decode(
    body: &[u8],
    format: Format,
    limits: &RecordLimits,
    now_ns: i64,
) -> Result<Batch, DecodeError> {
    let encoded = decode_encoded(body, format, limits, now_ns)?;
    encoded.decode().map_err(|err| DecodeError::Malformed {
        index: None,
        reason: format!("internal error: the accepted records did not encode ({err})"),
    })
}

/// [`decode`] straight into the compact encoding the spool and the sink read: each
/// record is encoded as soon as it passed, from text borrowed from `body`.
///
/// Two parsers, one answer: sonic-rs (SIMD string scanning) parses first and its result
/// is used only when it accepts the whole body; anything else (a refused body, a float,
/// nested content, invalid UTF-8) is parsed again by serde_json, whose answer is
/// returned, so every message, position and limit is serde_json's (see `json`'s module
/// doc for where the fast pass gives up).
pub fn decode_encoded(
    body: &[u8],
    format: Format,
    limits: &RecordLimits,
    now_ns: i64,
) -> Result<EncodedBatch, DecodeError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if let Ok(text) = std::str::from_utf8(body) {
        if let Some(batch) = decode_fast(text, format, limits, now_ns) {
            return Ok(batch);
        }
    }
    decode_serde_json(body, format, limits, now_ns)
}

/// [`decode_encoded`] with serde_json alone: the reference the fast pass must agree
/// with (the fuzz target and tests compare both).
pub(crate) fn decode_encoded_serde_json(
    body: &[u8],
    format: Format,
    limits: &RecordLimits,
    now_ns: i64,
) -> Result<EncodedBatch, DecodeError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    decode_serde_json(body, format, limits, now_ns)
}

/// The whole body with serde_json (BOM already stripped).
fn decode_serde_json(
    body: &[u8],
    format: Format,
    limits: &RecordLimits,
    now_ns: i64,
) -> Result<EncodedBatch, DecodeError> {
    let mut dec = Decoder::new(limits, now_ns, body.len(), false);
    match format {
        Format::Json => decode_json(&mut dec, body)?,
        Format::Ndjson => decode_ndjson(&mut dec, body)?,
    }
    dec.finish()
}

/// The fast pass: sonic-rs, `Some` only for a body it accepted whole. `None` says
/// nothing about why; serde_json finds that out.
fn decode_fast(
    text: &str,
    format: Format,
    limits: &RecordLimits,
    now_ns: i64,
) -> Option<EncodedBatch> {
    let mut dec = Decoder::new(limits, now_ns, text.len(), true);
    let parsed = match format {
        Format::Json => {
            let mut de = sonic_rs::Deserializer::from_str(text);
            json::BodySeed(&mut dec)
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .is_ok()
        }
        Format::Ndjson => fast_lines(&mut dec, text),
    };
    if parsed {
        dec.finish().ok()
    } else {
        None
    }
}

/// NDJSON in the fast pass; false as soon as the body cannot be accepted.
fn fast_lines(dec: &mut Decoder<'_>, text: &str) -> bool {
    let mut rest = text;
    while !rest.is_empty() {
        // Splitting at an ASCII byte keeps both halves valid `str`s.
        let (line, consumed) = match find_newline(rest.as_bytes()) {
            Some(end) => (&rest[..end], end + 1),
            None => (rest, rest.len()),
        };
        rest = &rest[consumed..];
        if is_blank(line.as_bytes()) {
            continue;
        }
        let index = dec.count;
        dec.count += 1;
        if index >= dec.max {
            return false;
        }
        let mut de = sonic_rs::Deserializer::from_str(line);
        let seed = json::RecordSeed {
            chk: &mut dec.chk,
            index,
            fast: true,
        };
        match seed
            .deserialize(&mut de)
            .and_then(|element| de.end().map(|()| element))
        {
            Ok(Element::Record(record)) => dec.keep(record),
            Ok(Element::NotObject(_)) | Err(_) => return false,
        }
        if dec.chk.failed() {
            return false;
        }
    }
    true
}

/// Borrowed fields of one record from a non-JSON source (the gRPC API uses it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Nanoseconds since the epoch, exact (no magnitude rule); 0 = not set.
    pub time_unix_nano: u64,
    /// "" = not set; same text forms as JSON strings. Setting both times is an error.
    pub timestamp: &'a str,
    /// "" = info.
    pub level: &'a str,
    pub service: &'a str,
    pub message: &'a str,
    /// "" = absent.
    pub trace_id: &'a str,
    /// "" = absent.
    pub span_id: &'a str,
    pub attributes: Vec<(&'a str, &'a str)>,
}

/// Validates one record from a non-JSON source with the same rules as [`decode`];
/// returns its first problem.
pub fn check_record(
    index: usize,
    raw: &RawRecord<'_>,
    limits: &RecordLimits,
    now_ns: i64,
) -> Result<Record, RecordError> {
    let mut chk = Checker::new(limits, now_ns, 1);
    let mut draft = Draft::new(index);
    match (raw.time_unix_nano, raw.timestamp) {
        (0, text) => draft.text_timestamp(&mut chk, "timestamp", text),
        (ns, "") => {
            draft.put_timestamp(&mut chk, "time_unix_nano", timestamp::from_unix_nanos(ns));
        }
        (_, _) => draft.fail(
            &mut chk,
            "timestamp",
            "both time_unix_nano and timestamp are set; set one of them".to_owned(),
        ),
    }
    draft.text_level(&mut chk, "level", raw.level);
    draft.text_service(&mut chk, "service", raw.service.into());
    draft.text_message(&mut chk, "message", raw.message.into());
    draft.text_trace_id(&mut chk, "trace_id", raw.trace_id.into());
    draft.text_span_id(&mut chk, "span_id", raw.span_id.into());
    for &(key, value) in &raw.attributes {
        draft.text_attribute(&mut chk, key, value);
    }
    match draft.finish(&mut chk) {
        Some(record) => Ok(record.into_record()),
        None => Err(chk.errors.swap_remove(0)),
    }
}

/// Quotes a client's value for a message: escaped, cut to 64 characters.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(64) {
            Some((cut, _)) => write!(f, "{:?}…", &self.0[..cut]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// State of one [`decode`] call.
struct Decoder<'l> {
    chk: Checker<'l>,
    /// Valid records, encoded, kept only while no record has failed (the batch is all
    /// or nothing).
    records: BatchWriter,
    /// Records seen, including those past `max` (counted, not validated).
    count: usize,
    max: usize,
    /// The array element being parsed, for `Malformed::index`.
    current: Option<usize>,
    /// Set by a visitor that rejects the body's shape; wins over serde's error.
    fatal: Option<DecodeError>,
    /// The fast pass (sonic-rs): visitors give up rather than report (`json`).
    fast: bool,
}

impl<'l> Decoder<'l> {
    fn new(limits: &'l RecordLimits, now_ns: i64, body_len: usize, fast: bool) -> Decoder<'l> {
        Decoder {
            chk: Checker::new(limits, now_ns, MAX_LISTED_ERRORS),
            records: BatchWriter::with_capacity(encoded_len_guess(body_len)),
            count: 0,
            max: limits.max_records,
            current: None,
            fatal: None,
            fast,
        }
    }

    fn keep(&mut self, record: Option<Accepted<'_>>) {
        match record {
            Some(record) if !self.chk.failed() => record.encode_into(&mut self.records),
            // The batch is lost anyway; free memory early.
            _ => self.records.discard(),
        }
    }

    fn not_object(&mut self, index: usize, value: &Value<'_>) {
        let reason = format!("a record must be a JSON object, got {}", value.describe());
        self.chk.report(index, "", reason);
        self.records.discard();
    }

    fn finish(self) -> Result<EncodedBatch, DecodeError> {
        if self.count > self.max {
            return Err(DecodeError::TooManyRecords {
                count: self.count,
                max: self.max,
            });
        }
        if self.count == 0 {
            return Err(DecodeError::Empty);
        }
        if self.chk.failed() {
            return Err(DecodeError::Invalid(self.chk.errors));
        }
        Ok(self.records.finish())
    }
}

/// Encoded bytes to reserve for a body of `body_len` bytes: the encoding drops JSON's
/// field names, quotes and separators (~115 bytes for a typical 220-byte record), so
/// two thirds is rarely exceeded; a wrong guess costs one reallocation, or a shrink.
fn encoded_len_guess(body_len: usize) -> usize {
    body_len / 3 * 2 + 64
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

// The body is checked for UTF-8 once, up front, and then parsed as `&str`: serde_json
// then skips its per-string UTF-8 validation, a quarter of its string handling cost.

fn decode_json(dec: &mut Decoder<'_>, body: &[u8]) -> Result<(), DecodeError> {
    if is_blank(body) {
        return Ok(());
    }
    match std::str::from_utf8(body) {
        Ok(text) => parse_json(dec, body, serde_json::Deserializer::from_str(text)),
        Err(bad) => {
            // Cold path: parsing the bytes stops at the bad string and so knows the
            // record index (or finds an earlier error); the bad byte may also sit in
            // content that is skipped, where only the up-front check sees it.
            parse_json(dec, body, serde_json::Deserializer::from_slice(body))?;
            Err(utf8_error(body, bad.valid_up_to(), None))
        }
    }
}

fn parse_json<'de, R: serde_json::de::Read<'de>>(
    dec: &mut Decoder<'_>,
    body: &[u8],
    mut de: serde_json::Deserializer<R>,
) -> Result<(), DecodeError> {
    let result = json::BodySeed(dec)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    result.map_err(|err| {
        dec.fatal.take().unwrap_or_else(|| {
            let whole = Span {
                text: body,
                line: 1,
                ndjson: false,
            };
            malformed(&err, &whole, dec.current)
        })
    })
}

fn decode_ndjson(dec: &mut Decoder<'_>, body: &[u8]) -> Result<(), DecodeError> {
    match std::str::from_utf8(body) {
        Ok(text) => parse_lines(dec, text),
        Err(bad) => {
            // Lines before the bad one are parsed first, so their errors come first.
            let at = bad.valid_up_to();
            let whole_lines = body[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let text = std::str::from_utf8(&body[..whole_lines]).unwrap_or_default();
            parse_lines(dec, text)?;
            Err(utf8_error(body, at, Some(dec.count)))
        }
    }
}

fn parse_lines(dec: &mut Decoder<'_>, text: &str) -> Result<(), DecodeError> {
    let mut rest = text;
    let mut line_number = 0;
    while !rest.is_empty() {
        // Splitting at an ASCII byte keeps both halves valid `str`s.
        let (line, consumed) = match find_newline(rest.as_bytes()) {
            Some(end) => (&rest[..end], end + 1),
            None => (rest, rest.len()),
        };
        let span = Span {
            text: line.as_bytes(),
            line: line_number + 1,
            ndjson: true,
        };
        rest = &rest[consumed..];
        line_number += 1;
        if is_blank(line.as_bytes()) {
            continue;
        }
        let index = dec.count;
        dec.count += 1;
        if index >= dec.max {
            // Only the count is needed now, for the error message.
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(line);
        let seed = json::RecordSeed {
            chk: &mut dec.chk,
            index,
            fast: false,
        };
        let element = seed
            .deserialize(&mut de)
            .and_then(|element| de.end().map(|()| element))
            .map_err(|err| malformed(&err, &span, Some(index)))?;
        match element {
            Element::Record(record) => dec.keep(record),
            Element::NotObject(Value::Array) => {
                return Err(DecodeError::Malformed {
                    index: Some(index),
                    reason: format!(
                        "line {} is a JSON array; NDJSON has one record object per line \
                         (send an array of records as JSON, not NDJSON)",
                        span.line
                    ),
                });
            }
            Element::NotObject(value) => dec.not_object(index, &value),
        }
    }
    Ok(())
}

fn utf8_error(body: &[u8], at: usize, index: Option<usize>) -> DecodeError {
    let line = 1 + body[..at].iter().filter(|&&b| b == b'\n').count();
    DecodeError::Malformed {
        index,
        reason: format!(
            "invalid UTF-8 at byte offset {at} (line {line}); the body must be UTF-8 encoded"
        ),
    }
}

/// Index of the first `\n`, eight bytes at a time: NDJSON splitting is on the hot
/// path and std has no public memchr.
fn find_newline(hay: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])) ^ NEWLINES;
        // Sets the high bit of the lowest zero byte (and maybe of bytes above it).
        let zero = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero != 0 {
            return Some(base + (zero.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| base + i)
}

/// Where a piece of text sits in the body, for error positions.
struct Span<'a> {
    text: &'a [u8],
    /// Line number (from 1) of the first line of `text`.
    line: usize,
    /// `text` is one NDJSON line.
    ndjson: bool,
}

/// Turns a serde_json error into a reason a client can act on.
fn malformed(err: &serde_json::Error, span: &Span<'_>, index: Option<usize>) -> DecodeError {
    let full = err.to_string();
    // serde_json appends " at line L column C"; positions are re-stated against the body.
    let bare = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m);
    let line = span.line + err.line().saturating_sub(1);
    let column = err.column();
    // Only the from-bytes fallback of `decode_json` meets bad UTF-8: in a string
    // ("invalid unicode code point") or as a stray byte where a token should be.
    if let Err(bad) = std::str::from_utf8(span.text) {
        let at = bad.valid_up_to();
        if bare == "invalid unicode code point" || at < line_start(span.text, err.line()) + column {
            return utf8_error(span.text, at, index);
        }
    }
    let reason = if err.is_eof() {
        format!(
            "the JSON ends early at line {line}, column {column}: {bare}; is the body truncated?"
        )
    } else if bare == "trailing characters" {
        format!(
            "unexpected text after the JSON value at line {line}, column {column}{}",
            if span.ndjson {
                "; NDJSON has exactly one record object per line"
            } else {
                ""
            }
        )
    } else {
        format!("invalid JSON at line {line}, column {column}: {bare}")
    };
    DecodeError::Malformed { index, reason }
}

/// Byte offset of the start of `line` (from 1) in `text`.
fn line_start(text: &[u8], line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(line - 2)
        .map_or(text.len(), |(i, _)| i + 1)
}
