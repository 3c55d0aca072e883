//! The direct writer against the oracle: the serde row structs inserted through the
//! `clickhouse` crate's typed `Insert`. Both INSERTs go over HTTP to a capture server on
//! loopback, which keeps each request's query and body (LZ4 frames decompressed); the
//! bodies must be equal byte for byte, for every layout, with and without compression.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::codec::{EncodedBatch, RecordRef};
use crate::config::{ClickHouseConfig, Compression};
use crate::record::{Batch, Level, OtelFields, Record};
use crate::sink::schema::ServerVersion;
use crate::sink::schema::{DateTime64MapRow, DateTime64NestedRow, LegacyRow, OtelRow};
use crate::sink::ClickHouseSink;

/// One request as the capture server saw it.
struct Captured {
    /// The `query` parameter of the URL (still URL-encoded).
    query: String,
    /// The body, decompressed when it came in LZ4 frames.
    body: Vec<u8>,
}

/// A stand-in for ClickHouse's HTTP interface on 127.0.0.1 that answers every request
/// `200 OK` and reports it.
async fn capture_server() -> (String, mpsc::UnboundedReceiver<Captured>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_one(stream, tx.clone()));
        }
    });
    (url, rx)
}

async fn serve_one(mut stream: TcpStream, requests: mpsc::UnboundedSender<Captured>) {
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(request) = complete_request(&raw) {
            let _ = requests.send(request);
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The request in `raw` once its body (chunked, as the crate sends INSERTs) is whole.
fn complete_request(raw: &[u8]) -> Option<Captured> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "INSERTs are sent chunked: {head}"
    );
    let body = &raw[head_end..];
    if !body.ends_with(b"0\r\n\r\n") {
        return None;
    }
    let body = crate::testing::decode_chunked(body)?;
    let target = head.split_whitespace().nth(1)?;
    let query = target
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("query="))?
        .to_string();
    let compressed = target.contains("decompress=1");
    let body = if compressed { unlz4(&body) } else { body };
    Some(Captured { query, body })
}

/// ClickHouse's compressed framing: per frame a 16-byte checksum, the method byte
/// (0x82: LZ4), the frame size from the method byte on and the uncompressed size
/// (u32 LE each), then one LZ4 block.
fn unlz4(mut framed: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while !framed.is_empty() {
        let header = &framed[16..25];
        assert_eq!(header[0], 0x82, "an LZ4 frame");
        let size = u32::from_le_bytes(header[1..5].try_into().unwrap()) as usize;
        let plain = u32::from_le_bytes(header[5..9].try_into().unwrap()) as usize;
        let block = &framed[25..16 + size];
        out.extend(lz4_flex::block::decompress(block, plain).unwrap());
        framed = &framed[16 + size..];
    }
    out
}

fn config(url: String, compression: Compression) -> ClickHouseConfig {
    ClickHouseConfig {
        url,
        database: "db".into(),
        table: "logs".into(),
        user: String::new(),
        password: String::new(),
        create_table: false,
        retry_budget: Duration::from_secs(1),
        insert_timeout: Duration::from_secs(30),
        compression,
        schema: crate::config::TableSchema::Native,
        ttl_days: 0,
        cluster: None,
    }
}

/// Timestamps at and past the ends of `DateTime` (1970 … 2106) and of `i64`.
const TIMESTAMPS: [i64; 9] = [
    i64::MIN,
    -1,
    0,
    999_999_999,
    1_700_000_000_123_456_789,
    4_294_967_295_999_999_999,
    4_294_967_296_000_000_000,
    i64::MAX - 1,
    i64::MAX,
];

/// A string of `len` bytes (`len` ≥ 3 may hold multi-byte characters).
fn text(rng: &mut StdRng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        let c = match rng.random_range(0..20) {
            0 if len - s.len() >= 3 => '✓',
            1 if len - s.len() >= 2 => 'é',
            _ => char::from(rng.random_range(b'a'..=b'z')),
        };
        s.push(c);
    }
    s
}

/// Lengths around the one-byte LEB128 limit, empty and longer.
fn length(rng: &mut StdRng) -> usize {
    const LENGTHS: [usize; 7] = [0, 1, 5, 30, 127, 128, 300];
    if rng.random_ratio(1, 4) {
        LENGTHS[rng.random_range(0..LENGTHS.len())]
    } else {
        rng.random_range(0..60)
    }
}

/// Keys from a small pool (so that own, scope and resource attributes shadow each
/// other), with the names the native view adds for the scope among them.
fn key(rng: &mut StdRng) -> String {
    const KEYS: [&str; 8] = [
        "http.method",
        "region",
        "host",
        "otel.scope.name",
        "otel.scope.version",
        "service.name",
        "k",
        "",
    ];
    if rng.random_ratio(1, 5) {
        let len = length(rng);
        text(rng, len)
    } else {
        KEYS[rng.random_range(0..KEYS.len())].to_string()
    }
}

