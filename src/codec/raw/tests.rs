//! The raw view against the checked one: the same records, field for field, for
//! generated batches with shadowed keys; damaged batches fail without panicking.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::codec::tests::sample_record;
use crate::codec::{put_str, OtelRef, Pair, RecordRef};
use crate::record::{Batch, OtelFields, Record};

/// Keys from a small pool, so that own, scope and resource attributes shadow each
/// other, with the names the native view adds for the scope among them.
const KEYS: [&str; 6] = ["a", "b", "otel.scope.name", "otel.scope.version", "", "é"];

fn text(rng: &mut StdRng) -> String {
    match rng.random_range(0..8) {
        0 => String::new(),
        1 => "ü✓".repeat(rng.random_range(1..100)),
        _ => "x".repeat(rng.random_range(1..40)),
    }
}

fn pairs(rng: &mut StdRng) -> Vec<(String, String)> {
    let count = if rng.random_ratio(1, 20) {
        200
    } else {
        rng.random_range(0..5)
    };
    (0..count)
        .map(|_| {
            // A key from the pool now and then: some records repeat keys, most not.
            let key = if rng.random_ratio(1, 4) {
                KEYS[rng.random_range(0..KEYS.len())].to_string()
            } else {
                format!("key{}", rng.random_range(0..1_000_000))
            };
            (key, text(rng))
        })
        .collect()
}

fn record(rng: &mut StdRng, i: usize) -> Record {
    let mut record = sample_record(i);
    record.service = text(rng);
    record.message = text(rng);
    record.attributes = pairs(rng);
    record.otel = None;
    if !i.is_multiple_of(3) {
        let own = record.attributes.len();
        let scope = pairs(rng);
        let scope_attributes = scope.len();
        record.attributes.extend(scope);
        record.attributes.extend(pairs(rng));
        record.otel = Some(Box::new(OtelFields {
            severity_number: [0, 9, 13][i % 3],
            severity_text: text(rng),
            trace_flags: (i % 2) as u8,
            event_name: text(rng),
            scope_name: text(rng),
            scope_version: text(rng),
            scope_schema_url: text(rng),
            resource_schema_url: text(rng),
            own_attributes: own,
            scope_attributes,
        }));
    }
    record
}

fn corpus() -> EncodedBatch {
    let mut rng = StdRng::seed_from_u64(7);
    EncodedBatch::encode(&Batch::new((0..600).map(|i| record(&mut rng, i)).collect()))
}

fn encoded(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, text);
    out
}

fn same_str(raw: RawStr<'_>, checked: &str) {
    assert_eq!(raw.encoded(), encoded(checked));
    assert_eq!(raw.bytes().unwrap(), checked.as_bytes());
    assert_eq!(raw.is_empty(), checked.is_empty());
}

fn same_pairs<'a>(
    raw: impl Iterator<Item = RawPair<'a>>,
    checked: impl Iterator<Item = Pair<'a>>,
) -> usize {
    let raw: Vec<_> = raw.map(Result::unwrap).collect();
    let checked: Vec<_> = checked.map(Result::unwrap).collect();
    assert_eq!(raw.len(), checked.len());
    for ((rk, rv), (ck, cv)) in raw.iter().zip(&checked) {
        same_str(*rk, ck);
        same_str(*rv, cv);
    }
    raw.len()
}

fn same_parts(raw: Attributes<'_>, checked: Attributes<'_>) {
    assert_eq!(raw.len(), checked.len());
    let mut whole = Vec::new();
    for pair in checked.iter() {
        let (key, value) = pair.unwrap();
        whole.extend(encoded(key));
        whole.extend(encoded(value));
    }
    assert_eq!(
        raw.encoded(),
        whole,
        "the encoded pairs, one after the other"
    );
    same_pairs(raw.raw_pairs(), checked.iter());
}

fn same_otel(raw: RawOtel<'_>, checked: OtelRef<'_>) {
    assert_eq!(raw.severity_number, checked.severity_number);
    assert_eq!(raw.trace_flags, checked.trace_flags);
    for (r, c) in [
        (raw.severity_text, checked.severity_text),
        (raw.event_name, checked.event_name),
        (raw.scope_name, checked.scope_name),
        (raw.scope_version, checked.scope_version),
        (raw.scope_schema_url, checked.scope_schema_url),
        (raw.resource_schema_url, checked.resource_schema_url),
    ] {
        same_str(r, c);
    }
    same_parts(raw.own, checked.own);
    same_parts(raw.scope, checked.scope);
    same_parts(raw.resource, checked.resource);
    assert_eq!(raw.has_shadowed(), checked.shadowed.count > 0);
}

