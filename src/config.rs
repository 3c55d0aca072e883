//! The worker's one typed configuration, built once at start-up.
//!
//! Every setting has an environment variable (the old Node.js deployment's
//! names where one existed, so `/etc/zero-logs/zero-logs.env` carries over) and
//! a flag of `zero-logs serve`; precedence is flag > environment > default.
//! Values are parsed here, at the edge: durations are milliseconds, sizes are
//! bytes (suffixes `K`/`KB`/`KiB`, `M…`, `G…` accepted). Every error names the
//! variable or flag, the value and the accepted form. Nothing else in the crate
//! reads the environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub mod docs;
pub mod env_file;
mod flags;
mod parse;
mod reader;
pub mod settings;
mod spool;
mod tls;

pub use flags::ServeFlags;
pub use parse::bytes;
pub use reader::{Origin, Reader, Resolved};
pub use spool::{AckMode, SpoolConfig};
pub use tls::TlsConfig;

use crate::auth::AuthConfig;
use crate::validate::otlp::OtlpOptions;
use settings as S;

/// Everything a worker needs, parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
    /// `TLS_*`: TLS on the ingest listeners (off by default).
    pub tls: TlsConfig,
    pub ingest: IngestConfig,
    pub clickhouse: ClickHouseConfig,
    pub batch: BatchConfig,
    pub admin: AdminConfig,
    pub supervision: SupervisionConfig,
    /// `GRACEFUL_SHUTDOWN_TIMEOUT`: how long a stop may take to drain.
    pub shutdown_timeout: Duration,
    /// `ACK_MODE`: where a request is acknowledged.
    pub ack_mode: AckMode,
    /// Used when `ack_mode` is [`AckMode::Spool`].
    pub spool: SpoolConfig,
    /// `INGEST_AUTH`, the key file and the per-key defaults.
    pub auth: AuthConfig,
}

/// How the worker cooperates with its supervisor (systemd).
#[derive(Debug, Clone)]
pub struct SupervisionConfig {
    /// `WORKER_MEMORY_LIMIT`: above this RSS the worker drains and exits so that
    /// systemd starts a fresh one. `None` = no limit.
    pub memory_limit: Option<u64>,
    /// systemd's `WatchdogSec` (`WATCHDOG_USEC`, when `WATCHDOG_PID` is ours).
    pub watchdog: Option<Duration>,
    /// How often the `STATUS=` line and the memory check are refreshed.
    pub check_interval: Duration,
    /// `WORKER_CPU_SLICE_US`: the CPU slice every worker thread asks the kernel for
    /// (see [`crate::sched`]); `None` = the kernel's default.
    pub cpu_slice: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Addresses bound when systemd passed no sockets.
    pub addrs: Vec<SocketAddr>,
    /// Keep-alive connections are closed gracefully at this age, so clients
    /// reconnect and spread over the instances again.
    pub connection_max_age: Duration,
}

/// Limits applied to requests and records.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub max_body_bytes: usize,
    pub limits: RecordLimits,
    /// Validate on the CPU pool (`ENABLE_WORKER_VALIDATION`).
    pub pool_validation: bool,
    pub pool_min_threads: usize,
    pub pool_max_threads: usize,
    /// Bytes of request bodies being decoded and waiting for acknowledgement.
    pub max_inflight_bytes: usize,
    /// How OTLP records map to rows beyond the limits.
    pub otlp: OtlpOptions,
}

