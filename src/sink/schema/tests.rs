use super::*;
use crate::codec::EncodedBatch;
use crate::record::{Batch, Level, Record};

/// The native layout check on a table `db`.`t`.
fn native(columns: &[(String, String)]) -> Result<Layout, String> {
    detect_layout(columns, "`db`.`t`", TableSchema::Native)
}

fn v(text: &str) -> ServerVersion {
    ServerVersion::parse(text).unwrap_or_else(|| panic!("cannot parse {text:?}"))
}

#[test]
fn parses_versions_as_servers_report_them() {
    assert_eq!(v("18.16.1"), ServerVersion::new(18, 16, 1));
    assert_eq!(v("19.17.4.11"), ServerVersion::new(19, 17, 4));
    assert_eq!(v("20.3.21.2"), ServerVersion::new(20, 3, 21));
    assert_eq!(v("23.8.2.7"), ServerVersion::new(23, 8, 2));
    assert_eq!(v("24.3.1.2672"), ServerVersion::new(24, 3, 1));
    assert_eq!(v(" 21.8.15.7-lts\n"), ServerVersion::new(21, 8, 15));
    assert_eq!(v("22.1"), ServerVersion::new(22, 1, 0));
    assert_eq!(ServerVersion::parse(""), None);
    assert_eq!(ServerVersion::parse("abc"), None);
    assert_eq!(ServerVersion::parse("18"), None);
    assert!(v("19.17.4") < v("20.1.2.4"));
    assert!(v("9.9") < v("18.16.1"));
}

#[test]
fn features_follow_the_version() {
    let f = Features::of(v("18.16.1"));
    assert_eq!(f, Features::oldest());
    assert_eq!(f.layout(), Layout::Legacy);

    let f = Features::of(v("19.17.4.11"));
    assert!(f.low_cardinality && !f.datetime64 && !f.map);
    assert_eq!(f.layout(), Layout::Legacy);

    let f = Features::of(v("20.3.21.2"));
    assert!(f.low_cardinality && f.datetime64 && !f.map);
    assert_eq!(f.layout(), Layout::DateTime64Nested);

    let f = Features::of(v("21.8.15.7"));
    assert_eq!(f.layout(), Layout::DateTime64Nested);

    for modern in ["22.1.3.7", "23.8.2.7", "24.3.1.2672", "24.12.1"] {
        let f = Features::of(v(modern));
        assert!(f.low_cardinality && f.datetime64 && f.map, "{modern}");
        assert_eq!(f.layout(), Layout::DateTime64Map, "{modern}");
    }
}

#[test]
fn dedup_tokens_from_22_2() {
    assert!(!Features::of(v("18.16.1")).dedup_token);
    assert!(!Features::of(v("22.1.3.7")).dedup_token);
    assert!(!Features::oldest().dedup_token);
    for version in ["22.2", "22.2.2.1", "23.8.2.7", "24.3.1.2672"] {
        assert!(Features::of(v(version)).dedup_token, "{version}");
    }
}

#[test]
fn ddl_sets_the_dedup_window_only_where_tokens_exist() {
    let window = format!("SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}");
    for version in ["22.2.2.1", "23.8.2.7"] {
        let sql = create_table_sql("db", "t", Features::of(v(version)), 0);
        assert!(
            sql.ends_with(&format!("ORDER BY (service, timestamp)\n{window}")),
            "{sql}"
        );
    }
    for version in ["18.16.1", "20.3.21.2", "22.1.3.7"] {
        let sql = create_table_sql("db", "t", Features::of(v(version)), 0);
        assert!(!sql.contains("SETTINGS"), "{version}: {sql}");
    }
}

#[test]
fn legacy_ddl_uses_only_types_18_16_knows() {
    let sql = create_table_sql("logs", "logs", Features::of(v("18.16.1")), 0);
    assert!(
        sql.starts_with("CREATE TABLE IF NOT EXISTS `logs`.`logs` ("),
        "{sql}"
    );
    assert!(sql.contains("timestamp DateTime('UTC'),"), "{sql}");
    assert!(sql.contains("timestamp_ns UInt64,"), "{sql}");
    assert!(sql.contains("level String,"), "{sql}");
    assert!(
        sql.contains("attributes Nested(key String, value String)\n)"),
        "{sql}"
    );
    for modern in ["DateTime64", "LowCardinality", "Map("] {
        assert!(!sql.contains(modern), "{modern} in {sql}");
    }
    assert!(sql.ends_with("ORDER BY (service, timestamp)"), "{sql}");
}

