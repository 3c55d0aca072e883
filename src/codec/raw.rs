//! The sink's read path over an [`EncodedBatch`]: its records as encoded byte spans,
//! without checking again what the batch's construction already checked.
//!
//! An `EncodedBatch` is built only by [`BatchWriter`](super::BatchWriter) (from
//! validated text), by [`EncodedBatch::encode`] (from owned `String`s) or by
//! [`EncodedBatch::from_payload`], which checks every byte. So its strings are UTF-8,
//! its varints are in their shortest form and its shadowed indexes are the repeated
//! keys. [`RawRecords`] relies on that: it does not validate UTF-8 again, which is
//! most of what reading a record through the checked view, [`RecordRef`], costs. It
//! still checks what memory safety needs (every length against the bytes left, every
//! slice taken with `get`) and the little that keeps a row's item counts true (the
//! level byte, the attribute split, the shadowed indexes' order), so damaged memory
//! gives a [`CodecError`], never a panic or a malformed row count.
//!
//! Strings stay encoded, as [`RawStr`]: a LEB128 length then the bytes, which is a
//! RowBinary `String` as is. The sink therefore copies a field, a run of adjacent
//! fields ([`RawRecord::texts`]) or a record's attributes (a RowBinary `Map`'s items,
//! [`Attributes::encoded`]) with one `extend_from_slice`. Everything that needs `&str`
//! (dead letters, tools, tests) keeps using the checked [`RecordRef`].
//!
//! [`RecordRef`]: super::RecordRef

use super::{
    AttributeParts, Attributes, CodecError, EncodedBatch, Input, OtelHead, Shadowed, LEVELS,
    OTEL_BIT,
};
use crate::record::Level;

/// A string as the batch encodes it: LEB128 byte length, then the UTF-8 bytes. That
/// is also a RowBinary `String`, so [`encoded`](Self::encoded) is what goes on the
/// wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStr<'a>(&'a [u8]);

impl Default for RawStr<'_> {
    fn default() -> Self {
        RawStr::EMPTY
    }
}

impl<'a> RawStr<'a> {
    /// The empty string: its length, 0, alone.
    pub const EMPTY: RawStr<'static> = RawStr(&[0]);

    pub(super) fn new(encoded: &'a [u8]) -> RawStr<'a> {
        RawStr(encoded)
    }

    /// Length and bytes, as encoded: a RowBinary `String`.
    #[inline]
    pub fn encoded(self) -> &'a [u8] {
        self.0
    }

    /// Whether the string is empty (a length of 0 is the one byte 0; the encoding's
    /// varints are in their shortest form).
    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == [0]
    }

    /// The string's bytes, without their length.
    pub fn bytes(self) -> Result<&'a [u8], CodecError> {
        let mut input = Input {
            buf: self.0,
            pos: 0,
        };
        input.len_prefix("string length")?;
        Ok(self.0.get(input.pos..).unwrap_or_default())
    }
}

/// The keys the native view adds for an OTLP record's scope, encoded.
const SCOPE_NAME_KEY: RawStr<'static> = RawStr(b"\x0fotel.scope.name");
const SCOPE_VERSION_KEY: RawStr<'static> = RawStr(b"\x12otel.scope.version");

/// One attribute, key and value, as encoded.
pub type RawPair<'a> = Result<(RawStr<'a>, RawStr<'a>), CodecError>;

/// One record of an [`EncodedBatch`] as encoded spans ([`EncodedBatch::raw_records`]).
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub timestamp_ns: i64,
    pub level: Level,
    /// `service`, `message`, `trace_id` and `span_id`, adjacent as encoded: the four
    /// columns after `level` in the native layouts, in one copy.
    pub texts: &'a [u8],
    pub service: RawStr<'a>,
    pub message: RawStr<'a>,
    pub trace_id: RawStr<'a>,
    pub span_id: RawStr<'a>,
    /// All of them; for an OTLP record split by [`RawOtel`].
    pub attributes: Attributes<'a>,
    pub otel: Option<RawOtel<'a>>,
}

