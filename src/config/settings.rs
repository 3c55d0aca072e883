//! Every setting of zero-logs, declared once: its environment variable, who reads
//! it, its flag, its default (as written in the env file), its parser and its doc.
//!
//! Everything else is derived from this table: the flags of `zero-logs serve` and
//! its `--help` ([`super::flags`]), the loaders ([`super::Config::load`] and the
//! ctl daemon's), `zero-logs config` and `zero-logs-ctl config` (the effective
//! values and where each came from), and the rendered docs ([`super::docs`]): the
//! shipped `systemd/zero-logs.env` and the settings tables of the README and
//! docs/CTL.md, which a test compares with what is in the repository.
//!
//! Adding a setting is one entry here plus its use: `r.get(&settings::NAME)` in a
//! loader. The entry's default goes through the entry's own parser, so the value
//! documented is the value used (a test parses every written default).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{
    absolute_path, bind_addrs, boolean, bytes, count, cpu_slice, days, identifier, millis,
    millis_at_least, optional_path, port, positive, rate, text, url_list, worker_id,
};
use super::spool::AckMode;
use super::{Compression, TableSchema};
use crate::auth::{limits::percent, AuthMode};

/// Which program reads a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `zero-logs serve`: every such setting has a flag unless [`Flag::EnvOnly`].
    Worker,
    /// `zero-logs-ctl daemon` (and `scale`, `validate`).
    Daemon,
    /// `zero-logs-generator`, the systemd generator (and `zero-logs-ctl scale`).
    Generator,
}

/// The flag of a worker setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// `--` + the variable in lower case with `-` for `_` (`BATCH_MAX_ROWS` → `--batch-max-rows`).
    Derived,
    /// A flag of another name (repeatable; values join with `,` as in the variable).
    Named(&'static str),
    /// No flag: a secret that must not show in `ps`, or read by a library.
    EnvOnly,
}

/// A group of settings, in the env file's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Cluster,
    Daemon,
    Listening,
    Tls,
    ClickHouse,
    Batching,
    Spool,
    Requests,
    Auth,
    Pool,
    Logging,
}

impl Section {
    pub const ALL: [Section; 11] = [
        Section::Cluster,
        Section::Daemon,
        Section::Listening,
        Section::Tls,
        Section::ClickHouse,
        Section::Batching,
        Section::Spool,
        Section::Requests,
        Section::Auth,
        Section::Pool,
        Section::Logging,
    ];

    /// The heading in the env file and in `--help`.
    pub fn title(self) -> &'static str {
        match self {
            Section::Cluster => {
                "cluster: how systemd runs the workers (read by zero-logs-generator)"
            }
            Section::Daemon => "management daemon: zero-logs-ctl.service (docs/CTL.md)",
            Section::Listening => "listening",
            Section::Tls => "TLS (docs/SYSTEMD.md: certificates, reload, TLS beside plaintext)",
            Section::ClickHouse => "ClickHouse",
            Section::Batching => "batching",
            Section::Spool => "acknowledgement and spool",
            Section::Requests => "requests",
            Section::Auth => "authentication and per-key limits (docs/SECURITY.md)",
            Section::Pool => "validation pool",
            Section::Logging => "logging",
        }
    }

    /// What the env file says under the heading, before the settings.
    pub fn intro(self) -> &'static str {
        match self {
            Section::Listening => {
                "Under systemd the port comes from zero-logs.socket (default 127.0.0.1:3000; \
                 change it with `systemctl edit zero-logs.socket`) and the three settings below \
                 have no effect: LISTEN_ADDRS is used only by a worker started by hand, and the \
                 unit sets ADMIN_SOCKET (/run/zero-logs/N/admin.sock) and WORKER_ID (N) per \
                 instance."
            }
            Section::Tls => {
                "Off unless TLS_CERT_FILE is set. The files are read at start and again when \
                 they change (checked every 2 s) or on `systemctl reload 'zero-logs@*'`; a \
                 new certificate that does not load is logged and the one in use kept. They \
                 must be readable by the user zero-logs (e.g. /etc/zero-logs/tls/, group \
                 zero-logs, mode 0640)."
            }
            _ => "",
        }
    }
}