/// Per-record caps (validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLimits {
    pub max_records: usize,
    pub max_message_bytes: usize,
    pub max_service_bytes: usize,
    pub max_attributes: usize,
    pub max_attribute_key_bytes: usize,
    pub max_attribute_value_bytes: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits {
            max_records: S::MAX_BATCH_RECORDS.written_default(),
            max_message_bytes: S::MAX_MESSAGE_BYTES.written_default(),
            max_service_bytes: S::MAX_SERVICE_BYTES.written_default(),
            max_attributes: S::MAX_ATTRIBUTES.written_default(),
            max_attribute_key_bytes: S::MAX_ATTRIBUTE_KEY_BYTES.written_default(),
            max_attribute_value_bytes: S::MAX_ATTRIBUTE_VALUE_BYTES.written_default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`, or several separated by commas
    /// (see [`urls`](Self::urls)).
    pub url: String,
    pub database: String,
    pub table: String,
    pub user: String,
    pub password: String,
    /// Create the database and table when absent.
    pub create_table: bool,
    /// Total time one batch may spend retrying before its requests fail with 503.
    pub retry_budget: Duration,
    /// Per-insert timeout.
    pub insert_timeout: Duration,
    /// LZ4 on INSERT bodies (`CLICKHOUSE_COMPRESSION`).
    pub compression: Compression,
    /// Which table layout to create and fill (`CLICKHOUSE_SCHEMA`).
    pub schema: TableSchema,
    /// Days a table we create keeps rows (`CLICKHOUSE_TTL_DAYS`); 0 keeps them.
    pub ttl_days: u32,
    /// `CLICKHOUSE_CLUSTER`: write through a `Distributed` table over this cluster,
    /// created `ON CLUSTER` (see `sink::schema::cluster`); `None`: one server.
    pub cluster: Option<String>,
}

impl ClickHouseConfig {
    /// The endpoints of `url`, in the order given (one for a single URL).
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).collect()
    }
}

/// The table layout a worker writes (`CLICKHOUSE_SCHEMA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableSchema {
    /// zero-logs' own columns (`timestamp`, `level`, `service`, …): the default.
    #[default]
    Native,
    /// The OpenTelemetry Collector's `otel_logs` (`Timestamp`, `ServiceName`, `Body`,
    /// …), read by Grafana's ClickHouse plugin in OTel mode and by HyperDX.
    Otel,
}

impl TableSchema {
    pub(crate) fn parse(text: &str) -> Result<TableSchema, String> {
        match text.to_ascii_lowercase().as_str() {
            "native" => Ok(TableSchema::Native),
            "otel" => Ok(TableSchema::Otel),
            _ => Err("expected native or otel".into()),
        }
    }

    /// The table written when `CLICKHOUSE_TABLE` is not set.
    pub fn default_table(self) -> &'static str {
        match self {
            TableSchema::Native => "logs",
            TableSchema::Otel => "otel_logs",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TableSchema::Native => "native",
            TableSchema::Otel => "otel",
        }
    }
}

/// Whether INSERT bodies are LZ4-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `auto` (the default): LZ4 unless ClickHouse is on a loopback address, where
    /// there is no network to save and both ends would only spend CPU on it.
    Auto,
    Lz4,
    None,
}

impl Compression {
    pub(crate) fn parse(text: &str) -> Result<Compression, String> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(Compression::Auto),
            "lz4" => Ok(Compression::Lz4),
            "none" => Ok(Compression::None),
            _ => Err("expected auto, lz4 or none".into()),
        }
    }

    /// Whether to compress INSERTs sent to `url`.
    pub fn lz4_for(self, url: &str) -> bool {
        match self {
            Compression::Lz4 => true,
            Compression::None => false,
            Compression::Auto => !is_loopback_url(url),
        }
    }
}

/// `http://127.x.y.z…`, `http://[::1]…` or `http://localhost…`.
fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The least the batcher may read ahead of its INSERTs with `ACK_MODE=spool`, however
/// small `SPOOL_MEMORY_BYTES`: INSERTs of a useful size (~36 000 typical rows).
pub const MIN_READ_AHEAD_BYTES: usize = 4 << 20;

/// When the batcher cuts a batch into one INSERT.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
    /// INSERTs allowed in flight at once.
    pub max_inflight_inserts: usize,
    /// Rows queued in the batcher before admission refuses (429).
    pub max_queue_rows: usize,
    /// Encoded bytes queued in the batcher, the same way: unbounded (`usize::MAX`)
    /// unless `ACK_MODE=spool`, where it is `SPOOL_MEMORY_BYTES`.
    pub max_queue_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: S::BATCH_MAX_ROWS.written_default(),
            max_bytes: S::BATCH_MAX_BYTES.written_default(),
            max_age: S::BATCH_MAX_AGE.written_default(),
            max_inflight_inserts: S::BATCH_MAX_INFLIGHT_INSERTS.written_default(),
            max_queue_rows: S::BATCH_MAX_QUEUE_ROWS.written_default(),
            max_queue_bytes: usize::MAX,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Per-instance unix socket serving `/health`, `/stats`, `/metrics`.
    pub socket: Option<PathBuf>,
    /// Instance number (systemd `%i`), reported in stats and as `WORKER_ID` in the journal.
    pub worker_id: String,
}

/// A setting that could not be used. Exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid {source_name}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable or flag, e.g. `BATCH_MAX_ROWS` or `--batch-max-rows`.
    pub source_name: String,
    pub value: String,
    /// What is accepted.
    pub reason: String,
}

