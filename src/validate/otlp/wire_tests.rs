//! Our protobuf reader against prost, the reference: on every body both accept (with
//! the same request, and the same mapping to the byte) or both refuse; the only
//! other outcome allowed is our reader leaving a body to prost
//! ([`WireError::Unsupported`]), which [`with_protobuf`] then decodes with prost.

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tests::{kv, options, random_request, record, small_limits, text, NOW_NS};
use super::*;

/// What the two readers made of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Both read it, to the same request and the same mapping.
    Same,
    BothRefused,
    /// Ours left it to prost.
    LeftToProst,
}

/// Reads `body` with both readers, panics if they disagree.
fn agree(body: &[u8]) -> Outcome {
    let ours = LogsView::decode(body);
    let theirs = ExportLogsServiceRequest::decode(body);
    match (ours, theirs) {
        (Ok(view), Ok(request)) => {
            let expected = LogsView::from_request(&request);
            assert_eq!(
                view.to_request().encode_to_vec(),
                expected.to_request().encode_to_vec(),
                "the readers disagree on {body:?}"
            );
            for limits in [RecordLimits::default(), small_limits()] {
                let (ours, ours_rejected) = otlp_encoded(&view, &limits, &options(), NOW_NS);
                let (theirs, rejected) = otlp_encoded(&expected, &limits, &options(), NOW_NS);
                assert_eq!(ours.payload(), theirs.payload(), "mapped apart: {body:?}");
                assert_eq!(ours_rejected, rejected);
            }
            Outcome::Same
        }
        (Ok(_), Err(err)) => panic!("our reader accepts a body prost refuses ({err}): {body:?}"),
        (Err(WireError::Unsupported { .. }), _) => Outcome::LeftToProst,
        (Err(err), Ok(_)) => panic!("our reader refuses ({err}) a body prost accepts: {body:?}"),
        (Err(_), Err(_)) => Outcome::BothRefused,
    }
}

// === a protobuf writer for bodies prost's types cannot express ===

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const I32: u8 = 5;

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

fn key(tag: u32, wt: u8) -> Vec<u8> {
    varint(u64::from(tag) << 3 | u64::from(wt))
}

