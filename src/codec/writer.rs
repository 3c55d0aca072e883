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

use std::borrow::Cow;

use bytes::Bytes;

use super::{put_record_head, put_str, put_varint, EncodedBatch};
use crate::record::Level;

/// Bytes reserved before the records: the longest varint of a `u64` count.
const HEADROOM: usize = 10;

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
    pub attributes: &'a [(Cow<'a, str>, Cow<'a, str>)],
}

/// Builds one [`EncodedBatch`] record by record.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    records: usize,
}

impl BatchWriter {
    /// A writer whose buffer holds `bytes` of records before it grows.
    pub fn with_capacity(bytes: usize) -> BatchWriter {
        let mut buf = Vec::with_capacity(HEADROOM + bytes);
        buf.resize(HEADROOM, 0);
        BatchWriter { buf, records: 0 }
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
        let BatchWriter { mut buf, records } = self;
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
    use crate::record::{Batch, Record};

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
