//! The flags of `zero-logs serve`: one per setting, each overriding the environment
//! variable named in its help (flag > environment > default, see [`super`]).

use clap::Args;

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
    /// LZ4 on INSERT bodies: auto (none when ClickHouse is on a loopback address, lz4
    /// otherwise), lz4 or none. [env: CLICKHOUSE_COMPRESSION] [default: auto]
    #[arg(long, value_name = "MODE")]
    pub clickhouse_compression: Option<String>,
    /// Rows per INSERT at most. [env: BATCH_MAX_ROWS] [default: 100000]
    #[arg(long, value_name = "N")]
    pub batch_max_rows: Option<String>,
    /// Bytes per INSERT at most, counted in the compact encoding batches are queued in
    /// (~115 per typical record). [env: BATCH_MAX_BYTES] [default: 32MiB]
    #[arg(long, value_name = "BYTES")]
    pub batch_max_bytes: Option<String>,
    /// Oldest row's age that forces a flush, in ms. [env: BATCH_MAX_AGE] [default: 1000]
    #[arg(long, value_name = "MS")]
    pub batch_max_age: Option<String>,
    /// INSERTs in flight at once. [env: BATCH_MAX_INFLIGHT_INSERTS] [default: 2]
    #[arg(long, value_name = "N")]
    pub batch_max_inflight_inserts: Option<String>,
    /// Rows waiting for ClickHouse before new requests get 429 (ACK_MODE=clickhouse);
    /// with ACK_MODE=spool, rows read from the spool ahead of the INSERTs, at most
    /// BATCH_MAX_ROWS x (BATCH_MAX_INFLIGHT_INSERTS + 1).
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
    /// Validate large or compressed bodies on a dedicated CPU pool instead of inline
    /// (plain bodies up to 32 KiB are always validated inline) (true|false).
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
    /// CPU slice in µs the worker's threads ask the kernel for (Linux >= 6.12): a
    /// short one lets a thread woken by a finished fdatasync or a request run at once
    /// on busy cores instead of after the tick (lower acknowledgement p99, ~10 % more
    /// CPU). 0 = the kernel's default; else 100..=100000.
    /// [env: WORKER_CPU_SLICE_US] [default: 100]
    #[arg(long, value_name = "US")]
    pub worker_cpu_slice_us: Option<String>,
    /// Longest a stop may take to finish requests and flush, in ms.
    /// [env: GRACEFUL_SHUTDOWN_TIMEOUT] [default: 30000]
    #[arg(long, value_name = "MS")]
    pub graceful_shutdown_timeout: Option<String>,
    /// When to acknowledge: `spool` (rows fdatasync'ed on local disk; low latency,
    /// survives ClickHouse outages) or `clickhouse` (after the INSERT committed; no
    /// local disk). [env: ACK_MODE] [default: spool]
    #[arg(long, value_name = "MODE")]
    pub ack_mode: Option<String>,
    /// Root of the per-instance spool directories (this instance uses <dir>/<WORKER_ID>).
    /// [env: SPOOL_DIR] [default: $STATE_DIRECTORY/spool, else
    /// $XDG_STATE_HOME/zero-logs/spool, else ~/.local/state/zero-logs/spool]
    #[arg(long, value_name = "PATH")]
    pub spool_dir: Option<String>,
    /// Spool bytes on disk before new requests get 429. [env: SPOOL_MAX_BYTES] [default: 1GiB]
    #[arg(long, value_name = "BYTES")]
    pub spool_max_bytes: Option<String>,
    /// Spool segment file size. [env: SPOOL_SEGMENT_BYTES] [default: 64MiB]
    #[arg(long, value_name = "BYTES")]
    pub spool_segment_bytes: Option<String>,
    /// Longest an append waits for others to share its fdatasync, in ms.
    /// [env: SPOOL_COMMIT_WINDOW] [default: 2]
    #[arg(long, value_name = "MS")]
    pub spool_commit_window: Option<String>,
    /// Spooled bytes kept in memory for the batcher (beyond: read back from disk).
    /// [env: SPOOL_MEMORY_BYTES] [default: 16MiB]
    #[arg(long, value_name = "BYTES")]
    pub spool_memory_bytes: Option<String>,
    /// Keep a zero-filled spare segment ready, so appends overwrite written blocks and
    /// their fdatasync changes no metadata (costs one segment of disk; off on tmpfs).
    /// [env: SPOOL_PREALLOCATE] [default: true]
    #[arg(long, value_name = "BOOL")]
    pub spool_preallocate: Option<String>,
    /// A stopped instance's spool is adopted after it was idle this long, in ms.
    /// [env: SPOOL_ADOPT_IDLE] [default: 30000]
    #[arg(long, value_name = "MS")]
    pub spool_adopt_idle: Option<String>,
    /// How often to look for orphaned spools, in ms. [env: SPOOL_ADOPT_INTERVAL] [default: 30000]
    #[arg(long, value_name = "MS")]
    pub spool_adopt_interval: Option<String>,
}
