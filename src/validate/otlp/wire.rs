//! Our protobuf reader for `ExportLogsServiceRequest` (the logs fields of
//! opentelemetry-proto's `collector/logs/v1`, `logs/v1`, `resource/v1` and
//! `common/v1`), producing a [`LogsView`] whose text borrows the body: no `String`
//! or `Vec` per field, as prost's owned decoding needs.
//!
//! It accepts exactly what prost accepts, with the same values, so the mapping
//! cannot tell which decoded a body (a differential test and the `otlp_protobuf`
//! fuzz target check this against prost):
//! - every field the generated prost types know is read and checked, those the
//!   mapping ignores too (`Resource.entity_refs`, `KeyValue.key_strindex`, dropped
//!   counts), with the wire type prost expects; unknown fields are skipped per wire
//!   type, groups included, as protobuf requires of a reader;
//! - `string` fields must be UTF-8; a repeated scalar field keeps its last value;
//! - nesting is limited as prost limits it (`RECURSION_LIMIT` 100, counted the same
//!   way, unknown fields and groups included);
//! - lengths are checked against the bytes present before anything is read, and
//!   nothing is allocated for a claimed length: only for what was parsed.
//!
//! One thing it leaves to prost: a singular message field sent more than once
//! (`resource`, `scope`, `body`, `KeyValue.value`, or the same nested value kind
//! twice in one `AnyValue`), which protobuf merges field by field. No encoder writes
//! that; [`WireError::Unsupported`] tells the caller to decode such a body with prost.

use super::view::{
    Array, Attribute, LogsView, Map, RecordView, ResourceLogsView, ScopeLogsView, Value,
};

/// prost's recursion limit: a message's fields are read with a budget one below its
/// parent's, and a nested message or skipped field needs a budget above zero.
const DEPTH: u32 = 100;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const I32: u8 = 5;

/// Why a body was not read. Positions are byte offsets into the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the body ends inside a field (at byte {at}): truncated or corrupt protobuf")]
    Truncated { at: usize },
    #[error("invalid varint at byte {at}: more than 10 bytes or over 64 bits")]
    Varint { at: usize },
    #[error("invalid field key at byte {at}: {reason}")]
    Key { at: usize, reason: &'static str },
    #[error("{message}.{field} at byte {at} has wire type {actual}; protobuf wants {expected}")]
    WireType {
        message: &'static str,
        field: &'static str,
        at: usize,
        actual: u8,
        expected: u8,
    },
    #[error("{message}.{field} at byte {at} is not valid UTF-8; string fields must be")]
    Utf8 {
        message: &'static str,
        field: &'static str,
        at: usize,
    },
    #[error("messages nested deeper than {DEPTH} at byte {at}")]
    TooDeep { at: usize },
    #[error("end-group tag at byte {at} without its start-group tag")]
    EndGroup { at: usize },
    #[error(
        "{message}.{field} appears more than once (at byte {at}); protobuf merges such \
         copies, which this reader leaves to prost"
    )]
    Unsupported {
        message: &'static str,
        field: &'static str,
        at: usize,
    },
}

type Result<T> = std::result::Result<T, WireError>;

/// Reads `body` as an `ExportLogsServiceRequest`.
pub(super) fn decode(body: &[u8]) -> Result<LogsView<'_>> {
    // A guess from the size, on the low side (the load's records take ~120 bytes with
    // ~4 attributes): a few doublings at most, and never more than about the body's
    // size reserved for a body that turns out to hold something else.
    let mut view = LogsView {
        records: Vec::with_capacity(body.len() / 192),
        attributes: Vec::with_capacity(body.len() / 48),
        ..LogsView::default()
    };
    let mut r = Reader::new(body);
    while let Some((tag, wt)) = r.next_key()? {
        if tag == 1 {
            let sub = r.message(wt, DEPTH, "ExportLogsServiceRequest", "resource_logs")?;
            resource_logs(&mut view, sub, DEPTH - 1)?;
        } else {
            r.skip(wt, tag, DEPTH)?;
        }
    }
    Ok(view)
}

