//! DateTime64 and Map edge cases (issue 19 item 6) through the real sink: records built
//! here (validation bypassed) are inserted with `ClickHouseSink::insert` and every row
//! is read back with SQL and compared field by field.
//!
//! The cases: 1970-01-01T00:00:00 exactly, 1 ns and 999 999 999 ns after it, full
//! nanosecond precision, the last instant validation accepts (2105-12-31T23:59:59.
//! 999999999), no attributes (an empty map), 64 attributes (order and values),
//! non-ASCII keys and values, and a 64 KiB message compared byte for byte. On the 26.9
//! engine also the last instant `DateTime64(9)` can hold (`i64::MAX` ns,
//! 2262-04-11 23:47:16.854775807) in both the native `DateTime64(9)`/`Map` table and
//! the OpenTelemetry `otel_logs` (whose OTLP-only columns get records of their own);
//! on Debian's 18.16 the same cases minus 2262 in the legacy layout (`DateTime`
//! seconds + `timestamp_ns`, `Nested` attributes).

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;
use zero_logs::codec::EncodedBatch;
use zero_logs::config::{ClickHouseConfig, Compression, TableSchema};
use zero_logs::record::{format_rfc3339, Batch, Level, OtelFields, Record};
use zero_logs::sink::{ClickHouseSink, Layout};
use zero_logs::testing::{ColumnsSql, Engine, EngineKind};

/// 2105-12-31T23:59:59.999999999Z: the last instant validation accepts.
const LAST_VALID_NS: i64 = 4_291_747_199_999_999_999;
/// 2262-04-11T23:47:16.854775807Z: the last instant of `DateTime64(9)` (an `Int64`).
const LAST_DATETIME64_NS: i64 = i64::MAX;
/// The size of the large message, in bytes.
const BIG_MESSAGE_BYTES: usize = 64 * 1024;

fn config(url: &str, database: &str, schema: TableSchema) -> ClickHouseConfig {
    ClickHouseConfig {
        url: url.to_string(),
        database: database.to_string(),
        table: schema.default_table().to_string(),
        user: "default".to_string(),
        password: String::new(),
        create_table: true,
        retry_budget: Duration::from_secs(1),
        insert_timeout: Duration::from_secs(10),
        compression: Compression::Lz4,
        schema,
        ttl_days: 0,
        cluster: None,
    }
}

/// A record whose `service` names the case (the rows are found by it).
fn record(case: &str, ns: i64, level: Level, message: &str) -> Record {
    Record {
        timestamp_ns: ns,
        level,
        service: case.to_string(),
        message: message.to_string(),
        trace_id: String::new(),
        span_id: String::new(),
        attributes: Vec::new(),
        otel: None,
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Exactly [`BIG_MESSAGE_BYTES`] of UTF-8: ASCII, Cyrillic, CJK, emoji, a tab and
/// line breaks, ending in a marker, so any cut or re-encoding shows.
fn big_message() -> String {
    let piece = "abcdefghijklmnopqrstuvwxyz 0123456789 ünïcödé 日本語 🙂🚀\t\"quoted\"\n";
    let end = "<end of the 64 KiB message>";
    let mut text = String::with_capacity(BIG_MESSAGE_BYTES);
    while text.len() + piece.len() + end.len() <= BIG_MESSAGE_BYTES {
        text.push_str(piece);
    }
    while text.len() + end.len() < BIG_MESSAGE_BYTES {
        text.push('.');
    }
    text.push_str(end);
    assert_eq!(text.len(), BIG_MESSAGE_BYTES);
    text
}

/// 64 attributes in an order that is neither sorted nor the keys' numbers, each value
/// different (one empty, some non-ASCII).
fn sixty_four_attributes() -> Vec<(String, String)> {
    (0..64)
        .map(|i| {
            let n = (i * 37) % 64;
            let value = match n {
                0 => String::new(),
                n if n % 5 == 0 => format!("значение {n} 🙂"),
                n => format!("v{n}"),
            };
            (format!("attr.{n:02}"), value)
        })
        .collect()
}

/// The cases of both native layouts and of plain records in `otel_logs`; the 2262 one
/// only where the timestamp column is `DateTime64(9)`.
fn edge_records(datetime64: bool) -> Vec<Record> {
    let mut records = vec![
        record(
            "epoch",
            0,
            Level::Trace,
            "1970-01-01T00:00:00Z, no attributes",
        ),
        record("one-ns", 1, Level::Debug, "1 ns after the epoch"),
        record(
            "last-ns-of-second",
            999_999_999,
            Level::Info,
            "999999999 ns",
        ),
        record(
            "ns-precision",
            1_700_000_000_123_456_789,
            Level::Warn,
            "odd ns",
        ),
        record("last-valid", LAST_VALID_NS, Level::Error, "2105-12-31"),
    ];
    let mut many = record(
        "64-attributes",
        1_700_000_001_000_000_001,
        Level::Info,
        "64",
    );
    many.attributes = sixty_four_attributes();
    records.push(many);
    let mut unicode = record(
        "non-ascii",
        1_700_000_002_000_000_002,
        Level::Fatal,
        "сообщение — 名前 — עברית — 🚀🔥 — e\u{301}",
    );
    unicode.attributes = pairs(&[
        ("ключ", "значение"),
        ("名前", "山田太郎"),
        ("🔑", "🚀🔥"),
        ("e\u{301}", "combining accent"),
        ("ascii", "ñ"),
    ]);
    unicode.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
    unicode.span_id = "00f067aa0ba902b7".into();
    records.push(unicode);
    let mut big = record("64-KiB", 1_700_000_003_000_000_003, Level::Warn, "");
    big.message = big_message();
    big.attributes = pairs(&[("size", "65536")]);
    records.push(big);
    if datetime64 {
        records.push(record(
            "2262",
            LAST_DATETIME64_NS,
            Level::Info,
            "i64::MAX ns",
        ));
    }
    records
}

/// How ClickHouse prints the time of `ns` with `digits` fractional digits (UTC).
fn clickhouse_time(ns: i64, digits: u32) -> String {
    format_rfc3339(i128::from(ns), digits)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// Connects (creating the table), inserts `records` in one INSERT and returns the sink.
async fn insert(
    ch: &Engine,
    db: &str,
    schema: TableSchema,
    records: &[Record],
) -> Result<ClickHouseSink> {
    let sink = ClickHouseSink::connect(&config(&ch.http_url(), db, schema)).await?;
    let batch = EncodedBatch::encode(&Batch::new(records.to_vec()));
    sink.insert(&[batch], None).await.context("INSERT")?;
    Ok(sink)
}

/// Rows of `SELECT … FORMAT JSONEachRow`, by their `id` column (the case name).
fn rows_by_case(ch: &Engine, sql: &str) -> Result<Vec<(String, Value)>> {
    let body = ch.query(&format!("{sql} FORMAT JSONEachRow"))?;
    body.lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line)?;
            let case = row["id"].as_str().context("id column")?.to_string();
            Ok((case, row))
        })
        .collect()
}