#[test]
fn ddl_for_19_17_adds_low_cardinality_only() {
    let sql = create_table_sql("db", "t", Features::of(v("19.17.4.11")), 0);
    assert!(sql.contains("level LowCardinality(String),"), "{sql}");
    assert!(sql.contains("service LowCardinality(String),"), "{sql}");
    assert!(sql.contains("timestamp_ns UInt64"), "{sql}");
    assert!(!sql.contains("DateTime64"), "{sql}");
}

#[test]
fn ddl_for_20_3_uses_datetime64_and_nested() {
    let sql = create_table_sql("db", "t", Features::of(v("20.3.21.2")), 0);
    assert!(sql.contains("timestamp DateTime64(9, 'UTC'),"), "{sql}");
    assert!(!sql.contains("timestamp_ns"), "{sql}");
    assert!(
        sql.contains("attributes Nested(key String, value String)"),
        "{sql}"
    );
}

#[test]
fn modern_ddl_uses_map() {
    for version in ["23.8.2.7", "24.3.1.2672"] {
        let sql = create_table_sql("db", "t", Features::of(v(version)), 0);
        assert!(sql.contains("timestamp DateTime64(9, 'UTC'),"), "{sql}");
        assert!(sql.contains("level LowCardinality(String),"), "{sql}");
        assert!(sql.contains("attributes Map(String, String)\n)"), "{sql}");
        assert!(sql.contains("PARTITION BY toDate(timestamp)"), "{sql}");
    }
}

#[test]
fn identifiers_are_quoted() {
    assert_eq!(quote_identifier("logs"), "`logs`");
    assert_eq!(quote_identifier("a`b\\c"), "`a\\`b\\\\c`");
    assert_eq!(
        create_database_sql("x y"),
        "CREATE DATABASE IF NOT EXISTS `x y`"
    );
}

fn cols(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

const LEGACY: &[(&str, &str)] = &[
    ("timestamp", "DateTime('UTC')"),
    ("timestamp_ns", "UInt64"),
    ("level", "String"),
    ("service", "LowCardinality(String)"),
    ("message", "String"),
    ("trace_id", "String"),
    ("span_id", "String"),
    ("attributes.key", "Array(String)"),
    ("attributes.value", "Array(LowCardinality(String))"),
];

#[test]
fn detects_each_layout() {
    assert_eq!(native(&cols(LEGACY)), Ok(Layout::Legacy));

    let mut nested = cols(LEGACY);
    nested.retain(|(n, _)| n != "timestamp_ns");
    nested[0].1 = "DateTime64(9, 'UTC')".into();
    assert_eq!(native(&nested), Ok(Layout::DateTime64Nested));

    let mut map = nested.clone();
    map.retain(|(n, _)| !n.starts_with("attributes"));
    map.push((
        "attributes".into(),
        "Map(LowCardinality(String), String)".into(),
    ));
    map.push(("extra".into(), "UInt8".into()));
    assert_eq!(native(&map), Ok(Layout::DateTime64Map));
}

#[test]
fn every_created_table_is_detected_as_its_layout() {
    // The DDL and the table check must agree, or start-up would refuse its own table.
    let parse_columns = |sql: &str| -> Vec<(String, String)> {
        let body = &sql[sql.find('(').unwrap() + 1..sql.rfind("\n)").unwrap()];
        let mut out = Vec::new();
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let line = line.trim_end_matches(',');
            let (name, ty) = line.split_once(' ').unwrap();
            if ty.starts_with("Nested(") {
                out.push((format!("{name}.key"), "Array(String)".to_string()));
                out.push((format!("{name}.value"), "Array(String)".to_string()));
            } else {
                out.push((name.to_string(), ty.to_string()));
            }
        }
        out
    };
    for version in [
        "18.16.1", "19.17.4", "20.3.21", "21.8.15", "23.8.2", "24.3.1",
    ] {
        let features = Features::of(v(version));
        let sql = create_table_sql("db", "t", features, 0);
        let columns = parse_columns(&sql);
        assert_eq!(native(&columns), Ok(features.layout()), "{version}");
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, features.layout().column_names(), "{version}");
    }
}

