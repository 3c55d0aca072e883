//! Schema drift (issue 19 item 5) against the real engines: a table whose columns do
//! not fit is refused at start-up with a message naming the column, the type found,
//! the type expected and the `ALTER` that fixes it; the test then runs exactly the
//! ALTERs the message names and the sink must connect, insert and read back.
//!
//! Native layouts run on both engines ([`on_both_engines!`]): Debian's 18.16 (legacy
//! layout: `DateTime` + `timestamp_ns`, `Nested` attributes) and the 26.9 engine behind
//! the chdb front (`DateTime64(9)`, `Map`); the OpenTelemetry layout on 26.9, and on
//! 18.16 only its refusal. A table of one schema under the other `CLICKHOUSE_SCHEMA`
//! is refused with a message naming the schema the table has.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use zero_logs::codec::EncodedBatch;
use zero_logs::config::{ClickHouseConfig, Compression, TableSchema};
use zero_logs::record::{Batch, Level, Record};
use zero_logs::sink::schema::{self, Features, TableOptions};
use zero_logs::sink::{ClickHouseSink, Layout, ServerVersion, SinkError};
use zero_logs::testing::{ColumnsSql, Engine, EngineKind};

zero_logs::on_both_engines!(
    native_drift_is_refused_then_fixed_by_the_named_alters,
    a_key_column_of_the_wrong_type_asks_for_a_new_table,
    a_native_table_is_refused_under_the_otel_schema,
);

fn config(url: &str, database: &str, table: &str, schema: TableSchema) -> ClickHouseConfig {
    ClickHouseConfig {
        url: url.to_string(),
        database: database.to_string(),
        table: table.to_string(),
        user: "default".to_string(),
        password: String::new(),
        // Drifted tables are made by hand; connect must only look at them.
        create_table: false,
        retry_budget: Duration::from_secs(1),
        insert_timeout: Duration::from_secs(5),
        compression: Compression::Lz4,
        schema,
        ttl_days: 0,
        cluster: None,
    }
}

/// The reason of the [`SinkError::Rejected`] that `connect` must give.
async fn refusal(cfg: &ClickHouseConfig) -> Result<String> {
    match ClickHouseSink::connect(cfg).await {
        Err(SinkError::Rejected { reason }) => Ok(reason),
        Err(other) => bail!("expected Rejected, got {other}"),
        Ok(sink) => bail!("expected Rejected, connected with layout {}", sink.layout()),
    }
}

/// Every `ALTER TABLE …` of a refusal: each ends where the parenthesis around its
/// `(fix: …)` closes.
fn alters(message: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = message;
    while let Some(start) = rest.find("ALTER TABLE ") {
        let tail = &rest[start..];
        let mut depth = 0i32;
        let end = tail
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth < 0
            })
            .map_or(tail.len(), |(i, _)| i);
        found.push(tail[..end].trim().to_string());
        rest = &tail[end..];
    }
    found
}

/// Runs the ALTERs of `message` and returns them; at least `expected` of them.
fn run_alters(ch: &Engine, message: &str, expected: usize) -> Result<Vec<String>> {
    let alters = alters(message);
    assert_eq!(alters.len(), expected, "ALTERs in: {message}");
    for alter in &alters {
        ch.query(alter)
            .with_context(|| format!("the suggested `{alter}` failed"))?;
    }
    Ok(alters)
}

fn record(message: &str) -> Record {
    Record {
        timestamp_ns: 1_700_000_000_123_456_789,
        level: Level::Warn,
        service: "drift".into(),
        message: message.into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        attributes: vec![("k".into(), "v".into()), ("ключ".into(), "🙂".into())],
        otel: None,
    }
}