/// A window of the body: `body[pos..end]` is still to read.
#[derive(Clone, Copy)]
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8]) -> Reader<'a> {
        Reader {
            body,
            pos: 0,
            end: body.len(),
        }
    }

    /// The window's bytes (a nested message's, for reading later).
    fn bytes(&self) -> &'a [u8] {
        &self.body[self.pos..self.end]
    }

    /// The next field's tag and wire type, or `None` at the window's end.
    #[inline]
    fn next_key(&mut self) -> Result<Option<(u32, u8)>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let Ok(key) = u32::try_from(key) else {
            return Err(WireError::Key {
                at,
                reason: "over 32 bits",
            });
        };
        let wt = (key & 7) as u8;
        if wt > I32 {
            return Err(WireError::Key {
                at,
                reason: "wire type 6 or 7 does not exist",
            });
        }
        if key >> 3 == 0 {
            return Err(WireError::Key {
                at,
                reason: "field number 0",
            });
        }
        Ok(Some((key >> 3, wt)))
    }

    /// A varint of at most 10 bytes whose value fits 64 bits, as prost reads it.
    #[inline]
    fn varint(&mut self) -> Result<u64> {
        let at = self.pos;
        let mut value = 0u64;
        for shift in 0..10 {
            let Some(&byte) = self.body[..self.end].get(self.pos) else {
                return Err(WireError::Truncated { at });
            };
            self.pos += 1;
            if shift == 9 && byte > 1 {
                return Err(WireError::Varint { at });
            }
            value |= u64::from(byte & 0x7f) << (7 * shift);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError::Varint { at })
    }

    /// The next `len` bytes.
    #[inline]
    fn take(&mut self, len: u64) -> Result<&'a [u8]> {
        let at = self.pos;
        match usize::try_from(len) {
            Ok(len) if len <= self.end - self.pos => {
                self.pos += len;
                Ok(&self.body[at..self.pos])
            }
            _ => Err(WireError::Truncated { at }),
        }
    }

    fn expect(
        &self,
        wt: u8,
        expected: u8,
        message: &'static str,
        field: &'static str,
    ) -> Result<()> {
        if wt == expected {
            return Ok(());
        }
        Err(WireError::WireType {
            message,
            field,
            at: self.pos,
            actual: wt,
            expected,
        })
    }

    /// A length-delimited field's bytes.
    #[inline]
    fn bytes_field(
        &mut self,
        wt: u8,
        message: &'static str,
        field: &'static str,
    ) -> Result<&'a [u8]> {
        self.expect(wt, LEN, message, field)?;
        let len = self.varint()?;
        self.take(len)
    }

    #[inline]
    fn string(&mut self, wt: u8, message: &'static str, field: &'static str) -> Result<&'a str> {
        let bytes = self.bytes_field(wt, message, field)?;
        std::str::from_utf8(bytes).map_err(|_| WireError::Utf8 {
            message,
            field,
            at: self.pos - bytes.len(),
        })
    }

    #[inline]
    fn varint_field(&mut self, wt: u8, message: &'static str, field: &'static str) -> Result<u64> {
        self.expect(wt, VARINT, message, field)?;
        self.varint()
    }

    #[inline]
    fn fixed64(&mut self, wt: u8, message: &'static str, field: &'static str) -> Result<u64> {
        self.expect(wt, I64, message, field)?;
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().unwrap_or_default()))
    }

    #[inline]
    fn fixed32(&mut self, wt: u8, message: &'static str, field: &'static str) -> Result<u32> {
        self.expect(wt, I32, message, field)?;
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().unwrap_or_default()))
    }

    /// A nested message in a message whose fields are read with `budget`: its window.
    #[inline]
    fn message(
        &mut self,
        wt: u8,
        budget: u32,
        message: &'static str,
        field: &'static str,
    ) -> Result<Reader<'a>> {
        self.expect(wt, LEN, message, field)?;
        if budget == 0 {
            return Err(WireError::TooDeep { at: self.pos });
        }
        let len = self.varint()?;
        let start = self.pos;
        self.take(len)?;
        Ok(Reader {
            body: self.body,
            pos: start,
            end: self.pos,
        })
    }

    /// Skips an unknown field as prost does (a group to its matching end tag).
    fn skip(&mut self, wt: u8, tag: u32, budget: u32) -> Result<()> {
        if budget == 0 {
            return Err(WireError::TooDeep { at: self.pos });
        }
        match wt {
            VARINT => {
                self.varint()?;
            }
            I64 => {
                self.take(8)?;
            }
            I32 => {
                self.take(4)?;
            }
            LEN => {
                let len = self.varint()?;
                self.take(len)?;
            }
            START_GROUP => loop {
                let at = self.pos;
                let Some((inner, inner_wt)) = self.next_key()? else {
                    return Err(WireError::Truncated { at });
                };
                if inner_wt == END_GROUP {
                    if inner != tag {
                        return Err(WireError::EndGroup { at });
                    }
                    break;
                }
                self.skip(inner_wt, inner, budget - 1)?;
            },
            _ => return Err(WireError::EndGroup { at: self.pos }),
        }
        Ok(())
    }

    fn unsupported(&self, message: &'static str, field: &'static str) -> WireError {
        WireError::Unsupported {
            message,
            field,
            at: self.pos,
        }
    }
}

