//! The compact binary form of a [`Batch`]: what a spool frame stores, what the
//! batcher queues and what the ClickHouse sink reads its rows from.
//!
//! Owns only the byte layout of records; framing (magic, length, CRC, sequence number)
//! is [`spool::segment`](crate::spool::segment)'s. Pure functions, no I/O, so the hot
//! path can be measured and fuzzed in isolation.
//!
//! # Layout (version 1, all integers little-endian)
//!
//! ```text
//! payload := varint(record_count) record*
//! record  := i64 timestamp_ns | u8 level | str service | str message
//!            | str trace_id | str span_id | [otel] | varint(attr_count) (str key, str value)*
//! otel    := u8 severity_number | u8 trace_flags | varint(own_attrs) | varint(scope_attrs)
//!            | str severity_text | str event_name | str scope_name | str scope_version
//!            | str scope_schema_url | str resource_schema_url
//!            | varint(shadowed_count) varint(shadowed_index)*
//! str     := varint(byte_len) utf8_bytes
//! varint  := unsigned LEB128 (1 byte for lengths < 128, which is most of them)
//! ```
//!
//! Fixed-width timestamps (not zig-zag varints) because they are always large; lengths
//! as varints because they are almost always small. The level is its index in
//! `LEVELS`; its high bit ([`OTEL_BIT`]) says that the `otel` part follows (OTLP
//! records, [`OtelFields`]). Records without it are byte for byte what the first
//! version wrote, so spools written before the OTLP fields existed still read; an older
//! binary refuses a frame holding OTLP fields ("unknown level byte") rather than
//! misreading it. The `otel` part sits before the attributes so that the split of the
//! attributes (own, scope, resource) is known while their lengths are checked. The
//! shadowed indexes (ascending) name the entries of the native layouts' merged view
//! (own, `otel.scope.name`, `otel.scope.version`, scope, resource) whose key an
//! earlier entry has: computed once when encoding, where the keys are at hand, so
//! the sink writes that view in one pass (almost always the count alone, 0). The decoder trusts nothing: every length is checked against the bytes
//! left, so a frame that passed its CRC but was written by a buggy or newer encoder
//! fails with a [`CodecError`], never a panic or a huge allocation.
//!
//! # One form from the request to the INSERT
//!
//! The native API's and OTLP's records are encoded as validation accepts them
//! ([`BatchWriter`], from text borrowed from the body or the decoded request); gRPC
//! records are decoded into owned [`Record`]s once, by validation, and encoded into an
//! [`EncodedBatch`] right after. From then on the batch stays in this form. Decoded, a record costs one heap string per field (~0.7 KiB with the
//! allocator's overhead for a typical 220-byte JSON record); encoded, ~115 bytes in one
//! buffer per batch. So the spool's memory tail is a reference to the bytes it wrote,
//! a frame read back from disk is a slice of the read buffer, the batcher holds six
//! times more rows in the same memory (larger INSERTs cost ClickHouse less), and the
//! sink writes rows from borrowed views without allocating: [`RawRecord`]s, which
//! keep the strings encoded (a RowBinary `String` already) and trust the batch's
//! construction instead of checking its UTF-8 again (`raw`); [`RecordRef`]s, checked
//! and with `&str` fields, serve everything else.

use bytes::Bytes;

use crate::record::{Batch, Level, OtelFields, Record};

mod raw;
mod writer;

pub use self::raw::{RawOtel, RawPair, RawRecord, RawRecords, RawStr};
pub use self::writer::{BatchWriter, OtelShared, OtlpRecord, PlainRecord, TextPair};

/// Level byte ↔ [`Level`]; the byte is the index. Append only: stored on disk.
const LEVELS: [Level; 6] = [
    Level::Trace,
    Level::Debug,
    Level::Info,
    Level::Warn,
    Level::Error,
    Level::Fatal,
];

/// Set in the level byte of a record that carries [`OtelFields`].
const OTEL_BIT: u8 = 0x80;

/// Smallest possible encoded record (timestamp, level, four empty strings, no
/// attributes); bounds the record count a payload can claim.
const MIN_RECORD_BYTES: usize = 8 + 1 + 4 + 1;

/// A payload that is not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable frame payload at byte {offset}: {reason}")]
pub struct CodecError {
    pub offset: usize,
    pub reason: &'static str,
}

/// Bytes to reserve before [`encode_batch`]: exact for short strings, a small
/// over-estimate otherwise, so encoding never reallocates in practice.
pub fn encoded_len_hint(batch: &Batch) -> usize {
    // approx_bytes counts 16 bytes of fixed overhead per record; the encoding
    // needs 9 + one length byte per string, close enough with the margin below.
    batch.approx_bytes() + batch.records.len() * 8 + 10
}

