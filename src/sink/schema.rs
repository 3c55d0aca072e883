//! Table schemas: which DDL fits a ClickHouse version, how a [`Record`] is encoded as a
//! RowBinary row for each layout, and which layout an existing table has.
//!
//! The server version (`SELECT version()`) is detected once at start-up and picks the
//! DDL for a table we create. The row encoding is then taken from the table as it
//! really is (`system.columns`), so a table created by an older server keeps working
//! after ClickHouse is upgraded, and a table that fits no layout is refused at start-up
//! with a precise message instead of receiving misaligned RowBinary.
//!
//! # Modern schema (ClickHouse ≥ 22.1)
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `logs`.`logs` (
//!     timestamp  DateTime64(9, 'UTC'),
//!     level      LowCardinality(String),
//!     service    LowCardinality(String),
//!     message    String,
//!     trace_id   String,
//!     span_id    String,
//!     attributes Map(String, String)
//! ) ENGINE = MergeTree
//! PARTITION BY toDate(timestamp)
//! ORDER BY (service, timestamp)
//! ```
//!
//! From 22.2 the table also gets `SETTINGS non_replicated_deduplication_window = 1000`
//! after the `ORDER BY`: without it a plain `MergeTree` ignores the INSERTs'
//! `insert_deduplication_token` (see [`dedup`](super::dedup)).
//!
//! Servers from 20.1 (first with `DateTime64`) up to 21.x, where `Map` was still behind
//! `allow_experimental_map_type`, get the same table with
//! `attributes Nested(key String, value String)` instead of the `Map`.
//!
//! # Legacy schema (ClickHouse < 20.1, e.g. Debian's 18.16)
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `logs`.`logs` (
//!     timestamp    DateTime('UTC'),
//!     timestamp_ns UInt64,
//!     level        String,
//!     service      String,
//!     message      String,
//!     trace_id     String,
//!     span_id      String,
//!     attributes   Nested(key String, value String)
//! ) ENGINE = MergeTree
//! PARTITION BY toDate(timestamp)
//! ORDER BY (service, timestamp)
//! ```
//!
//! `DateTime` holds whole seconds only, so `timestamp_ns` keeps the exact event time as
//! nanoseconds since the Unix epoch (`timestamp` is `timestamp_ns` rounded down to the
//! second, for partitioning, the primary key and human-readable queries). From 19.3,
//! where `LowCardinality` is production ready, `level` and `service` are
//! `LowCardinality(String)`; that changes nothing on the wire.
//!
//! # OpenTelemetry layout
//!
//! `CLICKHOUSE_SCHEMA=otel` creates and fills the OpenTelemetry Collector's `otel_logs`
//! instead (ClickHouse ≥ 22.1); see [`otel`].
//!
//! # A cluster
//!
//! `CLICKHOUSE_CLUSTER` creates this table per shard as `<table>_local` and a
//! `Distributed` table over it, `ON CLUSTER`; see [`cluster`].
//!
//! # Common to both native layouts
//!
//! - `level` is one of `trace`, `debug`, `info`, `warn`, `error`, `fatal`.
//! - `trace_id` / `span_id` are lower-case hex, or the empty string when absent.
//! - attributes keep the client's order (and duplicates): `attributes.key[i]` belongs to
//!   `attributes.value[i]`; with `Map`, `attributes['key']` looks a value up.
//! - Daily partitions and `ORDER BY (service, timestamp)`: log queries filter by time
//!   range and usually by service; dropping old days is `ALTER TABLE … DROP PARTITION`.
//! - `DateTime` stores seconds from 1970 to 2106: the legacy layout clamps event times
//!   outside that range to its ends (validation should refuse such records first).

use std::fmt::{self, Write as _};

use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::codec::{FlatAttributes, RecordRef};
use crate::config::TableSchema;

pub mod cluster;
// The RowBinary writer (`sink::rowbinary`) shares the otel row's severity rule.
pub(super) mod otel;
pub use otel::OtelRow;

// === ServerVersion ===

/// `major.minor.patch` of a ClickHouse server (the build number is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> ServerVersion {
        ServerVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses what `SELECT version()` returns: `18.16.1`, `23.8.2.7`, `24.3.1.2672`,
    /// tolerating a suffix after the numbers (`21.8.15.7-lts`, `22.1 (official build)`).
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let mut parts = text.trim().split('.');
        let number = |part: Option<&str>| -> Option<u32> {
            let part = part?;
            let digits = part
                .find(|c: char| !c.is_ascii_digit())
                .map_or(part, |end| &part[..end]);
            digits.parse().ok()
        };
        let major = number(parts.next())?;
        let minor = number(parts.next())?;
        // Some builds report only `major.minor`.
        let patch = number(parts.next()).unwrap_or(0);
        Some(ServerVersion::new(major, minor, patch))
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

// === Features ===

/// What a server version supports, as far as our DDL is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `DateTime64(9)`: since 20.1.
    pub datetime64: bool,
    /// `LowCardinality(String)` without `allow_experimental_low_cardinality_type`:
    /// since 19.3 (ClickHouse PR #4323 removed the setting).
    pub low_cardinality: bool,
    /// `Map(String, String)` without `allow_experimental_map_type`. Map appeared in
    /// 21.1 behind that setting (still required on 21.7); we use it from 22.1.
    pub map: bool,
    /// The query setting `insert_deduplication_token`: since 22.2. Older servers fail a
    /// query that names it, so it is only sent from 22.2 on.
    pub dedup_token: bool,
    /// Table `TTL`: since 19.6.
    pub ttl: bool,
}

impl Features {
    pub const DATETIME64_SINCE: ServerVersion = ServerVersion::new(20, 1, 0);
    pub const LOW_CARDINALITY_SINCE: ServerVersion = ServerVersion::new(19, 3, 0);
    pub const MAP_SINCE: ServerVersion = ServerVersion::new(22, 1, 0);
    pub const DEDUP_TOKEN_SINCE: ServerVersion = ServerVersion::new(22, 2, 0);
    pub const TTL_SINCE: ServerVersion = ServerVersion::new(19, 6, 0);

    pub fn of(version: ServerVersion) -> Features {
        Features {
            datetime64: version >= Self::DATETIME64_SINCE,
            low_cardinality: version >= Self::LOW_CARDINALITY_SINCE,
            map: version >= Self::MAP_SINCE,
            dedup_token: version >= Self::DEDUP_TOKEN_SINCE,
            ttl: version >= Self::TTL_SINCE,
        }
    }

    /// What to assume when the version string cannot be parsed: the legacy layout
    /// works on every ClickHouse version.
    pub fn oldest() -> Features {
        Features {
            datetime64: false,
            low_cardinality: false,
            map: false,
            dedup_token: false,
            ttl: false,
        }
    }

    /// The row layout of a table created with [`create_table_sql`] for these features.
    pub fn layout(self) -> Layout {
        match (self.datetime64, self.map) {
            (true, true) => Layout::DateTime64Map,
            (true, false) => Layout::DateTime64Nested,
            (false, _) => Layout::Legacy,
        }
    }
}

// === Layout ===

/// How rows are encoded; one variant per supported table shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `timestamp DateTime` + `timestamp_ns UInt64`, `attributes Nested(key, value)`.
    Legacy,
    /// `timestamp DateTime64(9)`, `attributes Nested(key, value)`.
    DateTime64Nested,
    /// `timestamp DateTime64(9)`, `attributes Map(String, String)`.
    DateTime64Map,
    /// The OpenTelemetry Collector's `otel_logs` ([`otel`]).
    Otel,
}