fn len_field(tag: u32, payload: &[u8]) -> Vec<u8> {
    [
        key(tag, LEN),
        varint(payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

/// `fields` as the innermost message of `path` (field numbers from the request down).
fn nest(path: &[u32], fields: &[u8]) -> Vec<u8> {
    path.iter()
        .rev()
        .fold(fields.to_vec(), |inner, &tag| len_field(tag, &inner))
}

/// A field of wire type `wt` with a well-formed payload of that type.
fn field_of_type(tag: u32, wt: u8) -> Vec<u8> {
    let payload = match wt {
        VARINT => varint(1),
        I64 => vec![0; 8],
        LEN => varint(0),
        I32 => vec![0; 4],
        _ => [key(1, VARINT), varint(7), key(tag, END_GROUP)].concat(),
    };
    [key(tag, wt), payload].concat()
}

/// One unknown field of every wire type, a group with a nested group among them.
fn unknown_fields() -> Vec<u8> {
    [
        key(100, VARINT),
        varint(300),
        key(101, I64),
        vec![1; 8],
        len_field(102, b"\xff not text"),
        key(103, START_GROUP),
        key(1, VARINT),
        varint(5),
        key(2, START_GROUP),
        key(3, I32),
        vec![2; 4],
        key(2, END_GROUP),
        key(103, END_GROUP),
        key(104, I32),
        vec![3; 4],
    ]
    .concat()
}

const REQUEST: &[u32] = &[];
const RESOURCE_LOGS: &[u32] = &[1];
const RESOURCE: &[u32] = &[1, 1];
const ENTITY_REF: &[u32] = &[1, 1, 3];
const KEY_VALUE: &[u32] = &[1, 1, 1];
const ANY_VALUE: &[u32] = &[1, 1, 1, 2];
const ARRAY_VALUE: &[u32] = &[1, 1, 1, 2, 5];
const KEY_VALUE_LIST: &[u32] = &[1, 1, 1, 2, 6];
const SCOPE_LOGS: &[u32] = &[1, 2];
const SCOPE: &[u32] = &[1, 2, 1];
const LOG_RECORD: &[u32] = &[1, 2, 2];
const BODY: &[u32] = &[1, 2, 2, 5];

/// Every field the generated types know: the message, its number, its wire type,
/// whether it is a `string`.
const FIELDS: &[(&[u32], u32, u8, bool)] = &[
    (REQUEST, 1, LEN, false),
    (RESOURCE_LOGS, 1, LEN, false),
    (RESOURCE_LOGS, 2, LEN, false),
    (RESOURCE_LOGS, 3, LEN, true),
    (RESOURCE, 1, LEN, false),
    (RESOURCE, 2, VARINT, false),
    (RESOURCE, 3, LEN, false),
    (ENTITY_REF, 1, LEN, true),
    (ENTITY_REF, 2, LEN, true),
    (ENTITY_REF, 3, LEN, true),
    (ENTITY_REF, 4, LEN, true),
    (KEY_VALUE, 1, LEN, true),
    (KEY_VALUE, 2, LEN, false),
    (KEY_VALUE, 3, VARINT, false),
    (ANY_VALUE, 1, LEN, true),
    (ANY_VALUE, 2, VARINT, false),
    (ANY_VALUE, 3, VARINT, false),
    (ANY_VALUE, 4, I64, false),
    (ANY_VALUE, 5, LEN, false),
    (ANY_VALUE, 6, LEN, false),
    (ANY_VALUE, 7, LEN, false),
    (ANY_VALUE, 8, VARINT, false),
    (ARRAY_VALUE, 1, LEN, false),
    (KEY_VALUE_LIST, 1, LEN, false),
    (SCOPE_LOGS, 1, LEN, false),
    (SCOPE_LOGS, 2, LEN, false),
    (SCOPE_LOGS, 3, LEN, true),
    (SCOPE, 1, LEN, true),
    (SCOPE, 2, LEN, true),
    (SCOPE, 3, LEN, false),
    (SCOPE, 4, VARINT, false),
    (LOG_RECORD, 1, I64, false),
    (LOG_RECORD, 2, VARINT, false),
    (LOG_RECORD, 3, LEN, true),
    (LOG_RECORD, 5, LEN, false),
    (LOG_RECORD, 6, LEN, false),
    (LOG_RECORD, 7, VARINT, false),
    (LOG_RECORD, 8, I32, false),
    (LOG_RECORD, 9, LEN, false),
    (LOG_RECORD, 10, LEN, false),
    (LOG_RECORD, 11, I64, false),
    (LOG_RECORD, 12, LEN, true),
    (BODY, 1, LEN, true),
];

#[test]
fn random_requests_read_as_prost_reads() {
    let mut rng = StdRng::seed_from_u64(2112);
    let mut records = 0;
    for _ in 0..3_000 {
        let request = random_request(&mut rng);
        let body = request.encode_to_vec();
        assert_eq!(agree(&body), Outcome::Same);
        records += LogsView::decode(&body).unwrap().record_count();
    }
    assert!(records > 4_000, "{records} records");
}

#[test]
fn every_known_field_with_its_wire_type_reads_and_with_another_is_refused() {
    for &(path, tag, expected, _) in FIELDS {
        assert_eq!(
            agree(&nest(path, &field_of_type(tag, expected))),
            Outcome::Same,
            "{path:?} field {tag}"
        );
        for wt in [VARINT, I64, LEN, START_GROUP, I32] {
            if wt != expected {
                let body = nest(path, &field_of_type(tag, wt));
                assert_eq!(
                    agree(&body),
                    Outcome::BothRefused,
                    "{path:?} field {tag} as wire type {wt}"
                );
            }
        }
    }
}

#[test]
fn strings_must_be_utf8_bytes_need_not() {
    for &(path, tag, wt, is_string) in FIELDS {
        if wt != LEN {
            continue;
        }
        // Text for a string; for a message, bytes that parse as one unknown field.
        let good = len_field(tag, "ü €".as_bytes());
        let bad = len_field(tag, b"\xc3");
        let (good, bad) = (nest(path, &good), nest(path, &bad));
        if is_string {
            assert_eq!(agree(&good), Outcome::Same, "{path:?} field {tag}");
            assert_eq!(agree(&bad), Outcome::BothRefused, "{path:?} field {tag}");
        } else {
            agree(&good);
            agree(&bad);
        }
    }
    for (path, tag) in [(ANY_VALUE, 7), (LOG_RECORD, 9), (LOG_RECORD, 10)] {
        let body = nest(path, &len_field(tag, b"\xff\xc3"));
        assert_eq!(agree(&body), Outcome::Same, "{path:?} field {tag}");
    }
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped_in_every_message() {
    let unknown = unknown_fields();
    for path in [
        REQUEST,
        RESOURCE_LOGS,
        RESOURCE,
        ENTITY_REF,
        KEY_VALUE,
        ANY_VALUE,
        ARRAY_VALUE,
        KEY_VALUE_LIST,
        SCOPE_LOGS,
        SCOPE,
        LOG_RECORD,
        BODY,
    ] {
        let body = nest(path, &unknown);
        assert_eq!(agree(&body), Outcome::Same, "{path:?}");
        // The same request as without them.
        let without = nest(path, &[]);
        assert_eq!(
            LogsView::decode(&body).unwrap().to_request(),
            LogsView::decode(&without).unwrap().to_request(),
            "{path:?}"
        );
    }
}

#[test]
fn keys_varints_and_groups_at_the_edges() {
    let severity = |v: &[u8]| nest(LOG_RECORD, &[key(2, VARINT), v.to_vec()].concat());
    let cases: Vec<(Vec<u8>, Outcome)> = vec![
        // A 10-byte varint may carry bit 63 only; an 11th byte is too many.
        (severity(&[&[0xff; 9][..], &[1]].concat()), Outcome::Same),
        (
            severity(&[&[0xff; 9][..], &[2]].concat()),
            Outcome::BothRefused,
        ),
        (
            severity(&[&[0x80; 10][..], &[0]].concat()),
            Outcome::BothRefused,
        ),
        // Not the shortest form, still a varint.
        (severity(&[0x85, 0x80, 0x00]), Outcome::Same),
        (severity(&[0x80]), Outcome::BothRefused),
        // Field number 0; wire types 6 and 7; a key over 32 bits.
        (nest(LOG_RECORD, &[0x00, 0x01]), Outcome::BothRefused),
        (nest(LOG_RECORD, &[0x7e, 0x01]), Outcome::BothRefused),
        (nest(LOG_RECORD, &[0x7f, 0x01]), Outcome::BothRefused),
        (
            nest(LOG_RECORD, &[0x80, 0x80, 0x80, 0x80, 0x10, 0x01]),
            Outcome::BothRefused,
        ),
        // The largest field number, unknown.
        (
            nest(
                LOG_RECORD,
                &[key((1 << 29) - 1, VARINT), varint(1)].concat(),
            ),
            Outcome::Same,
        ),
        // An end-group tag alone, or ending another group; a group never ended.
        (nest(LOG_RECORD, &key(20, END_GROUP)), Outcome::BothRefused),
        (
            nest(
                LOG_RECORD,
                &[key(20, START_GROUP), key(21, END_GROUP)].concat(),
            ),
            Outcome::BothRefused,
        ),
        (
            nest(
                LOG_RECORD,
                &[key(20, START_GROUP), key(1, VARINT), varint(1)].concat(),
            ),
            Outcome::BothRefused,
        ),
        // A fixed-width field cut short.
        (
            nest(LOG_RECORD, &[key(1, I64), vec![0; 7]].concat()),
            Outcome::BothRefused,
        ),
        (
            nest(LOG_RECORD, &[key(8, I32), vec![0; 3]].concat()),
            Outcome::BothRefused,
        ),
        // Lengths claiming more than is there: nothing is reserved for them.
        (
            nest(
                LOG_RECORD,
                &[key(3, LEN), varint(u64::MAX >> 1), b"abc".to_vec()].concat(),
            ),
            Outcome::BothRefused,
        ),
        (
            [key(1, LEN), varint(1 << 40)].concat(),
            Outcome::BothRefused,
        ),
        (
            [key(1, LEN), varint(u64::MAX)].concat(),
            Outcome::BothRefused,
        ),
        // A nested message longer than its parent.
        (
            [key(1, LEN), varint(3), len_field(2, b"abcd")].concat(),
            Outcome::BothRefused,
        ),
    ];
    for (body, outcome) in cases {
        assert_eq!(agree(&body), outcome, "{body:?}");
    }
}

/// A body whose record's body value nests `depth` arrays (or key/value lists).
fn nested_body(depth: usize, lists: bool) -> Vec<u8> {
    let mut value = AnyValue {
        value: Some(text("leaf")),
    };
    for _ in 0..depth {
        value = AnyValue {
            value: Some(if lists {
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".to_owned(),
                        value: Some(value),
                        ..Default::default()
                    }],
                })
            } else {
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })
            }),
        };
    }
    let log = LogRecord {
        body: Some(value),
        ..record(9, None, vec![])
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![super::tests::resource_logs(
            vec![],
            vec![super::tests::scope_logs("s", "1", vec![], vec![log])],
        )],
    };
    request.encode_to_vec()
}