fn resource_logs<'a>(view: &mut LogsView<'a>, mut r: Reader<'a>, budget: u32) -> Result<()> {
    const M: &str = "ResourceLogs";
    let mut out = ResourceLogsView::default();
    let first_scope = view.scopes.len();
    let mut seen_resource = false;
    while let Some((tag, wt)) = r.next_key()? {
        match tag {
            1 => {
                if seen_resource {
                    return Err(r.unsupported(M, "resource"));
                }
                seen_resource = true;
                let sub = r.message(wt, budget, M, "resource")?;
                let first = view.attributes.len();
                resource(view, sub, budget - 1)?;
                out.attributes = first..view.attributes.len();
            }
            2 => {
                let sub = r.message(wt, budget, M, "scope_logs")?;
                scope_logs(view, sub, budget - 1)?;
            }
            3 => out.schema_url = r.string(wt, M, "schema_url")?,
            _ => r.skip(wt, tag, budget)?,
        }
    }
    out.scopes = first_scope..view.scopes.len();
    view.resources.push(out);
    Ok(())
}

fn resource<'a>(view: &mut LogsView<'a>, mut r: Reader<'a>, budget: u32) -> Result<()> {
    const M: &str = "Resource";
    while let Some((tag, wt)) = r.next_key()? {
        match tag {
            1 => {
                let sub = r.message(wt, budget, M, "attributes")?;
                view.attributes
                    .push(key_value(sub, budget - 1, Depth::Deep)?);
            }
            2 => {
                r.varint_field(wt, M, "dropped_attributes_count")?;
            }
            3 => {
                let sub = r.message(wt, budget, M, "entity_refs")?;
                entity_ref(sub, budget - 1)?;
            }
            _ => r.skip(wt, tag, budget)?,
        }
    }
    Ok(())
}

/// Read for its checks only: the mapping has no use for entity references.
fn entity_ref(mut r: Reader<'_>, budget: u32) -> Result<()> {
    const M: &str = "EntityRef";
    while let Some((tag, wt)) = r.next_key()? {
        match tag {
            1 => r.string(wt, M, "schema_url").map(drop)?,
            2 => r.string(wt, M, "type").map(drop)?,
            3 => r.string(wt, M, "id_keys").map(drop)?,
            4 => r.string(wt, M, "description_keys").map(drop)?,
            _ => r.skip(wt, tag, budget)?,
        }
    }
    Ok(())
}

fn scope_logs<'a>(view: &mut LogsView<'a>, mut r: Reader<'a>, budget: u32) -> Result<()> {
    const M: &str = "ScopeLogs";
    let mut out = ScopeLogsView::default();
    let first_record = view.records.len();
    let mut seen_scope = false;
    while let Some((tag, wt)) = r.next_key()? {
        match tag {
            1 => {
                if seen_scope {
                    return Err(r.unsupported(M, "scope"));
                }
                seen_scope = true;
                let sub = r.message(wt, budget, M, "scope")?;
                scope(view, sub, budget - 1, &mut out)?;
            }
            2 => {
                let sub = r.message(wt, budget, M, "log_records")?;
                let record = log_record(view, sub, budget - 1)?;
                view.records.push(record);
            }
            3 => out.schema_url = r.string(wt, M, "schema_url")?,
            _ => r.skip(wt, tag, budget)?,
        }
    }
    out.records = first_record..view.records.len();
    view.scopes.push(out);
    Ok(())
}