/// Appends the encoding of `batch` to `out`.
pub fn encode_batch(batch: &Batch, out: &mut Vec<u8>) {
    out.reserve(encoded_len_hint(batch));
    put_varint(out, batch.records.len() as u64);
    for record in &batch.records {
        put_record_head(
            out,
            record.timestamp_ns,
            record.level,
            record.otel.is_some(),
            [
                &record.service,
                &record.message,
                &record.trace_id,
                &record.span_id,
            ],
        );
        if let Some(otel) = &record.otel {
            put_otel(out, otel, &record.attributes);
        }
        put_varint(out, record.attributes.len() as u64);
        for (key, value) in &record.attributes {
            put_str(out, key);
            put_str(out, value);
        }
    }
}

/// What every record starts with: timestamp, level byte (with [`OTEL_BIT`] when the
/// `otel` part follows), service, message, trace id, span id.
fn put_record_head(
    out: &mut Vec<u8>,
    timestamp_ns: i64,
    level: Level,
    otel: bool,
    text: [&str; 4],
) {
    out.extend_from_slice(&timestamp_ns.to_le_bytes());
    out.push(level_byte(level) | if otel { OTEL_BIT } else { 0 });
    for field in text {
        put_str(out, field);
    }
}

fn put_otel(out: &mut Vec<u8>, otel: &OtelFields, attributes: &[(String, String)]) {
    out.push(otel.severity_number);
    out.push(otel.trace_flags);
    put_varint(out, otel.own_attributes as u64);
    put_varint(out, otel.scope_attributes as u64);
    for text in [
        &otel.severity_text,
        &otel.event_name,
        &otel.scope_name,
        &otel.scope_version,
        &otel.scope_schema_url,
        &otel.resource_schema_url,
    ] {
        put_str(out, text);
    }
    let keys = native_keys(otel, attributes);
    let own = otel.own_attributes;
    let shadowed =
        |(at, key): &(usize, &str)| *at >= own && keys.clone().take(*at).any(|k| k == *key);
    let count = keys.clone().enumerate().filter(shadowed).count();
    put_varint(out, count as u64);
    if count > 0 {
        for (at, _) in keys.clone().enumerate().filter(shadowed) {
            put_varint(out, at as u64);
        }
    }
}

/// The keys of the native layouts' merged view of an OTLP record, in order, before
/// dropping repeated ones (see [`OtelRef::merged`]).
fn native_keys<'r>(
    otel: &'r OtelFields,
    attributes: &'r [(String, String)],
) -> impl Iterator<Item = &'r str> + Clone {
    let own_end = otel.own_attributes.min(attributes.len());
    let (own, rest) = attributes.split_at(own_end);
    let named = [
        ("otel.scope.name", &otel.scope_name),
        ("otel.scope.version", &otel.scope_version),
    ];
    let named = named
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k);
    own.iter()
        .map(|(k, _)| k.as_str())
        .chain(named)
        .chain(rest.iter().map(|(k, _)| k.as_str()))
}

/// Decodes a payload written by [`encode_batch`] into owned records. Trailing bytes
/// are an error.
pub fn decode_batch(payload: &[u8]) -> Result<Batch, CodecError> {
    let mut records = Vec::new();
    for record in RecordRefs::new(payload)? {
        records.push(record?.to_record()?);
    }
    Ok(Batch::new(records))
}

/// A batch in the compact encoding, with its record count. Cheap to clone (the bytes
/// are reference-counted) and immutable; built only by [`EncodedBatch::encode`] or
/// from a payload that [`EncodedBatch::from_payload`] checked completely, so reading
/// its records cannot fail unless memory was corrupted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EncodedBatch {
    payload: Bytes,
    records: usize,
}

impl std::fmt::Debug for EncodedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedBatch")
            .field("records", &self.records)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

impl EncodedBatch {
    pub fn encode(batch: &Batch) -> EncodedBatch {
        let mut payload = Vec::new();
        encode_batch(batch, &mut payload);
        EncodedBatch {
            payload: payload.into(),
            records: batch.len(),
        }
    }

    /// Checks every length, level byte and string of `payload`, and that it is
    /// exactly what [`encode`](Self::encode) writes for its records (shortest
    /// varints, the shadowed indexes that the keys imply), so a frame read back
    /// from disk is delivered as it was appended or not at all.
    pub fn from_payload(payload: Bytes) -> Result<EncodedBatch, CodecError> {
        let mut records = 0;
        let mut refs = RecordRefs::new(&payload)?;
        while let Some(record) = refs.next() {
            let record = record?;
            for pair in record.attributes.iter() {
                pair?;
            }
            if let Some(otel) = record.otel {
                // Reported at the end of the record.
                otel.check_shadowed(refs.input.pos)?;
            }
            records += 1;
        }
        Ok(EncodedBatch { payload, records })
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The encoded bytes, as a spool frame stores them.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Size of the encoding: what the batch costs in memory and on disk.
    pub fn byte_len(&self) -> usize {
        self.payload.len()
    }

    /// Borrowed views of the records, in order.
    pub fn records(&self) -> RecordRefs<'_> {
        // The payload was checked when the batch was built; an error here would mean
        // corrupted memory, and is still reported (as the first item), not a panic.
        RecordRefs::new(&self.payload).unwrap_or_else(|err| RecordRefs {
            input: Input { buf: &[], pos: 0 },
            left: 0,
            failed: Some(err),
        })
    }

