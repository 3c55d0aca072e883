//! The INSERT body in RowBinary, written straight from the encoded records: owns the
//! wire bytes of every row [`Layout`] and the `INSERT … FORMAT RowBinary` statement
//! that names their columns.
//!
//! [`RowWriter`] reads a batch through its raw view ([`RawRecord`]: no second UTF-8
//! check, the batch was checked when it was built) and copies encoded bytes. A string
//! of the encoding is already a RowBinary `String` (LEB128 length, then the bytes), the
//! four texts after `level` are adjacent in the encoding as in the native tables, and a
//! record's attributes are a `Map(String, String)`'s items: the `Map` and `otel_logs`
//! layouts copy them whole, unless the native view drops a repeated key of an OTLP
//! record. Only the `Nested` layouts, whose keys and values are two arrays, go pair by
//! pair.
//!
//! What goes into each column (DateTime clamping, severity defaults, which attributes
//! a native row shows, `service.name` first in `ResourceAttributes`) is defined by the
//! row structs of [`schema`](super::schema) and their constructors; the writer shares
//! their helpers where a rule is more than a copy (`legacy_timestamps`,
//! `severity_number`). The serde derive of those structs is the test oracle: the tests
//! insert the same records through both and compare the bodies byte for byte.
//!
//! RowBinary as used here: integers little-endian, a `String` as its LEB128 byte
//! length then the bytes (as the spool encoding writes its strings), `Array(String)`
//! (each half of a `Nested`) and
//! `Map(String, String)` as a LEB128 item count then the items. `LowCardinality(String)`
//! and `Enum`-free `String` columns are plain strings on the wire.

use crate::codec::{Attributes, CodecError, RawOtel, RawRecord, RawStr};

use super::schema::otel::severity_number;
use super::schema::{legacy_timestamps, quote_identifier, Layout};

/// `INSERT INTO <table>(<columns>) FORMAT RowBinary` for a `layout` row; `table` is
/// already quoted. Spelled as the `clickhouse` crate spells its own INSERTs (columns
/// quoted, comma-separated, no spaces), so the server sees the same statement.
pub fn insert_sql(table: &str, layout: Layout) -> String {
    let columns: Vec<String> = layout
        .column_names()
        .iter()
        .map(|name| quote_identifier(name))
        .collect();
    format!(
        "INSERT INTO {table}({}) FORMAT RowBinary",
        columns.join(",")
    )
}

/// Appends records of one [`Layout`] to a RowBinary body. Keeps a scratch buffer
/// across rows (the values of a `Nested` column wait there while the keys are
/// written), so a long INSERT allocates nothing per row.
#[derive(Debug)]
pub struct RowWriter {
    layout: Layout,
    scratch: Vec<u8>,
}

