//! The INSERT body in RowBinary, written straight from the encoded records: owns the
//! wire bytes of every row [`Layout`] and the `INSERT … FORMAT RowBinary` statement
//! that names their columns.
//!
//! What goes into each column (DateTime clamping, severity defaults, which attributes
//! a native row shows, `service.name` first in `ResourceAttributes`) stays with the row
//! structs of [`schema`](super::schema): [`RowWriter`] builds the same borrowed row
//! from a [`RecordRef`] and writes its fields itself, without serde and without the
//! `clickhouse` crate's per-row buffering. The serde derive of those structs is the
//! test oracle: the tests insert the same records through both and compare the bodies
//! byte for byte.
//!
//! RowBinary as used here: integers little-endian, a `String` as its LEB128 byte
//! length then the bytes (the spool encoding's strings are the same, so a string is one
//! length and one copy), `Array(String)` (each half of a `Nested`) and
//! `Map(String, String)` as a LEB128 item count then the items. `LowCardinality(String)`
//! and `Enum`-free `String` columns are plain strings on the wire.

use crate::codec::{Attributes, CodecError, FlatAttributes, RecordRef};

use super::schema::otel::PairMap;
use super::schema::{
    quote_identifier, DateTime64MapRow, DateTime64NestedRow, Layout, LegacyRow, OtelRow,
};

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

    /// Appends `record` to `out` as one row. Fails only when an attribute of the
    /// record does not decode (a damaged batch); `out` then holds part of the row, so
    /// the caller must abandon the body.
    #[inline]
    pub fn write(&mut self, record: RecordRef<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        // Most rows fit: one reservation instead of a capacity check that grows.
        out.reserve(ROW_BYTES_HINT + record.message.len());
        match self.layout {
            Layout::Legacy => self.legacy(&LegacyRow::new(record), out),
            Layout::DateTime64Nested => {
                self.datetime64_nested(&DateTime64NestedRow::new(record), out)
            }
            Layout::DateTime64Map => datetime64_map(&DateTime64MapRow::new(record), out),
            Layout::Otel => otel(&OtelRow::new(record), out),
        }
    }

    fn legacy(&mut self, row: &LegacyRow<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&row.timestamp.to_le_bytes());
        out.extend_from_slice(&row.timestamp_ns.to_le_bytes());
        put_strs(
            out,
            [
                row.level,
                row.service,
                row.message,
                row.trace_id,
                row.span_id,
            ],
        );
        self.nested(row.attribute_keys.0, out)
    }

    fn datetime64_nested(
        &mut self,
        row: &DateTime64NestedRow<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.extend_from_slice(&row.timestamp.to_le_bytes());
        put_strs(
            out,
            [
                row.level,
                row.service,
                row.message,
                row.trace_id,
                row.span_id,
            ],
        );
        self.nested(row.attribute_keys.0, out)
    }

    /// `attributes.key` then `attributes.value`, two `Array(String)` of the same
    /// length, from one pass over the pairs (each pass decodes and checks them).
    fn nested(
        &mut self,
        attributes: FlatAttributes<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let len = attributes.len();
        put_varint(out, len as u64);
        if len == 0 {
            out.push(0);
            return Ok(());
        }
        self.scratch.clear();
        put_varint(&mut self.scratch, len as u64);
        for pair in attributes.iter() {
            let (key, value) = pair?;
            put_str(out, key);
            put_str(&mut self.scratch, value);
        }
        out.extend_from_slice(&self.scratch);
        Ok(())
    }
}

/// Room for a typical row besides its message (timestamps, level, service, ids and a
/// few attributes); a larger row only grows `out` once more.
const ROW_BYTES_HINT: usize = 256;

fn datetime64_map(row: &DateTime64MapRow<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.extend_from_slice(&row.timestamp.to_le_bytes());
    put_strs(
        out,
        [
            row.level,
            row.service,
            row.message,
            row.trace_id,
            row.span_id,
        ],
    );
    let attributes = row.attributes.0;
    put_varint(out, attributes.len() as u64);
    for pair in attributes.iter() {
        let (key, value) = pair?;
        put_str(out, key);
        put_str(out, value);
    }
    Ok(())
}

fn otel(row: &OtelRow<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.extend_from_slice(&row.timestamp.to_le_bytes());
    put_str(out, row.trace_id);
    put_str(out, row.span_id);
    out.push(row.trace_flags);
    put_str(out, row.severity_text);
    out.push(row.severity_number);
    put_str(out, row.service_name);
    put_str(out, row.body);
    put_str(out, row.resource_schema_url);
    pair_map(&row.resource_attributes, out)?;
    put_str(out, row.scope_schema_url);
    put_str(out, row.scope_name);
    put_str(out, row.scope_version);
    pair_map(&row.scope_attributes, out)?;
    pair_map(&row.log_attributes, out)?;
    put_str(out, row.event_name);
    Ok(())
}

/// A `Map(String, String)`: the optional pair of our own, then the encoded ones.
fn pair_map(map: &PairMap<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let pairs: Attributes<'_> = map.pairs;
    put_varint(out, (pairs.len() + usize::from(map.first.is_some())) as u64);
    if let Some((key, value)) = map.first {
        put_str(out, key);
        put_str(out, value);
    }
    for pair in pairs.iter() {
        let (key, value) = pair?;
        put_str(out, key);
        put_str(out, value);
    }
    Ok(())
}

/// The five text columns the native layouts share, in table order: level, service,
/// message, trace id, span id.
fn put_strs(out: &mut Vec<u8>, columns: [&str; 5]) {
    for text in columns {
        put_str(out, text);
    }
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