/// Where environment values come from: the process in production, a map in tests,
/// the env files in `zero-logs-ctl`.
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;

    /// Where `name`'s value was written, when that is a file (`path:line`).
    fn origin(&self, _name: &str) -> Option<String> {
        None
    }
}

/// The process environment.
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Lookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Config {
    /// Builds the configuration from flags and an environment lookup.
    pub fn load(flags: &ServeFlags, env: &dyn Lookup) -> Result<Config, ConfigError> {
        Config::load_explained(flags, env).map(|(cfg, _)| cfg)
    }

    /// [`Config::load`], plus every setting's value and where it came from
    /// (`zero-logs config`).
    pub fn load_explained(
        flags: &ServeFlags,
        env: &dyn Lookup,
    ) -> Result<(Config, Vec<Resolved>), ConfigError> {
        let r = Reader::new(flags, env);
        let supervision = supervision(&r, env)?;
        let listen = ListenConfig {
            addrs: r.get(&S::LISTEN_ADDRS)?,
            connection_max_age: r.get(&S::CONNECTION_MAX_AGE)?,
        };
        let tls = tls::load(&r)?;
        let admin = AdminConfig {
            socket: r.get_or(&S::ADMIN_SOCKET, || None)?,
            worker_id: r.get(&S::WORKER_ID)?,
        };
        let clickhouse = clickhouse(&r)?;
        let ingest = ingest(&r)?;
        let auth = auth(&r)?;
        let shutdown_timeout = r.get(&S::GRACEFUL_SHUTDOWN_TIMEOUT)?;
        let mut batch = batch(&r)?;
        let (ack_mode, spool) = spool::load(&r, &admin.worker_id)?;
        let mut clickhouse = clickhouse;
        if ack_mode == AckMode::Spool {
            // The backlog waits on disk, not in memory: the batcher only needs what keeps
            // every INSERT slot busy plus the one being cut.
            let enough = batch.max_rows * (batch.max_inflight_inserts + 1);
            batch.max_queue_rows = batch.max_queue_rows.min(enough);
            // And what it reads ahead is spool memory: bounded like the in-memory tail,
            // whatever the rows weigh (admitted requests need no such bound: their
            // batches are within MAX_INFLIGHT_BYTES).
            batch.max_queue_bytes = spool.memory_tail_bytes.max(MIN_READ_AHEAD_BYTES);
            // Spooled rows are durable: retrying for ever loses nothing, giving up would.
            clickhouse.retry_budget = Duration::MAX;
        }
        let cfg = Config {
            ack_mode,
            spool,
            listen,
            tls,
            ingest,
            clickhouse,
            batch,
            admin,
            supervision,
            shutdown_timeout,
            auth,
        };
        Ok((cfg, r.into_resolved()))
    }

    /// `zero-logs config`: the settings a worker would run with given `flags`, the
    /// process environment and the env files under `env_dir`, one `NAME=value` line
    /// each with where it came from. Lines the env files' parser skipped are listed
    /// first, as comments.
    pub fn explain(flags: &ServeFlags, env_dir: &std::path::Path) -> Result<String, ConfigError> {
        let files = env_file::EnvFiles::load(env_dir);
        let env = files.behind_process_env();
        let (_, resolved) = Config::load_explained(flags, &env)?;
        let mut out = String::new();
        for warning in &files.warnings {
            out.push_str(&format!("# warning: {warning}\n"));
        }
        out.push_str(&docs::explain(settings::Program::Worker, &resolved, &env));
        Ok(out)
    }
}

fn supervision(r: &Reader<'_>, env: &dyn Lookup) -> Result<SupervisionConfig, ConfigError> {
    let memory_limit = r.get(&S::WORKER_MEMORY_LIMIT)?;
    Ok(SupervisionConfig {
        memory_limit: (memory_limit > 0).then_some(memory_limit),
        watchdog: watchdog(env),
        check_interval: Duration::from_secs(1),
        cpu_slice: r.get(&S::WORKER_CPU_SLICE_US)?,
    })
}

fn auth(r: &Reader<'_>) -> Result<AuthConfig, ConfigError> {
    Ok(AuthConfig {
        mode: r.get(&S::INGEST_AUTH)?,
        keys_file: r.get(&S::INGEST_KEYS_FILE)?,
        defaults: crate::auth::limits::KeyLimits {
            records_per_sec: r.get(&S::INGEST_KEY_RECORDS_PER_SEC)? as u64,
            bytes_per_sec: r.get(&S::INGEST_KEY_BYTES_PER_SEC)? as u64,
            spool_share_percent: r.get(&S::INGEST_KEY_SPOOL_SHARE)?,
        },
    })
}

