//! [`ClickHouseSink`]: one INSERT attempt at a time, through the official `clickhouse`
//! crate (HTTP, RowBinary, LZ4), plus start-up and `ping`.
//!
//! Start-up ([`ClickHouseSink::connect`]) asks the server's version once, creates the
//! database and table when configured to (DDL from [`schema`]), then reads the table's
//! real columns and picks the matching row [`Layout`]. Nothing is retried here: the
//! batcher owns retries, and a worker that cannot connect at start-up should fail loudly.
//!
//! An INSERT's deduplication token (see [`dedup`](super::dedup)) is sent as the query
//! setting `insert_deduplication_token` only to servers from 22.2 on: older ones do not
//! know the setting and would fail the query. On a plain `MergeTree` the server uses it
//! only when the table has `non_replicated_deduplication_window` > 0 (set by our DDL;
//! an operator-created table needs `ALTER TABLE … MODIFY SETTING`, see `docs/SPOOL.md`);
//! otherwise sending it is harmless.
//!
//! The client is built `with_validation(false)`: the crate's schema check uses a setting
//! that ClickHouse 18.16 does not know, and we check the table ourselves at start-up.
//! INSERTs write RowBinary straight from the encoded batches' raw views
//! ([`rowbinary`](super::rowbinary)) and send it with the crate's `InsertFormatted`:
//! no serde and no per-row call into the crate. The dead-letter table's few rows still
//! go through the crate's typed `Insert`.

use std::time::Duration;

use bytes::Bytes;
use clickhouse::{Client, Row, RowWrite};
use serde::Deserialize;

use super::dedup::TOKEN_SETTING;
use super::retry::{self, Class};
use super::rowbinary::{self, RowWriter};
use super::schema::{self, Features, Layout, TableOptions};
use super::{Sink, SinkError};
use crate::codec::{CodecError, EncodedBatch};
use crate::config::ClickHouseConfig;

mod cluster;

/// Rows encoded between two yields to the runtime (~0.3 ms of encoding).
const YIELD_EVERY_ROWS: usize = 2048;
/// How long start-up queries and pings may take when `insert_timeout` is longer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// An INSERT body goes out in chunks of this size, as the crate's own `Insert` sends
/// them (each LZ4-compressed on its own when compression is on)...
const CHUNK_BYTES: usize = 256 * 1024;
/// ...sent once less than this is left, so that the last row rarely grows the buffer.
const CHUNK_SLACK: usize = 2048;

/// Writes rows to one ClickHouse table.
pub struct ClickHouseSink {
    client: Client,
    url: String,
    /// `` `database`.`table` ``, already quoted.
    table: String,
    version: String,
    layout: Layout,
    /// The server knows `insert_deduplication_token` (≥ 22.2).
    dedup_token: bool,
    insert_timeout: Duration,
    control_timeout: Duration,
}

impl std::fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the client carries the password.
        f.debug_struct("ClickHouseSink")
            .field("url", &self.url)
            .field("table", &self.table)
            .field("version", &self.version)
            .field("layout", &self.layout)
            .field("dedup_token", &self.dedup_token)
            .finish_non_exhaustive()
    }
}

/// `system.tables`' view of the table's engine and its settings.
#[derive(Row, Deserialize)]
struct EngineRow {
    engine: String,
    engine_full: String,
}