/// One part of a record's attributes (own, scope or resource).
fn attributes(rng: &mut StdRng) -> Vec<(String, String)> {
    let count = attribute_count(rng);
    (0..count)
        .map(|_| {
            let len = length(rng);
            (key(rng), text(rng, len))
        })
        .collect()
}

/// How many attributes one part of a record gets: mostly a few, sometimes many (past
/// the one-byte item count).
fn attribute_count(rng: &mut StdRng) -> usize {
    match rng.random_range(0..40) {
        0 => 128,
        1 => 300,
        _ => rng.random_range(0..6),
    }
}

fn text_of(rng: &mut StdRng) -> String {
    let len = length(rng);
    text(rng, len)
}

fn record(rng: &mut StdRng, i: usize) -> Record {
    let timestamp_ns = if i.is_multiple_of(3) {
        TIMESTAMPS[(i / 3) % TIMESTAMPS.len()]
    } else {
        rng.random()
    };
    let level = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ][i % 6];
    let own = attributes(rng);
    let otel = (i % 2 == 1).then(|| {
        let scope = attributes(rng);
        let resource = attributes(rng);
        let optional = |rng: &mut StdRng| {
            if rng.random_ratio(1, 2) {
                String::new()
            } else {
                text_of(rng)
            }
        };
        let fields = OtelFields {
            severity_number: [0, 1, 9, 13, 24, 255][rng.random_range(0..6)],
            severity_text: optional(rng),
            trace_flags: rng.random(),
            event_name: optional(rng),
            scope_name: optional(rng),
            scope_version: optional(rng),
            scope_schema_url: optional(rng),
            resource_schema_url: optional(rng),
            own_attributes: own.len(),
            scope_attributes: scope.len(),
        };
        (fields, scope, resource)
    });
    let mut all = own;
    let otel = otel.map(|(fields, scope, resource)| {
        all.extend(scope);
        all.extend(resource);
        Box::new(fields)
    });
    Record {
        timestamp_ns,
        level,
        service: text_of(rng),
        // Now and then past the two-byte LEB128 length (16 KiB).
        message: if rng.random_ratio(1, 50) {
            text(rng, 20_000)
        } else {
            text_of(rng)
        },
        trace_id: if rng.random_ratio(1, 2) {
            String::new()
        } else {
            text(rng, 32)
        },
        span_id: if rng.random_ratio(1, 2) {
            String::new()
        } else {
            text(rng, 16)
        },
        attributes: all,
        otel,
    }
}

/// Several batches (one empty) of native and OTLP records, ~1-2 MB of RowBinary:
/// several chunks of the INSERT body.
fn corpus() -> Vec<EncodedBatch> {
    let mut rng = StdRng::seed_from_u64(21);
    let mut i = 0;
    [300, 0, 1, 700, 37]
        .into_iter()
        .map(|n| {
            let records = (0..n)
                .map(|_| {
                    i += 1;
                    record(&mut rng, i)
                })
                .collect();
            EncodedBatch::encode(&Batch::new(records))
        })
        .collect()
}

/// The records of `batches` as `R` rows, for the crate's typed INSERT.
fn rows<'a, R>(batches: &'a [EncodedBatch], row: fn(RecordRef<'a>) -> R) -> Vec<R> {
    batches
        .iter()
        .flat_map(EncodedBatch::records)
        .map(|record| row(record.unwrap()))
        .collect()
}

/// The oracle's INSERT of `batches` for `sink`'s layout: serde rows through the crate.
async fn insert_with_serde(sink: &ClickHouseSink, batches: &[EncodedBatch]) {
    let table = sink.table().to_string();
    let result = match sink.layout() {
        Layout::Legacy => {
            let rows = rows(batches, LegacyRow::new);
            sink.insert_rows::<LegacyRow<'static>>(&table, &rows, None)
                .await
        }
        Layout::DateTime64Nested => {
            let rows = rows(batches, DateTime64NestedRow::new);
            sink.insert_rows::<DateTime64NestedRow<'static>>(&table, &rows, None)
                .await
        }
        Layout::DateTime64Map => {
            let rows = rows(batches, DateTime64MapRow::new);
            sink.insert_rows::<DateTime64MapRow<'static>>(&table, &rows, None)
                .await
        }
        Layout::Otel => {
            let rows = rows(batches, OtelRow::new);
            sink.insert_rows::<OtelRow<'static>>(&table, &rows, None)
                .await
        }
    };
    result.unwrap();
}

async fn next(requests: &mut mpsc::UnboundedReceiver<Captured>) -> Captured {
    tokio::time::timeout(Duration::from_secs(30), requests.recv())
        .await
        .expect("the INSERT reached the capture server")
        .unwrap()
}