/// What is known of a setting, whatever its type.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// The environment variable, e.g. `BATCH_MAX_ROWS`.
    pub var: &'static str,
    pub section: Section,
    pub read_by: &'static [Program],
    pub flag: Flag,
    /// Placeholder of the flag's value in `--help`: `MS`, `BYTES`, `N`, …
    pub value_name: &'static str,
    /// The default as written in the env file; empty when it is computed or none.
    pub default: &'static str,
    /// What the docs say when `default` is empty, e.g. `CPU cores`.
    pub default_text: &'static str,
    /// Masked by `zero-logs config`; taken verbatim (not trimmed).
    pub secret: bool,
    /// One paragraph (Markdown backticks allowed): `--help`, env file, README.
    pub doc: &'static str,
}

impl Meta {
    const BASE: Meta = Meta {
        var: "",
        section: Section::Logging,
        read_by: &[Program::Worker],
        flag: Flag::Derived,
        value_name: "VALUE",
        default: "",
        default_text: "none",
        secret: false,
        doc: "",
    };

    /// The flag's long name without `--`, if the worker has one for it.
    pub fn flag_name(&self) -> Option<String> {
        if !self.read_by.contains(&Program::Worker) {
            return None;
        }
        match self.flag {
            Flag::Derived => Some(self.var.to_ascii_lowercase().replace('_', "-")),
            Flag::Named(name) => Some(name.to_string()),
            Flag::EnvOnly => None,
        }
    }

    /// The default as the docs show it.
    pub fn default_shown(&self) -> &'static str {
        if self.default.is_empty() {
            self.default_text
        } else {
            self.default
        }
    }

    /// The doc as one line of plain text (no Markdown backticks).
    pub fn plain_doc(&self) -> String {
        self.markdown_doc().replace('`', "")
    }

    /// The doc as one line, as written (Markdown).
    pub fn markdown_doc(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A setting of type `T`: its description and its parser.
pub struct Setting<T> {
    pub meta: Meta,
    /// Parses a trimmed, non-empty value; the error says what is accepted.
    pub parse: fn(&str) -> Result<T, String>,
}

impl<T> Setting<T> {
    /// The written default, parsed; `None` when the default is computed.
    pub fn default_value(&self) -> Option<T> {
        if self.meta.default.is_empty() {
            return None;
        }
        // The table's own test parses every written default.
        Some((self.parse)(self.meta.default).expect("a written default parses"))
    }

    /// The written default, parsed, for `Default` impls; panics for a computed one.
    pub fn written_default(&self) -> T {
        self.default_value()
            .unwrap_or_else(|| panic!("{} has no written default", self.meta.var))
    }
}

/// Declares the settings: for each, a typed `pub const` and its entry in [`ALL`].
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty = $parse:expr, { $($field:ident: $value:expr),* $(,)? }
    )*) => {
        $(
            $(#[doc = $doc])*
            pub const $name: Setting<$ty> = Setting {
                meta: Meta {
                    var: stringify!($name),
                    doc: concat!($($doc, "\n"),*),
                    $($field: $value,)*
                    ..Meta::BASE
                },
                parse: $parse,
            };
        )*

        /// Every setting, in the env file's order.
        pub const ALL: &[Meta] = &[$($name.meta),*];

        /// The written defaults that their own parser refuses (empty when all is well).
        pub fn unparsable_defaults() -> Vec<String> {
            let mut bad = Vec::new();
            $(
                let meta = &$name.meta;
                if !meta.default.is_empty() {
                    if let Err(reason) = ($name.parse)(meta.default) {
                        bad.push(format!("{}={}: {reason}", meta.var, meta.default));
                    }
                }
            )*
            bad
        }
    };
}

const DAEMON: &[Program] = &[Program::Daemon];
const GENERATOR: &[Program] = &[Program::Generator];

fn cluster_workers(text: &str) -> Result<u32, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(0);
    }
    text.parse::<u32>()
        .map_err(|_| "expected a whole number; 0 or auto = one per CPU".into())
}

/// A `remote_servers` cluster name. ClickHouse takes any XML element name; we quote it
/// everywhere, but keep to the characters names are made of in practice.
fn cluster_name(text: &str) -> Result<Option<String>, String> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(Some(text.to_string()))
    } else {
        Err(
            "expected a cluster name of letters, digits, _, - and . (a name under \
             <remote_servers> in the ClickHouse config)"
                .into(),
        )
    }
}

fn worker_bound(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .map_err(|_| "expected a whole number; 0 = no bound".into())
}