/// Connects (must work now), inserts one record and reads it back field by field.
async fn insert_and_read_back(ch: &Engine, cfg: &ClickHouseConfig) -> Result<Layout> {
    let sink = ClickHouseSink::connect(cfg)
        .await
        .context("connect after the suggested ALTERs")?;
    let sent = record(&format!("after the fix of {}", cfg.table));
    sink.insert(
        &[EncodedBatch::encode(&Batch::new(vec![sent.clone()]))],
        None,
    )
    .await?;
    let layout = sink.layout();
    let ColumnsSql { ns, keys, values } = ColumnsSql::of(layout);
    let (level, service, message, trace, span) = match layout {
        Layout::Otel => ("SeverityText", "ServiceName", "Body", "TraceId", "SpanId"),
        _ => ("level", "service", "message", "trace_id", "span_id"),
    };
    let body = ch.query(&format!(
        "SELECT toString({ns}) AS ns, {level} AS level, {service} AS service, \
         {message} AS message, {trace} AS trace, {span} AS span, {keys} AS k, {values} AS v \
         FROM {}.{} WHERE {message} = '{}' FORMAT JSONEachRow",
        cfg.database, cfg.table, sent.message
    ))?;
    let rows: Vec<Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 1, "{body}");
    let got = &rows[0];
    assert_eq!(got["ns"], sent.timestamp_ns.to_string());
    let level_text = match layout {
        Layout::Otel => sent.level.severity_text(),
        _ => sent.level.as_str(),
    };
    assert_eq!(got["level"], level_text);
    assert_eq!(got["service"], sent.service.as_str());
    assert_eq!(got["trace"], sent.trace_id.as_str());
    assert_eq!(got["span"], sent.span_id.as_str());
    let pairs: Vec<(String, String)> = serde_json::from_value::<Vec<String>>(got["k"].clone())?
        .into_iter()
        .zip(serde_json::from_value::<Vec<String>>(got["v"].clone())?)
        .collect();
    assert_eq!(pairs, sent.attributes);
    Ok(layout)
}

/// The DDL zero-logs would create for `schema` on this engine, for tables the tests
/// then change by hand.
fn our_ddl(ch: &Engine, db: &str, table: &str, schema: TableSchema) -> Result<String> {
    let version = ch.query("SELECT version()")?;
    let parsed = ServerVersion::parse(&version).context("version")?;
    let options = TableOptions {
        schema,
        ttl_days: 0,
    };
    schema::table_ddl(db, table, Features::of(parsed), options, version.trim())
        .map_err(anyhow::Error::msg)
}

/// Changes `from` into `to` in `ddl`, which must contain it.
fn drift(ddl: &str, from: &str, to: &str) -> String {
    assert!(ddl.contains(from), "{from:?} in {ddl}");
    ddl.replacen(from, to, 1)
}

// === Native layouts, both engines ===