impl Layout {
    /// The columns an INSERT of this layout names, in order.
    pub fn column_names(self) -> &'static [&'static str] {
        use clickhouse::Row;
        match self {
            Layout::Legacy => LegacyRow::COLUMN_NAMES,
            Layout::DateTime64Nested => DateTime64NestedRow::COLUMN_NAMES,
            Layout::DateTime64Map => DateTime64MapRow::COLUMN_NAMES,
            Layout::Otel => otel::column_names(),
        }
    }

    /// The `CLICKHOUSE_SCHEMA` this layout belongs to.
    pub fn schema(self) -> TableSchema {
        match self {
            Layout::Otel => TableSchema::Otel,
            _ => TableSchema::Native,
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Legacy => "legacy (DateTime + timestamp_ns, Nested attributes)",
            Layout::DateTime64Nested => "DateTime64(9), Nested attributes",
            Layout::DateTime64Map => "DateTime64(9), Map attributes",
            Layout::Otel => "OpenTelemetry otel_logs",
        })
    }
}

// === DDL ===

/// How many recent INSERT blocks a table we create remembers for deduplication by
/// token (`non_replicated_deduplication_window`); ClickHouse's own default for
/// `replicated_deduplication_window`. It must cover every block committed to the table,
/// by all writers, between an INSERT and its retry or post-crash replay: at 10 INSERTs
/// per second into the table (one block each, two around midnight when the rows span
/// two daily partitions) that is about 100 s, far more than a retry backoff (≤ 5 s) or
/// a restart takes. Each entry costs the server one short line in its deduplication log.
pub const DEDUP_WINDOW: u32 = 1000;

