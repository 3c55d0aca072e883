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

mod flags;
mod parse;
mod spool;

pub use flags::ServeFlags;
pub use parse::bytes;
pub(crate) use parse::{boolean as parse_bool, millis as parse_millis};
pub use spool::{AckMode, SpoolConfig};

use parse::{
    boolean, check_url, count, cpu_slice, identifier, millis, positive, worker_id, Reader,
};

/// Everything a worker needs, parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
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
            max_records: 10_000,
            max_message_bytes: 64 * 1024,
            max_service_bytes: 256,
            max_attributes: 64,
            max_attribute_key_bytes: 128,
            max_attribute_value_bytes: 4096,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
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
    fn parse(text: &str) -> Result<Compression, String> {
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
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: 100_000,
            max_bytes: 32 * 1024 * 1024,
            max_age: Duration::from_millis(1000),
            max_inflight_inserts: 2,
            max_queue_rows: 1_000_000,
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

/// Where environment values come from: the process in production, a map in tests.
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;
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
        let r = Reader { env };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let limits_default = RecordLimits::default();
        let batch_default = BatchConfig::default();

        let listen = ListenConfig {
            addrs: listen_addrs(flags, env)?,
            connection_max_age: r.parse(
                &flags.connection_max_age,
                "connection-max-age",
                "CONNECTION_MAX_AGE",
                Duration::from_secs(120),
                millis,
            )?,
        };
        let limits = RecordLimits {
            max_records: r.parse(
                &flags.max_batch_records,
                "max-batch-records",
                "MAX_BATCH_RECORDS",
                limits_default.max_records,
                positive,
            )?,
            max_message_bytes: r.parse(
                &flags.max_message_bytes,
                "max-message-bytes",
                "MAX_MESSAGE_BYTES",
                limits_default.max_message_bytes,
                bytes,
            )?,
            max_service_bytes: r.parse(
                &flags.max_service_bytes,
                "max-service-bytes",
                "MAX_SERVICE_BYTES",
                limits_default.max_service_bytes,
                bytes,
            )?,
            max_attributes: r.parse(
                &flags.max_attributes,
                "max-attributes",
                "MAX_ATTRIBUTES",
                limits_default.max_attributes,
                count,
            )?,
            max_attribute_key_bytes: r.parse(
                &flags.max_attribute_key_bytes,
                "max-attribute-key-bytes",
                "MAX_ATTRIBUTE_KEY_BYTES",
                limits_default.max_attribute_key_bytes,
                bytes,
            )?,
            max_attribute_value_bytes: r.parse(
                &flags.max_attribute_value_bytes,
                "max-attribute-value-bytes",
                "MAX_ATTRIBUTE_VALUE_BYTES",
                limits_default.max_attribute_value_bytes,
                bytes,
            )?,
        };
        let ingest = IngestConfig {
            max_body_bytes: r.parse(
                &flags.max_body_bytes,
                "max-body-bytes",
                "MAX_BODY_BYTES",
                10 << 20,
                bytes,
            )?,
            limits,
            pool_validation: r.parse(
                &flags.enable_worker_validation,
                "enable-worker-validation",
                "ENABLE_WORKER_VALIDATION",
                true,
                boolean,
            )?,
            pool_min_threads: r.parse(
                &flags.worker_pool_min_workers,
                "worker-pool-min-workers",
                "WORKER_POOL_MIN_WORKERS",
                1,
                positive,
            )?,
            pool_max_threads: r.parse(
                &flags.worker_pool_max_workers,
                "worker-pool-max-workers",
                "WORKER_POOL_MAX_WORKERS",
                cores,
                positive,
            )?,
            max_inflight_bytes: r.parse(
                &flags.max_inflight_bytes,
                "max-inflight-bytes",
                "MAX_INFLIGHT_BYTES",
                256 << 20,
                bytes,
            )?,
        };
        if ingest.pool_min_threads > ingest.pool_max_threads {
            return Err(ConfigError {
                source_name: "WORKER_POOL_MIN_WORKERS".into(),
                value: ingest.pool_min_threads.to_string(),
                reason: format!(
                    "must not exceed WORKER_POOL_MAX_WORKERS ({})",
                    ingest.pool_max_threads
                ),
            });
        }
        if ingest.max_inflight_bytes < ingest.max_body_bytes {
            return Err(ConfigError {
                source_name: "MAX_INFLIGHT_BYTES".into(),
                value: ingest.max_inflight_bytes.to_string(),
                reason: format!(
                    "must be at least MAX_BODY_BYTES ({}), or no request of the largest size could ever be admitted",
                    ingest.max_body_bytes
                ),
            });
        }

        let url = r.string(
            &flags.clickhouse_url,
            "clickhouse-url",
            "CLICKHOUSE_URL",
            "http://127.0.0.1:8123",
        );
        check_url(&url).map_err(|reason| ConfigError {
            source_name: "CLICKHOUSE_URL".into(),
            value: url.clone(),
            reason,
        })?;
        let clickhouse = ClickHouseConfig {
            url,
            database: r.parse(
                &flags.clickhouse_database,
                "clickhouse-database",
                "CLICKHOUSE_DATABASE",
                "logs".into(),
                identifier,
            )?,
            table: r.parse(
                &flags.clickhouse_table,
                "clickhouse-table",
                "CLICKHOUSE_TABLE",
                "logs".into(),
                identifier,
            )?,
            user: r.string(
                &flags.clickhouse_user,
                "clickhouse-user",
                "CLICKHOUSE_USER",
                "default",
            ),
            // Only from the environment: a flag would show the password in `ps`.
            password: env.get("CLICKHOUSE_PASSWORD").unwrap_or_default(),
            create_table: r.parse(
                &flags.clickhouse_create_table,
                "clickhouse-create-table",
                "CLICKHOUSE_CREATE_TABLE",
                true,
                boolean,
            )?,
            retry_budget: r.parse(
                &flags.clickhouse_retry_budget,
                "clickhouse-retry-budget",
                "CLICKHOUSE_RETRY_BUDGET",
                Duration::from_secs(10),
                millis,
            )?,
            insert_timeout: r.parse(
                &flags.clickhouse_insert_timeout,
                "clickhouse-insert-timeout",
                "CLICKHOUSE_INSERT_TIMEOUT",
                Duration::from_secs(30),
                millis,
            )?,
            compression: r.parse(
                &flags.clickhouse_compression,
                "clickhouse-compression",
                "CLICKHOUSE_COMPRESSION",
                Compression::Auto,
                Compression::parse,
            )?,
        };
        let batch = BatchConfig {
            max_rows: r.parse(
                &flags.batch_max_rows,
                "batch-max-rows",
                "BATCH_MAX_ROWS",
                batch_default.max_rows,
                positive,
            )?,
            max_bytes: r.parse(
                &flags.batch_max_bytes,
                "batch-max-bytes",
                "BATCH_MAX_BYTES",
                batch_default.max_bytes,
                bytes,
            )?,
            max_age: r.parse(
                &flags.batch_max_age,
                "batch-max-age",
                "BATCH_MAX_AGE",
                batch_default.max_age,
                millis,
            )?,
            max_inflight_inserts: r.parse(
                &flags.batch_max_inflight_inserts,
                "batch-max-inflight-inserts",
                "BATCH_MAX_INFLIGHT_INSERTS",
                batch_default.max_inflight_inserts,
                positive,
            )?,
            max_queue_rows: r.parse(
                &flags.batch_max_queue_rows,
                "batch-max-queue-rows",
                "BATCH_MAX_QUEUE_ROWS",
                batch_default.max_queue_rows,
                positive,
            )?,
        };
        let admin = AdminConfig {
            socket: r
                .raw(&flags.admin_socket, "admin-socket", "ADMIN_SOCKET")
                .map(|raw| PathBuf::from(raw.value)),
            worker_id: r.parse(
                &flags.worker_id,
                "worker-id",
                "WORKER_ID",
                "1".into(),
                worker_id,
            )?,
        };
        let memory_limit = r.parse(
            &flags.worker_memory_limit,
            "worker-memory-limit",
            "WORKER_MEMORY_LIMIT",
            1 << 30,
            bytes,
        )?;
        let supervision = SupervisionConfig {
            memory_limit: (memory_limit > 0).then_some(memory_limit as u64),
            watchdog: watchdog(env),
            check_interval: Duration::from_secs(1),
            cpu_slice: r.parse(
                &flags.worker_cpu_slice_us,
                "worker-cpu-slice-us",
                "WORKER_CPU_SLICE_US",
                Some(crate::sched::DEFAULT_SLICE),
                cpu_slice,
            )?,
        };
        let shutdown_timeout = r.parse(
            &flags.graceful_shutdown_timeout,
            "graceful-shutdown-timeout",
            "GRACEFUL_SHUTDOWN_TIMEOUT",
            Duration::from_secs(30),
            millis,
        )?;
        let (ack_mode, spool) = spool::load(&r, flags, &admin.worker_id)?;
        Ok(Config {
            ack_mode,
            spool,
            listen,
            ingest,
            clickhouse,
            batch,
            admin,
            supervision,
            shutdown_timeout,
        })
    }
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

fn listen_addrs(flags: &ServeFlags, env: &dyn Lookup) -> Result<Vec<SocketAddr>, ConfigError> {
    let (name, values): (&str, Vec<String>) = if !flags.listen.is_empty() {
        ("--listen", flags.listen.clone())
    } else if let Some(list) = env.get("LISTEN_ADDRS").filter(|v| !v.trim().is_empty()) {
        (
            "LISTEN_ADDRS",
            list.split(',').map(|s| s.trim().to_string()).collect(),
        )
    } else {
        return Ok(vec![SocketAddr::from(([127, 0, 0, 1], 3000))]);
    };
    values
        .iter()
        .map(|v| {
            v.parse::<SocketAddr>().map_err(|_| ConfigError {
                source_name: name.to_string(),
                value: v.clone(),
                reason: "expected IP:PORT, e.g. 127.0.0.1:3000 or [::1]:3000".into(),
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