/// The row of `case`, which must be there exactly once.
fn row<'a>(rows: &'a [(String, Value)], case: &str) -> &'a Value {
    let found: Vec<&Value> = rows
        .iter()
        .filter(|(c, _)| c == case)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(found.len(), 1, "rows of case {case}");
    found[0]
}

/// A `{keys} AS k, {values} AS v` pair of arrays as pairs.
fn read_pairs(row: &Value, keys: &str, values: &str) -> Vec<(String, String)> {
    let strings = |name: &str| -> Vec<String> {
        serde_json::from_value(row[name].clone()).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    strings(keys).into_iter().zip(strings(values)).collect()
}

/// What every layout stores alike: time (ns and text), message byte for byte,
/// attributes in order. `time_digits`: 9 for `DateTime64(9)`, 0 for `DateTime`.
fn assert_common(got: &Value, want: &Record, time_digits: u32) {
    let case = &want.service;
    assert_eq!(got["ns"], want.timestamp_ns.to_string(), "{case}: ns");
    assert_eq!(
        got["time"],
        clickhouse_time(want.timestamp_ns, time_digits),
        "{case}: time as text"
    );
    assert_eq!(
        got["bytes"],
        want.message.len().to_string(),
        "{case}: length"
    );
    let message = got["message"].as_str().unwrap_or_default();
    assert!(message == want.message, "{case}: message differs");
    assert_eq!(got["trace"], want.trace_id.as_str(), "{case}");
    assert_eq!(got["span"], want.span_id.as_str(), "{case}");
}

zero_logs::on_both_engines!(native_edges_read_back_exactly);

async fn native_edges_read_back_exactly(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let datetime64 = kind == EngineKind::Chdb;
    let sent = edge_records(datetime64);
    let sink = insert(&ch, &db, TableSchema::Native, &sent).await?;
    let (layout, digits) = if datetime64 {
        (Layout::DateTime64Map, 9)
    } else {
        (Layout::Legacy, 0)
    };
    assert_eq!(sink.layout(), layout);

    let ColumnsSql { ns, keys, values } = ColumnsSql::of(layout);
    // The legacy `DateTime` seconds (toUInt32 of 2262 as DateTime64 is an overflow).
    let secs = if datetime64 {
        "''"
    } else {
        "toString(toUInt32(timestamp))"
    };
    let rows = rows_by_case(
        &ch,
        &format!(
            "SELECT service AS id, toString({ns}) AS ns, toString(timestamp) AS time, \
             {secs} AS secs, level, message, \
             toString(length(message)) AS bytes, trace_id AS trace, span_id AS span, \
             {keys} AS k, {values} AS v FROM {db}.logs"
        ),
    )?;
    assert_eq!(rows.len(), sent.len());
    for want in &sent {
        let got = row(&rows, &want.service);
        let case = want.service.as_str();
        if !datetime64 && want.timestamp_ns < 1_000_000_000 {
            // 18.16 prints the DateTime 0 (1970-01-01 00:00:00) as zeros; the value is
            // 0 and `timestamp_ns` exact.
            assert_eq!(got["time"], "0000-00-00 00:00:00", "{case}");
            let mut rest = got.clone();
            rest["time"] = clickhouse_time(want.timestamp_ns, 0).into();
            assert_common(&rest, want, digits);
        } else {
            assert_common(got, want, digits);
        }
        if !datetime64 {
            let secs = (want.timestamp_ns / 1_000_000_000).to_string();
            assert_eq!(got["secs"], secs, "{case}: DateTime seconds");
        }
        assert_eq!(got["level"], want.level.as_str());
        assert_eq!(
            read_pairs(got, "k", "v"),
            want.attributes,
            "{}",
            want.service
        );
    }
    Ok(())
}

/// OTLP records: every OTLP-only column, and the attributes split into log, scope and
/// resource ones.
fn otlp_records() -> Vec<Record> {
    let mut full = record("otlp-full", 1_700_000_004_000_000_004, Level::Warn, "otlp");
    full.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
    full.span_id = "00f067aa0ba902b7".into();
    full.attributes = pairs(&[
        ("http.method", "GET"),
        ("ключ", "значение 🙂"),
        ("scope.attr", "名前"),
        ("host.name", "node-1"),
        ("デプロイ", "本番"),
    ]);
    full.otel = Some(Box::new(OtelFields {
        severity_number: 14,
        severity_text: "Warning2".into(),
        trace_flags: 1,
        event_name: "user.login".into(),
        scope_name: "io.opentelemetry.http".into(),
        scope_version: "1.2.3".into(),
        scope_schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
        resource_schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
        own_attributes: 2,
        scope_attributes: 1,
    }));
    // Severity unset: filled from the level; all 64 attributes the record's own.
    let mut defaults = record("otlp-defaults", 0, Level::Error, "defaults at the epoch");
    defaults.attributes = sixty_four_attributes();
    defaults.otel = Some(Box::new(OtelFields {
        trace_flags: 255,
        own_attributes: 64,
        ..OtelFields::default()
    }));
    // No attributes of any kind, only scope and resource ones.
    let mut empty = record("otlp-empty", 1, Level::Info, "");
    empty.otel = Some(Box::new(OtelFields::default()));
    let mut others = record("otlp-scope-resource", 999_999_999, Level::Debug, "split");
    others.attributes = pairs(&[("🔑", "scope"), ("k8s.pod.name", "pod-ü")]);
    others.otel = Some(Box::new(OtelFields {
        severity_number: 5,
        scope_name: "名前空間".into(),
        own_attributes: 0,
        scope_attributes: 1,
        ..OtelFields::default()
    }));
    vec![full, defaults, empty, others]
}

#[tokio::test]
async fn otel_edges_read_back_exactly() -> Result<()> {
    let ch = Engine::start(EngineKind::Chdb)?;
    let db = ch.fresh_database();
    let mut sent = edge_records(true);
    sent.extend(otlp_records());
    let sink = insert(&ch, &db, TableSchema::Otel, &sent).await?;
    assert_eq!(sink.layout(), Layout::Otel);

    let rows = rows_by_case(
        &ch,
        &format!(
            "SELECT ServiceName AS id, toString(toUnixTimestamp64Nano(Timestamp)) AS ns, \
             toString(Timestamp) AS time, Body AS message, toString(length(Body)) AS bytes, \
             TraceId AS trace, SpanId AS span, toString(TraceFlags) AS flags, SeverityText, \
             toString(SeverityNumber) AS number, EventName, ScopeName, ScopeVersion, \
             ScopeSchemaUrl, ResourceSchemaUrl, \
             mapKeys(LogAttributes) AS lk, mapValues(LogAttributes) AS lv, \
             mapKeys(ScopeAttributes) AS sk, mapValues(ScopeAttributes) AS sv, \
             mapKeys(ResourceAttributes) AS rk, mapValues(ResourceAttributes) AS rv \
             FROM {db}.otel_logs"
        ),
    )?;
    assert_eq!(rows.len(), sent.len());
    for want in &sent {
        let case = want.service.as_str();
        let got = row(&rows, case);
        assert_common(got, want, 9);
        let otel = want.otel.as_deref().cloned().unwrap_or_default();
        let own = otel.own_attributes;
        let scope_end = own + otel.scope_attributes;
        let (log, scope, resource) = if want.otel.is_some() {
            let a = &want.attributes;
            (
                a[..own].to_vec(),
                a[own..scope_end].to_vec(),
                a[scope_end..].to_vec(),
            )
        } else {
            (want.attributes.clone(), Vec::new(), Vec::new())
        };
        assert_eq!(read_pairs(got, "lk", "lv"), log, "{case}: LogAttributes");
        assert_eq!(
            read_pairs(got, "sk", "sv"),
            scope,
            "{case}: ScopeAttributes"
        );
        let mut resource_with_service = pairs(&[("service.name", case)]);
        resource_with_service.extend(resource);
        assert_eq!(
            read_pairs(got, "rk", "rv"),
            resource_with_service,
            "{case}: ResourceAttributes, service.name first"
        );
        let (number, text) = match (otel.severity_number, otel.severity_text.as_str()) {
            (0, "") => (want.level.severity_number(), want.level.severity_text()),
            (0, text) => (want.level.severity_number(), text),
            (number, "") => (number, want.level.severity_text()),
            (number, text) => (number, text),
        };
        assert_eq!(got["number"], number.to_string(), "{case}: SeverityNumber");
        assert_eq!(got["SeverityText"], text, "{case}: SeverityText");
        assert_eq!(
            got["flags"],
            otel.trace_flags.to_string(),
            "{case}: TraceFlags"
        );
        for (column, value) in [
            ("EventName", &otel.event_name),
            ("ScopeName", &otel.scope_name),
            ("ScopeVersion", &otel.scope_version),
            ("ScopeSchemaUrl", &otel.scope_schema_url),
            ("ResourceSchemaUrl", &otel.resource_schema_url),
        ] {
            assert_eq!(got[column], value.as_str(), "{case}: {column}");
        }
    }
    Ok(())
}

/// What ClickHouse 26.9 does with an event time past what `DateTime` (UInt32 seconds,
/// to 2106-02-07) and `Date` (UInt16 days, to 2149-06-06) hold: the `DateTime64(9)`
/// column keeps `i64::MAX` ns exactly, but everything the tables derive from it with
/// `toDate`/`toDateTime` wraps around — the daily partition (and so `DROP PARTITION`
/// by day), a TTL, otel's `TimestampTime` and `toStartOfFiveMinutes` in its sorting
/// key. That is why validation refuses times from 2106-01-01 on (README).
#[tokio::test]
async fn past_2106_only_the_datetime64_column_is_exact() -> Result<()> {
    let ch = Engine::start(EngineKind::Chdb)?;
    let db = ch.fresh_database();
    let sent = [
        record("2262", LAST_DATETIME64_NS, Level::Info, "i64::MAX ns"),
        record("last-valid", LAST_VALID_NS, Level::Info, "2105-12-31"),
    ];
    insert(&ch, &db, TableSchema::Native, &sent).await?;
    insert(&ch, &db, TableSchema::Otel, &sent).await?;

    for (table, time, service) in [
        ("logs", "timestamp", "service"),
        ("otel_logs", "Timestamp", "ServiceName"),
    ] {
        let rows = rows_by_case(
            &ch,
            &format!(
                "SELECT {service} AS id, toString(toUnixTimestamp64Nano({time})) AS ns, \
                 toString({time}) AS time, _partition_id AS partition, \
                 toString(toDate({time})) AS day, toString(toDateTime({time})) AS second \
                 FROM {db}.{table}"
            ),
        )?;
        let exact = row(&rows, "2262");
        assert_eq!(exact["ns"], i64::MAX.to_string(), "{table}");
        assert_eq!(exact["time"], "2262-04-11 23:47:16.854775807", "{table}");
        // Wrapped: 2262 is past the ends of Date and DateTime.
        assert_eq!(exact["partition"], "20821104", "{table}");
        assert_eq!(exact["day"], "2082-11-04", "{table}");
        assert_eq!(exact["second"], "1990-01-27 10:50:44", "{table}");
        // Up to the end of what validation accepts, all of them agree.
        let valid = row(&rows, "last-valid");
        assert_eq!(valid["ns"], LAST_VALID_NS.to_string(), "{table}");
        assert_eq!(valid["time"], "2105-12-31 23:59:59.999999999", "{table}");
        assert_eq!(valid["partition"], "21051231", "{table}");
        assert_eq!(valid["day"], "2105-12-31", "{table}");
        assert_eq!(valid["second"], "2105-12-31 23:59:59", "{table}");
    }
    let alias = ch.query(&format!(
        "SELECT toString(TimestampTime) FROM {db}.otel_logs WHERE ServiceName = '2262'"
    ))?;
    assert_eq!(
        alias.trim(),
        "1990-01-27 10:50:44",
        "otel's TimestampTime wraps"
    );
    Ok(())
}
