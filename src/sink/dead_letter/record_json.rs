//! A stored record as the JSON object a client sends on `POST /api/v1/logs`, so that a
//! dead letter can be read by a person and re-sent as it is once the table takes it.
//!
//! Kept here, not in `codec`/`record`: it reads only the fields every record has
//! (`timestamp`, `level`, `service`, `message`, `trace_id`, `span_id`, `attributes`), so
//! new fields added to records elsewhere do not have to be rendered to stay valid.

use std::fmt::Write as _;

use crate::codec::{CodecError, RecordRef};
use crate::record::format_rfc3339;

/// `{"timestamp":"2024-05-01T12:00:00.123456789Z","level":"info","service":…,
/// "message":…,"trace_id":…,"span_id":…,"attributes":{…}}`: RFC 3339 with all nine
/// fractional digits (the exact nanosecond), empty ids and attributes left out,
/// attributes as the native layouts store them (an OTLP record's own, scope and
/// resource attributes merged, each key once: the JSON path refuses repeated keys).
pub fn record_json(record: &RecordRef<'_>) -> Result<String, CodecError> {
    let mut out = String::with_capacity(160 + record.message.len());
    out.push_str("{\"timestamp\":");
    push_str(
        &mut out,
        &format_rfc3339(i128::from(record.timestamp_ns), 9),
    );
    out.push_str(",\"level\":");
    push_str(&mut out, record.level.as_str());
    out.push_str(",\"service\":");
    push_str(&mut out, record.service);
    out.push_str(",\"message\":");
    push_str(&mut out, record.message);
    for (key, value) in [("trace_id", record.trace_id), ("span_id", record.span_id)] {
        if !value.is_empty() {
            let _ = write!(out, ",\"{key}\":");
            push_str(&mut out, value);
        }
    }
    let attributes = record.flat_attributes();
    if !attributes.is_empty() {
        out.push_str(",\"attributes\":{");
        for (i, pair) in attributes.iter().enumerate() {
            let (key, value) = pair?;
            if i > 0 {
                out.push(',');
            }
            push_str(&mut out, key);
            out.push(':');
            push_str(&mut out, value);
        }
        out.push('}');
    }
    out.push('}');
    Ok(out)
}

/// A JSON string literal (quotes, escapes), appended.
fn push_str(out: &mut String, text: &str) {
    // Serialising a `&str` into a `String` cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::EncodedBatch;
    use crate::record::{Batch, Level, Record};

    fn json_of(record: Record) -> serde_json::Value {
        let batch = EncodedBatch::encode(&Batch::new(vec![record]));
        let view = batch.records().next().unwrap().unwrap();
        serde_json::from_str(&record_json(&view).unwrap()).unwrap()
    }

    #[test]
    fn renders_what_a_client_sends() {
        let record = Record {
            timestamp_ns: 1_714_564_800_123_456_789,
            level: Level::Warn,
            service: "checkout".into(),
            message: "poison \"quoted\"\nline ✓".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            attributes: vec![
                ("http.status".into(), "503".into()),
                ("k".into(), "".into()),
            ],
            otel: None,
        };
        assert_eq!(
            json_of(record),
            serde_json::json!({
                "timestamp": "2024-05-01T12:00:00.123456789Z",
                "level": "warn",
                "service": "checkout",
                "message": "poison \"quoted\"\nline ✓",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "span_id": "00f067aa0ba902b7",
                "attributes": {"http.status": "503", "k": ""}
            })
        );
    }

    #[test]
    fn leaves_out_what_is_empty() {
        let record = Record {
            timestamp_ns: 1,
            level: Level::Info,
            service: "s".into(),
            message: "m".into(),
            trace_id: String::new(),
            span_id: String::new(),
            attributes: Vec::new(),
            otel: None,
        };
        assert_eq!(
            json_of(record),
            serde_json::json!({
                "timestamp": "1970-01-01T00:00:00.000000001Z",
                "level": "info",
                "service": "s",
                "message": "m"
            })
        );
    }
}