    /// Owned records: for tests, tools and the rare caller that needs them.
    pub fn decode(&self) -> Result<Batch, CodecError> {
        decode_batch(&self.payload)
    }

    /// Test fixture: a batch over `payload` that nothing checked, as damaged memory
    /// would leave one, for tests that its readers fail without panicking.
    #[cfg(test)]
    pub(crate) fn unchecked(payload: Bytes, records: usize) -> EncodedBatch {
        EncodedBatch { payload, records }
    }
}

/// One record of an [`EncodedBatch`], its strings borrowed from the payload.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub timestamp_ns: i64,
    pub level: Level,
    pub service: &'a str,
    pub message: &'a str,
    pub trace_id: &'a str,
    pub span_id: &'a str,
    /// All of them; for an OTLP record split by [`OtelRef`].
    pub attributes: Attributes<'a>,
    pub otel: Option<OtelRef<'a>>,
}

impl<'a> RecordRef<'a> {
    pub fn to_record(&self) -> Result<Record, CodecError> {
        let mut attributes = Vec::with_capacity(self.attributes.len());
        for pair in self.attributes.iter() {
            let (key, value) = pair?;
            attributes.push((key.to_owned(), value.to_owned()));
        }
        Ok(Record {
            timestamp_ns: self.timestamp_ns,
            level: self.level,
            service: self.service.to_owned(),
            message: self.message.to_owned(),
            trace_id: self.trace_id.to_owned(),
            span_id: self.span_id.to_owned(),
            attributes,
            otel: self.otel.map(|otel| Box::new(otel.to_fields())),
        })
    }

    /// The attributes as the native table layouts store them: for an OTLP record its
    /// own, then `otel.scope.name` and `otel.scope.version` (when set), its scope's and
    /// its resource's, each key kept once (the first value wins); otherwise all of them
    /// as sent.
    pub fn flat_attributes(&self) -> FlatAttributes<'a> {
        FlatAttributes {
            all: self.attributes,
            otel: self.otel,
        }
    }
}

/// The OTLP part of a [`RecordRef`] ([`OtelFields`] borrowed), with the record's
/// attributes split by where they came from.
#[derive(Debug, Clone, Copy)]
pub struct OtelRef<'a> {
    pub severity_number: u8,
    pub severity_text: &'a str,
    pub trace_flags: u8,
    pub event_name: &'a str,
    pub scope_name: &'a str,
    pub scope_version: &'a str,
    pub scope_schema_url: &'a str,
    pub resource_schema_url: &'a str,
    /// The log record's own attributes.
    pub own: Attributes<'a>,
    /// Its instrumentation scope's.
    pub scope: Attributes<'a>,
    /// Its resource's, without `service.name` (that is the record's `service`).
    pub resource: Attributes<'a>,
    /// The entries of the native view that repeat an earlier key.
    shadowed: Shadowed<'a>,
}

impl<'a> OtelRef<'a> {
    fn to_fields(self) -> OtelFields {
        OtelFields {
            severity_number: self.severity_number,
            severity_text: self.severity_text.to_owned(),
            trace_flags: self.trace_flags,
            event_name: self.event_name.to_owned(),
            scope_name: self.scope_name.to_owned(),
            scope_version: self.scope_version.to_owned(),
            scope_schema_url: self.scope_schema_url.to_owned(),
            resource_schema_url: self.resource_schema_url.to_owned(),
            own_attributes: self.own.len(),
            scope_attributes: self.scope.len(),
        }
    }

