//! Entry points for the fuzz targets (`fuzz/`, `scripts/fuzz`) and for their
//! regression tests (`tests/fuzz_regressions.rs`), which replay saved inputs
//! through the same functions in the normal build.
//!
//! Each function takes arbitrary bytes, runs one decoder of untrusted input exactly
//! as the service does, and **panics when a property fails** — that is how a
//! fuzzer learns of a bug, so these functions are not for production paths. Beyond
//! "no panic", they check what is cheap to check: limits respected, every accepted
//! batch surviving the spool codec byte for byte, re-encodings that are fixpoints.
//! See `docs/FUZZING.md`.
//!
//! Hidden from the docs: a testing seam, not an API.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

use crate::codec::{self, EncodedBatch};
use crate::config::RecordLimits;
use crate::ingest::body::{self, Encoding};
use crate::ingest::reject::RejectKind;
use crate::proto::IngestRequest;
use crate::record::{format_rfc3339, Batch, Record};
use crate::validate::otlp::{otlp_encoded, LogsView, OtlpOptions, WireError};
use crate::validate::{self, check_record, DecodeError, Format, MAX_LISTED_ERRORS};

mod spool;

pub use spool::{segment_bytes, spool_segment, SeedFrame};

/// A fixed receive time (2025-06-15), so a saved input replays identically.
pub const NOW_NS: i64 = 1_750_000_000_000_000_000;

/// One fuzz target: it panics when a property fails.
pub type Target = fn(&[u8]);

/// Every target by name: `fuzz/fuzz_targets/<name>.rs` calls the function, and the
/// regression test replays `fuzz/regressions/<name>/*` and `fuzz/seeds/<name>/*`.
pub const TARGETS: &[(&str, Target)] = &[
    ("json", json),
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_json", otlp_json),
    ("decompress", decompress),
    ("spool_segment", spool_segment),
    ("codec", codec_payload),
    ("grpc_ingest", grpc_ingest),
];

/// Limits small enough that a fuzzer reaches every edge of them with short inputs.
pub fn limits() -> RecordLimits {
    RecordLimits {
        max_records: 20,
        max_message_bytes: 200,
        max_service_bytes: 24,
        max_attributes: 8,
        max_attribute_key_bytes: 24,
        max_attribute_value_bytes: 48,
    }
}

/// The OTLP mapping's options as the fuzz targets use them.
pub fn otlp_options() -> OtlpOptions {
    OtlpOptions {
        default_service: "unknown_service".to_owned(),
    }
}

/// The native JSON / NDJSON decoder. The first byte picks the format (even: JSON,
/// odd: NDJSON); the rest is the body. The answer (sonic-rs first, serde_json where it
/// gives up) must be serde_json's alone, byte for byte or message for message. An
/// accepted batch is rendered back as JSON, which must decode to the same batch.
pub fn json(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let format = if mode & 1 == 0 {
        Format::Json
    } else {
        Format::Ndjson
    };
    let limits = limits();
    let answer = validate::decode_encoded(body, format, &limits, NOW_NS);
    let reference = validate::decode_encoded_serde_json(body, format, &limits, NOW_NS);
    match (&answer, &reference) {
        (Ok(got), Ok(want)) => assert_eq!(got.payload(), want.payload(), "batches differ"),
        (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string()),
        _ => panic!("sonic-rs and serde_json disagree: {answer:?}, serde_json: {reference:?}"),
    }
    match validate::decode(body, format, &limits, NOW_NS) {
        Ok(batch) => {
            check_batch(&batch, &limits);
            let again = render_json(&batch);
            match validate::decode(again.as_bytes(), Format::Json, &limits, NOW_NS) {
                Ok(back) => assert_eq!(back, batch, "re-rendered JSON decodes differently"),
                Err(err) => panic!("re-rendered JSON refused: {err}\n{again}"),
            }
        }
        Err(DecodeError::TooManyRecords { count, max }) => assert!(count > max),
        Err(DecodeError::Invalid(errors)) => {
            assert!(!errors.is_empty() && errors.len() <= MAX_LISTED_ERRORS);
        }
        Err(DecodeError::Malformed { .. } | DecodeError::Empty) => {}
    }
}

