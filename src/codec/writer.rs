//! [`BatchWriter`]: encodes records one at a time, as validation accepts them, straight
//! into the payload of an [`EncodedBatch`].
//!
//! The JSON path used to build an owned [`Record`](crate::record::Record) per record (a
//! heap string per field and per attribute), encode the batch and drop the records:
//! three passes and ~8 allocations per record. Here validation hands over borrowed
//! fields and they are copied once, into the one buffer the spool and the sink read.
//!
//! The record count comes first in a payload but is known only at the end, and the
//! decoder refuses varints longer than their shortest form. So the writer leaves
//! [`HEADROOM`] bytes in front of the records and, when finished, writes the count
//! right-aligned into them and hands out the payload from there: a slice of the same
//! allocation, no copy.
//!
//! OTLP records ([`BatchWriter::push_otlp`]) carry the `otel` part. What the records
//! of one scope share (its and its resource's attributes and text fields) is given
//! once, as an [`OtelShared`], and written for each record from that one copy; the
//! shadowed-index list (see the layout in [`codec`](super)) is split the same way:
//! which shared entries repeat an earlier shared key is worked out once per scope, and
//! only the comparison with the record's own keys is done per record.

use std::borrow::Cow;

use bytes::Bytes;

use super::{put_record_head, put_str, put_varint, EncodedBatch};
use crate::record::Level;

/// Bytes reserved before the records: the longest varint of a `u64` count.
const HEADROOM: usize = 10;

/// An attribute as text, borrowed from the request where it held it as is.
pub type TextPair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// A record without OpenTelemetry fields, its text borrowed from the request body
/// (or owned where the body had escapes).
#[derive(Debug, Clone, Copy)]
pub struct PlainRecord<'a> {
    pub timestamp_ns: i64,
    pub level: Level,
    pub service: &'a str,
    pub message: &'a str,
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub attributes: &'a [TextPair<'a>],
}

/// An OTLP record: the native fields and the record's own attributes in `plain`, and
/// its own OTLP fields; what it inherits from its scope and resource is in the
/// [`OtelShared`] given with it.
#[derive(Debug, Clone, Copy)]
pub struct OtlpRecord<'a> {
    pub plain: PlainRecord<'a>,
    pub severity_number: u8,
    pub trace_flags: u8,
    pub severity_text: &'a str,
    pub event_name: &'a str,
}

/// What every record of one OTLP scope inherits, in the encoding's terms.
#[derive(Debug)]
pub struct OtelShared<'a> {
    scope_name: &'a str,
    scope_version: &'a str,
    scope_schema_url: &'a str,
    resource_schema_url: &'a str,
    scope: &'a [TextPair<'a>],
    /// Without `service.name` (that is the record's `service`).
    resource: &'a [TextPair<'a>],
    /// Ascending positions among the shared keys ([`OtelShared::keys`]) whose key an
    /// earlier shared key has: shadowed in every record, whatever its own keys.
    repeated: Vec<usize>,
}