/// Quotes an identifier for ClickHouse SQL (backticks, with `\` and `` ` `` escaped).
pub fn quote_identifier(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('`');
    out
}

/// `` `database`.`table` ``.
pub fn qualified_table(database: &str, table: &str) -> String {
    format!("{}.{}", quote_identifier(database), quote_identifier(table))
}

pub fn create_database_sql(database: &str) -> String {
    format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        quote_identifier(database)
    )
}

/// What the operator chose for a table zero-logs creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    pub schema: TableSchema,
    /// 0: no TTL.
    pub ttl_days: u32,
}

/// The `CREATE TABLE IF NOT EXISTS` of `options.schema` for a server with `features`,
/// or why that server cannot hold it.
pub fn table_ddl(
    database: &str,
    table: &str,
    features: Features,
    options: TableOptions,
    version: &str,
) -> Result<String, String> {
    if options.ttl_days > 0 && !features.ttl {
        return Err(format!(
            "CLICKHOUSE_TTL_DAYS={} needs ClickHouse {} or newer for table TTLs, and this \
             server is {version}; set CLICKHOUSE_TTL_DAYS=0 (and drop old partitions \
             yourself) or upgrade ClickHouse",
            options.ttl_days,
            Features::TTL_SINCE
        ));
    }
    match options.schema {
        TableSchema::Native => Ok(create_table_sql(
            database,
            table,
            features,
            options.ttl_days,
        )),
        TableSchema::Otel if features.map && features.datetime64 => Ok(otel::create_table_sql(
            &qualified_table(database, table),
            features,
            options.ttl_days,
        )),
        TableSchema::Otel => Err(format!(
            "CLICKHOUSE_SCHEMA=otel needs ClickHouse {} or newer (DateTime64 and Map \
             columns), and this server is {version}; use CLICKHOUSE_SCHEMA=native or \
             upgrade ClickHouse",
            Features::MAP_SINCE
        )),
    }
}

/// The native `CREATE TABLE IF NOT EXISTS` for a server with `features` (schemas in the
/// module documentation); a TTL only where `features.ttl`.
pub fn create_table_sql(database: &str, table: &str, features: Features, ttl_days: u32) -> String {
    let short = if features.low_cardinality {
        "LowCardinality(String)"
    } else {
        "String"
    };
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n",
        qualified_table(database, table)
    );
    let mut column = |name: &str, ty: &str| {
        // Writing to a String cannot fail.
        let _ = writeln!(sql, "    {name} {ty},");
    };
    if features.datetime64 {
        column("timestamp", "DateTime64(9, 'UTC')");
    } else {
        column("timestamp", "DateTime('UTC')");
        column("timestamp_ns", "UInt64");
    }
    column("level", short);
    column("service", short);
    column("message", "String");
    column("trace_id", "String");
    column("span_id", "String");
    if features.map {
        column("attributes", "Map(String, String)");
    } else {
        column("attributes", "Nested(key String, value String)");
    }
    // Drop the last ",\n" to close the column list.
    sql.truncate(sql.len() - 2);
    sql.push_str(
        "\n) ENGINE = MergeTree\nPARTITION BY toDate(timestamp)\nORDER BY (service, timestamp)",
    );
    if ttl_days > 0 && features.ttl {
        let _ = write!(
            sql,
            "\nTTL toDateTime(timestamp) + toIntervalDay({ttl_days})"
        );
    }
    if features.dedup_token {
        // A plain MergeTree ignores deduplication tokens while this window is 0.
        let _ = write!(
            sql,
            "\nSETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
        );
    }
    sql
}

