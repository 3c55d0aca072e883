//! `<table>_rejected`: the dead-letter table next to the log table, its DDL (the same
//! on 18.16 and current servers, plus the deduplication window where tokens exist) and
//! [`ClickHouseDeadLetters`], which writes it through the sink's client.
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `logs`.`logs_rejected` (
//!     time       DateTime('UTC'),  -- when the row was dead-lettered
//!     table_name String,           -- `database.table` that refused it
//!     frame      String,           -- spool frame id, as in the worker's log
//!     reason     String,           -- type_mismatch | constraint | too_large | other
//!     code       UInt32,           -- ClickHouse exception code (0: none)
//!     error      String,           -- the exception text, trimmed to ~1000 bytes
//!     record     String            -- the record as the JSON a client sends
//! ) ENGINE = MergeTree
//! PARTITION BY toYYYYMM(time)
//! ORDER BY time
//! ```
//!
//! From 22.2 the table gets `SETTINGS non_replicated_deduplication_window = 1000`, so a
//! frame's letters written again after a crash (same token) are stored once.
//!
//! With several endpoints the table is created on every endpoint connected at
//! start-up, and on one connected later before its first letters; letters go to an
//! endpoint that is up (see [`ClickHouseEndpoints::healthy`]).

use std::future::Future;
use std::sync::{Arc, PoisonError};

use super::{DeadLetter, DeadLetterTable};
use crate::config::ClickHouseConfig;
use crate::sink::schema::{qualified_table, DEDUP_WINDOW};
use crate::sink::{ClickHouseEndpoints, ClickHouseSink, SinkError};

/// The dead-letter table of `table`.
pub fn table_name(table: &str) -> String {
    format!("{table}_rejected")
}

/// `CREATE TABLE IF NOT EXISTS` for the dead-letter table of `database.table`;
/// `dedup_window`: the server honours deduplication tokens (≥ 22.2).
pub fn create_table_sql(database: &str, table: &str, dedup_window: bool) -> String {
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    time DateTime('UTC'),\n    table_name String,\n    \
         frame String,\n    reason String,\n    code UInt32,\n    error String,\n    \
         record String\n) ENGINE = MergeTree\nPARTITION BY toYYYYMM(time)\nORDER BY time",
        qualified_table(database, &table_name(table))
    );
    if dedup_window {
        sql.push_str(&format!(
            "\nSETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
        ));
    }
    sql
}

/// The query that shows the newest dead letters (logged at start-up; README,
/// docs/SPOOL.md).
pub fn recent_query(database: &str, table: &str) -> String {
    format!(
        "SELECT time, reason, code, error, record FROM {} ORDER BY time DESC LIMIT 100",
        qualified_table(database, &table_name(table))
    )
}

/// A row of the dead-letter table; field order is column order.
#[derive(Debug, clickhouse::Row, serde::Serialize)]
struct DeadLetterRow<'a> {
    time: u32,
    table_name: &'a str,
    frame: &'a str,
    reason: &'static str,
    code: u32,
    error: &'a str,
    record: &'a str,
}

/// Writes dead letters to `<table>_rejected` with the sink's client and settings.
#[derive(Debug)]
pub struct ClickHouseDeadLetters {
    sink: Arc<ClickHouseEndpoints>,
    /// Quoted `` `database`.`table_rejected` ``.
    table: String,
    /// `(database, table)` of the log table when tables are created
    /// (`CLICKHOUSE_CREATE_TABLE`).
    create: Option<(String, String)>,
    /// Endpoints (redacted URLs) the table was created on: one connected after
    /// start-up gets it before its first letters.
    created_on: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl ClickHouseDeadLetters {
    pub fn new(sink: Arc<ClickHouseEndpoints>, cfg: &ClickHouseConfig) -> ClickHouseDeadLetters {
        ClickHouseDeadLetters {
            sink,
            table: qualified_table(&cfg.database, &table_name(&cfg.table)),
            create: cfg
                .create_table
                .then(|| (cfg.database.clone(), cfg.table.clone())),
            created_on: Default::default(),
        }
    }

    /// The table written to, quoted.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table when `cfg.create_table`. A failure is logged, not fatal: the
    /// dead letters then go to the file, and a worker whose user may only INSERT must
    /// still start.
    pub async fn ensure_table(&self, cfg: &ClickHouseConfig) {
        if !cfg.create_table {
            return;
        }
        for sink in self.sink.connected() {
            self.ensure_on(&sink).await;
        }
    }

    /// Creates the table on `sink`'s server once, when tables are created.
    async fn ensure_on(&self, sink: &ClickHouseSink) {
        let Some((database, table)) = &self.create else {
            return;
        };
        let lock = || {
            self.created_on
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if lock().contains(sink.url()) {
            return;
        }
        let ddl = create_table_sql(database, table, sink.sends_dedup_token());
        let created = sink.execute(&ddl).await;
        if created.is_ok() {
            lock().insert(sink.url().to_string());
        }
        self.report(sink.url(), database, table, created);
    }

    fn report(&self, url: &str, database: &str, table: &str, created: Result<(), SinkError>) {
        match created {
            Ok(()) => tracing::info!(
                table = %self.table,
                endpoint = %url,
                query = %recent_query(database, table),
                "dead-letter table ready: rows ClickHouse refuses for good are kept there"
            ),
            Err(error) => tracing::warn!(
                table = %self.table,
                endpoint = %url,
                error = %error,
                "cannot create the dead-letter table; rows ClickHouse refuses will go to the \
                 spool's quarantine/dead-letter.jsonl"
            ),
        }
    }
}

impl DeadLetterTable for ClickHouseDeadLetters {
    fn write(
        &self,
        letters: &[DeadLetter],
        token: Option<&str>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        let rows: Vec<DeadLetterRow<'_>> = letters
            .iter()
            .map(|letter| DeadLetterRow {
                time: letter.time_unix_s,
                table_name: &letter.table,
                frame: &letter.frame,
                reason: letter.reason.as_str(),
                code: letter.code,
                error: &letter.error,
                record: &letter.record,
            })
            .collect();
        async move {
            let Some(sink) = self.sink.healthy() else {
                return Err(SinkError::Unavailable {
                    reason: "no ClickHouse endpoint is connected".into(),
                });
            };
            self.ensure_on(&sink).await;
            sink.insert_rows::<DeadLetterRow<'static>>(&self.table, &rows, token)
                .await
        }
    }
}
