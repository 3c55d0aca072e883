//! Test fixtures, compiled only with the `test-support` feature (never in release builds).
//!
//! - [`ClickHouseServer`]: a real, private `clickhouse-server` per test — its own XML
//!   config (root `<yandex>`, understood by 18.16 and by current releases), free loopback
//!   ports, a temp directory for data and logs. Dropping it kills the process by PID
//!   and removes the directory, whether the test passed or failed.
//! - [`MemorySink`]: a [`Sink`] that keeps rows in memory and fails on
//!   command, for tests of the stages above the sink.
//!
//! The server runs as the current user (18.16 starts fine as root; the data directory is
//! ours, so newer servers' owner check passes too). When `setpriv` is available it is
//! started with a parent-death signal, so a test binary killed outright (timeout, `kill
//! -9`) does not leave servers behind (the next start removes such orphans' temp
//! directories); the signal is tied to the *thread* that started (or restarted) it,
//! which in tests is the test's own thread. Start-up takes 70–170 ms with Debian's
//! 18.16 (until `SELECT` answers); `stop` takes up to 2 s (see [`ClickHouseServer::stop`]).
//!
//! A missing server binary is an error naming the fix (`scripts/install-deps`), never
//! a skipped test. Set `CLICKHOUSE_SERVER_BIN` to test another build (a
//! `clickhouse-server` or a single `clickhouse` binary).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::codec::EncodedBatch;
use crate::record::Record;
use crate::sink::{Sink, SinkError};