// === Table check ===

/// Finds the layout of an existing table from its `(name, type)` columns, as listed by
/// `system.columns`, for the configured `schema`. Extra columns are fine (they get
/// their defaults); ours must have a type whose RowBinary encoding is the one we send.
/// The error lists every problem, each with the `ALTER TABLE` (on `table`, quoted) that
/// fixes it.
pub fn detect_layout(
    columns: &[(String, String)],
    table: &str,
    schema: TableSchema,
) -> Result<Layout, String> {
    let mut check = ColumnCheck {
        columns,
        table,
        problems: Vec::new(),
    };
    let layout = match schema {
        TableSchema::Native => {
            if check.has("Body") && check.has("Timestamp") && !check.has("message") {
                return Err("the table has the OpenTelemetry layout; set \
                            CLICKHOUSE_SCHEMA=otel to write it"
                    .into());
            }
            native_layout(&mut check)
        }
        TableSchema::Otel => {
            if check.has("message") && check.has("timestamp") && !check.has("Body") {
                return Err("the table has the native zero-logs layout; set \
                            CLICKHOUSE_SCHEMA=native to write it, or point \
                            CLICKHOUSE_TABLE at a new table"
                    .into());
            }
            for (name, ddl, wire) in otel::COLUMNS {
                let ty = ddl.split(" CODEC").next().unwrap_or(ddl);
                check.expect(name, wire, ty, ty);
            }
            Layout::Otel
        }
    };
    if check.problems.is_empty() {
        Ok(layout)
    } else {
        Err(check.problems.join("; "))
    }
}

fn native_layout(check: &mut ColumnCheck<'_>) -> Layout {
    let datetime64 = match check.find("timestamp").as_deref() {
        Some("DateTime64(9)") => true,
        Some("DateTime") => {
            check.expect("timestamp_ns", "UInt64", "UInt64", "UInt64");
            false
        }
        _ => {
            let hint = "DateTime64(9) or DateTime with a timestamp_ns UInt64 column";
            check.expect("timestamp", "DateTime64(9)", hint, "DateTime64(9, 'UTC')");
            false
        }
    };
    for name in ["level", "service", "message", "trace_id", "span_id"] {
        let ty = if matches!(name, "level" | "service") {
            "LowCardinality(String)"
        } else {
            "String"
        };
        check.expect(name, "String", "String or LowCardinality(String)", ty);
    }
    let map = if check.has("attributes") {
        let map = "Map(String, String)";
        check.expect("attributes", "Map(String,String)", map, map);
        true
    } else {
        let hint = "Array(String), from attributes Nested(key String, value String)";
        for name in ["attributes.key", "attributes.value"] {
            check.expect(name, "Array(String)", hint, "Array(String)");
        }
        false
    };
    if !datetime64 && map && check.problems.is_empty() {
        check.problems.push(
            "a DateTime timestamp with Map attributes is not a supported combination; \
             make `timestamp` DateTime64(9, 'UTC')"
                .into(),
        );
    }
    match (datetime64, map) {
        (false, _) => Layout::Legacy,
        (true, false) => Layout::DateTime64Nested,
        (true, true) => Layout::DateTime64Map,
    }
}

/// The columns of the ORDER BY and PARTITION BY of the tables we create.
const KEY_COLUMNS: [&str; 4] = ["timestamp", "service", "Timestamp", "ServiceName"];

/// A table's columns against what a layout needs; collects the problems.
struct ColumnCheck<'a> {
    columns: &'a [(String, String)],
    /// Quoted `database.table`, for the ALTERs.
    table: &'a str,
    problems: Vec<String>,
}