    /// Own, scope name and version, scope, resource: before dropping repeated keys.
    fn unfiltered(self) -> impl Iterator<Item = Pair<'a>> {
        let named = [
            ("otel.scope.name", self.scope_name),
            ("otel.scope.version", self.scope_version),
        ];
        let named = named.into_iter().filter(|(_, v)| !v.is_empty()).map(Ok);
        self.own
            .iter()
            .chain(named)
            .chain(self.scope.iter())
            .chain(self.resource.iter())
    }

    /// [`unfiltered`](Self::unfiltered) without the shadowed entries (keys seen
    /// before, listed when the record was encoded).
    fn merged(self) -> impl Iterator<Item = Pair<'a>> {
        let mut shadowed = self.shadowed.iter().peekable();
        self.unfiltered()
            .enumerate()
            .filter(move |(at, _)| shadowed.next_if_eq(at).is_none())
            .map(|(_, pair)| pair)
    }

    /// Fails unless the shadowed indexes are exactly the entries of the unfiltered
    /// view whose key an earlier entry has (past the record's own attributes), as
    /// [`encode_batch`] lists them: a frame that lists others would lose
    /// attributes, or repeat keys, in the native view. Quadratic in the attribute
    /// count, like the encoder; only frames read back from disk pay it.
    fn check_shadowed(self, offset: usize) -> Result<(), CodecError> {
        let keys = self
            .unfiltered()
            .map(|pair| pair.map(|(key, _)| key))
            .collect::<Result<Vec<&str>, CodecError>>()?;
        let own = self.own.len();
        let mut listed = self.shadowed.iter().peekable();
        for (at, key) in keys.iter().enumerate() {
            let repeated = at >= own && keys[..at].contains(key);
            if repeated != listed.next_if_eq(&at).is_some() {
                return Err(CodecError {
                    offset,
                    reason: "shadowed indexes do not match the repeated attribute keys",
                });
            }
        }
        Ok(())
    }

    /// The length of [`merged`](Self::merged).
    fn merged_len(self) -> usize {
        let named =
            usize::from(!self.scope_name.is_empty()) + usize::from(!self.scope_version.is_empty());
        self.own.len() + named + self.scope.len() + self.resource.len() - self.shadowed.count
    }
}

/// Ascending indexes into an OTLP record's unfiltered native view (checked when read).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shadowed<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Shadowed<'a> {
    fn iter(self) -> impl Iterator<Item = usize> + 'a {
        let mut input = Input {
            buf: self.bytes,
            pos: 0,
        };
        // Checked varints below `usize::MAX` (see `OtelHead::split`).
        (0..self.count).map(move |_| input.len_prefix("shadowed index").unwrap_or(usize::MAX))
    }
}

/// One attribute read from the payload.
pub type Pair<'a> = Result<(&'a str, &'a str), CodecError>;

/// A record's attributes as the native layouts store them
/// ([`RecordRef::flat_attributes`]).
#[derive(Debug, Clone, Copy)]
pub struct FlatAttributes<'a> {
    all: Attributes<'a>,
    otel: Option<OtelRef<'a>>,
}

impl<'a> FlatAttributes<'a> {
    /// How many there are.
    pub fn len(&self) -> usize {
        match self.otel {
            None => self.all.len(),
            Some(otel) => otel.merged_len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pairs in order; exactly [`len`](Self::len) items.
    pub fn iter(&self) -> impl Iterator<Item = Pair<'a>> {
        let (plain, otel) = match self.otel {
            None => (Some(self.all), None),
            Some(otel) => (None, Some(otel)),
        };
        plain
            .into_iter()
            .flat_map(|all| all.iter())
            .chain(otel.into_iter().flat_map(OtelRef::merged))
    }
}

/// A record's attributes, still encoded: `len` (key, value) pairs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attributes<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Attributes<'a> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pairs in the client's order; exactly [`len`](Self::len) items.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Pair<'a>> {
        let mut input = Input {
            buf: self.bytes,
            pos: 0,
        };
        (0..self.count).map(move |_| {
            let key = input.str("attribute key")?;
            let value = input.str("attribute value")?;
            Ok((key, value))
        })
    }
}

/// A record's attributes as [`Input::attributes`] read them: all of them, and cut
/// into the record's own, its scope's and its resource's (for a native record, all
/// are its own).
#[derive(Debug, Clone, Copy)]
struct AttributeParts<'a> {
    all: Attributes<'a>,
    own: Attributes<'a>,
    scope: Attributes<'a>,
    resource: Attributes<'a>,
}

/// Iterator over the records of a payload; each item is checked as it is read.
pub struct RecordRefs<'a> {
    input: Input<'a>,
    left: usize,
    /// The record count itself did not decode: the only item.
    failed: Option<CodecError>,
}

impl<'a> RecordRefs<'a> {
    fn new(payload: &'a [u8]) -> Result<RecordRefs<'a>, CodecError> {
        let mut input = Input {
            buf: payload,
            pos: 0,
        };
        let count = input.len_prefix("record count")?;
        if count > input.remaining() / MIN_RECORD_BYTES {
            return Err(input.error("record count larger than the payload"));
        }
        if count == 0 && input.remaining() != 0 {
            return Err(input.error("trailing bytes after the last record"));
        }
        Ok(RecordRefs {
            input,
            left: count,
            failed: None,
        })
    }

    fn record(&mut self) -> Result<RecordRef<'a>, CodecError> {
        let input = &mut self.input;
        let timestamp_ns = i64::from_le_bytes(input.array::<8>("timestamp")?);
        let level_byte = input.byte("level")?;
        let level = *LEVELS
            .get(usize::from(level_byte & !OTEL_BIT))
            .ok_or_else(|| input.error("unknown level byte"))?;
        let service = input.str("service")?;
        let message = input.str("message")?;
        let trace_id = input.str("trace_id")?;
        let span_id = input.str("span_id")?;
        let otel = if level_byte & OTEL_BIT != 0 {
            Some(OtelHead::read(input, Input::str)?)
        } else {
            None
        };
        // Only the lengths here; the strings are checked when the pairs are read.
        let parts = input.attributes(otel.as_ref().map(OtelHead::split_counts))?;
        let otel = match otel {
            Some(head) => Some(head.split(parts, input)?),
            None => None,
        };
        self.left -= 1;
        if self.left == 0 && input.remaining() != 0 {
            return Err(input.error("trailing bytes after the last record"));
        }
        Ok(RecordRef {
            timestamp_ns,
            level,
            service,
            message,
            trace_id,
            span_id,
            attributes: parts.all,
            otel,
        })
    }
}