impl<'a> OtelShared<'a> {
    pub fn new(
        scope_name: &'a str,
        scope_version: &'a str,
        scope_schema_url: &'a str,
        resource_schema_url: &'a str,
        scope: &'a [TextPair<'a>],
        resource: &'a [TextPair<'a>],
    ) -> OtelShared<'a> {
        let mut shared = OtelShared {
            scope_name,
            scope_version,
            scope_schema_url,
            resource_schema_url,
            scope,
            resource,
            repeated: Vec::new(),
        };
        // Quadratic, once per scope, over keys that are almost always unique.
        let keys: Vec<&str> = shared.keys().collect();
        shared.repeated = (0..keys.len())
            .filter(|&at| keys[..at].contains(&keys[at]))
            .collect();
        shared
    }

    /// The keys the native layouts' merged view takes from the scope and resource, in
    /// order, after a record's own: `otel.scope.name` and `otel.scope.version` when
    /// set, the scope's, the resource's (see `codec::native_keys`).
    fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        let named = [
            ("otel.scope.name", self.scope_name),
            ("otel.scope.version", self.scope_version),
        ];
        let named = named
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k);
        let pairs = self.scope.iter().chain(self.resource);
        named.chain(pairs.map(|(k, _)| k.as_ref()))
    }

    /// Bytes each record spends on what it inherits beyond the four length bytes of
    /// empty scope and schema texts (a guess for reserving: exact for lengths under
    /// 128). 0 for the common scope without attributes or names, so that reserving
    /// for it is free.
    pub fn extra_len(&self) -> usize {
        let texts = [
            self.scope_name,
            self.scope_version,
            self.scope_schema_url,
            self.resource_schema_url,
        ];
        let pairs = self.scope.iter().chain(self.resource);
        texts.iter().map(|t| t.len()).sum::<usize>()
            + pairs.map(|(k, v)| k.len() + v.len() + 2).sum::<usize>()
    }
}

/// Builds one [`EncodedBatch`] record by record.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    records: usize,
    /// Scratch for an OTLP record's shadowed indexes (their count is written first).
    shadowed: Vec<usize>,
}

impl BatchWriter {
    /// A writer whose buffer holds `bytes` of records before it grows.
    pub fn with_capacity(bytes: usize) -> BatchWriter {
        let mut buf = Vec::with_capacity(HEADROOM + bytes);
        buf.resize(HEADROOM, 0);
        BatchWriter {
            buf,
            records: 0,
            shadowed: Vec::new(),
        }
    }

    /// Room for `bytes` more bytes of records.
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    /// Appends one record, byte for byte what [`encode_batch`](super::encode_batch)
    /// writes for it.
    pub fn push(&mut self, record: &PlainRecord<'_>) {
        let out = &mut self.buf;
        put_record_head(
            out,
            record.timestamp_ns,
            record.level,
            false,
            [
                record.service,
                record.message,
                record.trace_id,
                record.span_id,
            ],
        );
        put_varint(out, record.attributes.len() as u64);
        for (key, value) in record.attributes {
            put_str(out, key);
            put_str(out, value);
        }
        self.records += 1;
    }