impl ColumnCheck<'_> {
    fn declared(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ty)| ty.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.declared(name).is_some()
    }

    /// The column's type as RowBinary sees it.
    fn find(&self, name: &str) -> Option<String> {
        self.declared(name).map(wire_type)
    }

    /// Column `name` must be `wanted` on the wire; else a problem saying `hint` and the
    /// ALTER to type `ddl`.
    fn expect(&mut self, name: &str, wanted: &str, hint: &str, ddl: &str) {
        let column = quote_identifier(name);
        let problem = match self.declared(name) {
            Some(found) if wire_type(found) == wanted => return,
            // Both 18.16 and 26.9 refuse that ALTER for a column of the sorting or
            // partition key ("ALTER of key column … is forbidden").
            Some(found) if KEY_COLUMNS.contains(&name) => format!(
                "column `{name}` is {found}, expected {hint} (fix: when `{name}` is in the \
                 table's ORDER BY or PARTITION BY, as in the tables zero-logs creates, \
                 ClickHouse cannot change its type: point CLICKHOUSE_TABLE at a new table; \
                 otherwise ALTER TABLE {} MODIFY COLUMN {column} {ddl})",
                self.table
            ),
            Some(found) => format!(
                "column `{name}` is {found}, expected {hint} (fix: ALTER TABLE {} MODIFY \
                 COLUMN {column} {ddl})",
                self.table
            ),
            None => format!(
                "column `{name}` is missing ({hint}; fix: ALTER TABLE {} ADD COLUMN {column} \
                 {ddl})",
                self.table
            ),
        };
        self.problems.push(problem);
    }
}

/// Reduces a ClickHouse type to what matters for RowBinary: no spaces, no
/// `LowCardinality(…)` wrapper (same wire format as the inner type), no time zone on
/// `DateTime`/`DateTime64` (the stored value is UTC either way).
fn wire_type(ty: &str) -> String {
    let mut t: String = ty.chars().filter(|c| !c.is_whitespace()).collect();
    const LC: &str = "LowCardinality(";
    while let Some(start) = t.find(LC) {
        let inner_start = start + LC.len();
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in t[inner_start..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(inner_start + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        t = format!("{}{}{}", &t[..start], &t[inner_start..end], &t[end + 1..]);
    }
    if let Some(args) = t.strip_prefix("DateTime64(") {
        let precision: String = args.chars().take_while(char::is_ascii_digit).collect();
        return format!("DateTime64({precision})");
    }
    if t.starts_with("DateTime(") {
        return "DateTime".to_string();
    }
    t
}

// === Rows ===
//
// One borrowed row struct per layout: encoding a `RecordRef` copies no string, it only
// points into the encoded batch. Field order is column order (RowBinary has no names).

/// Row of the [`Layout::Legacy`] table.
#[derive(Debug, clickhouse::Row, serde::Serialize)]
pub struct LegacyRow<'a> {
    /// `DateTime`: seconds since the epoch, clamped to `DateTime`'s range.
    pub timestamp: u32,
    /// Nanoseconds since the epoch.
    pub timestamp_ns: u64,
    pub level: &'static str,
    pub service: &'a str,
    pub message: &'a str,
    pub trace_id: &'a str,
    pub span_id: &'a str,
    #[serde(rename = "attributes.key")]
    pub attribute_keys: AttributeKeys<'a>,
    #[serde(rename = "attributes.value")]
    pub attribute_values: AttributeValues<'a>,
}

/// Row of the [`Layout::DateTime64Nested`] table.
#[derive(Debug, clickhouse::Row, serde::Serialize)]
pub struct DateTime64NestedRow<'a> {
    /// `DateTime64(9)`: nanoseconds since the epoch.
    pub timestamp: i64,
    pub level: &'static str,
    pub service: &'a str,
    pub message: &'a str,
    pub trace_id: &'a str,
    pub span_id: &'a str,
    #[serde(rename = "attributes.key")]
    pub attribute_keys: AttributeKeys<'a>,
    #[serde(rename = "attributes.value")]
    pub attribute_values: AttributeValues<'a>,
}