#[derive(Row, Deserialize)]
struct ColumnRow {
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

impl ClickHouseSink {
    /// Connects to `cfg.url` (one URL: see [`connect_endpoint`](Self::connect_endpoint)
    /// for one of several), detects the server version, creates the database and table
    /// when `cfg.create_table`, and checks that the table's columns fit a known layout.
    ///
    /// Errors: [`SinkError::Unavailable`] when ClickHouse cannot be reached (the message
    /// names the URL and what to check), [`SinkError::Rejected`] when it answers but
    /// refuses (credentials, missing table, incompatible columns).
    pub async fn connect(cfg: &ClickHouseConfig) -> Result<ClickHouseSink, SinkError> {
        let mut sink = ClickHouseSink::unconnected(cfg);

        let version: String = sink
            .control(sink.client.query("SELECT version()").fetch_one())
            .await
            .map_err(|e| sink.startup_error("asking its version", e))?;
        let features = match schema::ServerVersion::parse(&version) {
            Some(parsed) => Features::of(parsed),
            None => {
                tracing::warn!(
                    version = %version,
                    "cannot parse the ClickHouse version; creating tables with the legacy schema"
                );
                Features::oldest()
            }
        };
        sink.version = version;
        sink.dedup_token = features.dedup_token;

        // Look before creating: a worker whose user may only INSERT must still start
        // when the operator created the table beforehand.
        let mut columns = sink.table_columns(cfg).await?;
        if let Some(cluster) = &cfg.cluster {
            sink.check_cluster_known(cluster).await?;
        }
        if columns.is_empty() && cfg.create_table {
            sink.create_tables(cfg, features).await?;
            columns = sink.table_columns(cfg).await?;
        }
        if columns.is_empty() {
            return Err(SinkError::Rejected {
                reason: format!(
                    "table {} does not exist on ClickHouse at {}; create it (schema in the \
                     README) or enable table creation{}",
                    sink.table,
                    sink.url,
                    cfg.cluster
                        .as_deref()
                        .map(schema::cluster::absent_table_hint)
                        .unwrap_or_default()
                ),
            });
        }
        let columns: Vec<(String, String)> = columns.into_iter().map(|c| (c.name, c.ty)).collect();
        sink.layout =
            schema::detect_layout(&columns, &sink.table, cfg.schema).map_err(|problems| {
                SinkError::Rejected {
                    reason: format!(
                        "table {} on ClickHouse at {} does not fit the {} schema \
                     (CLICKHOUSE_SCHEMA): {problems}; point the sink at a new table to have \
                     it created, or fix the columns",
                        sink.table,
                        sink.url,
                        cfg.schema.as_str()
                    ),
                }
            })?;

        // With a cluster, rows land in the per-shard tables: those must deduplicate.
        let (dedup_database, dedup_table) = match &cfg.cluster {
            Some(cluster) => {
                let target = sink.use_distributed(cfg, cluster).await?;
                (target.database, target.table)
            }
            None => (cfg.database.clone(), cfg.table.clone()),
        };
        if sink.dedup_token {
            sink.warn_unless_table_deduplicates(&dedup_database, &dedup_table)
                .await?;
        }
        tracing::info!(
            url = %sink.url,
            version = %sink.version,
            table = %sink.table,
            layout = %sink.layout,
            dedup_token = sink.dedup_token,
            cluster = cfg.cluster.as_deref().unwrap_or(""),
            "connected to ClickHouse"
        );
        Ok(sink)
    }

    /// Creates the database and table (with `cfg.cluster`: on every host of the cluster,
    /// the per-shard and the `Distributed` table) for a server with `features`.
    async fn create_tables(
        &self,
        cfg: &ClickHouseConfig,
        features: Features,
    ) -> Result<(), SinkError> {
        let options = TableOptions {
            schema: cfg.schema,
            ttl_days: cfg.ttl_days,
        };
        let refused = |reason| SinkError::Rejected {
            reason: format!("cannot create table {}: {reason}", self.table),
        };
        let statements = match &cfg.cluster {
            Some(cluster) => {
                let statements = schema::cluster::cluster_ddl(
                    &cfg.database,
                    &cfg.table,
                    cluster,
                    features,
                    options,
                    &self.version,
                )
                .map_err(refused)?;
                self.create_on_cluster(cluster, &statements).await?;
                statements
            }
            None => {
                let table_ddl =
                    schema::table_ddl(&cfg.database, &cfg.table, features, options, &self.version)
                        .map_err(refused)?;
                let statements = vec![schema::create_database_sql(&cfg.database), table_ddl];
                for ddl in &statements {
                    self.control(self.client.query(ddl).execute())
                        .await
                        .map_err(|e| self.startup_error("creating the table", e))?;
                }
                statements
            }
        };
        let ddl = statements.join(";\n");
        tracing::info!(table = %self.table, ddl = %ddl, "created the ClickHouse table");
        Ok(())
    }

    /// [`connect`](Self::connect) to one endpoint `url` of a `cfg` that may list
    /// several; tables are created only when `cfg.create_table` and `run_ddl` (without
    /// a cluster every endpoint is an independent server and needs its own table; with
    /// one, DDL runs once for the cluster).
    pub async fn connect_endpoint(
        cfg: &ClickHouseConfig,
        url: &str,
        run_ddl: bool,
    ) -> Result<ClickHouseSink, SinkError> {
        let endpoint = ClickHouseConfig {
            url: url.to_string(),
            create_table: cfg.create_table && run_ddl,
            ..cfg.clone()
        };
        ClickHouseSink::connect(&endpoint).await
    }