async fn native_drift_is_refused_then_fixed_by_the_named_alters(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let cfg = config(&ch.http_url(), &db, "logs", TableSchema::Native);
    // Our own table with `level` a number, no `span_id`, for the attributes a value
    // column of the wrong type (Nested on 18.16) or a Map of numbers (26.9), and on
    // 18.16 no `timestamp_ns`.
    let ddl = our_ddl(&ch, &db, "logs", TableSchema::Native)?;
    let level = if ddl.contains("level LowCardinality(String)") {
        "level LowCardinality(String)"
    } else {
        "level String"
    };
    let mut ddl = drift(&ddl, level, "level UInt8");
    ddl = drift(&ddl, "    span_id String,\n", "");
    let (attributes, wrong_attributes, layout) = if kind == EngineKind::Server {
        (
            "attributes Nested(key String, value String)",
            "attributes Nested(key String, value UInt32)",
            Layout::Legacy,
        )
    } else {
        (
            "attributes Map(String, String)",
            "attributes Map(String, UInt64)",
            Layout::DateTime64Map,
        )
    };
    ddl = drift(&ddl, attributes, wrong_attributes);
    if kind == EngineKind::Server {
        ddl = drift(&ddl, "    timestamp_ns UInt64,\n", "");
    }
    ch.query(&ddl)?;
    // A row from before the drift was noticed: the ALTERs must convert it too.
    ch.query(&format!(
        "INSERT INTO {db}.logs (level, service, message) VALUES (3, 'old', 'before')"
    ))?;

    let message = refusal(&cfg).await?;
    let table = format!("`{db}`.`logs`");
    assert!(
        message.contains(&format!("table {table}"))
            && message.contains("does not fit the native schema"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "column `level` is UInt8, expected String or LowCardinality(String) (fix: ALTER \
             TABLE {table} MODIFY COLUMN `level` LowCardinality(String))"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "column `span_id` is missing (String or LowCardinality(String); fix: ALTER TABLE \
             {table} ADD COLUMN `span_id` String)"
        )),
        "{message}"
    );
    let attribute_problem = if kind == EngineKind::Server {
        format!(
            "column `attributes.value` is Array(UInt32), expected Array(String), from \
             attributes Nested(key String, value String) (fix: ALTER TABLE {table} MODIFY \
             COLUMN `attributes.value` Array(String))"
        )
    } else {
        format!(
            "column `attributes` is Map(String, UInt64), expected Map(String, String) (fix: \
             ALTER TABLE {table} MODIFY COLUMN `attributes` Map(String, String))"
        )
    };
    assert!(message.contains(&attribute_problem), "{message}");
    let mut problems = 3;
    if kind == EngineKind::Server {
        assert!(
            message.contains(&format!(
                "column `timestamp_ns` is missing (UInt64; fix: ALTER TABLE {table} ADD COLUMN \
                 `timestamp_ns` UInt64)"
            )),
            "{message}"
        );
        problems += 1;
    }

    run_alters(&ch, &message, problems)?;
    assert_eq!(insert_and_read_back(&ch, &cfg).await?, layout);
    // The old row survived the conversions.
    let old = ch.query(&format!(
        "SELECT level, message, span_id FROM {db}.logs WHERE service = 'old' FORMAT TSV"
    ))?;
    assert_eq!(old, "3\tbefore\t\n");
    Ok(())
}

async fn a_key_column_of_the_wrong_type_asks_for_a_new_table(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let cfg = config(&ch.http_url(), &db, "logs", TableSchema::Native);
    // `service` is in ORDER BY (service, timestamp): no server changes its type.
    let ddl = our_ddl(&ch, &db, "logs", TableSchema::Native)?;
    let service = if ddl.contains("service LowCardinality(String)") {
        "service LowCardinality(String)"
    } else {
        "service String"
    };
    ch.query(&drift(&ddl, service, "service UInt16"))?;

    let message = refusal(&cfg).await?;
    assert!(
        message.contains("column `service` is UInt16, expected String or LowCardinality(String)")
            && message.contains("ORDER BY or PARTITION BY")
            && message.contains("point CLICKHOUSE_TABLE at a new table"),
        "{message}"
    );
    // The ALTER named for tables without that key is indeed refused for this one.
    let [alter] = alters(&message).try_into().expect("one ALTER");
    let error = ch
        .query(&alter)
        .expect_err("ALTER of a key column")
        .to_string();
    assert!(error.contains("key column"), "{error}");

    // The advice works: a new table is created and written.
    let fresh = ClickHouseConfig {
        table: "logs_new".into(),
        create_table: true,
        ..cfg
    };
    insert_and_read_back(&ch, &fresh).await?;
    Ok(())
}

async fn a_native_table_is_refused_under_the_otel_schema(kind: EngineKind) -> Result<()> {
    let ch = Engine::start(kind)?;
    let db = ch.fresh_database();
    let native = ClickHouseConfig {
        create_table: true,
        ..config(&ch.http_url(), &db, "logs", TableSchema::Native)
    };
    drop(ClickHouseSink::connect(&native).await?);
    let otel = ClickHouseConfig {
        schema: TableSchema::Otel,
        ..native.clone()
    };
    let message = refusal(&otel).await?;
    assert!(
        message.contains("does not fit the otel schema")
            && message.contains("the table has the native zero-logs layout")
            && message.contains("set CLICKHOUSE_SCHEMA=native"),
        "{message}"
    );
    Ok(())
}

// === OpenTelemetry layout ===