fn scope<'a>(
    view: &mut LogsView<'a>,
    mut r: Reader<'a>,
    budget: u32,
    out: &mut ScopeLogsView<'a>,
) -> Result<()> {
    const M: &str = "InstrumentationScope";
    let first = view.attributes.len();
    while let Some((tag, wt)) = r.next_key()? {
        match tag {
            1 => out.name = r.string(wt, M, "name")?,
            2 => out.version = r.string(wt, M, "version")?,
            3 => {
                let sub = r.message(wt, budget, M, "attributes")?;
                view.attributes
                    .push(key_value(sub, budget - 1, Depth::Deep)?);
            }
            4 => {
                r.varint_field(wt, M, "dropped_attributes_count")?;
            }
            _ => r.skip(wt, tag, budget)?,
        }
    }
    out.attributes = first..view.attributes.len();
    Ok(())
}

fn log_record<'a>(
    view: &mut LogsView<'a>,
    mut r: Reader<'a>,
    budget: u32,
) -> Result<RecordView<'a>> {
    const M: &str = "LogRecord";
    let mut out = RecordView::default();
    let first = view.attributes.len();
    while let Some((tag, wt)) = r.next_key()? {
        match tag {
            1 => out.time_unix_nano = r.fixed64(wt, M, "time_unix_nano")?,
            2 => out.severity_number = r.varint_field(wt, M, "severity_number")? as i32,
            3 => out.severity_text = r.string(wt, M, "severity_text")?,
            5 => {
                if out.body.is_some() {
                    return Err(r.unsupported(M, "body"));
                }
                let sub = r.message(wt, budget, M, "body")?;
                out.body = Some(any_value(sub, budget - 1, Depth::Deep)?);
            }
            6 => {
                let sub = r.message(wt, budget, M, "attributes")?;
                view.attributes
                    .push(key_value(sub, budget - 1, Depth::Deep)?);
            }
            7 => {
                r.varint_field(wt, M, "dropped_attributes_count")?;
            }
            8 => out.flags = r.fixed32(wt, M, "flags")?,
            9 => out.trace_id = r.bytes_field(wt, M, "trace_id")?,
            10 => out.span_id = r.bytes_field(wt, M, "span_id")?,
            11 => out.observed_time_unix_nano = r.fixed64(wt, M, "observed_time_unix_nano")?,
            12 => out.event_name = r.string(wt, M, "event_name")?,
            _ => r.skip(wt, tag, budget)?,
        }
    }
    out.attributes = first..view.attributes.len();
    Ok(out)
}

/// Whether a value's nested arrays and lists are checked now (the first read) or
/// were already (a nested value read again when the mapping walks it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    Deep,
    Shallow,
}