/// Row of the [`Layout::DateTime64Map`] table.
#[derive(Debug, clickhouse::Row, serde::Serialize)]
pub struct DateTime64MapRow<'a> {
    /// `DateTime64(9)`: nanoseconds since the epoch.
    pub timestamp: i64,
    pub level: &'static str,
    pub service: &'a str,
    pub message: &'a str,
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub attributes: AttributeMap<'a>,
}

/// The legacy layout's `timestamp` and `timestamp_ns` for an event time: seconds
/// clamped to `DateTime`'s range (1970 … 2106), and the nanoseconds, 0 before 1970.
#[inline]
pub(super) fn legacy_timestamps(timestamp_ns: i64) -> (u32, u64) {
    let ns = timestamp_ns.max(0) as u64;
    (u32::try_from(ns / 1_000_000_000).unwrap_or(u32::MAX), ns)
}

impl<'a> LegacyRow<'a> {
    #[inline]
    pub fn new(record: RecordRef<'a>) -> LegacyRow<'a> {
        let (timestamp, timestamp_ns) = legacy_timestamps(record.timestamp_ns);
        LegacyRow {
            timestamp,
            timestamp_ns,
            level: record.level.as_str(),
            service: record.service,
            message: record.message,
            trace_id: record.trace_id,
            span_id: record.span_id,
            attribute_keys: AttributeKeys(record.flat_attributes()),
            attribute_values: AttributeValues(record.flat_attributes()),
        }
    }
}

impl<'a> DateTime64NestedRow<'a> {
    #[inline]
    pub fn new(record: RecordRef<'a>) -> DateTime64NestedRow<'a> {
        DateTime64NestedRow {
            timestamp: record.timestamp_ns,
            level: record.level.as_str(),
            service: record.service,
            message: record.message,
            trace_id: record.trace_id,
            span_id: record.span_id,
            attribute_keys: AttributeKeys(record.flat_attributes()),
            attribute_values: AttributeValues(record.flat_attributes()),
        }
    }
}

impl<'a> DateTime64MapRow<'a> {
    #[inline]
    pub fn new(record: RecordRef<'a>) -> DateTime64MapRow<'a> {
        DateTime64MapRow {
            timestamp: record.timestamp_ns,
            level: record.level.as_str(),
            service: record.service,
            message: record.message,
            trace_id: record.trace_id,
            span_id: record.span_id,
            attributes: AttributeMap(record.flat_attributes()),
        }
    }
}

/// The keys of a record's attributes as an `Array(String)`, without collecting them.
#[derive(Debug, Clone, Copy)]
pub struct AttributeKeys<'a>(pub FlatAttributes<'a>);

/// The values of a record's attributes as an `Array(String)`, without collecting them.
#[derive(Debug, Clone, Copy)]
pub struct AttributeValues<'a>(pub FlatAttributes<'a>);

/// A record's attributes as a `Map(String, String)`, in the client's order.
#[derive(Debug, Clone, Copy)]
pub struct AttributeMap<'a>(pub FlatAttributes<'a>);

// RowBinary needs each array's length up front: `Attributes` knows it, and its pairs
// are read from the encoded batch as they are written. A pair that does not decode
// (corrupted memory; the batch was checked when it was built) fails the INSERT.

impl Serialize for AttributeKeys<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_column(self.0, serializer, |(key, _)| key)
    }
}

impl Serialize for AttributeValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_column(self.0, serializer, |(_, value)| value)
    }
}

/// One side of the pairs as an `Array(String)`.
fn serialize_column<'a, S: Serializer>(
    attributes: FlatAttributes<'a>,
    serializer: S,
    side: fn((&'a str, &'a str)) -> &'a str,
) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(attributes.len()))?;
    for pair in attributes.iter() {
        seq.serialize_element(side(pair.map_err(S::Error::custom)?))?;
    }
    seq.end()
}

impl Serialize for AttributeMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The client's order (and duplicate keys) untouched.
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for pair in self.0.iter() {
            let (key, value) = pair.map_err(S::Error::custom)?;
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests;