#[tokio::test]
async fn otel_drift_is_refused_then_fixed_by_the_named_alters() -> Result<()> {
    let ch = Engine::start(EngineKind::Chdb)?;
    let db = ch.fresh_database();
    let cfg = config(&ch.http_url(), &db, "otel_logs", TableSchema::Otel);
    // The exporter's table without `EventName` (collector-contrib before 0.140), and
    // with `SeverityNumber` and `TraceFlags` as other tools declare them.
    let ddl = our_ddl(&ch, &db, "otel_logs", TableSchema::Otel)?;
    let mut ddl = drift(&ddl, "    EventName String CODEC(ZSTD(1)),\n", "");
    ddl = drift(&ddl, "SeverityNumber UInt8", "SeverityNumber Int32");
    ddl = drift(&ddl, "TraceFlags UInt8", "TraceFlags UInt32");
    ch.query(&ddl)?;
    ch.query(&format!(
        "INSERT INTO {db}.otel_logs (Timestamp, SeverityNumber, TraceFlags, ServiceName, Body) \
         VALUES (now64(9), 9, 1, 'old', 'before')"
    ))?;

    let message = refusal(&cfg).await?;
    let table = format!("`{db}`.`otel_logs`");
    assert!(
        message.contains("does not fit the otel schema"),
        "{message}"
    );
    for problem in [
        format!(
            "column `SeverityNumber` is Int32, expected UInt8 (fix: ALTER TABLE {table} \
             MODIFY COLUMN `SeverityNumber` UInt8)"
        ),
        format!(
            "column `TraceFlags` is UInt32, expected UInt8 (fix: ALTER TABLE {table} MODIFY \
             COLUMN `TraceFlags` UInt8)"
        ),
        format!(
            "column `EventName` is missing (String; fix: ALTER TABLE {table} ADD COLUMN \
             `EventName` String)"
        ),
    ] {
        assert!(message.contains(&problem), "{problem}\nnot in: {message}");
    }

    run_alters(&ch, &message, 3)?;
    assert_eq!(insert_and_read_back(&ch, &cfg).await?, Layout::Otel);
    let old = ch.query(&format!(
        "SELECT SeverityNumber, TraceFlags, Body, EventName FROM {db}.otel_logs \
         WHERE ServiceName = 'old' FORMAT TSV"
    ))?;
    assert_eq!(old, "9\t1\tbefore\t\n");
    Ok(())
}

#[tokio::test]
async fn an_otel_table_is_refused_under_the_native_schema() -> Result<()> {
    let ch = Engine::start(EngineKind::Chdb)?;
    let db = ch.fresh_database();
    let otel = ClickHouseConfig {
        create_table: true,
        ..config(&ch.http_url(), &db, "otel_logs", TableSchema::Otel)
    };
    assert_eq!(ClickHouseSink::connect(&otel).await?.layout(), Layout::Otel);
    let native = ClickHouseConfig {
        schema: TableSchema::Native,
        ..otel
    };
    let message = refusal(&native).await?;
    assert!(
        message.contains("does not fit the native schema")
            && message.contains("the table has the OpenTelemetry layout")
            && message.contains("set CLICKHOUSE_SCHEMA=otel"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn otel_needs_clickhouse_22_1_and_says_which_server_it_found() -> Result<()> {
    let ch = Engine::start(EngineKind::Server)?;
    let db = ch.fresh_database();
    let cfg = ClickHouseConfig {
        create_table: true,
        ..config(&ch.http_url(), &db, "otel_logs", TableSchema::Otel)
    };
    let version = ch.query("SELECT version()")?.trim().to_string();
    assert!(version.starts_with("18.16"), "{version}");
    let message = refusal(&cfg).await?;
    assert!(
        message.contains(&format!("cannot create table `{db}`.`otel_logs`"))
            && message.contains("CLICKHOUSE_SCHEMA=otel needs ClickHouse 22.1")
            && message.contains(&format!("this server is {version}"))
            && message.contains("use CLICKHOUSE_SCHEMA=native or upgrade ClickHouse"),
        "{message}"
    );
    assert!(!message.contains("  "), "no runs of spaces: {message:?}");
    // Nothing was created.
    let tables = ch.query(&format!(
        "SELECT count() FROM system.tables WHERE database = '{db}'"
    ))?;
    assert_eq!(tables.trim(), "0");
    Ok(())
}