fn clickhouse(r: &Reader<'_>) -> Result<ClickHouseConfig, ConfigError> {
    let schema = r.get(&S::CLICKHOUSE_SCHEMA)?;
    Ok(ClickHouseConfig {
        url: r.get(&S::CLICKHOUSE_URL)?,
        database: r.get(&S::CLICKHOUSE_DATABASE)?,
        table: r.get_or(&S::CLICKHOUSE_TABLE, || schema.default_table().to_owned())?,
        user: r.get(&S::CLICKHOUSE_USER)?,
        password: r.get_or(&S::CLICKHOUSE_PASSWORD, String::new)?,
        create_table: r.get(&S::CLICKHOUSE_CREATE_TABLE)?,
        retry_budget: r.get(&S::CLICKHOUSE_RETRY_BUDGET)?,
        insert_timeout: r.get(&S::CLICKHOUSE_INSERT_TIMEOUT)?,
        compression: r.get(&S::CLICKHOUSE_COMPRESSION)?,
        schema,
        ttl_days: r.get(&S::CLICKHOUSE_TTL_DAYS)?,
        cluster: r.get_or(&S::CLICKHOUSE_CLUSTER, || None)?,
    })
}

fn ingest(r: &Reader<'_>) -> Result<IngestConfig, ConfigError> {
    let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
    let ingest = IngestConfig {
        max_body_bytes: r.get(&S::MAX_BODY_BYTES)?,
        limits: RecordLimits {
            max_records: r.get(&S::MAX_BATCH_RECORDS)?,
            max_message_bytes: r.get(&S::MAX_MESSAGE_BYTES)?,
            max_service_bytes: r.get(&S::MAX_SERVICE_BYTES)?,
            max_attributes: r.get(&S::MAX_ATTRIBUTES)?,
            max_attribute_key_bytes: r.get(&S::MAX_ATTRIBUTE_KEY_BYTES)?,
            max_attribute_value_bytes: r.get(&S::MAX_ATTRIBUTE_VALUE_BYTES)?,
        },
        pool_validation: r.get(&S::ENABLE_WORKER_VALIDATION)?,
        pool_min_threads: r.get(&S::WORKER_POOL_MIN_WORKERS)?,
        pool_max_threads: r.get_or(&S::WORKER_POOL_MAX_WORKERS, cores)?,
        max_inflight_bytes: r.get(&S::MAX_INFLIGHT_BYTES)?,
        otlp: OtlpOptions {
            default_service: r.get(&S::OTLP_DEFAULT_SERVICE)?,
        },
    };
    if ingest.pool_min_threads > ingest.pool_max_threads {
        return Err(ConfigError {
            source_name: S::WORKER_POOL_MIN_WORKERS.meta.var.into(),
            value: ingest.pool_min_threads.to_string(),
            reason: format!(
                "must not exceed WORKER_POOL_MAX_WORKERS ({})",
                ingest.pool_max_threads
            ),
        });
    }
    if ingest.max_inflight_bytes < ingest.max_body_bytes {
        return Err(ConfigError {
            source_name: S::MAX_INFLIGHT_BYTES.meta.var.into(),
            value: ingest.max_inflight_bytes.to_string(),
            reason: format!(
                "must be at least MAX_BODY_BYTES ({}), or no request of the largest size could ever be admitted",
                ingest.max_body_bytes
            ),
        });
    }
    Ok(ingest)
}

fn batch(r: &Reader<'_>) -> Result<BatchConfig, ConfigError> {
    Ok(BatchConfig {
        max_rows: r.get(&S::BATCH_MAX_ROWS)?,
        max_bytes: r.get(&S::BATCH_MAX_BYTES)?,
        max_age: r.get(&S::BATCH_MAX_AGE)?,
        max_inflight_inserts: r.get(&S::BATCH_MAX_INFLIGHT_INSERTS)?,
        max_queue_rows: r.get(&S::BATCH_MAX_QUEUE_ROWS)?,
        max_queue_bytes: usize::MAX,
    })
}

/// systemd's watchdog interval, if it is meant for this process.
fn watchdog(env: &dyn Lookup) -> Option<Duration> {
    let usec: u64 = env.get("WATCHDOG_USEC")?.parse().ok()?;
    if let Some(pid) = env.get("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
pub(crate) mod tests;
