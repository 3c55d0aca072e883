//! Table tests of [`decode`] and [`check_record`]: every accepted form, and for every
//! rejection the exact field and a piece of the reason.

use super::*;
use crate::record::Level;

const NOW: i64 = 1_700_000_000_123_456_789;
/// 2024-05-01T12:00:00Z
const T0: i64 = 1_714_564_800 * 1_000_000_000;

const SAMPLE: &str = r#"{"timestamp":"2024-05-01T12:00:00.123456789Z","level":"info","service":"checkout","message":"order 1234 placed by user 99 in 12 ms","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","attributes":{"http.status":200,"region":"eu-west-1"}}"#;

fn limits() -> RecordLimits {
    RecordLimits::default()
}

/// [`decode`], checked against serde_json alone: whether the fast pass (sonic-rs)
/// accepted the body or gave up, the answer must be exactly the reference's, for
/// every body these tests send.
fn decode_checked(
    body: &[u8],
    format: Format,
    limits: &RecordLimits,
) -> Result<Batch, DecodeError> {
    let got = decode(body, format, limits, NOW);
    let reference = decode_encoded_serde_json(body, format, limits, NOW)
        .map(|batch| batch.decode().expect("the reference batch decodes"));
    assert_eq!(
        format!("{got:?}"),
        format!("{reference:?}"),
        "the fast pass disagrees with serde_json on {:?}",
        String::from_utf8_lossy(body)
    );
    got
}

fn json(body: &str) -> Result<Batch, DecodeError> {
    decode_checked(body.as_bytes(), Format::Json, &limits())
}

fn ndjson(body: &str) -> Result<Batch, DecodeError> {
    decode_checked(body.as_bytes(), Format::Ndjson, &limits())
}