/// The `otel` part of a record as read before its attributes; its six texts as `S`
/// (`&str` checked, or [`RawStr`] for the sink's unchecked read).
struct OtelHead<'a, S> {
    severity_number: u8,
    trace_flags: u8,
    own: usize,
    scope: usize,
    texts: [S; 6],
    shadowed: Shadowed<'a>,
}

impl<'a, S: Copy + Default> OtelHead<'a, S> {
    fn read(
        input: &mut Input<'a>,
        text: fn(&mut Input<'a>, &'static str) -> Result<S, CodecError>,
    ) -> Result<OtelHead<'a, S>, CodecError> {
        let severity_number = input.byte("severity_number")?;
        let trace_flags = input.byte("trace_flags")?;
        let own = input.len_prefix("own attribute count")?;
        let scope = input.len_prefix("scope attribute count")?;
        let mut texts = [S::default(); 6];
        for slot in &mut texts {
            *slot = text(input, "OTLP field")?;
        }
        let count = input.len_prefix("shadowed count")?;
        if count > input.remaining() {
            return Err(input.error("shadowed count larger than the payload"));
        }
        let start = input.pos;
        for _ in 0..count {
            input.len_prefix("shadowed index")?;
        }
        let shadowed = Shadowed {
            bytes: &input.buf[start..input.pos],
            count,
        };
        Ok(OtelHead {
            severity_number,
            trace_flags,
            own,
            scope,
            texts,
            shadowed,
        })
    }

    /// How many of the attributes are the record's own and its scope's.
    fn split_counts(&self) -> (usize, usize) {
        (self.own, self.scope)
    }

    /// Fails unless the shadowed indexes ascend within the native view (`view`
    /// entries) past the record's own attributes: then the merged view has exactly
    /// `view - count` entries.
    fn check_shadowed_order(&self, view: usize, input: &Input<'a>) -> Result<(), CodecError> {
        let mut floor = self.own;
        for at in self.shadowed.iter() {
            if at < floor || at >= view {
                return Err(input.error("shadowed index out of order or past the attributes"));
            }
            floor = at + 1;
        }
        Ok(())
    }
}

impl<'a> OtelHead<'a, &'a str> {
    /// The checked view, with the attributes cut as read ([`Input::attributes`]);
    /// fails when the shadowed indexes are not ascending within the native view.
    fn split(
        self,
        parts: AttributeParts<'a>,
        input: &Input<'a>,
    ) -> Result<OtelRef<'a>, CodecError> {
        let [severity_text, event_name, scope_name, scope_version, scope_schema_url, resource_schema_url] =
            self.texts;
        let named = usize::from(!scope_name.is_empty()) + usize::from(!scope_version.is_empty());
        self.check_shadowed_order(parts.all.len() + named, input)?;
        let AttributeParts {
            own,
            scope,
            resource,
            ..
        } = parts;
        Ok(OtelRef {
            severity_number: self.severity_number,
            severity_text,
            trace_flags: self.trace_flags,
            event_name,
            scope_name,
            scope_version,
            scope_schema_url,
            resource_schema_url,
            own,
            scope,
            resource,
            shadowed: self.shadowed,
        })
    }
}

impl<'a> Iterator for RecordRefs<'a> {
    type Item = Result<RecordRef<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(err) = self.failed.take() {
            return Some(Err(err));
        }
        if self.left == 0 {
            return None;
        }
        let item = self.record();
        if item.is_err() {
            // Nothing after a bad record can be trusted.
            self.left = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left + usize::from(self.failed.is_some())))
    }
}