/// OTLP/HTTP protobuf: our reader (`LogsView::decode`, what the worker runs) against
/// prost's decoding, the reference: both accept, with the same request and the same
/// mapping to the byte, or both refuse, or ours leaves the body to prost (a field
/// sent twice, which the worker then decodes with prost). Then the mapping's checks.
pub fn otlp_protobuf(data: &[u8]) {
    let ours = LogsView::decode(data);
    let theirs = ExportLogsServiceRequest::decode(data);
    let request = match (ours, theirs) {
        (Ok(view), Ok(request)) => {
            let expected = LogsView::from_request(&request);
            assert_eq!(
                view.to_request().encode_to_vec(),
                expected.to_request().encode_to_vec(),
                "our reader and prost read different requests"
            );
            let limits = limits();
            let (ours, ours_rejected) = otlp_encoded(&view, &limits, &otlp_options(), NOW_NS);
            let (theirs, rejected) = otlp_encoded(&expected, &limits, &otlp_options(), NOW_NS);
            assert_eq!(
                ours.payload(),
                theirs.payload(),
                "mapped to different bytes"
            );
            assert_eq!(ours_rejected, rejected, "refused different records");
            request
        }
        (Ok(_), Err(err)) => panic!("our reader accepts a body prost refuses ({err})"),
        (Err(WireError::Unsupported { .. }), Ok(request)) => request,
        (Err(err), Ok(_)) => panic!("our reader refuses a body prost accepts ({err})"),
        (Err(_), Err(_)) => return,
    };
    // Re-encoding is a fixpoint (compared as bytes: a NaN double is not equal to itself).
    let once = request.encode_to_vec();
    let twice = ExportLogsServiceRequest::decode(&once[..])
        .expect("a re-encoded request decodes")
        .encode_to_vec();
    assert_eq!(once, twice, "protobuf re-encoding is not a fixpoint");
    map_otlp(request);
}

/// OTLP/HTTP JSON (the OTLP/JSON mapping: hex ids, 64-bit integers as strings).
pub fn otlp_json(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<ExportLogsServiceRequest>(data) else {
        return;
    };
    let once = serde_json::to_vec(&request).expect("a decoded request serialises");
    match serde_json::from_slice::<ExportLogsServiceRequest>(&once) {
        Ok(back) => assert_eq!(
            back.encode_to_vec(),
            request.encode_to_vec(),
            "OTLP/JSON round trip changed the request"
        ),
        Err(err) => panic!(
            "re-serialised OTLP/JSON refused: {err}\n{}",
            String::from_utf8_lossy(&once)
        ),
    }
    map_otlp(request);
}

/// What `ingest::otlp` does after decoding: the batch size check, then the mapping
/// straight into the encoding, which must pass the spool's full check as it is and
/// re-encode from its records byte for byte (the shadowed indexes included).
fn map_otlp(request: ExportLogsServiceRequest) {
    let limits = limits();
    let request = LogsView::from_request(&request);
    let count = request.record_count();
    if count > limits.max_records {
        return;
    }
    let (encoded, rejected) = otlp_encoded(&request, &limits, &otlp_options(), NOW_NS);
    let checked = EncodedBatch::from_payload(encoded.payload().clone())
        .expect("an OTLP batch written by the mapping passes from_payload");
    assert_eq!(checked.len(), encoded.len());
    let batch = encoded.decode().expect("decodes");
    assert_eq!(
        EncodedBatch::encode(&batch).payload(),
        encoded.payload(),
        "the mapping's encoding differs from encode_batch's"
    );
    assert_eq!(
        batch.len() + rejected.count,
        count,
        "records accepted + rejected != records sent"
    );
    assert!(rejected.errors.len() <= 100);
    assert_eq!(rejected.count == 0, rejected.errors.is_empty());
    if !batch.is_empty() {
        check_batch(&batch, &limits);
    }
}