    /// Appends one OTLP record with what it inherits, byte for byte what
    /// [`encode_batch`](super::encode_batch) writes for the owned record holding the
    /// same fields and its own, scope and resource attributes.
    pub fn push_otlp(&mut self, record: &OtlpRecord<'_>, shared: &OtelShared<'_>) {
        let plain = &record.plain;
        let own = plain.attributes;
        self.shadowed.clear();
        let mut repeated = shared.repeated.iter().peekable();
        for (at, key) in shared.keys().enumerate() {
            let again = repeated.next_if_eq(&&at).is_some();
            if again || own.iter().any(|(k, _)| k == key) {
                self.shadowed.push(own.len() + at);
            }
        }
        let out = &mut self.buf;
        put_record_head(
            out,
            plain.timestamp_ns,
            plain.level,
            true,
            [plain.service, plain.message, plain.trace_id, plain.span_id],
        );
        out.push(record.severity_number);
        out.push(record.trace_flags);
        put_varint(out, own.len() as u64);
        put_varint(out, shared.scope.len() as u64);
        for text in [
            record.severity_text,
            record.event_name,
            shared.scope_name,
            shared.scope_version,
            shared.scope_schema_url,
            shared.resource_schema_url,
        ] {
            put_str(out, text);
        }
        put_varint(out, self.shadowed.len() as u64);
        for &at in &self.shadowed {
            put_varint(out, at as u64);
        }
        let total = own.len() + shared.scope.len() + shared.resource.len();
        put_varint(out, total as u64);
        for (key, value) in own.iter().chain(shared.scope).chain(shared.resource) {
            put_str(out, key);
            put_str(out, value);
        }
        self.records += 1;
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Drops what was written and its memory (the batch will be rejected anyway).
    pub fn discard(&mut self) {
        *self = BatchWriter::with_capacity(0);
    }

    /// The batch. Spare capacity beyond an eighth of the payload is given back first:
    /// the payload may sit in the spool's memory tail and the batcher's queue for a
    /// while, and an over-estimated buffer would count there in full.
    pub fn finish(self) -> EncodedBatch {
        let BatchWriter {
            mut buf, records, ..
        } = self;
        let mut count = Vec::with_capacity(HEADROOM);
        put_varint(&mut count, records as u64);
        let start = HEADROOM - count.len();
        buf[start..HEADROOM].copy_from_slice(&count);
        if buf.capacity() - buf.len() > buf.len() / 8 {
            buf.shrink_to_fit();
        }
        EncodedBatch {
            payload: Bytes::from(buf).slice(start..),
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::sample_record;
    use crate::codec::EncodedBatch;
    use crate::record::{Batch, OtelFields, Record};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn plain(record: &Record, attributes: &[(Cow<'_, str>, Cow<'_, str>)]) -> Vec<u8> {
        let mut writer = BatchWriter::with_capacity(0);
        let view = PlainRecord {
            timestamp_ns: record.timestamp_ns,
            level: record.level,
            service: &record.service,
            message: &record.message,
            trace_id: &record.trace_id,
            span_id: &record.span_id,
            attributes,
        };
        writer.push(&view);
        writer.finish().payload().to_vec()
    }

    #[test]
    fn writes_what_encode_writes_for_any_record_count() {
        // 0, 1 and counts whose varint takes two and three bytes.
        for n in [0usize, 1, 3, 127, 128, 300, 16_384] {
            let records: Vec<Record> = (0..n)
                .map(|i| Record {
                    otel: None,
                    ..sample_record(i)
                })
                .collect();
            let mut writer = BatchWriter::with_capacity(64);
            for record in &records {
                let attributes: Vec<(Cow<'_, str>, Cow<'_, str>)> = record
                    .attributes
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                    .collect();
                writer.push(&PlainRecord {
                    timestamp_ns: record.timestamp_ns,
                    level: record.level,
                    service: &record.service,
                    message: &record.message,
                    trace_id: &record.trace_id,
                    span_id: &record.span_id,
                    attributes: &attributes,
                });
            }
            assert_eq!(writer.len(), n);
            let written = writer.finish();
            let encoded = EncodedBatch::encode(&Batch::new(records.clone()));
            assert_eq!(written.payload(), encoded.payload(), "{n} records");
            assert_eq!(written.len(), n);
            // And it reads back through the full check.
            let checked = EncodedBatch::from_payload(written.payload().clone()).unwrap();
            assert_eq!(checked.decode().unwrap().records, records);
        }
    }

    #[test]
    fn owned_and_borrowed_text_encode_alike() {
        let record = Record {
            otel: None,
            ..sample_record(7)
        };
        let owned: Vec<(Cow<'_, str>, Cow<'_, str>)> = vec![(
            Cow::Owned("k\"ey".to_owned()),
            Cow::Owned("va\nlue".to_owned()),
        )];
        let borrowed: Vec<(Cow<'_, str>, Cow<'_, str>)> =
            vec![(Cow::Borrowed("k\"ey"), Cow::Borrowed("va\nlue"))];
        assert_eq!(plain(&record, &owned), plain(&record, &borrowed));
    }

    /// Keys drawn from few names, so that own, scope-name, scope and resource keys
    /// collide often (the shadowed indexes are what can go wrong).
    const KEYS: [&str; 5] = ["a", "b", "otel.scope.name", "otel.scope.version", "ü"];

    fn pairs(rng: &mut StdRng, max: usize) -> Vec<(String, String)> {
        (0..rng.random_range(0..=max))
            .map(|i| {
                let key = KEYS[rng.random_range(0..KEYS.len())];
                (key.to_owned(), format!("v{i}"))
            })
            .collect()
    }

    fn maybe(rng: &mut StdRng, text: &str) -> String {
        if rng.random_bool(0.5) {
            text.to_owned()
        } else {
            String::new()
        }
    }

    fn cows(pairs: &[(String, String)]) -> Vec<TextPair<'_>> {
        pairs
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
            .collect()
    }

    /// Random scopes of random OTLP records: `push_otlp` writes what `encode_batch`
    /// writes for the owned records, and the full check of `from_payload` (which
    /// recomputes the shadowed indexes) accepts it.
    #[test]
    fn otlp_records_write_what_encode_writes() {
        let mut rng = StdRng::seed_from_u64(21);
        for case in 0..500 {
            let mut writer = BatchWriter::with_capacity(0);
            let mut records = Vec::new();
            for _ in 0..rng.random_range(0..4) {
                let (scope, resource) = (pairs(&mut rng, 4), pairs(&mut rng, 4));
                let (name, version) = (maybe(&mut rng, "lib"), maybe(&mut rng, "1.0"));
                let (scope_url, resource_url) = (maybe(&mut rng, "s:"), maybe(&mut rng, "r:"));
                let (scope_cows, resource_cows) = (cows(&scope), cows(&resource));
                let shared = OtelShared::new(
                    &name,
                    &version,
                    &scope_url,
                    &resource_url,
                    &scope_cows,
                    &resource_cows,
                );
                for _ in 0..rng.random_range(0..4) {
                    let i = records.len();
                    let own = pairs(&mut rng, 4);
                    let mut record = sample_record(i);
                    let otel = OtelFields {
                        severity_number: rng.random_range(0..=24),
                        severity_text: maybe(&mut rng, "WARN"),
                        trace_flags: rng.random(),
                        event_name: maybe(&mut rng, "ev"),
                        scope_name: name.clone(),
                        scope_version: version.clone(),
                        scope_schema_url: scope_url.clone(),
                        resource_schema_url: resource_url.clone(),
                        own_attributes: own.len(),
                        scope_attributes: scope.len(),
                    };
                    let own_cows = cows(&own);
                    writer.push_otlp(
                        &OtlpRecord {
                            plain: PlainRecord {
                                timestamp_ns: record.timestamp_ns,
                                level: record.level,
                                service: &record.service,
                                message: &record.message,
                                trace_id: &record.trace_id,
                                span_id: &record.span_id,
                                attributes: &own_cows,
                            },
                            severity_number: otel.severity_number,
                            trace_flags: otel.trace_flags,
                            severity_text: &otel.severity_text,
                            event_name: &otel.event_name,
                        },
                        &shared,
                    );
                    record.attributes = [own, scope.clone(), resource.clone()].concat();
                    record.otel = Some(Box::new(otel));
                    records.push(record);
                }
            }
            let written = writer.finish();
            let encoded = EncodedBatch::encode(&Batch::new(records.clone()));
            assert_eq!(written.payload(), encoded.payload(), "case {case}");
            let checked = EncodedBatch::from_payload(written.payload().clone()).unwrap();
            assert_eq!(checked.decode().unwrap().records, records, "case {case}");
        }
    }

    #[test]
    fn a_discarded_writer_starts_empty() {
        let record = Record {
            otel: None,
            ..sample_record(1)
        };
        let mut writer = BatchWriter::with_capacity(16);
        writer.push(&PlainRecord {
            timestamp_ns: record.timestamp_ns,
            level: record.level,
            service: &record.service,
            message: &record.message,
            trace_id: &record.trace_id,
            span_id: &record.span_id,
            attributes: &[],
        });
        writer.discard();
        assert!(writer.is_empty());
        assert_eq!(writer.finish(), EncodedBatch::encode(&Batch::default()));
    }
}