fn watchdog_ms(text: &str) -> Result<Duration, String> {
    let d = millis(text)?;
    if !d.is_zero() && d < Duration::from_millis(1000) {
        return Err("expected milliseconds, at least 1000; 0 = off".into());
    }
    Ok(d)
}

fn at_least_100_ms(text: &str) -> Result<Duration, String> {
    millis_at_least(text, 100)
}

fn at_least_1000_ms(text: &str) -> Result<Duration, String> {
    millis_at_least(text, 1000)
}

fn at_least_1_ms(text: &str) -> Result<Duration, String> {
    millis_at_least(text, 1)
}

fn spool_cap(text: &str) -> Result<u64, String> {
    bytes_at_least(text, 1 << 20, "1MiB")
}

fn segment_size(text: &str) -> Result<u64, String> {
    bytes_at_least(text, 64 << 10, "64KiB")
}

fn bytes_at_least(text: &str, min: u64, min_text: &str) -> Result<u64, String> {
    let n = bytes(text)? as u64;
    if n < min {
        return Err(format!("expected at least {min_text}"));
    }
    Ok(n)
}

fn memory_limit(text: &str) -> Result<u64, String> {
    bytes(text).map(|b| b as u64)
}

settings! {
    // --- cluster (generator; two are also the worker's) ---

    /// Number of workers, zero-logs@1 … zero-logs@N. 0 (or auto): one per CPU core.
    CLUSTER_WORKERS: u32 = cluster_workers, {
        section: Section::Cluster, read_by: GENERATOR, value_name: "N", default: "0",
    }
    /// Lower bound of CLUSTER_WORKERS, of `zero-logs-ctl scale` and `POST /scale`, and of
    /// autoscaling (the daemon reads it anew at each call). 0: no bound.
    CLUSTER_MIN_WORKERS: u32 = worker_bound, {
        section: Section::Cluster, read_by: &[Program::Generator, Program::Daemon],
        value_name: "N", default: "0",
    }
    /// Upper bound of CLUSTER_WORKERS, of `zero-logs-ctl scale` and `POST /scale`, and of
    /// autoscaling (the daemon reads it anew at each call). 0: no bound.
    CLUSTER_MAX_WORKERS: u32 = worker_bound, {
        section: Section::Cluster, read_by: &[Program::Generator, Program::Daemon],
        value_name: "N", default: "0",
    }
    /// Pause (ms) before systemd starts a worker again after it exited (RestartSec=).
    WORKER_RESTART_DELAY: Duration = millis, {
        section: Section::Cluster, read_by: GENERATOR, value_name: "MS", default: "1000",
    }
    /// Resident memory above which a worker drains and exits 0 so that systemd starts a
    /// fresh one (0: no limit). systemd's MemoryHigh=/MemoryMax= are set to 1.25× and
    /// 1.5× of it as a backstop.
    WORKER_MEMORY_LIMIT: u64 = memory_limit, {
        section: Section::Cluster,
        read_by: &[Program::Worker, Program::Generator, Program::Daemon],
        value_name: "BYTES", default: "1GiB",
    }
    /// systemd kills (SIGABRT) and restarts a worker whose liveness pings stop for this
    /// long (WatchdogSec=; ms, at least 1000, 0: off).
    WORKER_WATCHDOG_TIMEOUT: Duration = watchdog_ms, {
        section: Section::Cluster, read_by: GENERATOR, value_name: "MS", default: "10000",
    }
    /// Longest a stop may take to finish requests and flush, in ms; systemd's
    /// TimeoutStopSec= is this + 5 s.
    GRACEFUL_SHUTDOWN_TIMEOUT: Duration = millis, {
        section: Section::Cluster, read_by: &[Program::Worker, Program::Generator],
        value_name: "MS", default: "30000",
    }
    /// CPU slice (µs, 100–100000) the worker's threads ask the kernel for (Linux ≥ 6.12;
    /// older kernels ignore it, logged). A short slice lets a thread woken by a finished
    /// `fdatasync` or a request run at once on busy cores instead of after the scheduler
    /// tick: on the 2-core development VM it cut the acknowledgement p99 at 80 % of the
    /// sustained peak from 10.5 to 7.4–9.4 ms, for up to ~10 % more CPU per record
    /// (docs/BENCHMARKS.md). It does not change the worker's CPU share. `0` keeps the
    /// kernel's default. `/stats` shows it as `cpu_slice_us`.
    WORKER_CPU_SLICE_US: Option<Duration> = cpu_slice, {
        section: Section::Cluster, value_name: "US", default: "100",
    }

    // --- management daemon ---

    /// Address of the management API (GET /stats, /health; POST /restart, /scale): an IP
    /// address, loopback by default.
    CLUSTER_API_HOST: IpAddr = |t| t.parse::<IpAddr>()
        .map_err(|_| "expected an IP address, e.g. 127.0.0.1 or ::1".into()), {
        section: Section::Daemon, read_by: DAEMON, default: "127.0.0.1",
    }
    /// Port of the management API; not 9000, which is ClickHouse's native port.
    CLUSTER_API_PORT: u16 = port, {
        section: Section::Daemon, read_by: DAEMON, default: "9100",
    }
    /// Bearer token of the mutating calls, read once at start. Created (mode 0600, random)
    /// when missing; the daemon refuses to start if group or others can read it.
    CLUSTER_API_TOKEN_FILE: PathBuf = absolute_path, {
        section: Section::Daemon, read_by: DAEMON, default: "/etc/zero-logs/api-token",
    }
    /// Every instance's /health is asked this often (ms, at least 100); 2 misses in a row
    /// (no answer within min(interval/2, 2 s), or 503) restart it through systemd (it drains).
    HEALTH_CHECK_INTERVAL: Duration = at_least_100_ms, {
        section: Section::Daemon, read_by: DAEMON, default: "5000",
    }
    /// With LOG_CLUSTER_STATS=true, one stats line (EVENT=cluster_stats) goes to the
    /// journal this often (ms, at least 100).
    HEALTH_REPORT_INTERVAL: Duration = at_least_100_ms, {
        section: Section::Daemon, read_by: DAEMON, default: "60000",
    }
    /// Log the cluster's stats line every HEALTH_REPORT_INTERVAL.
    LOG_CLUSTER_STATS: bool = boolean, {
        section: Section::Daemon, read_by: DAEMON, default: "false",
    }
    /// Memory (cgroup MemoryCurrent, else the worker's RSS) above which the daemon
    /// replaces an instance gracefully, at 2 checks in a row. Empty: WORKER_MEMORY_LIMIT
    /// × 1.15, so the worker's own restart at WORKER_MEMORY_LIMIT comes first and
    /// systemd's MemoryHigh= (× 1.25) later. 0: off.
    CTL_MEMORY_LIMIT: u64 = memory_limit, {
        section: Section::Daemon, read_by: DAEMON, default_text: "WORKER_MEMORY_LIMIT × 1.15",
    }
    /// Autoscaling between CLUSTER_MIN_WORKERS and CLUSTER_MAX_WORKERS (unset: 1 and the
    /// CPU count), one worker at a time: up when every sample of AUTOSCALE_WINDOW is above
    /// AUTOSCALE_UP_RPS requests/s per worker, down when every one is below
    /// AUTOSCALE_DOWN_RPS; then nothing for AUTOSCALE_COOLDOWN.
    AUTOSCALE: bool = boolean, {
        section: Section::Daemon, read_by: DAEMON, default: "false",
    }
    /// How long (ms, at least 1000) the load must stay beyond a threshold before a step.
    AUTOSCALE_WINDOW: Duration = at_least_1000_ms, {
        section: Section::Daemon, read_by: DAEMON, default: "60000",
    }
    /// Requests/s per running worker above which one worker is added.
    AUTOSCALE_UP_RPS: f64 = rate, {
        section: Section::Daemon, read_by: DAEMON, default: "2000",
    }
    /// Requests/s per running worker below which one worker is removed (must be below
    /// AUTOSCALE_UP_RPS).
    AUTOSCALE_DOWN_RPS: f64 = rate, {
        section: Section::Daemon, read_by: DAEMON, default: "200",
    }
    /// Pause (ms) after any change of the worker count before the next decision.
    AUTOSCALE_COOLDOWN: Duration = millis, {
        section: Section::Daemon, read_by: DAEMON, default: "120000",
    }

    // --- listening ---

    /// Addresses bound when systemd passes no sockets (comma list; the flag repeats).
    LISTEN_ADDRS: Vec<SocketAddr> = bind_addrs, {
        section: Section::Listening, flag: Flag::Named("listen"), value_name: "ADDR",
        default: "127.0.0.1:3000",
    }
    /// Per-instance unix socket serving /health, /stats, /metrics.
    ADMIN_SOCKET: Option<PathBuf> = optional_path, {
        section: Section::Listening, value_name: "PATH",
    }
    /// Instance number (systemd's %i): in /stats, metrics labels and the journal's WORKER_ID.
    WORKER_ID: String = worker_id, {
        section: Section::Listening, value_name: "N", default: "1",
    }
    /// ms after which a keep-alive connection is closed gracefully (after its current
    /// request), so long-lived clients spread over the instances again after restarts and
    /// scaling.
    CONNECTION_MAX_AGE: Duration = millis, {
        section: Section::Listening, value_name: "MS", default: "120000",
    }

    // --- TLS ---

    /// PEM certificate chain of the ingest listeners, the server's certificate first
    /// (intermediates after it). Setting it turns TLS on: HTTP/1.1, HTTP/2 (ALPN `h2`),
    /// gRPC and OTLP on the same TLS port.
    TLS_CERT_FILE: Option<PathBuf> = optional_path, {
        section: Section::Tls, value_name: "PATH",
    }
    /// PEM private key of TLS_CERT_FILE's certificate (PKCS#8, or PKCS#1 RSA, or SEC1
    /// EC; RSA, ECDSA or Ed25519).
    TLS_KEY_FILE: Option<PathBuf> = optional_path, {
        section: Section::Tls, value_name: "PATH",
    }
    /// PEM CA certificate(s) that client certificates must chain to: set, every TLS client
    /// must present a valid certificate (mutual TLS). Unset: no client certificates.
    TLS_CLIENT_CA_FILE: Option<PathBuf> = optional_path, {
        section: Section::Tls, value_name: "PATH",
    }
    /// Which listeners are TLS (comma list of IP:PORT; the flag repeats). Empty: all of
    /// them. Set: only these, the others stay plaintext; a worker started by hand binds
    /// them besides LISTEN_ADDRS, under systemd they pick the sockets of zero-logs.socket
    /// with that local address (an unspecified IP such as `0.0.0.0` or `[::]` on either
    /// side matches by port).
    TLS_LISTEN_ADDRS: Vec<SocketAddr> = bind_addrs, {
        section: Section::Tls, flag: Flag::Named("tls-listen"), value_name: "ADDR",
        default_text: "empty: every listener",
    }

    // --- ClickHouse ---

    /// ClickHouse HTTP interface URL, or several separated by commas (independent
    /// servers or replicas): INSERTs go to the healthy endpoint with the fewest in
    /// flight, a failing one is taken out and probed back (docs/SCALE.md).
    CLICKHOUSE_URL: String = url_list, {
        section: Section::ClickHouse, value_name: "URL[,URL…]", default: "http://127.0.0.1:8123",
    }
    /// Database (created if absent, see CLICKHOUSE_CREATE_TABLE).
    CLICKHOUSE_DATABASE: String = identifier, {
        section: Section::ClickHouse, value_name: "NAME", default: "logs",
    }
    /// Table (created if absent, see CLICKHOUSE_CREATE_TABLE); unset: `logs`, or
    /// `otel_logs` with CLICKHOUSE_SCHEMA=otel.
    CLICKHOUSE_TABLE: String = identifier, {
        section: Section::ClickHouse, value_name: "NAME",
        default_text: "`logs`, or `otel_logs` with CLICKHOUSE_SCHEMA=otel",
    }
    /// Table layout: `native` (zero-logs' columns) or `otel` (the OpenTelemetry
    /// Collector's `otel_logs`, for Grafana's OTel mode and HyperDX; ClickHouse ≥ 22.1).
    CLICKHOUSE_SCHEMA: TableSchema = TableSchema::parse, {
        section: Section::ClickHouse, value_name: "LAYOUT", default: "native",
    }
    /// Days a table zero-logs creates keeps rows (a TTL on the event time; ClickHouse ≥
    /// 19.6); 0 keeps them for ever. Not applied to a table that exists.
    CLICKHOUSE_TTL_DAYS: u32 = days, {
        section: Section::ClickHouse, value_name: "DAYS", default: "0",
    }
    /// Create the database and table when absent.
    CLICKHOUSE_CREATE_TABLE: bool = boolean, {
        section: Section::ClickHouse, value_name: "BOOL", default: "true",
    }
    /// ClickHouse user.
    CLICKHOUSE_USER: String = text, {
        section: Section::ClickHouse, value_name: "NAME", default: "default",
    }
    /// Password; no flag, so it never shows in `ps`. Keep the env file mode 0640.
    CLICKHOUSE_PASSWORD: String = text, {
        section: Section::ClickHouse, flag: Flag::EnvOnly, default_text: "empty", secret: true,
    }
    /// ms one batch may retry transient failures before its requests get 503
    /// (ACK_MODE=clickhouse; spooled rows retry until delivered).
    CLICKHOUSE_RETRY_BUDGET: Duration = millis, {
        section: Section::ClickHouse, value_name: "MS", default: "10000",
    }
    /// ms timeout of one INSERT.
    CLICKHOUSE_INSERT_TIMEOUT: Duration = millis, {
        section: Section::ClickHouse, value_name: "MS", default: "30000",
    }
    /// LZ4 on INSERT bodies: `auto` (none to a loopback address, where it only costs CPU
    /// on both ends; LZ4 otherwise), `lz4`, `none`.
    CLICKHOUSE_COMPRESSION: Compression = Compression::parse, {
        section: Section::ClickHouse, value_name: "MODE", default: "auto",
    }
    /// Cluster (a `remote_servers` name of the server at CLICKHOUSE_URL) to write to:
    /// tables are created `ON CLUSTER` (needs ZooKeeper in the servers' config), a
    /// MergeTree `<table>_local` per shard and a `Distributed` `<table>` sharding rows
    /// by a hash of their content, inserted into synchronously. Unset: one server.
    /// docs/SCALE.md.
    CLICKHOUSE_CLUSTER: Option<String> = cluster_name, {
        section: Section::ClickHouse, value_name: "NAME", default_text: "unset: one server",
    }

    // --- batching ---

    /// Rows per INSERT at most.
    BATCH_MAX_ROWS: usize = positive, {
        section: Section::Batching, value_name: "N", default: "100000",
    }
    /// Bytes per INSERT at most, counted in the compact encoding batches are queued in
    /// (~115 per typical record).
    BATCH_MAX_BYTES: usize = bytes, {
        section: Section::Batching, value_name: "BYTES", default: "32MiB",
    }
    /// ms: the oldest queued row forces a flush at this age (about one INSERT per second
    /// per worker).
    BATCH_MAX_AGE: Duration = millis, {
        section: Section::Batching, value_name: "MS", default: "1000",
    }
    /// INSERTs in flight at once.
    BATCH_MAX_INFLIGHT_INSERTS: usize = positive, {
        section: Section::Batching, value_name: "N", default: "2",
    }
    /// Rows waiting for ClickHouse before new requests get 429 (`ACK_MODE=clickhouse`);
    /// with the spool, rows read ahead of the INSERTs, at most
    /// `BATCH_MAX_ROWS × (BATCH_MAX_INFLIGHT_INSERTS + 1)` (and SPOOL_MEMORY_BYTES).
    BATCH_MAX_QUEUE_ROWS: usize = positive, {
        section: Section::Batching, value_name: "N", default: "1000000",
    }

    // --- acknowledgement and spool ---

    /// When a request is acknowledged (202 / gRPC OK): `spool`, once its rows are
    /// `fdatasync`ed in this instance's spool on local disk (low latency; a ClickHouse
    /// outage is absorbed until SPOOL_MAX_BYTES, then 429; delivery at-least-once), or
    /// `clickhouse`, once the INSERT committed (no spool; clients wait for the INSERT and
    /// get 503 while ClickHouse is down). See docs/SPOOL.md.
    ACK_MODE: AckMode = AckMode::parse, {
        section: Section::Spool, value_name: "MODE", default: "spool",
    }
    /// Root of the per-instance spools (`<dir>/<WORKER_ID>`). Under systemd the default is
    /// `$STATE_DIRECTORY/spool`, i.e. /var/lib/zero-logs/spool.
    SPOOL_DIR: PathBuf = |t| Ok(PathBuf::from(t)), {
        section: Section::Spool, value_name: "PATH",
        default_text: "`$STATE_DIRECTORY/spool`, else `$XDG_STATE_HOME/zero-logs/spool`, \
                       else `~/.local/state/zero-logs/spool`",
    }
    /// Spool bytes on disk before new requests get 429.
    SPOOL_MAX_BYTES: u64 = spool_cap, {
        section: Section::Spool, value_name: "BYTES", default: "1GiB",
    }
    /// Segment file size (deleted or recycled once all its rows are in ClickHouse).
    SPOOL_SEGMENT_BYTES: u64 = segment_size, {
        section: Section::Spool, value_name: "BYTES", default: "64MiB",
    }
    /// ms an append may wait for others to share its `fdatasync` (group commit).
    SPOOL_COMMIT_WINDOW: Duration = millis, {
        section: Section::Spool, value_name: "MS", default: "2",
    }
    /// Spooled batches kept in memory for delivery; beyond, read back from disk. Also
    /// the most the batcher reads ahead of its INSERTs (encoded bytes, at least 4MiB).
    SPOOL_MEMORY_BYTES: usize = bytes, {
        section: Section::Spool, value_name: "BYTES", default: "16MiB",
    }
    /// Keep the next segment written full of zeros (reusing an acknowledged segment's
    /// file), so appends' `fdatasync` changes no metadata (up to two extra segments of
    /// disk; off on tmpfs). See docs/SPOOL.md.
    SPOOL_PREALLOCATE: bool = boolean, {
        section: Section::Spool, value_name: "BOOL", default: "true",
    }
    /// ms a stopped instance's spool (e.g. after scale-down) must be idle before a running
    /// one adopts it.
    SPOOL_ADOPT_IDLE: Duration = millis, {
        section: Section::Spool, value_name: "MS", default: "30000",
    }
    /// ms between looks for orphaned spools.
    SPOOL_ADOPT_INTERVAL: Duration = at_least_1_ms, {
        section: Section::Spool, value_name: "MS", default: "30000",
    }

    // --- requests ---

    /// Largest request body, also after gzip/zstd decompression (413 beyond).
    MAX_BODY_BYTES: usize = bytes, {
        section: Section::Requests, value_name: "BYTES", default: "10MiB",
    }
    /// Request bytes in progress before new requests get 429 (compressed bodies count 10×
    /// their size, at most MAX_BODY_BYTES); at least MAX_BODY_BYTES.
    MAX_INFLIGHT_BYTES: usize = bytes, {
        section: Section::Requests, value_name: "BYTES", default: "256MiB",
    }
    /// Records per request (413 beyond).
    MAX_BATCH_RECORDS: usize = positive, {
        section: Section::Requests, value_name: "N", default: "10000",
    }
    /// Largest message.
    MAX_MESSAGE_BYTES: usize = bytes, {
        section: Section::Requests, value_name: "BYTES", default: "64KiB",
    }
    /// Largest service name.
    MAX_SERVICE_BYTES: usize = bytes, {
        section: Section::Requests, value_name: "BYTES", default: "256",
    }
    /// Attributes per record.
    MAX_ATTRIBUTES: usize = count, {
        section: Section::Requests, value_name: "N", default: "64",
    }
    /// Largest attribute key.
    MAX_ATTRIBUTE_KEY_BYTES: usize = bytes, {
        section: Section::Requests, value_name: "BYTES", default: "128",
    }
    /// Largest attribute value.
    MAX_ATTRIBUTE_VALUE_BYTES: usize = bytes, {
        section: Section::Requests, value_name: "BYTES", default: "4096",
    }
    /// `service` of OTLP records whose resource has no `service.name` attribute (the
    /// OpenTelemetry SDKs set it from `OTEL_SERVICE_NAME`, else `unknown_service:<process>`).
    OTLP_DEFAULT_SERVICE: String = text, {
        section: Section::Requests, value_name: "NAME", default: "unknown_service",
    }

    // --- authentication and per-key limits ---

    /// Who may send: `auto` (API keys when INGEST_KEYS_FILE exists; without it the worker
    /// starts only if every listener is loopback), `keys` (the key file must load) or
    /// `none` (anyone who reaches the port; logged as a warning on a non-loopback
    /// address). With keys, every request but `GET /health` needs `Authorization: Bearer`.
    INGEST_AUTH: AuthMode = AuthMode::parse, {
        section: Section::Auth, value_name: "MODE", default: "auto",
    }
    /// The API keys, one per line: `<name> <secret> [services=a,b] [records_per_sec=N]
    /// [bytes_per_sec=N] [spool_share=P]`. Owned by root with group zero-logs and mode 640
    /// (or by the worker's user, 600); reloaded when it changes and on SIGHUP.
    INGEST_KEYS_FILE: PathBuf = absolute_path, {
        section: Section::Auth, value_name: "PATH", default: "/etc/zero-logs/keys",
    }
    /// Records per second one key may send to one worker (429 beyond), unless its line
    /// sets `records_per_sec`; 0 = unlimited.
    INGEST_KEY_RECORDS_PER_SEC: usize = count, {
        section: Section::Auth, value_name: "N", default: "0",
    }
    /// Request bytes per second (as sent, before decompression) one key may send to one
    /// worker (429 beyond), unless its line sets `bytes_per_sec`; 0 = unlimited.
    INGEST_KEY_BYTES_PER_SEC: usize = bytes, {
        section: Section::Auth, value_name: "BYTES", default: "0",
    }
    /// Percent of SPOOL_MAX_BYTES that one key's spooled rows not yet in ClickHouse may
    /// take; beyond, that key gets 429 while the others still get in. A line's
    /// `spool_share` overrides it.
    INGEST_KEY_SPOOL_SHARE: u8 = percent, {
        section: Section::Auth, value_name: "PERCENT", default: "50",
    }

    // --- validation pool ---

    /// Decode and validate compressed bodies and plain ones over 32 KiB on a dedicated pool
    /// of threads (idle ones sleep; no spinning) instead of on the async runtime's threads;
    /// smaller plain bodies (~100 µs of work) are validated where they were received,
    /// saving two thread hand-offs.
    ENABLE_WORKER_VALIDATION: bool = boolean, {
        section: Section::Pool, value_name: "BOOL", default: "true",
    }
    /// Lower bound of the pool, checked ≤ max. The pool starts its max threads at once;
    /// idle ones sleep and cost no CPU.
    WORKER_POOL_MIN_WORKERS: usize = positive, {
        section: Section::Pool, value_name: "N", default: "1",
    }
    /// Threads of the validation pool.
    WORKER_POOL_MAX_WORKERS: usize = positive, {
        section: Section::Pool, value_name: "N", default_text: "CPU cores",
    }

    // --- logging ---

    /// Log filter (tracing `EnvFilter` syntax), e.g. info or zero_logs=debug.
    RUST_LOG: String = text, {
        section: Section::Logging, flag: Flag::EnvOnly, default: "info",
    }
}