    /// The client and settings, before anything is asked of the server: legacy layout,
    /// no deduplication token until the version is known.
    fn unconnected(cfg: &ClickHouseConfig) -> ClickHouseSink {
        let compression = if cfg.compression.lz4_for(&cfg.url) {
            clickhouse::Compression::Lz4
        } else {
            clickhouse::Compression::None
        };
        let mut client = Client::default()
            .with_url(cfg.url.as_str())
            .with_compression(compression)
            .with_validation(false);
        if !cfg.user.is_empty() {
            client = client.with_user(cfg.user.as_str());
        }
        if !cfg.password.is_empty() {
            client = client.with_password(cfg.password.as_str());
        }
        ClickHouseSink {
            client,
            url: redact_url(&cfg.url),
            table: schema::qualified_table(&cfg.database, &cfg.table),
            version: String::new(),
            layout: Layout::Legacy,
            dedup_token: false,
            insert_timeout: cfg.insert_timeout,
            control_timeout: cfg.insert_timeout.min(CONTROL_TIMEOUT),
        }
    }

    /// Test fixture: a sink that believes it talks to a `version` server whose table
    /// we created (layout and features from the version; the otel layout when `cfg`
    /// asks for it), without contacting it — for checking what goes on the wire
    /// against a capture server.
    #[cfg(any(test, feature = "test-support"))]
    pub fn assuming_server(
        cfg: &ClickHouseConfig,
        version: schema::ServerVersion,
    ) -> ClickHouseSink {
        let features = Features::of(version);
        let layout = match cfg.schema {
            crate::config::TableSchema::Otel => Layout::Otel,
            crate::config::TableSchema::Native => features.layout(),
        };
        ClickHouseSink {
            version: version.to_string(),
            layout,
            dedup_token: features.dedup_token,
            ..ClickHouseSink::unconnected(cfg)
        }
    }

    /// Test fixture: the same sink writing `layout` rows (the otel layout comes from
    /// the configured schema and the table, never from the version alone).
    #[cfg(test)]
    pub(super) fn with_layout(self, layout: Layout) -> ClickHouseSink {
        ClickHouseSink { layout, ..self }
    }

    /// Writes the rows of `batches` in one INSERT (one attempt, no retry). No rows is a
    /// no-op. `token` is sent as `insert_deduplication_token` when the server knows it,
    /// and ignored otherwise; it must name exactly these rows (see [`dedup`](super::dedup)).
    pub async fn insert(
        &self,
        batches: &[EncodedBatch],
        token: Option<&str>,
    ) -> Result<(), SinkError> {
        if batches.iter().all(EncodedBatch::is_empty) {
            return Ok(());
        }
        let token = token.filter(|_| self.dedup_token);
        let result = self.insert_rowbinary(batches, token).await;
        result.map_err(|e| self.insert_error(e))
    }

    /// Writes `rows` into another `table` (quoted) of the same server in one INSERT,
    /// with the insert timeout and, where the server knows it, `token`: the dead-letter
    /// table (see [`dead_letter`](super::dead_letter)). One attempt.
    pub(super) async fn insert_rows<R>(
        &self,
        table: &str,
        rows: &[R::Value<'_>],
        token: Option<&str>,
    ) -> Result<(), SinkError>
    where
        R: Row + RowWrite,
    {
        let token = token.filter(|_| self.dedup_token);
        let attempt = async {
            let mut insert = self
                .client
                .insert_unescaped::<R>(table)
                .await?
                .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
            if let Some(token) = token {
                insert = insert.with_setting(TOKEN_SETTING, token);
            }
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await
        };
        let result =
            match tokio::time::timeout(self.insert_timeout + self.control_timeout, attempt).await {
                Ok(result) => result,
                Err(_) => Err(clickhouse::error::Error::TimedOut),
            };
        result.map_err(|error| match retry::classify(&error) {
            Class::Transient => self.unavailable_or_rejected("INSERT", error),
            Class::Permanent => SinkError::Rejected {
                reason: format!("INSERT into {table}: {}", describe(&error)),
            },
        })
    }

    /// Runs one statement without result (DDL), bounded by the control timeout.
    pub(super) async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        self.control(self.client.query(sql).execute())
            .await
            .map_err(|e| self.unavailable_or_rejected("a statement", e))
    }

