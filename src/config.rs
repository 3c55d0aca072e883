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

use clap::Args;

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

/// Flags of `zero-logs serve`. Each overrides the environment variable named in its help.
#[derive(Debug, Default, Clone, Args)]
pub struct ServeFlags {
    /// Address to listen on when systemd passes no sockets; repeat for several.
    /// [env: LISTEN_ADDRS, comma-separated] [default: 127.0.0.1:3000]
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Close keep-alive connections gracefully at this age (ms), so long-lived
    /// clients spread over instances again after restarts and scaling.
    /// [env: CONNECTION_MAX_AGE] [default: 120000]
    #[arg(long, value_name = "MS")]
    pub connection_max_age: Option<String>,
    /// Per-instance admin unix socket serving /health, /stats, /metrics.
    /// [env: ADMIN_SOCKET] [default: none]
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<String>,
    /// Instance number, reported in /stats and as WORKER_ID in the journal.
    /// [env: WORKER_ID] [default: 1]
    #[arg(long, value_name = "N")]
    pub worker_id: Option<String>,
    /// ClickHouse HTTP interface URL. [env: CLICKHOUSE_URL] [default: http://127.0.0.1:8123]
    #[arg(long, value_name = "URL")]
    pub clickhouse_url: Option<String>,
    /// Database (created if absent). [env: CLICKHOUSE_DATABASE] [default: logs]
    #[arg(long, value_name = "NAME")]
    pub clickhouse_database: Option<String>,
    /// Table (created if absent). [env: CLICKHOUSE_TABLE] [default: logs]
    #[arg(long, value_name = "NAME")]
    pub clickhouse_table: Option<String>,
    /// ClickHouse user. [env: CLICKHOUSE_USER] [default: default]
    #[arg(long, value_name = "NAME")]
    pub clickhouse_user: Option<String>,
    /// Create the database and table when absent (true|false).
    /// [env: CLICKHOUSE_CREATE_TABLE] [default: true]
    #[arg(long, value_name = "BOOL")]
    pub clickhouse_create_table: Option<String>,
    /// How long one batch may retry a failing ClickHouse before its requests get 503,
    /// in ms. [env: CLICKHOUSE_RETRY_BUDGET] [default: 10000]
    #[arg(long, value_name = "MS")]
    pub clickhouse_retry_budget: Option<String>,
    /// Timeout of one INSERT, in ms. [env: CLICKHOUSE_INSERT_TIMEOUT] [default: 30000]
    #[arg(long, value_name = "MS")]
    pub clickhouse_insert_timeout: Option<String>,
    /// Rows per INSERT at most. [env: BATCH_MAX_ROWS] [default: 100000]
    #[arg(long, value_name = "N")]
    pub batch_max_rows: Option<String>,
    /// Bytes per INSERT at most. [env: BATCH_MAX_BYTES] [default: 32MiB]
    #[arg(long, value_name = "BYTES")]
    pub batch_max_bytes: Option<String>,
    /// Oldest row's age that forces a flush, in ms. [env: BATCH_MAX_AGE] [default: 1000]
    #[arg(long, value_name = "MS")]
    pub batch_max_age: Option<String>,
    /// INSERTs in flight at once. [env: BATCH_MAX_INFLIGHT_INSERTS] [default: 2]
    #[arg(long, value_name = "N")]
    pub batch_max_inflight_inserts: Option<String>,
    /// Rows waiting for ClickHouse before new requests get 429.
    /// [env: BATCH_MAX_QUEUE_ROWS] [default: 1000000]
    #[arg(long, value_name = "N")]
    pub batch_max_queue_rows: Option<String>,
    /// Largest request body, also after decompression (413 beyond).
    /// [env: MAX_BODY_BYTES] [default: 10MiB]
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<String>,
    /// Request bytes being processed at once before new requests get 429.
    /// [env: MAX_INFLIGHT_BYTES] [default: 256MiB]
    #[arg(long, value_name = "BYTES")]
    pub max_inflight_bytes: Option<String>,
    /// Records per request at most. [env: MAX_BATCH_RECORDS] [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_batch_records: Option<String>,
    /// Largest message. [env: MAX_MESSAGE_BYTES] [default: 64KiB]
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<String>,
    /// Largest service name. [env: MAX_SERVICE_BYTES] [default: 256]
    #[arg(long, value_name = "BYTES")]
    pub max_service_bytes: Option<String>,
    /// Attributes per record at most. [env: MAX_ATTRIBUTES] [default: 64]
    #[arg(long, value_name = "N")]
    pub max_attributes: Option<String>,
    /// Largest attribute key. [env: MAX_ATTRIBUTE_KEY_BYTES] [default: 128]
    #[arg(long, value_name = "BYTES")]
    pub max_attribute_key_bytes: Option<String>,
    /// Largest attribute value. [env: MAX_ATTRIBUTE_VALUE_BYTES] [default: 4096]
    #[arg(long, value_name = "BYTES")]
    pub max_attribute_value_bytes: Option<String>,
    /// Validate on a dedicated CPU pool instead of inline (true|false).
    /// [env: ENABLE_WORKER_VALIDATION] [default: true]
    #[arg(long, value_name = "BOOL")]
    pub enable_worker_validation: Option<String>,
    /// Validation pool threads kept at least (must be <= max).
    /// [env: WORKER_POOL_MIN_WORKERS] [default: 1]
    #[arg(long, value_name = "N")]
    pub worker_pool_min_workers: Option<String>,
    /// Validation pool threads at most. [env: WORKER_POOL_MAX_WORKERS] [default: CPU cores]
    #[arg(long, value_name = "N")]
    pub worker_pool_max_workers: Option<String>,
    /// Resident memory above which the worker drains and exits for systemd to start
    /// a fresh one (0 = no limit). [env: WORKER_MEMORY_LIMIT] [default: 1GiB]
    #[arg(long, value_name = "BYTES")]
    pub worker_memory_limit: Option<String>,
    /// Longest a stop may take to finish requests and flush, in ms.
    /// [env: GRACEFUL_SHUTDOWN_TIMEOUT] [default: 30000]
    #[arg(long, value_name = "MS")]
    pub graceful_shutdown_timeout: Option<String>,
}

