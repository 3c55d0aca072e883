//! The OpenTelemetry table layout (`CLICKHOUSE_SCHEMA=otel`): the `otel_logs` table of
//! the OpenTelemetry Collector's ClickHouse exporter, so that the tools made for it
//! (Grafana's ClickHouse plugin in OTel mode, HyperDX/ClickStack) read what zero-logs
//! writes.
//!
//! The columns, codecs and skip indexes are the exporter's
//! (`exporter/clickhouseexporter/internal/sqltemplates/logs_table.sql`, the version with
//! `EventName`, collector-contrib ≥ 0.140). The exporter's readers then split: its
//! newer DDL dropped the stored `TimestampTime` and orders by
//! `(toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)`, while Grafana's plugin
//! still filters on `TimestampTime`. Tables we create take the newer key and keep
//! `TimestampTime` as an `ALIAS toDateTime(Timestamp)`: both readers work and nothing
//! is stored twice. An existing table made by the exporter (with `TimestampTime` a
//! stored `DEFAULT` column) is written as is: INSERTs name their columns and never
//! `TimestampTime`.
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `logs`.`otel_logs` (
//!     Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
//!     TimestampTime DateTime ALIAS toDateTime(Timestamp),
//!     TraceId String CODEC(ZSTD(1)),
//!     …the columns of `COLUMNS` below…,
//!     INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
//!     …
//! ) ENGINE = MergeTree
//! PARTITION BY toDate(Timestamp)
//! ORDER BY (toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)
//! TTL toDateTime(Timestamp) + toIntervalDay(N)          -- with CLICKHOUSE_TTL_DAYS=N
//! SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1,
//!          non_replicated_deduplication_window = 1000
//! ```
//!
//! How a record fills it: OTLP records keep what they were sent with (severity number
//! and text, trace flags, event name, scope name/version/schema URL, resource schema
//! URL) and their attributes apart: `LogAttributes` the record's own, `ScopeAttributes`
//! its scope's, `ResourceAttributes` its resource's with `service.name` first (= the
//! `ServiceName` column, `OTLP_DEFAULT_SERVICE` when the resource had none). A missing
//! severity text or number is filled from the level (`WARN`/13, …). Records from the
//! native APIs have only their own attributes (`LogAttributes`), `service.name` as their
//! resource, the level as severity, and empty scope and flags.

use std::fmt::Write as _;

use serde::ser::{Error as _, Serialize, SerializeMap, Serializer};

use super::{Features, DEDUP_WINDOW};
use crate::codec::{Attributes, OtelRef, RecordRef};
use crate::record::Level;

/// The exporter's columns that zero-logs writes, in INSERT order: name, type as the
/// DDL writes it, type as RowBinary sees it (see `wire_type`).
pub const COLUMNS: [(&str, &str, &str); 16] = [
    (
        "Timestamp",
        "DateTime64(9) CODEC(Delta(8), ZSTD(1))",
        "DateTime64(9)",
    ),
    ("TraceId", "String CODEC(ZSTD(1))", "String"),
    ("SpanId", "String CODEC(ZSTD(1))", "String"),
    ("TraceFlags", "UInt8", "UInt8"),
    (
        "SeverityText",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    ("SeverityNumber", "UInt8", "UInt8"),
    (
        "ServiceName",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    ("Body", "String CODEC(ZSTD(1))", "String"),
    (
        "ResourceSchemaUrl",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    (
        "ResourceAttributes",
        "Map(LowCardinality(String), String) CODEC(ZSTD(1))",
        "Map(String,String)",
    ),
    (
        "ScopeSchemaUrl",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    ("ScopeName", "String CODEC(ZSTD(1))", "String"),
    (
        "ScopeVersion",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    (
        "ScopeAttributes",
        "Map(LowCardinality(String), String) CODEC(ZSTD(1))",
        "Map(String,String)",
    ),
    (
        "LogAttributes",
        "Map(LowCardinality(String), String) CODEC(ZSTD(1))",
        "Map(String,String)",
    ),
    ("EventName", "String CODEC(ZSTD(1))", "String"),
];

/// The exporter's skip indexes: trace lookups, attribute filters, body search.
const INDEXES: [&str; 8] = [
    "idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1",
    "idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8",
];

/// The `CREATE TABLE IF NOT EXISTS` of the layout (module documentation). `table` is
/// already quoted. The caller checks that the server has `Map` (22.1).
pub fn create_table_sql(table: &str, features: Features, ttl_days: u32) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {table} (\n");
    let (timestamp, rest) = COLUMNS.split_first().unwrap_or((&COLUMNS[0], &[]));
    // Writing to a String cannot fail.
    let _ = writeln!(sql, "    {} {},", timestamp.0, timestamp.1);
    sql.push_str("    TimestampTime DateTime ALIAS toDateTime(Timestamp),\n");
    for (name, ty, _) in rest {
        let _ = writeln!(sql, "    {name} {ty},");
    }
    for (i, index) in INDEXES.iter().enumerate() {
        let comma = if i + 1 < INDEXES.len() { "," } else { "" };
        let _ = writeln!(sql, "    INDEX {index}{comma}");
    }
    sql.push_str(
        ") ENGINE = MergeTree\nPARTITION BY toDate(Timestamp)\n\
         ORDER BY (toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)",
    );
    if ttl_days > 0 {
        let _ = write!(
            sql,
            "\nTTL toDateTime(Timestamp) + toIntervalDay({ttl_days})"
        );
    }
    sql.push_str("\nSETTINGS index_granularity = 8192, ttl_only_drop_parts = 1");
    if features.dedup_token {
        let _ = write!(
            sql,
            ", non_replicated_deduplication_window = {DEDUP_WINDOW}"
        );
    }
    sql
}

/// The column names of an INSERT, in order.
pub fn column_names() -> &'static [&'static str] {
    use clickhouse::Row;
    OtelRow::COLUMN_NAMES
}

/// One row of the layout, borrowed from an encoded record. Field order is column
/// order (RowBinary has no names).
#[derive(Debug, clickhouse::Row, serde::Serialize)]
pub struct OtelRow<'a> {
    #[serde(rename = "Timestamp")]
    pub timestamp: i64,
    #[serde(rename = "TraceId")]
    pub trace_id: &'a str,
    #[serde(rename = "SpanId")]
    pub span_id: &'a str,
    #[serde(rename = "TraceFlags")]
    pub trace_flags: u8,
    #[serde(rename = "SeverityText")]
    pub severity_text: &'a str,
    #[serde(rename = "SeverityNumber")]
    pub severity_number: u8,
    #[serde(rename = "ServiceName")]
    pub service_name: &'a str,
    #[serde(rename = "Body")]
    pub body: &'a str,
    #[serde(rename = "ResourceSchemaUrl")]
    pub resource_schema_url: &'a str,
    #[serde(rename = "ResourceAttributes")]
    pub resource_attributes: PairMap<'a>,
    #[serde(rename = "ScopeSchemaUrl")]
    pub scope_schema_url: &'a str,
    #[serde(rename = "ScopeName")]
    pub scope_name: &'a str,
    #[serde(rename = "ScopeVersion")]
    pub scope_version: &'a str,
    #[serde(rename = "ScopeAttributes")]
    pub scope_attributes: PairMap<'a>,
    #[serde(rename = "LogAttributes")]
    pub log_attributes: PairMap<'a>,
    #[serde(rename = "EventName")]
    pub event_name: &'a str,
}

impl<'a> OtelRow<'a> {
    #[inline]
    pub fn new(record: RecordRef<'a>) -> OtelRow<'a> {
        let otel = record.otel;
        // A native record has none of these: empty text, flags 0, no scope.
        let text = |field: fn(OtelRef<'a>) -> &'a str| otel.map_or("", field);
        let (own, scope, resource) = match otel {
            Some(o) => (o.own, o.scope, o.resource),
            None => (
                record.attributes,
                Attributes::default(),
                Attributes::default(),
            ),
        };
        let plain = |pairs| PairMap { first: None, pairs };
        OtelRow {
            timestamp: record.timestamp_ns,
            trace_id: record.trace_id,
            span_id: record.span_id,
            trace_flags: otel.map_or(0, |o| o.trace_flags),
            severity_text: Some(text(|o| o.severity_text))
                .filter(|t| !t.is_empty())
                .unwrap_or(record.level.severity_text()),
            severity_number: severity_number(otel.map_or(0, |o| o.severity_number), record.level),
            service_name: record.service,
            body: record.message,
            resource_schema_url: text(|o| o.resource_schema_url),
            resource_attributes: PairMap {
                first: Some(("service.name", record.service)),
                pairs: resource,
            },
            scope_schema_url: text(|o| o.scope_schema_url),
            scope_name: text(|o| o.scope_name),
            scope_version: text(|o| o.scope_version),
            scope_attributes: plain(scope),
            log_attributes: plain(own),
            event_name: text(|o| o.event_name),
        }
    }
}

/// `SeverityNumber`: as sent, or the level's when the record has none (0: an OTLP
/// record without one, or a native record).
#[inline]
pub(in crate::sink) fn severity_number(sent: u8, level: Level) -> u8 {
    if sent != 0 {
        sent
    } else {
        level.severity_number()
    }
}

/// A `Map(String, String)` of encoded pairs, optionally after one pair of our own.
#[derive(Debug, Clone, Copy)]
pub struct PairMap<'a> {
    pub(in crate::sink) first: Option<(&'static str, &'a str)>,
    pub(in crate::sink) pairs: Attributes<'a>,
}

impl Serialize for PairMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = self.pairs.len() + usize::from(self.first.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        if let Some((key, value)) = self.first {
            map.serialize_entry(key, value)?;
        }
        for pair in self.pairs.iter() {
            let (key, value) = pair.map_err(S::Error::custom)?;
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}