/// gzip / zstd bodies. Byte 0 picks the encoding, bytes 1–2 the cap (up to 64 KiB):
/// the output never exceeds the cap, a body of exactly the cap is accepted, and only
/// `TooLarge` or `Invalid` are refusals. An identity body passes as it is: its cap
/// was applied on the wire, by `body::collect`.
pub fn decompress(data: &[u8]) {
    let Some((head, raw)) = data.split_at_checked(3) else {
        return;
    };
    let encoding = match head[0] % 3 {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        _ => Encoding::Zstd,
    };
    let max = usize::from(u16::from_le_bytes([head[1], head[2]]));
    let raw = Bytes::copy_from_slice(raw);
    match body::decompress(raw.clone(), encoding, max) {
        Ok(out) if encoding == Encoding::Identity => assert_eq!(out, raw),
        Ok(out) => {
            assert!(out.len() <= max, "{} bytes out, cap {max}", out.len());
            // The cap is inclusive: the same body with a cap of exactly its size passes.
            let exact = body::decompress(raw, encoding, out.len()).expect("exact cap");
            assert_eq!(exact, out);
        }
        Err(rejection) => assert!(
            matches!(rejection.kind, RejectKind::TooLarge | RejectKind::Invalid),
            "unexpected refusal {:?}",
            rejection.kind
        ),
    }
}

/// A spool frame payload (`codec`): what `from_payload` accepts decodes, and encodes
/// back to exactly the same bytes.
pub fn codec_payload(data: &[u8]) {
    let Ok(batch) = EncodedBatch::from_payload(Bytes::copy_from_slice(data)) else {
        return;
    };
    check_encoded(&batch);
}

/// Checks the codec's promise for a batch that `from_payload` accepted (or that was
/// read from a spool): its records decode, their count is right, and encoding them
/// again gives the stored bytes.
pub fn check_encoded(batch: &EncodedBatch) {
    let decoded = batch
        .decode()
        .expect("a checked payload decodes (from_payload accepted it)");
    assert_eq!(decoded.len(), batch.len());
    let mut raw = batch.raw_records();
    for record in batch.records() {
        let record = record.expect("records of a checked payload read");
        // The native view lists exactly `len()` pairs, each readable.
        let flat = record.flat_attributes();
        let pairs: Vec<_> = flat.iter().collect();
        assert_eq!(pairs.len(), flat.len());
        assert!(pairs.iter().all(Result::is_ok));
        // The sink's unchecked view reads the same record.
        let r = raw
            .next()
            .expect("the raw view has as many records")
            .expect("the raw view reads what from_payload accepted");
        fn text(s: crate::codec::RawStr<'_>) -> &[u8] {
            s.bytes().expect("raw text in bounds")
        }
        assert_eq!(
            (r.timestamp_ns, r.level),
            (record.timestamp_ns, record.level)
        );
        assert_eq!(text(r.service), record.service.as_bytes());
        assert_eq!(text(r.message), record.message.as_bytes());
        assert_eq!(text(r.trace_id), record.trace_id.as_bytes());
        assert_eq!(text(r.span_id), record.span_id.as_bytes());
        assert_eq!(r.flat_len(), flat.len());
        for (raw_pair, pair) in r.flat_pairs().zip(flat.iter()) {
            let (rk, rv) = raw_pair.expect("raw pair in bounds");
            let (k, v) = pair.expect("checked pair");
            assert_eq!((text(rk), text(rv)), (k.as_bytes(), v.as_bytes()));
        }
    }
    assert!(raw.next().is_none(), "the raw view has more records");
    let again = EncodedBatch::encode(&decoded);
    assert_eq!(
        again.payload(),
        batch.payload(),
        "decode → encode does not give the stored payload back"
    );
}