const LAYOUTS: [Layout; 4] = [
    Layout::Legacy,
    Layout::DateTime64Nested,
    Layout::DateTime64Map,
    Layout::Otel,
];

/// The sink's INSERT and the oracle's, for every layout, plain and LZ4: same statement,
/// same body.
#[tokio::test]
async fn the_sink_sends_what_the_serde_rows_make() {
    let batches = corpus();
    let records: usize = batches.iter().map(EncodedBatch::len).sum();
    let (url, mut requests) = capture_server().await;
    for compression in [Compression::None, Compression::Lz4] {
        for layout in LAYOUTS {
            let sink = ClickHouseSink::assuming_server(
                &config(url.clone(), compression),
                ServerVersion::new(22, 2, 0),
            )
            .with_layout(layout);
            sink.insert(&batches, None).await.unwrap();
            let direct = next(&mut requests).await;
            insert_with_serde(&sink, &batches).await;
            let oracle = next(&mut requests).await;
            assert_eq!(direct.query, oracle.query, "{layout}");
            assert!(
                direct.body.len() > 256 * 1024,
                "{layout}: {} B is less than two chunks",
                direct.body.len()
            );
            if let Some(at) = direct
                .body
                .iter()
                .zip(&oracle.body)
                .position(|(a, b)| a != b)
            {
                panic!(
                    "{layout}, {compression:?}: the bodies differ from byte {at} on \
                     ({} B direct, {} B serde, {records} records)",
                    direct.body.len(),
                    oracle.body.len()
                );
            }
            assert_eq!(direct.body.len(), oracle.body.len(), "{layout}");
            eprintln!(
                "{layout}, {compression:?}: {records} records, {} B, the same",
                direct.body.len()
            );
        }
    }
}

/// Each row's bytes depend on its record alone: the scratch buffer kept across rows
/// leaks nothing from one row into the next.
#[test]
fn rows_are_independent_of_the_rows_before() {
    let batches = corpus();
    for layout in LAYOUTS {
        let mut whole = Vec::new();
        let mut writer = RowWriter::new(layout);
        for record in batches.iter().flat_map(EncodedBatch::raw_records) {
            writer.write(record.unwrap(), &mut whole).unwrap();
        }
        let mut pieces = Vec::new();
        for record in batches.iter().flat_map(EncodedBatch::raw_records) {
            let mut one = Vec::new();
            RowWriter::new(layout)
                .write(record.unwrap(), &mut one)
                .unwrap();
            pieces.extend(one);
        }
        assert!(whole == pieces, "{layout}");
    }
}

#[test]
fn the_statement_names_the_columns_as_the_crate_does() {
    assert_eq!(
        insert_sql("`db`.`logs`", Layout::Legacy),
        "INSERT INTO `db`.`logs`(`timestamp`,`timestamp_ns`,`level`,`service`,`message`,\
         `trace_id`,`span_id`,`attributes.key`,`attributes.value`) FORMAT RowBinary"
    );
    assert_eq!(
        insert_sql("`db`.`logs`", Layout::DateTime64Map),
        "INSERT INTO `db`.`logs`(`timestamp`,`level`,`service`,`message`,`trace_id`,\
         `span_id`,`attributes`) FORMAT RowBinary"
    );
}

/// A hand-made row: the bytes of one legacy record spelled out, so that a change that
/// broke both writers alike would still show.
#[test]
fn a_legacy_row_byte_by_byte() {
    let record = Record {
        timestamp_ns: 1_700_000_000_123_456_789,
        level: Level::Warn,
        service: "svc".into(),
        message: "m".repeat(200),
        trace_id: String::new(),
        span_id: "ab".into(),
        attributes: vec![("k".into(), "v".into()), ("k2".into(), String::new())],
        otel: None,
    };
    let batch = EncodedBatch::encode(&Batch::new(vec![record]));
    let mut out = Vec::new();
    let mut writer = RowWriter::new(Layout::Legacy);
    writer
        .write(batch.raw_records().next().unwrap().unwrap(), &mut out)
        .unwrap();
    let mut expected = Vec::new();
    expected.extend(1_700_000_000u32.to_le_bytes());
    expected.extend(1_700_000_000_123_456_789u64.to_le_bytes());
    expected.extend(b"\x04warn\x03svc");
    expected.extend([200 & 0x7f | 0x80, 1]);
    expected.extend("m".repeat(200).as_bytes());
    expected.extend(b"\x00\x02ab");
    expected.extend(b"\x02\x01k\x02k2");
    expected.extend(b"\x02\x01v\x00");
    assert_eq!(out, expected);
}