#[test]
fn mismatched_tables_are_explained() {
    let mut bad = cols(LEGACY);
    bad[2].1 = "UInt8".into(); // level
    bad.retain(|(n, _)| n != "span_id");
    let err = native(&bad).unwrap_err();
    assert!(
        err.contains("column `level` is UInt8, expected String"),
        "{err}"
    );
    assert!(err.contains("column `span_id` is missing"), "{err}");

    let mut no_ns = cols(LEGACY);
    no_ns.retain(|(n, _)| n != "timestamp_ns");
    let err = native(&no_ns).unwrap_err();
    assert!(err.contains("`timestamp_ns` is missing"), "{err}");

    let mut nullable = cols(LEGACY);
    nullable[4].1 = "Nullable(String)".into();
    assert!(native(&nullable).unwrap_err().contains("`message`"));

    let mut ms = cols(LEGACY);
    ms[0].1 = "DateTime64(3)".into();
    assert!(native(&ms)
        .unwrap_err()
        .contains("`timestamp` is DateTime64(3)"));

    assert!(native(&[]).unwrap_err().contains("`timestamp` is missing"));
}

/// `record` encoded as a batch, as the sink receives it; see [`first`].
fn encoded(record: &Record) -> EncodedBatch {
    EncodedBatch::encode(&Batch::new(vec![record.clone()]))
}

fn first(batch: &EncodedBatch) -> RecordRef<'_> {
    batch.records().next().unwrap().unwrap()
}

fn record() -> Record {
    Record {
        timestamp_ns: 1_700_000_000_123_456_789,
        level: Level::Warn,
        service: "api".into(),
        message: "héllo".into(),
        trace_id: String::new(),
        span_id: "00f067aa0ba902b7".into(),
        attributes: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        otel: None,
    }
}

#[test]
fn legacy_row_keeps_nanoseconds_and_clamps_to_datetime_range() {
    let r = encoded(&record());
    let row = LegacyRow::new(first(&r));
    assert_eq!(row.timestamp, 1_700_000_000);
    assert_eq!(row.timestamp_ns, 1_700_000_000_123_456_789);
    assert_eq!(row.level, "warn");

    let mut early = record();
    early.timestamp_ns = -5;
    let early = encoded(&early);
    let row = LegacyRow::new(first(&early));
    assert_eq!((row.timestamp, row.timestamp_ns), (0, 0));

    let mut late = record();
    late.timestamp_ns = i64::MAX;
    let late = encoded(&late);
    assert_eq!(LegacyRow::new(first(&late)).timestamp, u32::MAX);
}

#[test]
fn rows_serialize_to_row_binary_in_column_order() {
    // serde_json drives the same Serialize impls: the attribute helpers must keep the
    // client's order and pair keys with values.
    let r = encoded(&record());
    let json = serde_json::to_value(DateTime64MapRow::new(first(&r))).unwrap();
    assert_eq!(json["attributes"], serde_json::json!({"b": "2", "a": "1"}));
    let json = serde_json::to_value(LegacyRow::new(first(&r))).unwrap();
    assert_eq!(json["attributes.key"], serde_json::json!(["b", "a"]));
    assert_eq!(json["attributes.value"], serde_json::json!(["2", "1"]));
    // The column order itself is checked against ClickHouse in tests/sink_clickhouse.rs.
    assert_names_are_columns(&json, Layout::Legacy);
}

/// The row's field names are the layout's columns (as sets: serde_json may or may not
/// keep insertion order, feature `preserve_order`).
fn assert_names_are_columns(json: &serde_json::Value, layout: Layout) {
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected = layout.column_names().to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected);
}

/// An OTLP record as validation builds it: own `b`, scope `s`, resource `b` (shadowed
/// in the native layouts) and `r`.
fn otlp_record() -> Record {
    let mut record = record();
    record.attributes = vec![
        ("b".into(), "own".into()),
        ("s".into(), "scope".into()),
        ("b".into(), "resource".into()),
        ("r".into(), "resource".into()),
    ];
    record.otel = Some(Box::new(crate::record::OtelFields {
        severity_number: 14,
        severity_text: "WARNING".into(),
        trace_flags: 1,
        event_name: "cart.checkout".into(),
        scope_name: "app.cart".into(),
        scope_version: "1.2".into(),
        scope_schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
        resource_schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
        own_attributes: 1,
        scope_attributes: 1,
    }));
    record
}