    /// `SELECT 1`, bounded by the control timeout.
    pub async fn ping(&self) -> Result<(), SinkError> {
        self.control(self.client.query("SELECT 1").execute())
            .await
            .map_err(|e| self.unavailable_or_rejected("ping", e))
    }

    /// The server's URL without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What `SELECT version()` answered at start-up, e.g. `18.16.1`.
    pub fn server_version(&self) -> &str {
        &self.version
    }

    /// Whether INSERTs carry their deduplication token (server ≥ 22.2).
    pub fn sends_dedup_token(&self) -> bool {
        self.dedup_token
    }

    /// The row layout detected from the table.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The table written to, quoted: `` `db`.`table` ``.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// A plain MergeTree ignores `insert_deduplication_token` unless the table sets
    /// `non_replicated_deduplication_window` (default 0): say so at start-up, with the
    /// fix, for a table created before that setting or by someone else.
    /// The table is `database`.`table`: the one written to, or with a cluster the
    /// per-shard table, which is only checked when this server holds a shard.
    async fn warn_unless_table_deduplicates(
        &self,
        database: &str,
        table: &str,
    ) -> Result<(), SinkError> {
        let Some(row) = self.engine_of(database, table).await? else {
            return Ok(());
        };
        let table = schema::qualified_table(database, table);
        if !deduplicates(&row.engine, &row.engine_full) {
            tracing::warn!(
                table = %table,
                engine = %row.engine,
                "the table does not deduplicate INSERTs (non_replicated_deduplication_window \
                 is 0): a batch replayed after a crash or a retried INSERT may be stored twice; \
                 fix: ALTER TABLE {} MODIFY SETTING non_replicated_deduplication_window = {}",
                table,
                schema::DEDUP_WINDOW
            );
        }
        Ok(())
    }

    /// `system.tables`' engine of `database`.`table`; `None` when it does not exist.
    async fn engine_of(&self, database: &str, table: &str) -> Result<Option<EngineRow>, SinkError> {
        self.control(
            self.client
                .query(
                    "SELECT engine, engine_full FROM system.tables WHERE database = ? AND name = ?",
                )
                .bind(database)
                .bind(table)
                .fetch_optional(),
        )
        .await
        .map_err(|e| self.startup_error("reading the table's engine", e))
    }

    async fn table_columns(&self, cfg: &ClickHouseConfig) -> Result<Vec<ColumnRow>, SinkError> {
        self.control(
            self.client
                .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
                .bind(cfg.database.as_str())
                .bind(cfg.table.as_str())
                .fetch_all(),
        )
        .await
        .map_err(|e| self.startup_error("reading the table's columns", e))
    }

    /// One INSERT of `batches`' records: RowBinary written straight from the encoded
    /// records ([`RowWriter`]) into chunks of ~256 KiB, each handed to the connection
    /// (LZ4-compressed first when the client compresses) as soon as it is full.
    async fn insert_rowbinary(
        &self,
        batches: &[EncodedBatch],
        token: Option<&str>,
    ) -> Result<(), clickhouse::error::Error> {
        let attempt = async {
            let mut insert = self
                .client
                .insert_formatted_with(rowbinary::insert_sql(&self.table, self.layout))
                .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
            if let Some(token) = token {
                insert = insert.with_setting(TOKEN_SETTING, token);
            }
            let mut writer = RowWriter::new(self.layout);
            // RowBinary is about as long as the encoding: a small INSERT gets a buffer
            // of its size, not a whole chunk.
            let expected: usize = batches.iter().map(EncodedBatch::byte_len).sum();
            let mut chunk = Vec::with_capacity(CHUNK_BYTES.min(expected + expected / 4));
            let records = batches.iter().flat_map(EncodedBatch::raw_records);
            for (i, record) in records.enumerate() {
                let record = record.map_err(damaged)?;
                writer.write(record, &mut chunk).map_err(damaged)?;
                if chunk.len() >= CHUNK_BYTES - CHUNK_SLACK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES));
                    insert.send(Bytes::from(full)).await?;
                }
                // Encoding runs on the runtime that also serves requests, and a send
                // only waits when the connection is slow: without this a 100 000-row
                // INSERT holds its thread for several milliseconds at a time.
                if i % YIELD_EVERY_ROWS == YIELD_EVERY_ROWS - 1 {
                    tokio::task::yield_now().await;
                }
            }
            if !chunk.is_empty() {
                insert.send(Bytes::from(chunk)).await?;
            }
            insert.end().await
        };
        // Backstop over the crate's per-chunk timeouts: the whole INSERT, including
        // connecting, never outlives `insert_timeout` by much.
        match tokio::time::timeout(self.insert_timeout + self.control_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(clickhouse::error::Error::TimedOut),
        }
    }

    async fn control<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, clickhouse::error::Error> {
        match tokio::time::timeout(self.control_timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(clickhouse::error::Error::TimedOut),
        }
    }

    fn insert_error(&self, error: clickhouse::error::Error) -> SinkError {
        self.unavailable_or_rejected("INSERT", error)
    }

    fn unavailable_or_rejected(&self, what: &str, error: clickhouse::error::Error) -> SinkError {
        let class = retry::classify(&error);
        let detail = describe(&error);
        match class {
            Class::Transient => SinkError::Unavailable {
                reason: format!("{what} to ClickHouse at {} failed: {detail}", self.url),
            },
            Class::Permanent => SinkError::Rejected {
                reason: format!("{what} into {}: {detail}", self.table),
            },
        }
    }

    fn startup_error(&self, step: &str, error: clickhouse::error::Error) -> SinkError {
        let detail = describe(&error);
        match retry::classify(&error) {
            Class::Transient => SinkError::Unavailable {
                reason: format!(
                    "cannot reach ClickHouse at {} ({step}): {detail}; check CLICKHOUSE_URL \
                     and that ClickHouse is running",
                    self.url
                ),
            },
            Class::Permanent => SinkError::Rejected {
                reason: format!(
                    "ClickHouse at {} refused {step}: {detail}; check CLICKHOUSE_USER, \
                     CLICKHOUSE_PASSWORD and CLICKHOUSE_DATABASE",
                    self.url
                ),
            },
        }
    }
}