impl RowWriter {
    pub fn new(layout: Layout) -> RowWriter {
        RowWriter {
            layout,
            scratch: Vec::new(),
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Appends `record` to `out` as one row. Fails only when the record does not
    /// read (a damaged batch); `out` then holds part of the row, so the caller must
    /// abandon the body.
    #[inline]
    pub fn write(&mut self, record: RawRecord<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        // Most rows fit: one reservation instead of a capacity check that grows.
        out.reserve(ROW_BYTES_HINT + record.texts.len() + record.attributes.encoded().len());
        match self.layout {
            Layout::Legacy => {
                let (seconds, ns) = legacy_timestamps(record.timestamp_ns);
                out.extend_from_slice(&seconds.to_le_bytes());
                out.extend_from_slice(&ns.to_le_bytes());
                native_texts(&record, out);
                self.nested(&record, out)
            }
            Layout::DateTime64Nested => {
                out.extend_from_slice(&record.timestamp_ns.to_le_bytes());
                native_texts(&record, out);
                self.nested(&record, out)
            }
            Layout::DateTime64Map => {
                out.extend_from_slice(&record.timestamp_ns.to_le_bytes());
                native_texts(&record, out);
                flat_map(&record, out)
            }
            Layout::Otel => {
                otel(&record, out);
                Ok(())
            }
        }
    }

    /// `attributes.key` then `attributes.value`, two `Array(String)` of the same
    /// length, from one pass over the pairs: the keys go to `out`, the values wait
    /// in the scratch buffer.
    fn nested(&mut self, record: &RawRecord<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let len = record.flat_len();
        put_varint(out, len as u64);
        if len == 0 {
            out.push(0);
            return Ok(());
        }
        self.scratch.clear();
        put_varint(&mut self.scratch, len as u64);
        match record.otel {
            // The common case without the merge's chained iterators.
            None => {
                for pair in record.attributes.raw_pairs() {
                    let (key, value) = pair?;
                    out.extend_from_slice(key.encoded());
                    self.scratch.extend_from_slice(value.encoded());
                }
            }
            Some(_) => {
                for pair in record.flat_pairs() {
                    let (key, value) = pair?;
                    out.extend_from_slice(key.encoded());
                    self.scratch.extend_from_slice(value.encoded());
                }
            }
        }
        out.extend_from_slice(&self.scratch);
        Ok(())
    }
}

/// Room for a typical row besides its texts and attributes (timestamps, level, the
/// `otel_logs` layout's extra columns); a larger row only grows `out` once more.
const ROW_BYTES_HINT: usize = 256;

/// The native layouts' `level`, `service`, `message`, `trace_id`, `span_id`: the
/// last four adjacent in the encoding as in the table, so one copy.
#[inline]
fn native_texts(record: &RawRecord<'_>, out: &mut Vec<u8>) {
    put_str(out, record.level.as_str());
    out.extend_from_slice(record.texts);
}

/// The `Map` layout's `attributes`: the encoded pairs are the map's items, copied
/// whole unless the native view drops a repeated key of an OTLP record.
fn flat_map(record: &RawRecord<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    put_varint(out, record.flat_len() as u64);
    match record.otel {
        None => out.extend_from_slice(record.attributes.encoded()),
        Some(otel) if !otel.has_shadowed() => {
            out.extend_from_slice(otel.own.encoded());
            for (key, value) in otel.named() {
                out.extend_from_slice(key.encoded());
                out.extend_from_slice(value.encoded());
            }
            out.extend_from_slice(otel.scope.encoded());
            out.extend_from_slice(otel.resource.encoded());
        }
        Some(_) => {
            for pair in record.flat_pairs() {
                let (key, value) = pair?;
                out.extend_from_slice(key.encoded());
                out.extend_from_slice(value.encoded());
            }
        }
    }
    Ok(())
}

/// `service.name`, the first key of `ResourceAttributes`, encoded.
const SERVICE_NAME_KEY: &[u8] = b"\x0cservice.name";

/// An `otel_logs` row, in column order ([`OtelRow`](super::schema::OtelRow) says what
/// goes in each column; the tests compare the two). A native record has only its own
/// attributes, no scope, flags 0 and the level as its severity.
fn otel<'a>(record: &RawRecord<'a>, out: &mut Vec<u8>) {
    let otel = record.otel;
    let text = |field: fn(RawOtel<'a>) -> RawStr<'a>| otel.map_or(RawStr::EMPTY, field).encoded();
    let (own, scope, resource) = match otel {
        Some(o) => (o.own, o.scope, o.resource),
        None => (
            record.attributes,
            Attributes::default(),
            Attributes::default(),
        ),
    };
    out.extend_from_slice(&record.timestamp_ns.to_le_bytes());
    out.extend_from_slice(record.trace_id.encoded());
    out.extend_from_slice(record.span_id.encoded());
    out.push(otel.map_or(0, |o| o.trace_flags));
    match otel {
        Some(o) if !o.severity_text.is_empty() => out.extend_from_slice(o.severity_text.encoded()),
        _ => put_str(out, record.level.severity_text()),
    }
    out.push(severity_number(
        otel.map_or(0, |o| o.severity_number),
        record.level,
    ));
    out.extend_from_slice(record.service.encoded());
    out.extend_from_slice(record.message.encoded());
    out.extend_from_slice(text(|o| o.resource_schema_url));
    // `service.name` (the `ServiceName` column) first, then the resource's own.
    put_varint(out, resource.len() as u64 + 1);
    out.extend_from_slice(SERVICE_NAME_KEY);
    out.extend_from_slice(record.service.encoded());
    out.extend_from_slice(resource.encoded());
    out.extend_from_slice(text(|o| o.scope_schema_url));
    out.extend_from_slice(text(|o| o.scope_name));
    out.extend_from_slice(text(|o| o.scope_version));
    pairs(scope, out);
    pairs(own, out);
    out.extend_from_slice(text(|o| o.event_name));
}

/// A `Map(String, String)` of encoded pairs: the count, then the pairs whole.
#[inline]
fn pairs(attributes: Attributes<'_>, out: &mut Vec<u8>) {
    put_varint(out, attributes.len() as u64);
    out.extend_from_slice(attributes.encoded());
}

/// A RowBinary `String`: LEB128 length, then the bytes.
#[inline(always)]
fn put_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if bytes.len() < 0x80 {
        // One length byte: almost every field.
        out.push(bytes.len() as u8);
    } else {
        put_varint(out, bytes.len() as u64);
    }
    out.extend_from_slice(bytes);
}

/// Unsigned LEB128, as RowBinary writes lengths and item counts.
#[inline(always)]
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests;