#[test]
fn native_rows_of_otlp_records_merge_the_parts_first_key_wins() {
    let r = encoded(&otlp_record());
    let json = serde_json::to_value(LegacyRow::new(first(&r))).unwrap();
    assert_eq!(
        json["attributes.key"],
        serde_json::json!(["b", "otel.scope.name", "otel.scope.version", "s", "r"])
    );
    assert_eq!(
        json["attributes.value"],
        serde_json::json!(["own", "app.cart", "1.2", "scope", "resource"])
    );
}

#[test]
fn otel_rows_keep_the_parts_apart() {
    let r = encoded(&otlp_record());
    let json = serde_json::to_value(OtelRow::new(first(&r))).unwrap();
    assert_eq!(json["Timestamp"], 1_700_000_000_123_456_789i64);
    assert_eq!(json["SeverityText"], "WARNING");
    assert_eq!(json["SeverityNumber"], 14);
    assert_eq!(json["TraceFlags"], 1);
    assert_eq!(json["ServiceName"], "api");
    assert_eq!(json["Body"], "héllo");
    assert_eq!(json["EventName"], "cart.checkout");
    assert_eq!(json["ScopeName"], "app.cart");
    assert_eq!(json["ScopeVersion"], "1.2");
    assert_eq!(json["LogAttributes"], serde_json::json!({"b": "own"}));
    assert_eq!(json["ScopeAttributes"], serde_json::json!({"s": "scope"}));
    assert_eq!(
        json["ResourceAttributes"],
        serde_json::json!({"service.name": "api", "b": "resource", "r": "resource"})
    );
    assert_eq!(
        json["ResourceSchemaUrl"],
        "https://opentelemetry.io/schemas/1.24.0"
    );
    assert_names_are_columns(&json, Layout::Otel);
}

#[test]
fn otel_rows_of_native_records_take_the_level_as_severity() {
    let r = encoded(&record());
    let json = serde_json::to_value(OtelRow::new(first(&r))).unwrap();
    assert_eq!(
        (
            json["SeverityText"].as_str(),
            json["SeverityNumber"].as_u64()
        ),
        (Some("WARN"), Some(13))
    );
    assert_eq!(
        json["LogAttributes"],
        serde_json::json!({"b": "2", "a": "1"})
    );
    assert_eq!(
        json["ResourceAttributes"],
        serde_json::json!({"service.name": "api"})
    );
    assert_eq!(json["ScopeAttributes"], serde_json::json!({}));
    assert_eq!(
        (json["ScopeName"].as_str(), json["TraceFlags"].as_u64()),
        (Some(""), Some(0))
    );
    // An OTLP record without severity text or number gets them from its level too.
    let mut bare = otlp_record();
    let otel = bare.otel.as_mut().unwrap();
    otel.severity_text.clear();
    otel.severity_number = 0;
    let r = encoded(&bare);
    let json = serde_json::to_value(OtelRow::new(first(&r))).unwrap();
    assert_eq!(
        (
            json["SeverityText"].as_str(),
            json["SeverityNumber"].as_u64()
        ),
        (Some("WARN"), Some(13))
    );
}

const OTEL_OPTIONS: TableOptions = TableOptions {
    schema: TableSchema::Otel,
    ttl_days: 0,
};

/// `(name, type)` of the stored columns of an otel CREATE TABLE, as `system.columns`
/// lists them (no codec, no index, no ALIAS column).
fn otel_columns(sql: &str) -> Vec<(String, String)> {
    sql.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("INDEX") && !l.contains("ALIAS"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(' ')?;
            let ty = rest.split(" CODEC").next()?.trim_end_matches(',');
            name.chars()
                .all(|c| c.is_ascii_alphanumeric())
                .then(|| (name.to_string(), ty.to_string()))
        })
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "CREATE" | "PARTITION" | "ORDER" | "SETTINGS" | "TTL"
            )
        })
        .collect()
}