impl Sink for ClickHouseSink {
    fn insert(
        &self,
        batches: &[EncodedBatch],
        token: Option<&str>,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        ClickHouseSink::insert(self, batches, token)
    }

    fn ping(&self) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        ClickHouseSink::ping(self)
    }
}

/// The URL without credentials (`http://user:secret@host` → `http://***@host`), for
/// messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_string(),
    }
}

/// An error's text with its source chain (hyper's "client error (Connect)" alone says
/// little; the cause says "Connection refused"), and without 18.16's
/// `, e.what() = DB::Exception` noise.
fn describe(error: &clickhouse::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if let Some(cut) = text.find(", e.what() = ") {
        text.truncate(cut);
    }
    text.trim().to_string()
}

/// A record that does not decode: the INSERT fails for good (the batch was checked
/// when it was built or read back, so this is damage, not a transient fault).
fn damaged(error: CodecError) -> clickhouse::error::Error {
    clickhouse::error::Error::Custom(format!("a queued batch is damaged: {error}"))
}

/// Whether INSERTs with the same token are stored once in a table of this engine: a
/// replicated engine always keeps a window; a plain MergeTree only with
/// `non_replicated_deduplication_window` > 0 in its settings.
fn deduplicates(engine: &str, engine_full: &str) -> bool {
    if engine.starts_with("Replicated") {
        return true;
    }
    engine_full
        .split("non_replicated_deduplication_window")
        .nth(1)
        .and_then(|rest| rest.trim_start().strip_prefix('='))
        .map(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or("")
        })
        .and_then(|digits| digits.parse::<u64>().ok())
        .is_some_and(|window| window > 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_tables_with_a_deduplication_window_deduplicate() {
        let with = "MergeTree PARTITION BY toDate(timestamp) ORDER BY (service, timestamp) \
                    SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192";
        assert!(super::deduplicates("MergeTree", with));
        let zero = "MergeTree ORDER BY x SETTINGS non_replicated_deduplication_window = 0";
        assert!(!super::deduplicates("MergeTree", zero));
        assert!(!super::deduplicates(
            "MergeTree",
            "MergeTree ORDER BY x SETTINGS index_granularity = 8192"
        ));
        assert!(super::deduplicates(
            "ReplicatedMergeTree",
            "ReplicatedMergeTree('/t', 'r') ORDER BY x"
        ));
    }

    use super::*;
    use crate::record::{Batch, Level, Record};
    use crate::sink::ServerVersion;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    /// A stand-in for ClickHouse's HTTP interface on 127.0.0.1: reads each request
    /// whole, answers `200 OK` with an empty body, and reports the request target
    /// (path and query string, where the crate puts the query and its settings).
    async fn capture_server() -> (String, mpsc::UnboundedReceiver<String>) {
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

    /// One request per connection (`Connection: close`), so that no body framing
    /// beyond "complete or not" is needed.
    async fn serve_one(mut stream: TcpStream, targets: mpsc::UnboundedSender<String>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(target) = complete_request(&buf) {
                let _ = targets.send(target);
                let response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The request target once headers and body (chunked or sized) are all in `raw`.
    fn complete_request(raw: &[u8]) -> Option<String> {
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        let body = &raw[head_end..];
        let complete = if head.contains("transfer-encoding: chunked") {
            // The last chunk and the empty trailer line have arrived.
            crate::testing::decode_chunked(body).is_some() && body.ends_with(b"\r\n\r\n")
        } else {
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            body.len() >= length
        };
        let first_line = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        let target = first_line.split_whitespace().nth(1)?.to_string();
        complete.then_some(target)
    }

    fn config(url: String) -> ClickHouseConfig {
        ClickHouseConfig {
            url,
            database: "db".into(),
            table: "logs".into(),
            user: String::new(),
            password: String::new(),
            create_table: false,
            retry_budget: Duration::from_secs(1),
            insert_timeout: Duration::from_secs(5),
            compression: crate::config::Compression::Auto,
            schema: crate::config::TableSchema::Native,
            ttl_days: 0,
            cluster: None,
        }
    }

    fn rows() -> Vec<EncodedBatch> {
        let records = vec![Record {
            timestamp_ns: 1_700_000_000_000_000_000,
            level: Level::Info,
            service: "svc".into(),
            message: "m".into(),
            trace_id: String::new(),
            span_id: String::new(),
            attributes: vec![("k".into(), "v".into())],
            otel: None,
        }];
        vec![EncodedBatch::encode(&Batch::new(records))]
    }

    const TOKEN: &str = "3-00000000000000ab-5-9";

    async fn insert_target(
        sink: &ClickHouseSink,
        token: Option<&str>,
        sent: &mut mpsc::UnboundedReceiver<String>,
    ) -> String {
        sink.insert(&rows(), token).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), sent.recv())
            .await
            .expect("the INSERT reached the capture server")
            .unwrap()
    }

    #[tokio::test]
    async fn servers_from_22_2_get_the_token_as_a_query_setting() {
        let (url, mut sent) = capture_server().await;
        let sink = ClickHouseSink::assuming_server(&config(url), ServerVersion::new(22, 2, 0));
        assert!(sink.sends_dedup_token());
        assert_eq!(sink.layout(), Layout::DateTime64Map);

        let target = insert_target(&sink, Some(TOKEN), &mut sent).await;
        assert!(target.contains("query=INSERT+INTO"), "{target}");
        assert!(
            target.contains(&format!("&insert_deduplication_token={TOKEN}")),
            "{target}"
        );
        // The setting is per INSERT: the next one without a token sends none.
        let target = insert_target(&sink, None, &mut sent).await;
        assert!(target.contains("query=INSERT+INTO"), "{target}");
        assert!(!target.contains("insert_deduplication_token"), "{target}");
    }

    #[tokio::test]
    async fn older_servers_never_see_the_setting() {
        let (url, mut sent) = capture_server().await;
        for version in [ServerVersion::new(18, 16, 1), ServerVersion::new(22, 1, 3)] {
            let sink = ClickHouseSink::assuming_server(&config(url.clone()), version);
            assert!(!sink.sends_dedup_token(), "{version}");
            let target = insert_target(&sink, Some(TOKEN), &mut sent).await;
            assert!(target.contains("query=INSERT+INTO"), "{version}: {target}");
            assert!(
                !target.contains("insert_deduplication_token"),
                "{version}: {target}"
            );
        }
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redact_url("http://127.0.0.1:8123"), "http://127.0.0.1:8123");
        assert_eq!(
            redact_url("http://u:p@ch:8123/x@y"),
            "http://***@ch:8123/x@y"
        );
        assert_eq!(redact_url("ch:8123"), "ch:8123");
    }

    #[test]
    fn describe_strips_old_exception_noise() {
        let e = clickhouse::error::Error::BadResponse(
            "Code: 60, e.displayText() = DB::Exception: Table t.x doesn't exist., e.what() = \
             DB::Exception"
                .into(),
        );
        assert_eq!(
            describe(&e),
            "bad response: Code: 60, e.displayText() = DB::Exception: Table t.x doesn't exist."
        );
    }
}