/// The native gRPC API: prost decoding of `IngestRequest`, then the checks of
/// `ingest::grpc` (empty and oversized batches refused, each record through
/// `check_record`).
pub fn grpc_ingest(data: &[u8]) {
    let Ok(request) = IngestRequest::decode(data) else {
        return;
    };
    let once = request.encode_to_vec();
    let back = IngestRequest::decode(&once[..]).expect("a re-encoded request decodes");
    assert_eq!(back, request, "prost round trip changed the request");
    let limits = limits();
    if request.logs.is_empty() || request.logs.len() > limits.max_records {
        return;
    }
    let mut records = Vec::new();
    let mut failed = false;
    for (index, log) in request.logs.iter().enumerate() {
        let raw = crate::ingest::grpc::raw_record(log);
        match check_record(index, &raw, &limits, NOW_NS) {
            Ok(record) => records.push(record),
            Err(err) => {
                assert_eq!(err.index, index);
                failed = true;
            }
        }
    }
    if !failed {
        check_batch(&Batch::new(records), &limits);
    }
}

/// What every accepted batch must satisfy, from any wire: the limits, the id and
/// time formats, and the spool codec's exact round trip.
pub fn check_batch(batch: &Batch, limits: &RecordLimits) {
    assert!(!batch.is_empty() && batch.len() <= limits.max_records);
    for record in &batch.records {
        check_record_limits(record, limits);
    }
    let encoded = EncodedBatch::encode(batch);
    let checked = EncodedBatch::from_payload(encoded.payload().clone())
        .expect("an encoded batch passes from_payload");
    assert_eq!(
        codec::decode_batch(checked.payload()).expect("decodes"),
        *batch
    );
    check_encoded(&checked);
}

fn check_record_limits(record: &Record, limits: &RecordLimits) {
    const MAX_NS: i64 = 4_291_747_200 * 1_000_000_000; // 2106-01-01T00:00:00Z
    assert!(
        (0..MAX_NS).contains(&record.timestamp_ns),
        "timestamp {} out of range",
        record.timestamp_ns
    );
    assert!(!record.service.is_empty() && record.service.len() <= limits.max_service_bytes);
    assert!(record.message.len() <= limits.max_message_bytes);
    for (id, digits) in [(&record.trace_id, 32), (&record.span_id, 16)] {
        assert!(
            id.is_empty()
                || (id.len() == digits
                    && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    && id.bytes().any(|b| b != b'0')),
            "bad id {id:?}"
        );
    }
    assert!(
        record.attributes.len() <= limits.max_attributes,
        "{} attributes",
        record.attributes.len()
    );
    for (key, value) in &record.attributes {
        assert!(key.len() <= limits.max_attribute_key_bytes, "key {key:?}");
        assert!(
            value.len() <= limits.max_attribute_value_bytes,
            "value {value:?}"
        );
    }
}

/// A batch as a native JSON body: every field explicit, the time as RFC 3339 with
/// nanoseconds, every attribute (top-level extras included) under `attributes`.
fn render_json(batch: &Batch) -> String {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut out = String::from("[");
    for (i, r) in batch.records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"timestamp\":{},\"level\":{},\"service\":{},\"message\":{}",
            text(&format_rfc3339(i128::from(r.timestamp_ns), 9)),
            text(r.level.as_str()),
            text(&r.service),
            text(&r.message),
        ));
        for (name, id) in [("trace_id", &r.trace_id), ("span_id", &r.span_id)] {
            if !id.is_empty() {
                out.push_str(&format!(",\"{name}\":{}", text(id)));
            }
        }
        out.push_str(",\"attributes\":{");
        for (j, (key, value)) in r.attributes.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&format!("{}:{}", text(key), text(value)));
        }
        out.push_str("}}");
    }
    out.push(']');
    out
}