fn level_byte(level: Level) -> u8 {
    match level {
        Level::Trace => 0,
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warn => 3,
        Level::Error => 4,
        Level::Fatal => 5,
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// A bounds-checked cursor over a payload.
struct Input<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn error(&self, reason: &'static str) -> CodecError {
        CodecError {
            offset: self.pos,
            reason,
        }
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, CodecError> {
        let byte = *self.buf.get(self.pos).ok_or(CodecError {
            offset: self.pos,
            reason: what,
        })?;
        self.pos += 1;
        Ok(byte)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let end = self.pos + N;
        let bytes = self.buf.get(self.pos..end).ok_or(CodecError {
            offset: self.pos,
            reason: what,
        })?;
        self.pos = end;
        // The slice is exactly N bytes long.
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, CodecError> {
        // Fast path: one byte, which every length under 128 takes.
        if let Some(&byte) = self.buf.get(self.pos) {
            if byte < 0x80 {
                self.pos += 1;
                return Ok(u64::from(byte));
            }
        }
        let start = self.pos;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte(what)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                // Only the shortest form is valid (the encoder writes nothing else): a
                // zero last byte is padding, and the tenth byte holds one bit.
                if byte == 0 || (shift == 63 && byte > 1) {
                    return Err(CodecError {
                        offset: start,
                        reason: "varint not in its shortest form, or above 64 bits",
                    });
                }
                return Ok(value);
            }
        }
        Err(CodecError {
            offset: start,
            reason: "varint longer than 10 bytes",
        })
    }

    /// A length or count; anything beyond the payload is rejected by the caller.
    fn len_prefix(&mut self, what: &'static str) -> Result<usize, CodecError> {
        let value = self.varint(what)?;
        usize::try_from(value).map_err(|_| self.error("length does not fit in memory"))
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, CodecError> {
        let bytes = self.str_bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| CodecError {
            offset: self.pos - bytes.len(),
            reason: "string is not UTF-8",
        })
    }

    /// The attribute count, then that many pairs whose lengths fit the payload (their
    /// text is not checked here), cut after `split = (own, scope)` pairs and after
    /// `own + scope` in the same walk; without `split` all are the record's own.
    fn attributes(
        &mut self,
        split: Option<(usize, usize)>,
    ) -> Result<AttributeParts<'a>, CodecError> {
        let count = self.len_prefix("attribute count")?;
        if count > self.remaining() / 2 {
            return Err(self.error("attribute count larger than the payload"));
        }
        let (own, scope) = split.unwrap_or((count, 0));
        let Some(resource) = own
            .checked_add(scope)
            .and_then(|cut| count.checked_sub(cut))
        else {
            return Err(self.error("attribute split larger than the attribute count"));
        };
        let start = self.pos;
        self.skip_pairs(own)?;
        let own_end = self.pos;
        self.skip_pairs(scope)?;
        let scope_end = self.pos;
        self.skip_pairs(resource)?;
        // `pos` never passes the end of `buf`: every step above was checked.
        let part = |from: usize, to: usize, count: usize| Attributes {
            bytes: self.buf.get(from..to).unwrap_or_default(),
            count,
        };
        Ok(AttributeParts {
            all: part(start, self.pos, count),
            own: part(start, own_end, own),
            scope: part(own_end, scope_end, scope),
            resource: part(scope_end, self.pos, resource),
        })
    }

    fn skip_pairs(&mut self, pairs: usize) -> Result<(), CodecError> {
        for _ in 0..pairs {
            self.skip_str("attribute")?;
            self.skip_str("attribute")?;
        }
        Ok(())
    }

    /// A string as encoded (length and bytes), its text not checked: for
    /// [`RawRecords`], over batches whose construction checked it.
    fn raw_str(&mut self, what: &'static str) -> Result<RawStr<'a>, CodecError> {
        let start = self.pos;
        self.skip_str(what)?;
        Ok(RawStr::new(
            self.buf.get(start..self.pos).unwrap_or_default(),
        ))
    }

    fn skip_str(&mut self, what: &'static str) -> Result<(), CodecError> {
        self.str_bytes(what).map(drop)
    }

    fn str_bytes(&mut self, what: &'static str) -> Result<&'a [u8], CodecError> {
        let len = self.len_prefix(what)?;
        if len > self.remaining() {
            return Err(self.error("string longer than the payload"));
        }
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_record(i: usize) -> Record {
        Record {
            timestamp_ns: 1_700_000_000_000_000_000 + i as i64,
            level: LEVELS[i % LEVELS.len()],
            service: "checkout-api".into(),
            message: format!("request {i} finished in 12.5 ms with status 200 for user 42"),
            trace_id: if i.is_multiple_of(2) {
                "4bf92f3577b34da6a3ce929d0e0e4736".into()
            } else {
                String::new()
            },
            span_id: if i.is_multiple_of(2) {
                "00f067aa0ba902b7".into()
            } else {
                String::new()
            },
            attributes: vec![
                ("http.method".into(), "GET".into()),
                ("http.route".into(), "/api/v1/cart/{id}".into()),
                ("héllo".into(), "wörld ✓".into()),
            ],
            otel: (i % 3 == 1).then(|| Box::new(sample_otel(i))),
        }
    }

    /// OTLP fields: of the three attributes one is the record's own, one its scope's.
    fn sample_otel(i: usize) -> OtelFields {
        OtelFields {
            severity_number: (i % 25) as u8,
            severity_text: if i.is_multiple_of(2) {
                "WARN".into()
            } else {
                String::new()
            },
            trace_flags: 1,
            event_name: "browser.click".into(),
            scope_name: "io.opentelemetry.app".into(),
            scope_version: "1.0.0".into(),
            scope_schema_url: String::new(),
            resource_schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            own_attributes: 1,
            scope_attributes: 1,
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let batch = Batch::new((0..50).map(sample_record).collect());
        let mut buf = Vec::new();
        encode_batch(&batch, &mut buf);
        assert!(
            buf.len() <= encoded_len_hint(&batch),
            "hint must not under-reserve"
        );
        assert_eq!(decode_batch(&buf).unwrap(), batch);
    }

    #[test]
    fn empty_batch_and_empty_strings() {
        let mut buf = Vec::new();
        encode_batch(&Batch::default(), &mut buf);
        assert_eq!(buf, [0]);
        assert_eq!(decode_batch(&buf).unwrap(), Batch::default());
        let record = Record {
            timestamp_ns: -5,
            level: Level::Fatal,
            service: String::new(),
            message: "x".repeat(300),
            trace_id: String::new(),
            span_id: String::new(),
            attributes: vec![(String::new(), String::new())],
            otel: None,
        };
        let batch = Batch::new(vec![record]);
        buf.clear();
        encode_batch(&batch, &mut buf);
        assert_eq!(decode_batch(&buf).unwrap(), batch);
    }

    #[test]
    fn every_truncation_and_bit_flip_fails_cleanly() {
        let batch = Batch::new((0..3).map(sample_record).collect());
        let mut buf = Vec::new();
        encode_batch(&batch, &mut buf);
        for len in 0..buf.len() {
            assert!(decode_batch(&buf[..len]).is_err(), "prefix of {len} bytes");
        }
        // Flips must never panic; most are detected (CRC catches the rest on disk).
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                let _ = decode_batch(&bad);
            }
        }
        let mut trailing = buf.clone();
        trailing.push(0);
        assert_eq!(
            decode_batch(&trailing).unwrap_err().reason,
            "trailing bytes after the last record"
        );
    }

    #[test]
    fn absurd_counts_do_not_allocate() {
        let mut buf = Vec::new();
        put_varint(&mut buf, u64::MAX >> 1);
        assert!(decode_batch(&buf).is_err());
        let mut buf = Vec::new();
        put_varint(&mut buf, u64::MAX);
        put_varint(&mut buf, u64::MAX);
        assert!(decode_batch(&buf).is_err());
    }

    #[test]
    fn encoded_batches_read_back_as_the_records_they_hold() {
        let batch = Batch::new((0..20).map(sample_record).collect());
        let encoded = EncodedBatch::encode(&batch);
        assert_eq!((encoded.len(), encoded.is_empty()), (20, false));
        let mut buf = Vec::new();
        encode_batch(&batch, &mut buf);
        assert_eq!(encoded.payload().as_ref(), buf.as_slice());
        let views: Vec<Record> = encoded
            .records()
            .map(|r| r.unwrap().to_record().unwrap())
            .collect();
        assert_eq!(views, batch.records);
        let checked = EncodedBatch::from_payload(Bytes::from(buf)).unwrap();
        assert_eq!(checked, encoded);
        assert_eq!(checked.decode().unwrap(), batch);
        let empty = EncodedBatch::encode(&Batch::default());
        assert_eq!((empty.len(), empty.records().count()), (0, 0));
    }

    #[test]
    fn from_payload_checks_every_string_and_length() {
        let batch = Batch::new((0..3).map(sample_record).collect());
        let mut buf = Vec::new();
        encode_batch(&batch, &mut buf);
        for len in 0..buf.len() {
            let prefix = Bytes::copy_from_slice(&buf[..len]);
            assert!(
                EncodedBatch::from_payload(prefix).is_err(),
                "prefix of {len}"
            );
        }
        // Invalid UTF-8 in the last attribute value, which views read only on use.
        let at = buf.len() - 1;
        let mut bad = buf.clone();
        bad[at] = 0xff;
        let err = EncodedBatch::from_payload(Bytes::from(bad)).unwrap_err();
        assert_eq!(err.reason, "string is not UTF-8");
        let mut trailing = buf;
        trailing.push(0);
        assert!(EncodedBatch::from_payload(Bytes::from(trailing)).is_err());
    }

    #[test]
    fn otlp_records_split_their_attributes_and_merge_them_for_native_rows() {
        let batch = Batch::new((0..3).map(sample_record).collect());
        let encoded = EncodedBatch::encode(&batch);
        let views: Vec<RecordRef<'_>> = encoded.records().map(Result::unwrap).collect();
        assert!(views[0].otel.is_none() && views[2].otel.is_none());
        let otel = views[1].otel.unwrap();
        let pairs = |a: Attributes<'_>| -> Vec<(String, String)> {
            a.iter()
                .map(|p| p.map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap())
                .collect()
        };
        assert_eq!(pairs(otel.own), [("http.method".into(), "GET".into())]);
        assert_eq!(
            pairs(otel.scope),
            [("http.route".into(), "/api/v1/cart/{id}".into())]
        );
        assert_eq!(pairs(otel.resource), [("héllo".into(), "wörld ✓".into())]);
        assert_eq!(
            (otel.severity_number, otel.event_name),
            (1, "browser.click")
        );
        let flat = views[1].flat_attributes();
        let keys: Vec<&str> = flat.iter().map(|p| p.unwrap().0).collect();
        assert_eq!(
            keys,
            [
                "http.method",
                "otel.scope.name",
                "otel.scope.version",
                "http.route",
                "héllo"
            ]
        );
        assert_eq!(flat.len(), 5);
        // A native record's flat attributes are its attributes.
        assert_eq!(views[0].flat_attributes().len(), 3);
    }

    #[test]
    fn repeated_keys_are_dropped_from_the_native_view_once_listed() {
        let mut record = sample_record(1);
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        record.attributes = vec![
            pair("a", "own"),
            pair("a", "scope"),
            pair("otel.scope.name", "scope attribute"),
            pair("x", "resource"),
            pair("a", "resource"),
        ];
        let otel = record.otel.as_mut().unwrap();
        (otel.own_attributes, otel.scope_attributes) = (1, 2);
        otel.scope_version.clear();
        let encoded = EncodedBatch::encode(&Batch::new(vec![record.clone()]));
        let view = encoded.records().next().unwrap().unwrap();
        let flat = view.flat_attributes();
        let pairs: Vec<(&str, &str)> = flat.iter().map(Result::unwrap).collect();
        assert_eq!(
            pairs,
            [
                ("a", "own"),
                ("otel.scope.name", "io.opentelemetry.app"),
                ("x", "resource")
            ]
        );
        assert_eq!(flat.len(), 3);
        // The OpenTelemetry view keeps every part whole.
        let otel = view.otel.unwrap();
        assert_eq!(
            (otel.own.len(), otel.scope.len(), otel.resource.len()),
            (1, 2, 2)
        );
        assert_eq!(encoded.decode().unwrap().records, [record]);
    }

    #[test]
    fn a_split_past_the_attributes_is_refused() {
        let mut record = sample_record(1);
        record.otel.as_mut().unwrap().scope_attributes = 3;
        let mut buf = Vec::new();
        encode_batch(&Batch::new(vec![record]), &mut buf);
        assert_eq!(
            decode_batch(&buf).unwrap_err().reason,
            "attribute split larger than the attribute count"
        );
    }

    #[test]
    fn varints_round_trip() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            let mut input = Input { buf: &buf, pos: 0 };
            assert_eq!(input.varint("v").unwrap(), value);
            assert_eq!(input.remaining(), 0);
        }
    }

    // Found by the `codec` fuzz target: payloads that decode but do not encode back to
    // themselves (fuzz/regressions/codec/).

    #[test]
    fn varints_not_in_their_shortest_form_are_refused() {
        for bytes in [
            &[0x80, 0x00][..],
            &[0xff, 0x00],
            &[0xff; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>(),
        ] {
            let mut input = Input { buf: bytes, pos: 0 };
            assert!(input.varint("v").is_err(), "{bytes:?}");
        }
        // A record count of 1 written in two bytes.
        let mut buf = Vec::new();
        encode_batch(&Batch::new(vec![sample_record(0)]), &mut buf);
        let padded = [&[0x81, 0x00][..], &buf[1..]].concat();
        assert!(EncodedBatch::from_payload(padded.into()).is_err());
    }

    #[test]
    fn shadowed_indexes_must_be_the_repeated_keys() {
        let mut record = sample_record(1);
        let otel = record.otel.as_mut().unwrap();
        (otel.own_attributes, otel.scope_attributes) = (1, 1);
        record.attributes = vec![
            ("k".into(), "own".into()),
            ("dup".into(), "scope".into()),
            ("dup".into(), "resource".into()),
        ];
        let batch = Batch::new(vec![record]);
        let good = EncodedBatch::encode(&batch).payload().to_vec();
        assert!(EncodedBatch::from_payload(good.clone().into()).is_ok());
        // Rename the resource's key: the listed index no longer repeats a key.
        let at = good.windows(3).rposition(|w| w == b"dup").unwrap();
        let mut bad = good.clone();
        bad[at + 2] = b'x';
        assert_eq!(
            EncodedBatch::from_payload(bad.into()).unwrap_err().reason,
            "shadowed indexes do not match the repeated attribute keys"
        );
    }
}