#[test]
fn nesting_is_limited_where_prost_limits_it() {
    for lists in [false, true] {
        let outcomes: Vec<Outcome> = (0..60).map(|d| agree(&nested_body(d, lists))).collect();
        let deepest = outcomes.iter().rposition(|&o| o == Outcome::Same).unwrap();
        // Readable up to a depth, refused beyond it: the limit was crossed here.
        assert!(deepest > 20 && deepest < 59, "deepest readable {deepest}");
        assert!(outcomes[deepest + 1..]
            .iter()
            .all(|&o| o == Outcome::BothRefused));
    }
    // Unknown groups count too.
    let groups = |depth: u32| {
        let mut fields = [key(1, VARINT), varint(1)].concat();
        for tag in (20..20 + depth).rev() {
            fields = [key(tag, START_GROUP), fields, key(tag, END_GROUP)].concat();
        }
        nest(LOG_RECORD, &fields)
    };
    let outcomes: Vec<Outcome> = (90..100).map(|d| agree(&groups(d))).collect();
    assert!(outcomes.contains(&Outcome::Same) && outcomes.contains(&Outcome::BothRefused));
}

#[test]
fn fields_sent_twice() {
    let value = len_field(2, &len_field(1, b"v"));
    let array = len_field(5, &len_field(1, &len_field(1, b"x")));
    let left_to_prost = [
        nest(
            RESOURCE_LOGS,
            &[len_field(1, &[]), len_field(1, &[])].concat(),
        ),
        nest(
            SCOPE_LOGS,
            &[len_field(1, &[]), len_field(1, b"\x0a\x01n")].concat(),
        ),
        nest(
            LOG_RECORD,
            &[len_field(5, b"\x0a\x01a"), len_field(5, &[])].concat(),
        ),
        nest(KEY_VALUE, &[value.clone(), value].concat()),
        nest(ANY_VALUE, &[array.clone(), array].concat()),
    ];
    for body in &left_to_prost {
        assert_eq!(agree(body), Outcome::LeftToProst, "{body:?}");
        // What the worker maps: prost's merged request.
        let request = ExportLogsServiceRequest::decode(&body[..]).unwrap();
        let limits = RecordLimits::default();
        let expected = otlp_encoded(
            &LogsView::from_request(&request),
            &limits,
            &options(),
            NOW_NS,
        );
        let mapped = with_protobuf(body, |view| {
            otlp_encoded(&view, &limits, &options(), NOW_NS)
        });
        let (batch, rejected) = mapped.unwrap();
        assert_eq!(
            (batch.payload(), rejected),
            (expected.0.payload(), expected.1)
        );
    }
    // A scalar sent twice keeps the last; a `oneof` keeps the last member.
    let twice = [
        nest(
            LOG_RECORD,
            &[len_field(3, b"INFO"), len_field(3, b"WARN")].concat(),
        ),
        nest(
            ANY_VALUE,
            &[len_field(1, b"s"), key(3, VARINT), varint(5)].concat(),
        ),
        nest(
            ANY_VALUE,
            &[len_field(5, &[]), len_field(1, b"s"), len_field(5, &[])].concat(),
        ),
        nest(ANY_VALUE, &[len_field(6, &[]), len_field(5, &[])].concat()),
    ];
    for body in &twice {
        assert_eq!(agree(body), Outcome::Same, "{body:?}");
    }
}