impl<'a> RawRecord<'a> {
    /// How many pairs the native layouts store
    /// ([`RecordRef::flat_attributes`](super::RecordRef::flat_attributes)).
    #[inline]
    pub fn flat_len(&self) -> usize {
        match &self.otel {
            None => self.attributes.len(),
            Some(otel) => otel.merged_len(),
        }
    }

    /// The pairs the native layouts store, in order: exactly
    /// [`flat_len`](Self::flat_len) of them.
    pub fn flat_pairs(&self) -> impl Iterator<Item = RawPair<'a>> {
        let (plain, otel) = match self.otel {
            None => (Some(self.attributes), None),
            Some(otel) => (None, Some(otel)),
        };
        plain
            .into_iter()
            .flat_map(|all| all.raw_pairs())
            .chain(otel.into_iter().flat_map(RawOtel::merged))
    }
}

/// The OTLP part of a [`RawRecord`], with the attributes split by where they came
/// from (the counterpart of [`OtelRef`](super::OtelRef)).
#[derive(Debug, Clone, Copy)]
pub struct RawOtel<'a> {
    pub severity_number: u8,
    pub severity_text: RawStr<'a>,
    pub trace_flags: u8,
    pub event_name: RawStr<'a>,
    pub scope_name: RawStr<'a>,
    pub scope_version: RawStr<'a>,
    pub scope_schema_url: RawStr<'a>,
    pub resource_schema_url: RawStr<'a>,
    /// The log record's own attributes.
    pub own: Attributes<'a>,
    /// Its instrumentation scope's.
    pub scope: Attributes<'a>,
    /// Its resource's, without `service.name`.
    pub resource: Attributes<'a>,
    shadowed: Shadowed<'a>,
}

impl<'a> RawOtel<'a> {
    /// Whether the native view drops any entry (a key repeated across own, scope
    /// and resource attributes): almost never, and then the view is not simply its
    /// parts one after the other.
    #[inline]
    pub fn has_shadowed(&self) -> bool {
        self.shadowed.count != 0
    }

    /// `otel.scope.name` and `otel.scope.version` with their values, where set: the
    /// native view's entries between the own attributes and the scope's.
    pub fn named(&self) -> impl Iterator<Item = (RawStr<'a>, RawStr<'a>)> {
        [
            (SCOPE_NAME_KEY, self.scope_name),
            (SCOPE_VERSION_KEY, self.scope_version),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
    }

    fn named_len(&self) -> usize {
        usize::from(!self.scope_name.is_empty()) + usize::from(!self.scope_version.is_empty())
    }

    /// The native view's length. The reader checked that the shadowed indexes ascend
    /// within the view, so there are at most as many as it has entries.
    fn merged_len(&self) -> usize {
        let view = self.own.len() + self.named_len() + self.scope.len() + self.resource.len();
        view.saturating_sub(self.shadowed.count)
    }

    /// Own, scope name and version, scope, resource, without the shadowed entries.
    fn merged(self) -> impl Iterator<Item = RawPair<'a>> {
        let mut shadowed = self.shadowed.iter().peekable();
        self.own
            .raw_pairs()
            .chain(self.named().map(Ok))
            .chain(self.scope.raw_pairs())
            .chain(self.resource.raw_pairs())
            .enumerate()
            .filter(move |(at, _)| shadowed.next_if_eq(at).is_none())
            .map(|(_, pair)| pair)
    }
}

impl<'a> Attributes<'a> {
    /// The pairs as encoded, one after the other: a RowBinary `Map(String, String)`'s
    /// items (without its count), or the input of [`raw_pairs`](Self::raw_pairs).
    #[inline]
    pub fn encoded(&self) -> &'a [u8] {
        self.bytes
    }

    /// The pairs as encoded, in the client's order; exactly [`len`](Self::len) items.
    pub fn raw_pairs(&self) -> impl ExactSizeIterator<Item = RawPair<'a>> {
        let mut input = Input {
            buf: self.bytes,
            pos: 0,
        };
        (0..self.count).map(move |_| {
            let key = input.raw_str("attribute key")?;
            let value = input.raw_str("attribute value")?;
            Ok((key, value))
        })
    }
}