/// Reads one setting: flag, else environment, else none.
struct Reader<'a> {
    env: &'a dyn Lookup,
}

/// One raw value and the name to blame when it is wrong.
struct Raw {
    name: String,
    value: String,
}

impl Reader<'_> {
    fn raw(&self, flag: &Option<String>, flag_name: &str, var: &str) -> Option<Raw> {
        if let Some(value) = flag {
            return Some(Raw {
                name: format!("--{flag_name}"),
                value: value.clone(),
            });
        }
        self.env
            .get(var)
            .filter(|v| !v.trim().is_empty())
            .map(|value| Raw {
                name: var.to_string(),
                value,
            })
    }

    fn parse<T>(
        &self,
        flag: &Option<String>,
        flag_name: &str,
        var: &str,
        default: T,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(flag, flag_name, var) {
            None => Ok(default),
            Some(raw) => parse(raw.value.trim()).map_err(|reason| ConfigError {
                source_name: raw.name,
                value: raw.value,
                reason,
            }),
        }
    }

    fn string(&self, flag: &Option<String>, flag_name: &str, var: &str, default: &str) -> String {
        self.raw(flag, flag_name, var)
            .map(|r| r.value)
            .unwrap_or_else(|| default.to_string())
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
        };
        let shutdown_timeout = r.parse(
            &flags.graceful_shutdown_timeout,
            "graceful-shutdown-timeout",
            "GRACEFUL_SHUTDOWN_TIMEOUT",
            Duration::from_secs(30),
            millis,
        )?;
        Ok(Config {
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

fn count(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .map_err(|_| "expected a whole number, e.g. 64".to_string())
}

fn positive(text: &str) -> Result<usize, String> {
    match count(text)? {
        0 => Err("expected a whole number of at least 1".into()),
        n => Ok(n),
    }
}

fn millis(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| "expected milliseconds as a whole number, e.g. 5000".to_string())
}

fn boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Bytes as a whole number with an optional unit: `512`, `64K`, `10MB`, `1GiB`.
/// Decimal and binary prefixes both mean powers of 1024, as the old deployment did.
pub fn bytes(text: &str) -> Result<usize, String> {
    const FORM: &str = "expected bytes, e.g. 1048576, 512K, 10MB or 1GiB";
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits.parse().map_err(|_| FORM.to_string())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(FORM.into()),
    };
    n.checked_mul(1usize << shift)
        .ok_or_else(|| FORM.to_string())
}

fn identifier(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !text.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(text.to_string())
    } else {
        Err("expected an identifier of letters, digits and _, not starting with a digit".into())
    }
}

fn worker_id(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(text.to_string())
    } else {
        Err("expected a short name of letters, digits, - and _ (systemd's %i), e.g. 3".into())
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL of ClickHouse's HTTP interface, e.g. http://127.0.0.1:8123")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("the URL has no host, e.g. http://127.0.0.1:8123".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