/// A record with `service":"svc","message":"hi"` and what the test varies.
fn expected(timestamp_ns: i64, level: Level, attributes: &[(&str, &str)]) -> Record {
    Record {
        timestamp_ns,
        level,
        service: "svc".into(),
        message: "hi".into(),
        trace_id: String::new(),
        span_id: String::new(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        otel: None,
    }
}

/// Decodes `[{<fields>}]`, adding `"service":"svc"` and `"message":"hi"` unless
/// `fields` sets them.
fn one(fields: &str) -> Result<Record, DecodeError> {
    let mut body = String::from("[{");
    if !fields.contains(r#""service":"#) {
        body.push_str(r#""service":"svc","#);
    }
    if !fields.contains(r#""message":"#) && !fields.contains(r#""msg":"#) {
        body.push_str(r#""message":"hi","#);
    }
    body.push_str(fields);
    let body = format!("{}}}]", body.trim_end_matches(','));
    json(&body).map(|mut batch| {
        assert_eq!(batch.len(), 1);
        batch.records.remove(0)
    })
}

fn errors_of(result: Result<Batch, DecodeError>) -> Vec<RecordError> {
    match result {
        Err(DecodeError::Invalid(errors)) => errors,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn sample_record_decodes_fully() {
    let batch = json(&format!("[{SAMPLE}]")).unwrap();
    let want = Record {
        timestamp_ns: T0 + 123_456_789,
        level: Level::Info,
        service: "checkout".into(),
        message: "order 1234 placed by user 99 in 12 ms".into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        attributes: vec![
            ("http.status".into(), "200".into()),
            ("region".into(), "eu-west-1".into()),
        ],
        otel: None,
    };
    assert_eq!(batch.records, vec![want.clone()]);
    assert_eq!(batch.approx_bytes(), want.approx_bytes());
}

#[test]
fn good_records() {
    use Level::*;
    let ms = 1_000_000;
    let cases: Vec<(&str, Record)> = vec![
        // timestamp forms
        ("", expected(NOW, Info, &[])),
        (r#""timestamp":null"#, expected(NOW, Info, &[])),
        (r#""timestamp":"""#, expected(NOW, Info, &[])),
        (
            r#""timestamp":"2024-05-01T12:00:00Z""#,
            expected(T0, Info, &[]),
        ),
        (
            r#""timestamp":"2024-05-01 12:00:00z""#,
            expected(T0, Info, &[]),
        ),
        (
            r#""timestamp":"2024-05-01t14:00:00.5+02:00""#,
            expected(T0 + 500 * ms, Info, &[]),
        ),
        (
            r#""time":"2024-05-01T12:00:00.000000001Z""#,
            expected(T0 + 1, Info, &[]),
        ),
        (r#""ts":"2024-05-01T12:00:00Z""#, expected(T0, Info, &[])),
        (r#""timestamp":1714564800"#, expected(T0, Info, &[])),
        (
            r#""timestamp":1714564800123"#,
            expected(T0 + 123 * ms, Info, &[]),
        ),
        (
            r#""timestamp":1714564800123456"#,
            expected(T0 + 123_456_000, Info, &[]),
        ),
        (
            r#""timestamp":1714564800123456789"#,
            expected(T0 + 123_456_789, Info, &[]),
        ),
        (
            r#""timestamp":1714564800.25"#,
            expected(T0 + 250 * ms, Info, &[]),
        ),
        (r#""timestamp":1.7145648e9"#, expected(T0, Info, &[])),
        (
            r#""timestamp":"1714564800123""#,
            expected(T0 + 123 * ms, Info, &[]),
        ),
        (
            r#""timestamp":"1714564800.000000007""#,
            expected(T0 + 7, Info, &[]),
        ),
        // level aliases, case-insensitive; null and "" mean info
        (r#""level":null"#, expected(NOW, Info, &[])),
        (r#""level":"""#, expected(NOW, Info, &[])),
        (r#""level":"TRACE""#, expected(NOW, Trace, &[])),
        (r#""level":"verbose""#, expected(NOW, Trace, &[])),
        (r#""level":"dbg""#, expected(NOW, Debug, &[])),
        (r#""level":"Notice""#, expected(NOW, Info, &[])),
        (r#""level":"WARNING""#, expected(NOW, Warn, &[])),
        (r#""level":"Err""#, expected(NOW, Error, &[])),
        (r#""level":"critical""#, expected(NOW, Fatal, &[])),
        (r#""level":"panic""#, expected(NOW, Fatal, &[])),
        // pino/bunyan numbers; custom levels in between round down
        (r#""level":10"#, expected(NOW, Trace, &[])),
        (r#""level":20"#, expected(NOW, Debug, &[])),
        (r#""level":30"#, expected(NOW, Info, &[])),
        (r#""level":35"#, expected(NOW, Info, &[])),
        (r#""level":40"#, expected(NOW, Warn, &[])),
        (r#""level":50.0"#, expected(NOW, Error, &[])),
        (r#""level":60"#, expected(NOW, Fatal, &[])),
        (r#""level":99"#, expected(NOW, Fatal, &[])),
        // attribute value types; null skipped; order kept
        (
            r#""attributes":{"s":"x","i":42,"n":-7,"f":1.5,"e":1e3,"t":true,"b":false,"z":null,"empty":""}"#,
            expected(
                NOW,
                Info,
                &[
                    ("s", "x"),
                    ("i", "42"),
                    ("n", "-7"),
                    ("f", "1.5"),
                    ("e", "1000.0"),
                    ("t", "true"),
                    ("b", "false"),
                    ("empty", ""),
                ],
            ),
        ),
        (r#""attributes":null"#, expected(NOW, Info, &[])),
        (r#""attributes":{}"#, expected(NOW, Info, &[])),
        // unknown top-level scalars are folded in after the explicit attributes
        (
            r#""host":"web-1","pid":4242,"attributes":{"a":"1"},"ok":true,"gone":null"#,
            expected(
                NOW,
                Info,
                &[
                    ("a", "1"),
                    ("host", "web-1"),
                    ("pid", "4242"),
                    ("ok", "true"),
                ],
            ),
        ),
        // escapes decode; escaped keys still match
        (
            r#""attributes":{"k\u00e9y":"caf\u00e9 \"q\""},"\u006cevel":"warn""#,
            expected(NOW, Warn, &[("kéy", "café \"q\"")]),
        ),
    ];
    for (fields, want) in cases {
        assert_eq!(one(fields).unwrap(), want, "{fields}");
    }
}

#[test]
fn message_alias_ids_and_escapes() {
    let body = r#"[{"service":"s","msg":"line\nnext \u00e9","trace_id":"4BF92F3577B34DA6A3CE929D0E0E4736","span_id":"00F067AA0BA902B7","trace_flags":"01"}]"#;
    let record = json(body).unwrap().records.remove(0);
    assert_eq!(record.message, "line\nnext é");
    assert_eq!(record.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(record.span_id, "00f067aa0ba902b7");
    assert_eq!(record.attributes, vec![("trace_flags".into(), "01".into())]);

    let record = one(r#""trace_id":"","span_id":null"#).unwrap();
    assert_eq!(
        (record.trace_id.as_str(), record.span_id.as_str()),
        ("", "")
    );
}

#[test]
fn every_framing_gives_the_same_batch() {
    let want = json(&format!("[{SAMPLE},{SAMPLE}]")).unwrap();
    assert_eq!(want.len(), 2);
    let bodies = [
        (Format::Json, format!(" \n[ {SAMPLE} ,\n{SAMPLE} ]\n")),
        (Format::Json, format!(r#"{{"logs":[{SAMPLE},{SAMPLE}]}}"#)),
        (Format::Json, format!("\u{feff}[{SAMPLE},{SAMPLE}]")),
        (Format::Ndjson, format!("{SAMPLE}\n{SAMPLE}")),
        (Format::Ndjson, format!("{SAMPLE}\n{SAMPLE}\n")),
        (
            Format::Ndjson,
            format!("\n  \n{SAMPLE}\r\n\r\n\t\r\n{SAMPLE}\r\n"),
        ),
        (Format::Ndjson, format!("\u{feff}{SAMPLE}\n{SAMPLE}")),
    ];
    for (format, body) in bodies {
        let got = decode_checked(body.as_bytes(), format, &limits());
        assert_eq!(
            got.as_ref().ok(),
            Some(&want),
            "{format:?} {body:?}: {got:?}"
        );
    }
}

#[test]
fn long_ndjson_lines_split_correctly() {
    // Exercises the word-at-a-time newline search at every alignment.
    for pad in 1..20 {
        let rec = format!(r#"{{"service":"s","message":"{}"}}"#, "x".repeat(pad));
        let body = format!("{rec}\n{rec}\n\n{rec}");
        let batch = ndjson(&body).unwrap();
        assert_eq!(batch.len(), 3, "pad {pad}");
        assert!(batch.records.iter().all(|r| r.message.len() == pad));
    }
    assert_eq!(find_newline(b"0123456789abcdef\n"), Some(16));
    assert_eq!(find_newline(b"01234567\n"), Some(8));
    assert_eq!(find_newline(b"\x0b\x09\n"), Some(2));
    assert_eq!(find_newline(&[0xff; 40]), None);

    // Every position, next to bytes that differ from b'\n' by one bit or by the
    // high bit, which is where word-at-a-time tricks go wrong.
    let noise = [0x0b, 0x08, 0x8a, 0x0a ^ 0x80, 0x00, 0xff, b'x', 0x09];
    for len in 0..40 {
        for at in 0..=len {
            let mut hay: Vec<u8> = (0..len).map(|i| noise[i % noise.len()]).collect();
            if at < len {
                hay[at] = b'\n';
            }
            let want = hay.iter().position(|&b| b == b'\n');
            assert_eq!(find_newline(&hay), want, "{hay:?}");
        }
    }
}

#[test]
fn bad_records() {
    let long_key = "k".repeat(129);
    let long_key_field = format!("attributes.{}…", &long_key[..64]);
    let many: String = (0..65)
        .map(|i| format!(r#""a{i}":{i}"#))
        .collect::<Vec<_>>()
        .join(",");
    let many_mixed: String = (0..60)
        .map(|i| format!(r#""a{i}":{i}"#))
        .collect::<Vec<_>>()
        .join(",");
    let extra_fields: String = (0..5).map(|i| format!(r#","x{i}":"v""#)).collect();
    let cases: Vec<(String, &str, &str)> = vec![
        // timestamp
        (r#""timestamp":true"#.into(), "timestamp", "must be an RFC 3339 string or an epoch number, got a boolean (true)"),
        (r#""timestamp":{"s":1}"#.into(), "timestamp", "got an object"),
        (r#""timestamp":[1]"#.into(), "timestamp", "got an array"),
        (r#""ts":"yesterday""#.into(), "ts", "invalid timestamp \"yesterday\": expected RFC 3339"),
        (r#""time":"2024-02-30T00:00:00Z""#.into(), "time", "day 30 does not exist in 2024-02"),
        (r#""timestamp":"2024-05-01T24:00:00Z""#.into(), "timestamp", "hour 24 is out of range"),
        (r#""timestamp":"2024-05-01T12:00:00""#.into(), "timestamp", "missing UTC offset"),
        (r#""timestamp":"1969-12-31T23:59:59Z""#.into(), "timestamp", "outside the accepted range 1970-01-01T00:00:00Z <= t < 2106-01-01T00:00:00Z"),
        (r#""timestamp":"2106-01-01T00:00:00Z""#.into(), "timestamp", "outside the accepted range"),
        (r#""timestamp":99999999999"#.into(), "timestamp", "read as seconds"),
        (r#""timestamp":-1"#.into(), "timestamp", "negative (before 1970)"),
        (r#""timestamp":-1.5"#.into(), "timestamp", "negative"),
        (r#""timestamp":1e300"#.into(), "timestamp", "far in the future"),
        (r#""timestamp":"99999999999999999999999""#.into(), "timestamp", "far in the future"),
        // level
        (r#""level":"loud""#.into(), "level", "unknown level \"loud\"; expected trace|debug|info|warn|error|fatal (case-insensitive; aliases: verbose"),
        (r#""level":3"#.into(), "level", "numeric level 3 is out of range; numbers are pino/bunyan levels from 10 to 99 (10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal), or send a name: expected trace|debug"),
        (r#""level":100"#.into(), "level", "numeric level 100 is out of range"),
        (r#""level":-30"#.into(), "level", "numeric level -30 is out of range"),
        (r#""level":false"#.into(), "level", "got a boolean (false)"),
        // service / message
        (r#""service":"""#.into(), "service", "service is empty; it must be a non-empty string of at most 256 bytes"),
        (r#""service":42"#.into(), "service", "service must be a string, got a number (42)"),
        (format!(r#""service":"{}""#, "s".repeat(257)), "service", "is 257 bytes; at most 256 bytes are accepted"),
        (r#""message":"""#.into(), "message", "message is empty"),
        (r#""msg":["a"]"#.into(), "msg", "msg must be a string, got an array"),
        (format!(r#""message":"{}""#, "m".repeat(64 * 1024 + 1)), "message", "message is 65537 bytes; at most 65536 bytes are accepted"),
        // ids
        (r#""trace_id":"xyz""#.into(), "trace_id", "non-hex character 'x' at position 0; expected 32 hex digits"),
        (r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e473""#.into(), "trace_id", "has 31 hex digits; expected exactly 32"),
        (r#""trace_id":"00000000000000000000000000000000""#.into(), "trace_id", "all zeros, which W3C Trace Context defines as invalid"),
        (r#""trace_id":"4bf92f35-77b3-4da6-a3ce-929d0e0e4736""#.into(), "trace_id", "non-hex character '-' at position 8"),
        (r#""trace_id":12"#.into(), "trace_id", "trace_id must be a string, got a number (12)"),
        (r#""span_id":"4bf92f3577b34da6a3ce929d0e0e4736""#.into(), "span_id", "has 32 hex digits; expected exactly 16"),
        (r#""span_id":"0000000000000000""#.into(), "span_id", "all zeros"),
        // attributes
        (r#""attributes":[]"#.into(), "attributes", "attributes must be a flat JSON object, got an array"),
        (r#""attributes":"a=b""#.into(), "attributes", "got a string (\"a=b\")"),
        (r#""attributes":{"a":{"b":1}}"#.into(), "attributes.a", "nested values are not allowed; attributes must be flat"),
        (r#""attributes":{"a":[1,2]}"#.into(), "attributes.a", "nested values are not allowed; attributes must be flat"),
        (r#""labels":{"a":1}"#.into(), "labels", "nested values are not allowed; attributes must be flat"),
        (r#""tags":[]"#.into(), "tags", "unrecognised top-level fields are stored as attributes"),
        (format!(r#""attributes":{{{many}}}"#), "attributes", "65 attributes; at most 64 are accepted"),
        (format!(r#""attributes":{{{many_mixed}}}{extra_fields}"#), "attributes", "65 attributes; at most 64"),
        (format!(r#""attributes":{{"{long_key}":"v"}}"#), &long_key_field, "key is 129 bytes; at most 128 bytes are accepted"),
        (format!(r#""attributes":{{"k":"{}"}}"#, "v".repeat(4097)), "attributes.k", "value is 4097 bytes; at most 4096 bytes are accepted"),
        (format!(r#""note":"{}""#, "v".repeat(4097)), "note", "value is 4097 bytes"),
        (r#""attributes":{"":"v"}"#.into(), "attributes", "an attribute key is empty"),
        (r#""":"v""#.into(), "", "a top-level field name is empty"),
        // duplicates
        (r#""level":"info","level":"warn""#.into(), "level", "duplicate field \"level\""),
        (r#""timestamp":1,"ts":2"#.into(), "ts", "duplicate field \"ts\": this record already set it (accepted names: timestamp, time, ts)"),
        (r#""message":"a","msg":"again""#.into(), "msg", "duplicate field \"msg\""),
        (r#""attributes":{},"attributes":{}"#.into(), "attributes", "duplicate field"),
        (r#""attributes":{"a":"1","a":"2"}"#.into(), "attributes.a", "duplicate attribute key \"a\""),
        (r#""attributes":{"region":"eu"},"region":"us""#.into(), "region", "duplicate attribute key \"region\"; keys must be unique across"),
    ];
    for (fields, field, reason) in &cases {
        let errors = match one(fields) {
            Err(DecodeError::Invalid(errors)) => errors,
            other => panic!("{fields}: expected Invalid, got {other:?}"),
        };
        assert_eq!(errors.len(), 1, "{fields}: {errors:?}");
        assert_eq!(
            (errors[0].index, errors[0].field.as_str()),
            (0, *field),
            "{fields}"
        );
        assert!(
            errors[0].reason.contains(reason),
            "{fields}: {:?} lacks {reason:?}",
            errors[0].reason
        );
    }
}

#[test]
fn missing_required_fields_and_non_objects() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            r#"[{"message":"hi"}]"#,
            &[("service", "service is required")],
        ),
        (
            r#"[{"service":"s"}]"#,
            &[(
                "message",
                "message is required (accepted names: message, msg)",
            )],
        ),
        (
            r#"[{"service":null,"msg":null}]"#,
            &[("service", "required"), ("message", "required")],
        ),
        (
            r#"[{}]"#,
            &[("service", "required"), ("message", "required")],
        ),
        (
            r#"["hello"]"#,
            &[(
                "",
                "a record must be a JSON object, got a string (\"hello\")",
            )],
        ),
        (
            r#"[[{"service":"s","message":"m"}]]"#,
            &[("", "got an array")],
        ),
        (r#"[null]"#, &[("", "got null")]),
        (r#"[1.5]"#, &[("", "got a number (1.5)")]),
    ];
    for &(body, want) in cases {
        let errors = errors_of(json(body));
        let got: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(got.len(), want.len(), "{body}: {errors:?}");
        for ((field, reason), (want_field, want_reason)) in got.iter().zip(want) {
            assert_eq!(field, want_field, "{body}");
            assert!(reason.contains(want_reason), "{body}: {reason}");
        }
    }
    // NDJSON: a scalar line is a bad record, not a malformed body.
    let errors = errors_of(ndjson("{\"service\":\"s\",\"message\":\"m\"}\n42\n"));
    assert_eq!((errors[0].index, errors[0].field.as_str()), (1, ""));
}

#[test]
fn all_problems_of_a_batch_are_reported_with_indexes() {
    let body = r#"[
        {"service":"s","message":"ok"},
        {"service":"s","message":"m","level":"loud"},
        {"service":"s","message":"ok"},
        {"message":"m","trace_id":"nothex","attributes":{"a":{}}},
        "not a record",
        {"service":"s","message":"ok"}
    ]"#;
    let errors = errors_of(json(body));
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
    assert_eq!(
        got,
        [
            (1, "level"),
            (3, "trace_id"),
            (3, "attributes.a"),
            (3, "service"),
            (4, "")
        ]
    );

    let lines = [
        r#"{"service":"s","message":"ok"}"#,
        "",
        r#"{"service":"s","message":"m","timestamp":"soon"}"#,
        r#"{"service":"s","message":"ok"}"#,
        r#"{"service":"","message":"m"}"#,
    ];
    let errors = errors_of(ndjson(&lines.join("\n")));
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
    assert_eq!(got, [(1, "timestamp"), (3, "service")]);
}

#[test]
fn error_list_is_capped() {
    let bad = r#"{"service":"s","message":"m","level":"loud"}"#;
    let body = format!("[{}]", vec![bad; 250].join(","));
    let err = json(&body).unwrap_err();
    let text = err.to_string();
    let errors = errors_of(Err(err));
    assert_eq!(errors.len(), MAX_LISTED_ERRORS);
    assert_eq!(errors.last().map(|e| e.index), Some(99));
    assert!(
        text.starts_with(
            "invalid records: 100 or more problems (the first 100 are listed); first: record 0,"
        ),
        "{text}"
    );
}

#[test]
fn malformed_bodies() {
    let cases: Vec<(Format, Vec<u8>, Option<usize>, &str)> = vec![
        (Format::Json, br#"[{"service":"s","#.to_vec(), Some(0), "the JSON ends early at line 1"),
        (Format::Json, br#"[{"service":"s","message":"m"},{"service" "x"}]"#.to_vec(), Some(1), "invalid JSON at line 1, column"),
        (Format::Json, br#"[{"service":"s","message":"m"} {"service":"s"}]"#.to_vec(), Some(1), "expected `,` or `]`"),
        (Format::Json, br#"[{"service":"s","message":"m"}] []"#.to_vec(), None, "unexpected text after the JSON value at line 1"),
        (Format::Json, br#"{"service":"s","message":"m"}"#.to_vec(), None, "unexpected key \"service\" in the top-level object (it looks like a single record: wrap it in an array)"),
        (Format::Json, br#""hello""#.to_vec(), None, "the body is a string (\"hello\"); send a JSON array of records"),
        (Format::Json, b"42".to_vec(), None, "the body is a number (42)"),
        (Format::Json, b"null".to_vec(), None, "the body is null"),
        (Format::Json, br#"{"logs":[],"source":"x"}"#.to_vec(), None, "unexpected key \"source\" in the top-level object; only \"logs\" is allowed"),
        (Format::Json, br#"{"logs":{}}"#.to_vec(), None, "\"logs\" must be an array of records, got an object"),
        (Format::Json, br#"{"logs":"x"}"#.to_vec(), None, "got a string"),
        (Format::Json, br#"{}"#.to_vec(), None, "the top-level object has no \"logs\" key"),
        (Format::Json, br#"{"logs":[],"logs":[]}"#.to_vec(), None, "duplicate \"logs\" key"),
        (Format::Json, b"[{\"service\":\"s\",\"message\":\"caf\xe9\"}]".to_vec(), Some(0), "invalid UTF-8 at byte offset 30 (line 1)"),
        (Format::Json, b"[{\"service\":\"s\",\"m\xff\":\"x\"}]".to_vec(), Some(0), "invalid UTF-8 at byte offset 18"),
        (Format::Json, b"[{\"service\":\"s\",\"message\":\"m\"},\xff]".to_vec(), Some(1), "invalid UTF-8 at byte offset 31"),
        (Format::Json, b"nope".to_vec(), None, "invalid JSON at line 1, column"),
        (Format::Ndjson, b"{\"service\":\"s\",\"message\":\"m\"}\n\n{\"service\":\"s\",\"message\":\"m\"}\n{oops}\n".to_vec(), Some(2), "invalid JSON at line 4, column"),
        (Format::Ndjson, b"{\"service\":\"s\",\"message\":\"m\"}\n{\"service\":\"s\",".to_vec(), Some(1), "the JSON ends early at line 2"),
        (Format::Ndjson, b"[{\"service\":\"s\",\"message\":\"m\"}]".to_vec(), Some(0), "line 1 is a JSON array; NDJSON has one record object per line"),
        (Format::Ndjson, b"{\"service\":\"s\",\"message\":\"m\"} {\"service\":\"s\",\"message\":\"m\"}".to_vec(), Some(0), "NDJSON has exactly one record object per line"),
        (Format::Ndjson, b"{\"service\":\"s\",\"message\":\"m\"}\n{\"service\":\"s\",\"message\":\"\xc3\x28\"}".to_vec(), Some(1), "invalid UTF-8 at byte offset 56 (line 2)"),
    ];
    for (format, body, index, reason) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        match decode_checked(&body, format, &limits()) {
            Err(DecodeError::Malformed {
                index: got,
                reason: text,
            }) => {
                assert_eq!(got, index, "{shown}: {text}");
                assert!(text.contains(reason), "{shown}: {text:?} lacks {reason:?}");
            }
            other => panic!("{shown}: expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn deep_nesting_is_a_record_error_not_a_stack_overflow() {
    // Nested content is skipped by serde_json's iterative `ignore_value`, so its
    // recursion limit (128) is never reached and depth costs no stack.
    let depth = 100_000;
    let body = format!(
        r#"[{{"service":"s","message":"m","attributes":{{"a":{}{}}}}},{{"service":"s","message":"m","a":{}1{}}}]"#,
        "[".repeat(depth),
        "]".repeat(depth),
        "{\"a\":".repeat(depth),
        "}".repeat(depth),
    );
    let errors = errors_of(json(&body));
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
    assert_eq!(got, [(0, "attributes.a"), (1, "a")]);
    assert!(errors[0].reason.contains("nested values are not allowed"));
}

#[test]
fn empty_bodies() {
    for body in ["", "  \n", "[]", " [ ] ", r#"{"logs":[]}"#, "\u{feff}"] {
        assert!(matches!(json(body), Err(DecodeError::Empty)), "{body:?}");
    }
    for body in ["", "\n\n", "\r\n  \t\r\n"] {
        assert!(matches!(ndjson(body), Err(DecodeError::Empty)), "{body:?}");
    }
}

#[test]
fn too_many_records_is_checked_before_validating_the_excess() {
    let small = RecordLimits {
        max_records: 3,
        ..RecordLimits::default()
    };
    let good = r#"{"service":"s","message":"m"}"#;
    let bad = r#"{"level":"loud"}"#;
    let array = format!("[{good},{good},{good},{bad},{bad}]");
    let lines = format!("{good}\n{good}\n\n{good}\n{bad}\nnot json\n");
    for (format, body) in [(Format::Json, array), (Format::Ndjson, lines)] {
        match decode_checked(body.as_bytes(), format, &small) {
            Err(DecodeError::TooManyRecords { count: 5, max: 3 }) => {}
            other => panic!("{format:?}: {other:?}"),
        }
    }
    let exact = format!("[{good},{good},{good}]");
    assert_eq!(
        decode_checked(exact.as_bytes(), Format::Json, &small)
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn display_is_actionable() {
    let err = json("[]").unwrap_err();
    assert_eq!(err.to_string(), "the request body contains no log records");
    let err = DecodeError::TooManyRecords { count: 12, max: 10 };
    assert!(err
        .to_string()
        .contains("has 12 records; at most 10 are accepted"));
    let err = json(r#"{"logs":5}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed request body: \"logs\" must be an array of records, got a number (5)"
    );
    let err = ndjson("{}\n[").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("malformed request body at record 1: "),
        "{err}"
    );
    let err = one(r#""level":"loud""#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid record: record 0, field \"level\": unknown level"),
        "{err}"
    );
    let err = json(r#"[{"level":"loud"}]"#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid records: 3 problems; first: record 0, field \"level\""),
        "{err}"
    );
    let long = "x".repeat(100);
    let err = one(&format!(r#""level":"{long}""#)).unwrap_err();
    assert!(
        err.to_string().contains(&format!("\"{}\"…;", &long[..64])),
        "{err}"
    );
}

#[test]
fn record_error_serializes_flat() {
    let e = RecordError {
        index: 3,
        field: "level".into(),
        reason: "r".into(),
    };
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"index":3,"field":"level","reason":"r"}"#
    );
}

fn raw() -> RawRecord<'static> {
    RawRecord {
        service: "svc",
        message: "hi",
        ..RawRecord::default()
    }
}

#[test]
fn check_record_accepts_grpc_fields() {
    let record = check_record(0, &raw(), &limits(), NOW).unwrap();
    assert_eq!(record, expected(NOW, Level::Info, &[]));

    let full = RawRecord {
        time_unix_nano: 1_714_564_800_000_000_001,
        level: "WARNING",
        trace_id: "4BF92F3577B34DA6A3CE929D0E0E4736",
        span_id: "00f067aa0ba902b7",
        attributes: vec![("region", "eu"), ("empty", "")],
        ..raw()
    };
    let record = check_record(7, &full, &limits(), NOW).unwrap();
    assert_eq!(record.timestamp_ns, T0 + 1);
    assert_eq!(record.level, Level::Warn);
    assert_eq!(record.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        record.attributes,
        vec![
            ("region".into(), "eu".into()),
            ("empty".into(), String::new())
        ]
    );

    // Text timestamps follow the JSON string rules, magnitude rule included.
    for text in ["2024-05-01T12:00:00Z", "1714564800", "1714564800000"] {
        let r = RawRecord {
            timestamp: text,
            ..raw()
        };
        assert_eq!(
            check_record(0, &r, &limits(), NOW).unwrap().timestamp_ns,
            T0,
            "{text}"
        );
    }
}

/// One table of cases: past 120 lines, but each row reads on its own and splitting it
/// would only scatter them.
#[test]
fn check_record_rejections() {
    let big = "m".repeat(64 * 1024 + 1);
    let cases: Vec<(RawRecord<'_>, &str, &str)> = vec![
        (
            RawRecord {
                service: "",
                ..raw()
            },
            "service",
            "service is empty",
        ),
        (
            RawRecord {
                message: "",
                ..raw()
            },
            "message",
            "message is empty",
        ),
        (
            RawRecord {
                message: &big,
                ..raw()
            },
            "message",
            "65537 bytes; at most 65536",
        ),
        (
            RawRecord {
                level: "loud",
                ..raw()
            },
            "level",
            "unknown level \"loud\"",
        ),
        (
            RawRecord {
                timestamp: "2024-02-30T00:00:00Z",
                ..raw()
            },
            "timestamp",
            "day 30",
        ),
        (
            RawRecord {
                time_unix_nano: 1,
                timestamp: "1",
                ..raw()
            },
            "timestamp",
            "both time_unix_nano and timestamp are set",
        ),
        (
            RawRecord {
                time_unix_nano: u64::MAX,
                ..raw()
            },
            "time_unix_nano",
            "outside the accepted range",
        ),
        (
            RawRecord {
                time_unix_nano: 1_714_564_800_123,
                ..raw()
            },
            "time_unix_nano",
            "time_unix_nano 1714564800123 would be 1970-01-01T00:28:34.564800123Z: it looks like milliseconds",
        ),
        (
            RawRecord {
                time_unix_nano: 1_714_564_800,
                ..raw()
            },
            "time_unix_nano",
            "it looks like seconds",
        ),
        (
            RawRecord {
                time_unix_nano: 1_714_564_800_123_456,
                ..raw()
            },
            "time_unix_nano",
            "it looks like microseconds",
        ),
        (
            RawRecord {
                trace_id: "abc",
                ..raw()
            },
            "trace_id",
            "has 3 hex digits",
        ),
        (
            RawRecord {
                span_id: "zz",
                ..raw()
            },
            "span_id",
            "non-hex",
        ),
        (
            RawRecord {
                attributes: vec![("", "v")],
                ..raw()
            },
            "attributes",
            "key is empty",
        ),
        (
            RawRecord {
                attributes: vec![("a", "1"), ("a", "2")],
                ..raw()
            },
            "attributes.a",
            "duplicate attribute key",
        ),
    ];
    for (r, field, reason) in cases {
        let err = check_record(5, &r, &limits(), NOW).unwrap_err();
        assert_eq!((err.index, err.field.as_str()), (5, field), "{err:?}");
        assert!(err.reason.contains(reason), "{err:?} lacks {reason:?}");
    }
}

/// pino's and bunyan's own lines, as they print them: `name` is the service unless the
/// record also says `service` (then `name` stays an attribute).
#[test]
fn pino_and_bunyan_lines_take_name_as_the_service() {
    let limits = RecordLimits::default();
    let pino = br#"{"level":30,"time":1700000000123,"pid":42,"hostname":"web-1","name":"api","msg":"listening"}"#;
    let batch = decode_checked(pino, Format::Ndjson, &limits).unwrap();
    let r = &batch.records[0];
    assert_eq!(
        (r.service.as_str(), r.message.as_str()),
        ("api", "listening")
    );
    assert_eq!(r.level, Level::Info);
    assert_eq!(r.timestamp_ns, 1_700_000_000_123_000_000);
    assert!(
        r.attributes.iter().all(|(k, _)| k != "name"),
        "{:?}",
        r.attributes
    );
    assert!(r
        .attributes
        .contains(&("hostname".to_string(), "web-1".to_string())));

    let bunyan = br#"{"name":"worker","hostname":"h","pid":1,"level":50,"msg":"boom","time":"2024-05-01T12:00:00.000Z","v":0}"#;
    let batch = decode_checked(bunyan, Format::Ndjson, &limits).unwrap();
    let r = &batch.records[0];
    assert_eq!((r.service.as_str(), r.level), ("worker", Level::Error));

    let both = br#"[{"service":"svc","name":"component","message":"m"}]"#;
    let batch = decode_checked(both, Format::Json, &limits).unwrap();
    let r = &batch.records[0];
    assert_eq!(r.service, "svc");
    assert!(r
        .attributes
        .contains(&("name".to_string(), "component".to_string())));
}

/// Values where two JSON parsers could differ: escapes, surrogates, control bytes,
/// whitespace, number forms and limits, literals, separators. Each goes into a record
/// as a field value, an attribute value, an unknown field and a key, as JSON and as
/// NDJSON, and `decode_checked` compares the answer with serde_json's alone.
#[test]
fn fast_pass_agrees_with_serde_json_on_edge_cases() {
    let values = [
        r#""plain""#,
        r#""caf\u00e9 \u00E9""#,
        r#""\ud83d\ude00""#,
        r#""\ud83d""#,
        r#""\ude00""#,
        r#""\ud83d\u0041""#,
        r#""\u0000""#,
        r#""\u12G4""#,
        r#""\x41""#,
        r#""\/\\\"\b\f\n\r\t""#,
        "\"tab\there\"",
        "\"nul\u{0}\"",
        "\"del\u{7f}\"",
        "\"\u{1f600}\"",
        r#""\'""#,
        r#""unterminated"#,
        "0",
        "-0",
        "-0.0",
        "0.0",
        "1",
        "-1",
        "01",
        "-01",
        "1.",
        ".5",
        "+1",
        "1e5",
        "1E+2",
        "1e-400",
        "1e400",
        "-1e400",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1.7976931348623157e308",
        "0.1",
        "2.5e-3",
        "1714564800.123456",
        "1714564800123",
        "-",
        "1e",
        "1e+",
        "0x10",
        "NaN",
        "Infinity",
        "true",
        "false",
        "null",
        "nul",
        "tru",
        "nulll",
        "truefalse",
        "[]",
        "{}",
        "[1,]",
        r#"{"a":1,}"#,
        "[,]",
        r#""a" "b""#,
        "\u{a0}1",
        "\u{c}1",
        "\u{b}1",
        "\r\n\t 1",
        "1 2",
    ];
    let mut bodies = Vec::new();
    for v in values {
        bodies.push(format!(r#"{{"service":"s","message":{v}}}"#));
        bodies.push(format!(
            r#"{{"service":"s","message":"m","attributes":{{"k":{v}}}}}"#
        ));
        bodies.push(format!(r#"{{"service":"s","message":"m","extra":{v}}}"#));
        bodies.push(format!(
            r#"{{"service":"s","message":"m","timestamp":{v}}}"#
        ));
        bodies.push(format!(r#"{{"service":"s","message":"m","level":{v}}}"#));
        bodies.push(format!(r#"{{"service":"s","message":"m",{v}:"x"}}"#));
        bodies.push(format!(
            r#"{{"service":"s","message":"m","attributes":{{{v}:"x"}}}}"#
        ));
    }
    let (mut accepted, mut fast) = (0, 0);
    for body in &bodies {
        let array = format!("[{body}]");
        if json(&array).is_ok() {
            accepted += 1;
        }
        if decode_fast(&array, Format::Json, &limits(), NOW).is_some() {
            fast += 1;
        }
        let _ = json(&format!(r#"{{"logs":[{body},{body}]}}"#));
        let _ = ndjson(&format!("{body}\n{body}\n"));
    }
    // Enough of them are accepted, by the fast pass itself too, that the comparison
    // is not only of errors (96 of the 462 are accepted).
    assert!(
        accepted > 80 && fast > 30,
        "{accepted} accepted, {fast} by the fast pass"
    );
}

/// The fast pass accepts ordinary bodies itself, and gives up where it must.
#[test]
fn fast_pass_takes_ordinary_bodies_and_leaves_the_rest() {
    let fast = |body: &str, format| decode_fast(body, format, &limits(), NOW).is_some();
    assert!(fast(&format!("[{SAMPLE},{SAMPLE}]"), Format::Json));
    assert!(fast(&format!(r#"{{"logs":[{SAMPLE}]}}"#), Format::Json));
    assert!(fast(&format!("{SAMPLE}\n\n{SAMPLE}\n"), Format::Ndjson));
    assert!(fast(
        r#"[{"service":"s","message":"caf\u00e9","n":-3,"b":true,"z":null}]"#,
        Format::Json
    ));
    for given_up in [
        // Floats: sonic-rs reads -0 as 0.0 and may round differently.
        r#"[{"service":"s","message":"m","timestamp":1714564800.5}]"#,
        r#"[{"service":"s","message":"m","attributes":{"ms":1.5}}]"#,
        // Nested content, however deep: refused, and skipped by serde_json only.
        r#"[{"service":"s","message":"m","attributes":{"a":[1]}}]"#,
        r#"[{"service":"s","message":"m","a":{"b":{}}}]"#,
        r#"[[1],{"service":"s","message":"m"}]"#,
        // Refused records and bodies.
        r#"[{"service":"s"}]"#,
        r#"[{"service":"s","message":"m"}] x"#,
        "[]",
        "",
    ] {
        assert!(!fast(given_up, Format::Json), "{given_up}");
    }
    let small = RecordLimits {
        max_records: 2,
        ..RecordLimits::default()
    };
    let three = format!("[{SAMPLE},{SAMPLE},{SAMPLE}]");
    assert!(decode_fast(&three, Format::Json, &small, NOW).is_none());
    let two = format!("[{SAMPLE},{SAMPLE}]");
    assert!(decode_fast(&two, Format::Json, &small, NOW).is_some());
}