#[test]
fn with_protobuf_refuses_with_prost_error() {
    let body = nest(LOG_RECORD, &len_field(3, b"\xff"));
    let err = with_protobuf(&body, |view| view.record_count()).unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
}

#[test]
fn every_prefix_of_a_body_is_read_alike() {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![super::tests::resource_logs(
            vec![kv("service.name", text("svc"))],
            vec![super::tests::scope_logs(
                "lib",
                "1",
                vec![kv("k", text("v"))],
                vec![record(9, Some(text("hello")), vec![kv("a", text("b"))])],
            )],
        )],
    };
    let body = [request.encode_to_vec(), unknown_fields()].concat();
    let mut seen = [0; 3];
    for end in 0..=body.len() {
        seen[agree(&body[..end]) as usize] += 1;
    }
    assert!(seen[0] > 1 && seen[1] > 10, "{seen:?}");
}

/// A fuzzer's moves on real bodies: cut, overwrite, insert, repeat a slice.
fn mutate(rng: &mut StdRng, body: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..=body.len());
        match rng.random_range(0..5) {
            0 => body.truncate(at),
            1 if at < body.len() => body[at] = rng.random(),
            2 => {
                let bytes: Vec<u8> = (0..rng.random_range(1..4)).map(|_| rng.random()).collect();
                body.splice(at..at, bytes);
            }
            3 => {
                let end = (at + rng.random_range(1..16)).min(body.len());
                let copy = body[at..end].to_vec();
                body.splice(at..at, copy);
            }
            _ => body.extend(unknown_fields()),
        }
    }
}

#[test]
fn mutated_bodies_are_read_alike() {
    let mut rng = StdRng::seed_from_u64(4711);
    let mut seen = [0; 3];
    for _ in 0..6_000 {
        let mut body = random_request(&mut rng).encode_to_vec();
        mutate(&mut rng, &mut body);
        seen[agree(&body) as usize] += 1;
    }
    // Both outcomes, many times.
    assert!(seen[0] > 500 && seen[1] > 500, "{seen:?}");
}