fn same_record(raw: RawRecord<'_>, checked: RecordRef<'_>) {
    assert_eq!(raw.timestamp_ns, checked.timestamp_ns);
    assert_eq!(raw.level, checked.level);
    let texts = [
        checked.service,
        checked.message,
        checked.trace_id,
        checked.span_id,
    ];
    for (r, c) in [raw.service, raw.message, raw.trace_id, raw.span_id]
        .into_iter()
        .zip(texts)
    {
        same_str(r, c);
    }
    assert_eq!(raw.texts, texts.map(encoded).concat());
    same_parts(raw.attributes, checked.attributes);
    let flat = checked.flat_attributes();
    assert_eq!(raw.flat_len(), flat.len());
    assert_eq!(same_pairs(raw.flat_pairs(), flat.iter()), flat.len());
    match (raw.otel, checked.otel) {
        (None, None) => {}
        (Some(raw), Some(checked)) => same_otel(raw, checked),
        _ => panic!("one view has the OTLP part, the other not"),
    }
}

#[test]
fn the_raw_view_is_the_checked_view_encoded() {
    let batch = corpus();
    let raw: Vec<_> = batch.raw_records().map(Result::unwrap).collect();
    let checked: Vec<_> = batch.records().map(Result::unwrap).collect();
    assert_eq!((raw.len(), checked.len()), (batch.len(), batch.len()));
    for (raw, checked) in raw.into_iter().zip(checked) {
        same_record(raw, checked);
    }
    // The corpus has what the merge must handle: repeated keys, records without.
    let otel: Vec<RawOtel<'_>> = batch
        .raw_records()
        .filter_map(|r| r.unwrap().otel)
        .collect();
    let shadowing = otel.iter().filter(|o| o.has_shadowed()).count();
    assert!(
        shadowing > 50 && shadowing + 50 < otel.len(),
        "{shadowing} of {}",
        otel.len()
    );
    // A batch read back from its payload reads the same.
    let again = EncodedBatch::from_payload(batch.payload().clone()).unwrap();
    assert!(again.raw_records().map(Result::unwrap).count() == batch.len());
    assert_eq!(EncodedBatch::default().raw_records().count(), 0);
}

#[test]
fn the_scope_keys_are_encoded_strings() {
    assert_eq!(SCOPE_NAME_KEY.encoded(), encoded("otel.scope.name"));
    assert_eq!(SCOPE_VERSION_KEY.encoded(), encoded("otel.scope.version"));
    assert_eq!(RawStr::EMPTY.encoded(), encoded(""));
    assert_eq!(RawStr::default(), RawStr::EMPTY);
    let long = "y".repeat(300);
    let raw = RawStr::new(&encoded(&long)).bytes().unwrap().to_vec();
    assert_eq!(raw, long.as_bytes());
}

/// Reads everything a writer would: every record, every pair of its native view.
fn read_all(batch: &EncodedBatch) -> Result<usize, CodecError> {
    let mut pairs = 0;
    for record in batch.raw_records() {
        let record = record?;
        let mut seen = 0;
        for pair in record.flat_pairs() {
            pair?;
            seen += 1;
        }
        assert_eq!(
            seen,
            record.flat_len(),
            "the count a row states is its pairs"
        );
        if let Some(otel) = record.otel {
            for part in [otel.own, otel.scope, otel.resource] {
                pairs += part.raw_pairs().collect::<Result<Vec<_>, _>>()?.len();
            }
        }
        pairs += seen;
    }
    Ok(pairs)
}

/// Damaged memory (the batch's invariant broken after it was checked): every
/// truncation and every bit flip of a payload reads to an error or to records whose
/// counts hold, never to a panic.
#[test]
fn damaged_batches_fail_without_panicking() {
    let batch = EncodedBatch::encode(&Batch::new((0..4).map(sample_record).collect()));
    let payload = batch.payload().to_vec();
    assert!(read_all(&batch).is_ok());
    for len in 0..payload.len() {
        let cut = EncodedBatch::unchecked(Bytes::copy_from_slice(&payload[..len]), 4);
        assert!(read_all(&cut).is_err(), "prefix of {len} bytes");
    }
    for at in 0..payload.len() {
        for bit in 0..8 {
            let mut bad = payload.clone();
            bad[at] ^= 1 << bit;
            let _ = read_all(&EncodedBatch::unchecked(bad.into(), 4));
        }
    }
    // A count beyond the records, and huge varints, stop at the end of the bytes.
    let more = EncodedBatch::unchecked(Bytes::from(payload), usize::MAX);
    assert!(read_all(&more).is_err());
    let huge = EncodedBatch::unchecked(Bytes::from_static(&[0xff; 12]), 1);
    assert!(read_all(&huge).is_err());
}