#[test]
fn the_otel_table_is_the_exporters_and_is_detected() {
    for version in ["22.1.3.7", "23.8.2.7", "26.9.2.1"] {
        let features = Features::of(v(version));
        let sql = table_ddl("db", "otel_logs", features, OTEL_OPTIONS, version).unwrap();
        assert!(
            sql.contains("TimestampTime DateTime ALIAS toDateTime(Timestamp)"),
            "{sql}"
        );
        assert!(sql.contains("ORDER BY (toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)"));
        assert!(sql.contains("INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8"));
        assert_eq!(
            sql.contains("non_replicated_deduplication_window"),
            features.dedup_token
        );
        assert!(!sql.contains("TTL"), "{sql}");
        let columns = otel_columns(&sql);
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, Layout::Otel.column_names(), "{version}");
        assert_eq!(
            detect_layout(&columns, "t", TableSchema::Otel),
            Ok(Layout::Otel)
        );
        let err = native(&columns).unwrap_err();
        assert!(err.contains("CLICKHOUSE_SCHEMA=otel"), "{err}");
    }
    let ttl = TableOptions {
        ttl_days: 30,
        ..OTEL_OPTIONS
    };
    let sql = table_ddl("db", "t", Features::of(v("24.3.1")), ttl, "24.3.1").unwrap();
    assert!(
        sql.contains("\nTTL toDateTime(Timestamp) + toIntervalDay(30)\nSETTINGS"),
        "{sql}"
    );
}

#[test]
fn servers_that_cannot_hold_a_table_say_so() {
    for old in ["18.16.1", "21.8.15.7"] {
        let err = table_ddl("db", "t", Features::of(v(old)), OTEL_OPTIONS, old).unwrap_err();
        assert!(
            err.contains("CLICKHOUSE_SCHEMA=otel needs ClickHouse 22.1.0"),
            "{err}"
        );
        assert!(err.contains(old), "{err}");
    }
    let ttl = TableOptions {
        schema: TableSchema::Native,
        ttl_days: 7,
    };
    let err = table_ddl("db", "t", Features::of(v("18.16.1")), ttl, "18.16.1").unwrap_err();
    assert!(
        err.contains("CLICKHOUSE_TTL_DAYS=7 needs ClickHouse 19.6.0"),
        "{err}"
    );
    let sql = table_ddl("db", "t", Features::of(v("19.17.4")), ttl, "19.17.4").unwrap();
    assert!(
        sql.ends_with("TTL toDateTime(timestamp) + toIntervalDay(7)"),
        "{sql}"
    );
    let sql = table_ddl("db", "t", Features::of(v("23.8.2")), ttl, "23.8.2").unwrap();
    assert!(
        sql.contains("TTL toDateTime(timestamp) + toIntervalDay(7)\nSETTINGS"),
        "{sql}"
    );
}

#[test]
fn drifted_tables_get_the_alter_that_fixes_them() {
    let sql = table_ddl("db", "t", Features::of(v("26.9.2")), OTEL_OPTIONS, "26.9.2").unwrap();
    let mut columns = otel_columns(&sql);
    columns.retain(|(n, _)| n != "EventName");
    columns
        .iter_mut()
        .filter(|(n, _)| n == "SeverityNumber")
        .for_each(|(_, ty)| *ty = "Int32".into());
    let err = detect_layout(&columns, "`db`.`t`", TableSchema::Otel).unwrap_err();
    assert!(
        err.contains(
            "column `SeverityNumber` is Int32, expected UInt8 \
             (fix: ALTER TABLE `db`.`t` MODIFY COLUMN `SeverityNumber` UInt8)"
        ),
        "{err}"
    );
    assert!(
        err.contains("column `EventName` is missing (String; fix: ALTER TABLE `db`.`t` ADD COLUMN `EventName` String)"),
        "{err}"
    );
    let err = detect_layout(&cols(LEGACY), "`db`.`t`", TableSchema::Otel).unwrap_err();
    assert!(
        err.contains("native zero-logs layout; set CLICKHOUSE_SCHEMA=native"),
        "{err}"
    );

    let mut legacy = cols(LEGACY);
    legacy[2].1 = "UInt8".into();
    let err = native(&legacy).unwrap_err();
    assert!(
        err.contains("MODIFY COLUMN `level` LowCardinality(String))"),
        "{err}"
    );
}