fn key_value(mut r: Reader<'_>, budget: u32, depth: Depth) -> Result<Attribute<'_>> {
    const M: &str = "KeyValue";
    let mut out = Attribute {
        key: "",
        value: Value::Empty,
    };
    let mut seen_value = false;
    while let Some((tag, wt)) = r.next_key()? {
        match tag {
            1 => out.key = r.string(wt, M, "key")?,
            2 => {
                if seen_value {
                    return Err(r.unsupported(M, "value"));
                }
                seen_value = true;
                let sub = r.message(wt, budget, M, "value")?;
                out.value = any_value(sub, budget - 1, depth)?;
            }
            3 => {
                r.varint_field(wt, M, "key_strindex")?;
            }
            _ => r.skip(wt, tag, budget)?,
        }
    }
    Ok(out)
}

/// An `AnyValue`: its `oneof` keeps the last field sent, as prost's does.
fn any_value(mut r: Reader<'_>, budget: u32, depth: Depth) -> Result<Value<'_>> {
    const M: &str = "AnyValue";
    let mut out = Value::Empty;
    while let Some((tag, wt)) = r.next_key()? {
        out = match tag {
            1 => Value::Str(r.string(wt, M, "string_value")?),
            2 => Value::Bool(r.varint_field(wt, M, "bool_value")? != 0),
            3 => Value::Int(r.varint_field(wt, M, "int_value")? as i64),
            4 => Value::Double(f64::from_bits(r.fixed64(wt, M, "double_value")?)),
            5 => {
                if matches!(out, Value::Array(_)) {
                    return Err(r.unsupported(M, "array_value"));
                }
                let sub = r.message(wt, budget, M, "array_value")?;
                if depth == Depth::Deep {
                    check_array(sub, budget - 1)?;
                }
                Value::Array(Array::Wire(sub.bytes()))
            }
            6 => {
                if matches!(out, Value::Map(_)) {
                    return Err(r.unsupported(M, "kvlist_value"));
                }
                let sub = r.message(wt, budget, M, "kvlist_value")?;
                if depth == Depth::Deep {
                    check_map(sub, budget - 1)?;
                }
                Value::Map(Map::Wire(sub.bytes()))
            }
            7 => Value::Bytes(r.bytes_field(wt, M, "bytes_value")?),
            8 => {
                r.varint_field(wt, M, "string_value_strindex")?;
                Value::StrIndex
            }
            _ => {
                r.skip(wt, tag, budget)?;
                out
            }
        };
    }
    Ok(out)
}

fn check_array(mut r: Reader<'_>, budget: u32) -> Result<()> {
    while let Some((tag, wt)) = r.next_key()? {
        if tag == 1 {
            let sub = r.message(wt, budget, "ArrayValue", "values")?;
            any_value(sub, budget - 1, Depth::Deep)?;
        } else {
            r.skip(wt, tag, budget)?;
        }
    }
    Ok(())
}

fn check_map(mut r: Reader<'_>, budget: u32) -> Result<()> {
    while let Some((tag, wt)) = r.next_key()? {
        if tag == 1 {
            let sub = r.message(wt, budget, "KeyValueList", "values")?;
            key_value(sub, budget - 1, Depth::Deep)?;
        } else {
            r.skip(wt, tag, budget)?;
        }
    }
    Ok(())
}

/// The elements of an `ArrayValue` the reader has checked.
pub struct ArrayItems<'a>(Fields<'a>);

/// The entries of a `KeyValueList` the reader has checked.
pub struct MapEntries<'a>(Fields<'a>);

pub(super) fn array_items(bytes: &[u8]) -> ArrayItems<'_> {
    ArrayItems(Fields(Reader::new(bytes)))
}

pub(super) fn map_entries(bytes: &[u8]) -> MapEntries<'_> {
    MapEntries(Fields(Reader::new(bytes)))
}

/// The occurrences of field 1 (`values`, in both list messages) of a checked message.
struct Fields<'a>(Reader<'a>);

impl<'a> Fields<'a> {
    /// The next `values` entry's window. The bytes were checked when the body was
    /// read, so an error cannot happen here; if one did, the list would end.
    fn next_entry(&mut self) -> Option<Reader<'a>> {
        let r = &mut self.0;
        let entry: Result<Option<Reader<'a>>> = (|| loop {
            let Some((tag, wt)) = r.next_key()? else {
                return Ok(None);
            };
            if tag == 1 {
                return r.message(wt, DEPTH, "", "").map(Some);
            }
            r.skip(wt, tag, DEPTH)?;
        })();
        entry.unwrap_or_else(|_: WireError| {
            r.pos = r.end;
            None
        })
    }
}

impl<'a> Iterator for ArrayItems<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        let entry = self.0.next_entry()?;
        Some(any_value(entry, DEPTH, Depth::Shallow).unwrap_or_default())
    }
}

impl<'a> Iterator for MapEntries<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        let entry = self.0.next_entry()?;
        Some(
            key_value(entry, DEPTH, Depth::Shallow).unwrap_or(Attribute {
                key: "",
                value: Value::Empty,
            }),
        )
    }
}