/// How long a server may take to answer `SELECT 1` after being started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` lets the server shut down after SIGTERM before SIGKILL. 18.16 closes
/// its listening sockets within a second, then waits `shutdown_wait_unfinished` (5 s)
/// plus up to 10 s more for every open keep-alive connection (measured: 16 s with the
/// sink's pooled connections). Tests need "stopped", not a tidy exit, and SIGKILL loses
/// nothing they rely on: an acknowledged INSERT is already a data part on disk.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Port-collision retries (a free port can be taken between probing and binding).
const START_ATTEMPTS: usize = 5;
/// Timeout of one fixture HTTP query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the fixture could not do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error(
        "clickhouse-server not found (looked in {looked}); install it with scripts/install-deps \
         (or point CLICKHOUSE_SERVER_BIN at a ClickHouse server binary)"
    )]
    NotInstalled { looked: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("clickhouse-server exited during start-up ({status}); config {config}\n{log_tail}")]
    Exited {
        status: String,
        config: PathBuf,
        log_tail: String,
    },
    #[error(
        "ClickHouse on port {port} did not answer within {timeout:?} (last error: {last_error}); \
         config {config}\n{log_tail}"
    )]
    StartTimeout {
        port: u16,
        timeout: Duration,
        last_error: String,
        config: PathBuf,
        log_tail: String,
    },
    #[error("ClickHouse answered HTTP {status} to `{sql}`: {message}")]
    Query {
        status: u16,
        sql: String,
        message: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> FixtureError {
    let what = what.into();
    move |source| FixtureError::Io { what, source }
}

/// A private ClickHouse server for one test (see the module documentation).
#[derive(Debug)]
pub struct ClickHouseServer {
    binary: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    http_port: u16,
    tcp_port: u16,
    interserver_port: u16,
    /// Written into the config as a macro, so readiness checks know they reached *this*
    /// server and not whoever else took the port.
    token: String,
    child: Option<Child>,
    databases: AtomicU64,
    startup: Duration,
}

impl ClickHouseServer {
    /// Starts a server on free ports and waits until it answers (about 0.25 s; up to
    /// 30 s, then an error with the tail of its log). Blocking.
    pub fn start() -> Result<ClickHouseServer, FixtureError> {
        let binary = find_server_binary()?;
        let dir = make_temp_dir()?;
        let mut server = ClickHouseServer {
            binary,
            config: dir.join("config.xml"),
            dir,
            http_port: 0,
            tcp_port: 0,
            interserver_port: 0,
            token: format!("zl{}x{:016x}", std::process::id(), rand::random::<u64>()),
            child: None,
            databases: AtomicU64::new(0),
            startup: Duration::ZERO,
        };
        for sub in ["data", "tmp", "user_files", "format_schemas", "log"] {
            let path = server.dir.join(sub);
            fs::create_dir_all(&path).map_err(io_error(format!("creating {}", path.display())))?;
        }
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            // `server` removes the directory on drop if we give up.
            let [http, tcp, interserver] = free_ports()?;
            server.http_port = http;
            server.tcp_port = tcp;
            server.interserver_port = interserver;
            server.write_config()?;
            match server.launch() {
                Ok(()) => {
                    let version = server.query("SELECT version()").unwrap_or_default();
                    eprintln!(
                        "[testing] ClickHouse {} started in {} ms: {} (pid {}, dir {})",
                        version.trim(),
                        server.startup.as_millis(),
                        server.http_url(),
                        server.pid().unwrap_or(0),
                        server.dir.display()
                    );
                    return Ok(server);
                }
                Err(error) if server.port_was_taken() => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| FixtureError::Io {
            what: "starting ClickHouse".into(),
            source: io::Error::other("no attempt made"),
        }))
    }

    /// `http://127.0.0.1:PORT`, for `CLICKHOUSE_URL`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The native-protocol port (for `clickhouse-client --port`).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How long the last (re)start took until `SELECT 1` answered.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The temp directory holding config, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `sql` over HTTP and returns the body (TSV unless the SQL says otherwise).
    /// A ClickHouse error becomes [`FixtureError::Query`] carrying its message.
    pub fn query(&self, sql: &str) -> Result<String, FixtureError> {
        let (status, body) = http_post(self.http_port, sql, QUERY_TIMEOUT).map_err(io_error(
            format!("querying ClickHouse on port {}", self.http_port),
        ))?;
        if status == 200 {
            Ok(body)
        } else {
            Err(FixtureError::Query {
                status,
                sql: sql.to_string(),
                message: body.trim().to_string(),
            })
        }
    }

    /// Creates and returns a database no other test of this server uses:
    /// `t_<pid>_<n>`.
    ///
    /// # Panics
    /// When ClickHouse refuses (the fixture is broken; nothing useful to return).
    pub fn fresh_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{}_{n}", std::process::id());
        if let Err(error) = self.query(&format!("CREATE DATABASE {name}")) {
            panic!("cannot create test database {name}: {error}");
        }
        name
    }

    /// SIGTERM, wait for exit (SIGKILL after 2 s). Ports and data stay for
    /// [`restart`](Self::restart). A no-op when not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        if let Ok(None) = child.try_wait() {
            signal(pid, "TERM");
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL and reap: a crash rather than a shutdown. Ports and data stay.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data directory (stopping it first
    /// if it runs) and waits until it answers.
    pub fn restart(&mut self) -> Result<(), FixtureError> {
        self.stop();
        self.launch()
    }

    /// The last `lines` lines of the server's logs (error log, then stdout/stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["clickhouse-server.err.log", "stdout.log"] {
            let path = self.dir.join("log").join(name);
            let text = fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            if !tail.is_empty() {
                out.push_str(&format!(
                    "--- {} ---\n{}\n",
                    path.display(),
                    tail.join("\n")
                ));
            }
        }
        out
    }

    fn write_config(&self) -> Result<(), FixtureError> {
        let d = self.dir.display();
        let config = format!(
            r#"<?xml version="1.0"?>
<!-- Private ClickHouse of a zero-logs test; removed when the test ends. -->
<yandex>
    <logger>
        <level>information</level>
        <log>{d}/log/clickhouse-server.log</log>
        <errorlog>{d}/log/clickhouse-server.err.log</errorlog>
        <size>20M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <interserver_http_port>{interserver}</interserver_http_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>/etc/clickhouse-server/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <!-- 18.16's packaged default, and what the clickhouse crate's 2 s pool idle timeout
         is made for (the client must drop a connection before the server does). -->
    <keep_alive_timeout>3</keep_alive_timeout>
    <mlock_executable>false</mlock_executable>
    <macros><zero_logs_instance>{token}</zero_logs_instance></macros>
</yandex>
"#,
            http = self.http_port,
            tcp = self.tcp_port,
            interserver = self.interserver_port,
            token = self.token,
        );
        fs::write(&self.config, config)
            .map_err(io_error(format!("writing {}", self.config.display())))
    }

    /// Spawns the process and waits for it to answer as *this* server.
    fn launch(&mut self) -> Result<(), FixtureError> {
        let started = Instant::now();
        let log_dir = self.dir.join("log");
        // Truncated per launch, so start-up errors are about this attempt.
        let stdout_path = log_dir.join("stdout.log");
        let stdout = fs::File::create(&stdout_path)
            .map_err(io_error(format!("creating {}", stdout_path.display())))?;
        let stderr = stdout
            .try_clone()
            .map_err(io_error("duplicating the log file handle"))?;
        let _ = fs::write(log_dir.join("clickhouse-server.err.log"), "");

        let mut args: Vec<String> = Vec::new();
        if self.binary.file_name().is_some_and(|n| n == "clickhouse") {
            args.push("server".into());
        }
        args.push(format!("--config-file={}", self.config.display()));
        let mut command = match find_in_path("setpriv") {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        command
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command
            .spawn()
            .map_err(io_error(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);

        let probe = "SELECT substitution FROM system.macros WHERE macro = 'zero_logs_instance'";
        let deadline = started + START_TIMEOUT;
        let mut last_error;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return Err(FixtureError::Exited {
                    status: status.to_string(),
                    config: self.config.clone(),
                    log_tail: self.log_tail(30),
                });
            }
            match http_post(self.http_port, probe, Duration::from_secs(2)) {
                Ok((200, body)) if body.trim() == self.token => break,
                Ok((status, body)) => last_error = format!("HTTP {status}: {}", body.trim()),
                Err(error) => last_error = error.to_string(),
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(FixtureError::StartTimeout {
                    port: self.http_port,
                    timeout: START_TIMEOUT,
                    last_error,
                    config: self.config.clone(),
                    log_tail: self.log_tail(30),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.startup = started.elapsed();
        Ok(())
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn port_was_taken(&self) -> bool {
        self.log_tail(200).contains("Address already in use")
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        // Data is thrown away, so there is nothing for a graceful shutdown to save.
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends a signal by PID through kill(1): std has only SIGKILL, and `unsafe` (libc) is
/// forbidden in this crate.
fn signal(pid: u32, name: &str) {
    let kill = find_in_path("kill").unwrap_or_else(|| PathBuf::from("/bin/kill"));
    let _ = Command::new(kill)
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn find_server_binary() -> Result<PathBuf, FixtureError> {
    locate_server_binary(std::env::var_os("CLICKHOUSE_SERVER_BIN").map(PathBuf::from))
}

fn locate_server_binary(custom: Option<PathBuf>) -> Result<PathBuf, FixtureError> {
    if let Some(custom) = custom {
        return if custom.is_file() {
            Ok(custom)
        } else {
            Err(FixtureError::NotInstalled {
                looked: format!("CLICKHOUSE_SERVER_BIN={}", custom.display()),
            })
        };
    }
    find_in_path("clickhouse-server").ok_or_else(|| FixtureError::NotInstalled {
        looked: "PATH, /usr/sbin, /usr/bin, /usr/local/bin".into(),
    })
}

fn make_temp_dir() -> Result<PathBuf, FixtureError> {
    let base = std::env::temp_dir();
    remove_orphaned_dirs(&base);
    loop {
        let dir = base.join(format!(
            "zero-logs-ch-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(format!("creating {}", dir.display()))(e)),
        }
    }
}

/// Removes directories left by test processes that were killed outright (their server
/// died with them through the parent-death signal, but nobody ran `Drop`). A directory
/// is orphaned when the PID in its name no longer exists.
fn remove_orphaned_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("zero-logs-ch-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Three distinct free loopback ports (held together while probing so they differ).
fn free_ports() -> Result<[u16; 3], FixtureError> {
    let bind =
        || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_error("finding a free port"));
    let listeners = [bind()?, bind()?, bind()?];
    let mut ports = [0u16; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(io_error("reading a probe socket's port"))?
            .port();
    }
    Ok(ports)
}

/// A minimal HTTP/1.1 POST with `Connection: close`; returns status and body.
fn http_post(port: u16, body: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> io::Result<(u16, String)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("HTTP response without a header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status: u16 = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("HTTP response without a status"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        decode_chunked(body).ok_or_else(|| bad("malformed chunked body"))?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Decodes a complete `Transfer-Encoding: chunked` body; `None` while it is malformed
/// or not complete yet.
pub(crate) fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// === MemorySink ===

/// A [`Sink`] that stores rows in memory and fails on command.
#[derive(Debug, Default)]
pub struct MemorySink {
    rows: Mutex<Vec<Record>>,
    inserts: AtomicU64,
    /// Answers for the next inserts, in order; an empty script means success.
    script: Mutex<VecDeque<SinkError>>,
    /// While set, every insert and ping fails with `Unavailable` and this reason.
    down: Mutex<Option<String>>,
}

impl MemorySink {
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// Every row inserted so far, in insert order.
    pub fn rows(&self) -> Vec<Record> {
        lock(&self.rows).clone()
    }

    /// Successful INSERTs so far.
    pub fn inserts(&self) -> u64 {
        self.inserts.load(Ordering::Relaxed)
    }

    /// The next insert fails with `error` (queued after earlier scripted failures).
    pub fn fail_next(&self, error: SinkError) {
        lock(&self.script).push_back(error);
    }

    /// Simulates an outage (`Some(reason)`) or its end (`None`).
    pub fn set_down(&self, reason: Option<&str>) {
        *lock(&self.down) = reason.map(str::to_string);
    }

    fn outage(&self) -> Option<SinkError> {
        lock(&self.down)
            .as_ref()
            .map(|reason| SinkError::Unavailable {
                reason: reason.clone(),
            })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sink for MemorySink {
    fn insert(
        &self,
        batches: &[EncodedBatch],
        _token: Option<&str>,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        let result = match self.outage().or_else(|| lock(&self.script).pop_front()) {
            Some(error) => Err(error),
            None => {
                let mut rows = lock(&self.rows);
                for batch in batches {
                    // Built by `EncodedBatch::encode` or checked by `from_payload`.
                    let decoded = batch.decode().expect("queued batches decode");
                    rows.extend(decoded.records);
                }
                drop(rows);
                self.inserts.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        };
        std::future::ready(result)
    }

    fn ping(&self) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        std::future::ready(self.outage().map_or(Ok(()), Err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BatchConfig;
    use crate::record::{Batch, Level};
    use crate::sink::Batcher;
    use crate::stats::Stats;
    use std::sync::Arc;

    #[tokio::test]
    async fn memory_sink_behind_a_batcher() {
        let sink = Arc::new(MemorySink::new());
        let tracker = tokio_util::task::TaskTracker::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let batch = BatchConfig {
            max_rows: 1,
            ..BatchConfig::default()
        };
        let handle = Batcher::spawn(
            batch,
            Duration::from_millis(100),
            Arc::clone(&sink),
            Arc::new(Stats::default()),
            &tracker,
            shutdown.clone(),
        );
        let record = Record {
            timestamp_ns: 1,
            level: Level::Info,
            service: "s".into(),
            message: "m".into(),
            trace_id: String::new(),
            span_id: String::new(),
            attributes: Vec::new(),
        };
        let one = || EncodedBatch::encode(&Batch::new(vec![record.clone()]));
        handle.try_submit(one()).unwrap().await.unwrap();
        sink.fail_next(SinkError::Rejected {
            reason: "bad".into(),
        });
        let rejected = handle.try_submit(one()).unwrap().await;
        assert_eq!(
            rejected,
            Err(SinkError::Rejected {
                reason: "bad".into()
            })
        );
        assert_eq!((sink.rows().len(), sink.inserts()), (1, 1));
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn a_missing_server_names_the_fix() {
        let error = locate_server_binary(Some("/nonexistent/clickhouse-server".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("scripts/install-deps"), "{error}");
        assert!(error.contains("/nonexistent/clickhouse-server"), "{error}");
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n1\n";
        assert_eq!(
            parse_http_response(plain).unwrap(),
            (200, "1\n".to_string())
        );
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\nCode:\r\n4;x=y\r\n 60.\r\n0\r\n\r\n";
        assert_eq!(
            parse_http_response(chunked).unwrap(),
            (404, "Code: 60.".to_string())
        );
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(decode_chunked(b"zz\r\n").is_none());
    }
}