impl EncodedBatch {
    /// The records as encoded spans, for the sink: read without checking their text
    /// again (see `codec::raw`'s documentation). An error means damaged memory.
    pub fn raw_records(&self) -> RawRecords<'_> {
        let mut input = Input {
            buf: &self.payload,
            pos: 0,
        };
        // An empty batch has nothing to read (`EncodedBatch::default()` has no bytes).
        let failed = match self.records {
            0 => None,
            _ => input.len_prefix("record count").err(),
        };
        RawRecords {
            input,
            left: if failed.is_some() { 0 } else { self.records },
            failed,
        }
    }
}

/// Iterator over an [`EncodedBatch`]'s records as [`RawRecord`]s; stops after the
/// first error.
pub struct RawRecords<'a> {
    input: Input<'a>,
    left: usize,
    failed: Option<CodecError>,
}

impl<'a> RawRecords<'a> {
    fn record(&mut self) -> Result<RawRecord<'a>, CodecError> {
        let input = &mut self.input;
        let timestamp_ns = i64::from_le_bytes(input.array::<8>("timestamp")?);
        let level_byte = input.byte("level")?;
        let level = *LEVELS
            .get(usize::from(level_byte & !OTEL_BIT))
            .ok_or_else(|| input.error("unknown level byte"))?;
        let start = input.pos;
        let service = input.raw_str("service")?;
        let message = input.raw_str("message")?;
        let trace_id = input.raw_str("trace_id")?;
        let span_id = input.raw_str("span_id")?;
        let texts = input.buf.get(start..input.pos).unwrap_or_default();
        let otel = if level_byte & OTEL_BIT != 0 {
            Some(OtelHead::read(input, Input::raw_str)?)
        } else {
            None
        };
        let parts = input.attributes(otel.as_ref().map(OtelHead::split_counts))?;
        let otel = match otel {
            Some(head) => Some(head.split_raw(parts, input)?),
            None => None,
        };
        Ok(RawRecord {
            timestamp_ns,
            level,
            texts,
            service,
            message,
            trace_id,
            span_id,
            attributes: parts.all,
            otel,
        })
    }
}

impl<'a> OtelHead<'a, RawStr<'a>> {
    /// The raw view, with the attributes cut as read; fails when the shadowed
    /// indexes do not ascend within the native view (the row's item count would lie).
    fn split_raw(
        self,
        parts: AttributeParts<'a>,
        input: &Input<'a>,
    ) -> Result<RawOtel<'a>, CodecError> {
        let [severity_text, event_name, scope_name, scope_version, scope_schema_url, resource_schema_url] =
            self.texts;
        let named = usize::from(!scope_name.is_empty()) + usize::from(!scope_version.is_empty());
        self.check_shadowed_order(parts.all.len() + named, input)?;
        Ok(RawOtel {
            severity_number: self.severity_number,
            severity_text,
            trace_flags: self.trace_flags,
            event_name,
            scope_name,
            scope_version,
            scope_schema_url,
            resource_schema_url,
            own: parts.own,
            scope: parts.scope,
            resource: parts.resource,
            shadowed: self.shadowed,
        })
    }
}

impl<'a> Iterator for RawRecords<'a> {
    type Item = Result<RawRecord<'a>, CodecError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(err) = self.failed.take() {
            return Some(Err(err));
        }
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = self.record();
        if item.is_err() {
            // Nothing after a damaged record can be found.
            self.left = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let failed = usize::from(self.failed.is_some());
        (0, Some(self.left + failed))
    }
}

#[cfg(test)]
mod tests;