#[test]
fn the_constant_key_is_an_encoded_string() {
    let mut expected = Vec::new();
    put_str(&mut expected, "service.name");
    assert_eq!(SERVICE_NAME_KEY, expected);
}

/// The corpus takes every way the writer has of writing a native view: plain
/// records, OTLP records copied whole, OTLP records whose repeated keys are dropped.
#[test]
fn the_corpus_takes_every_path() {
    let batches = corpus();
    let records: Vec<_> = batches
        .iter()
        .flat_map(EncodedBatch::raw_records)
        .map(Result::unwrap)
        .collect();
    let otel: Vec<_> = records.iter().filter_map(|r| r.otel).collect();
    let shadowing = otel.iter().filter(|o| o.has_shadowed()).count();
    let plain = records.len() - otel.len();
    assert!(
        plain > 100 && shadowing > 50 && otel.len() - shadowing > 50,
        "{plain} plain records, {shadowing} of {} OTLP records shadowing",
        otel.len()
    );
}

/// The rows of `batch` in `layout`, or the first error.
fn write_all(batch: &EncodedBatch, layout: Layout) -> Result<Vec<u8>, CodecError> {
    let mut writer = RowWriter::new(layout);
    let mut out = Vec::new();
    for record in batch.raw_records() {
        writer.write(record?, &mut out)?;
    }
    Ok(out)
}

/// Damaged memory (a batch whose bytes changed after they were checked) fails the
/// rows or writes wrong bytes, as the CRC-less memory allows, but never panics the
/// worker: truncations and bit flips through every layout.
#[test]
fn damaged_batches_never_panic_the_writer() {
    let mut rng = StdRng::seed_from_u64(5);
    let records: Vec<Record> = (1..=8).map(|i| record(&mut rng, i)).collect();
    let batch = EncodedBatch::encode(&Batch::new(records));
    let payload = batch.payload().clone();
    for layout in LAYOUTS {
        assert!(write_all(&batch, layout).is_ok(), "{layout}");
    }
    let step = (payload.len() / 500).max(1);
    for len in (0..payload.len()).step_by(step) {
        let cut = EncodedBatch::unchecked(payload.slice(..len), batch.len());
        for layout in LAYOUTS {
            assert!(write_all(&cut, layout).is_err(), "{layout}, {len} bytes");
        }
    }
    for _ in 0..2_000 {
        let mut bad = payload.to_vec();
        let at = rng.random_range(0..bad.len());
        bad[at] ^= 1 << rng.random_range(0..8);
        let bad = EncodedBatch::unchecked(bad.into(), batch.len());
        for layout in LAYOUTS {
            let _ = write_all(&bad, layout);
        }
    }
}

/// A hand-made `otel_logs` row: the bytes of one OTLP record spelled out, with a key
/// its scope repeats (the native `Map` view drops it, this layout keeps every part).
#[test]
fn an_otel_row_byte_by_byte() {
    let record = Record {
        timestamp_ns: 7,
        level: Level::Error,
        service: "svc".into(),
        message: "boom".into(),
        trace_id: "t".into(),
        span_id: String::new(),
        attributes: vec![
            ("k".into(), "own".into()),
            ("k".into(), "scope".into()),
            ("r".into(), "res".into()),
        ],
        otel: Some(Box::new(OtelFields {
            severity_number: 0,
            severity_text: String::new(),
            trace_flags: 1,
            event_name: "ev".into(),
            scope_name: "lib".into(),
            scope_version: String::new(),
            scope_schema_url: "su".into(),
            resource_schema_url: "ru".into(),
            own_attributes: 1,
            scope_attributes: 1,
        })),
    };
    let batch = EncodedBatch::encode(&Batch::new(vec![record]));
    let row = |layout| write_all(&batch, layout).unwrap();
    let mut expected = Vec::new();
    expected.extend(7i64.to_le_bytes());
    expected.extend(b"\x01t\x00");
    expected.push(1);
    expected.extend(b"\x05ERROR");
    expected.push(17);
    expected.extend(b"\x03svc\x04boom\x02ru");
    expected.extend(b"\x02\x0cservice.name\x03svc\x01r\x03res");
    expected.extend(b"\x02su\x03lib\x00");
    expected.extend(b"\x01\x01k\x05scope");
    expected.extend(b"\x01\x01k\x03own");
    expected.extend(b"\x02ev");
    assert_eq!(row(Layout::Otel), expected);
    // The native view: own, otel.scope.name, (the scope's "k" dropped), resource.
    let mut expected = Vec::new();
    expected.extend(7i64.to_le_bytes());
    expected.extend(b"\x05error\x03svc\x04boom\x01t\x00");
    expected.extend(b"\x03\x01k\x03own\x0fotel.scope.name\x03lib\x01r\x03res");
    assert_eq!(row(Layout::DateTime64Map), expected);
}