/// The setting of variable `var`.
pub fn find(var: &str) -> Option<&'static Meta> {
    ALL.iter().find(|m| m.var == var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_written_default_parses_with_its_own_parser() {
        assert_eq!(unparsable_defaults(), Vec::<String>::new());
    }

    #[test]
    fn names_are_unique_and_every_setting_is_documented() {
        let mut vars: Vec<&str> = ALL.iter().map(|m| m.var).collect();
        vars.sort_unstable();
        vars.dedup();
        assert_eq!(vars.len(), ALL.len(), "a variable is declared twice");
        for m in ALL {
            assert!(!m.doc.trim().is_empty(), "{} has no doc", m.var);
            assert!(!m.read_by.is_empty(), "{} is read by nobody", m.var);
            assert!(!m.default_shown().is_empty(), "{}: no default text", m.var);
        }
        let flags: Vec<String> = ALL.iter().filter_map(Meta::flag_name).collect();
        let mut unique = flags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), flags.len(), "a flag is declared twice");
    }

    #[test]
    fn sections_are_contiguous_and_in_order() {
        let order = |s: Section| Section::ALL.iter().position(|x| *x == s).unwrap();
        for pair in ALL.windows(2) {
            assert!(
                order(pair[0].section) <= order(pair[1].section),
                "{} comes after {} but belongs to an earlier section",
                pair[1].var,
                pair[0].var
            );
        }
    }

    #[test]
    fn flags_derive_from_the_variable() {
        assert_eq!(
            BATCH_MAX_ROWS.meta.flag_name().as_deref(),
            Some("batch-max-rows")
        );
        assert_eq!(LISTEN_ADDRS.meta.flag_name().as_deref(), Some("listen"));
        assert_eq!(CLICKHOUSE_PASSWORD.meta.flag_name(), None);
        assert_eq!(HEALTH_CHECK_INTERVAL.meta.flag_name(), None);
        assert_eq!(BATCH_MAX_ROWS.default_value(), Some(100_000));
        assert_eq!(WORKER_POOL_MAX_WORKERS.default_value(), None);
    }
}
