//! Test fixtures, compiled only with the `test-support` feature (never in release builds).
//!
//! - [`ClickHouseServer`]: a real, private `clickhouse-server` per test — its own XML
//!   config (root `<yandex>`, understood by 18.16 and by current releases), free loopback
//!   ports, a temp directory for data and logs. Dropping it kills the process by PID
//!   and removes the directory, whether the test passed or failed.
//! - [`ChdbServer`]: the current ClickHouse engine (26.x, PyPI's `chdb-core` in
//!   `target/chdb-venv`) behind `tests/chdb/server.py`, a test-only front that speaks
//!   the part of ClickHouse's HTTP interface the sink uses; same surface, same clean-up.
//! - [`Engine`]: either of the two, started by [`EngineKind`], so that one integration
//!   test runs against 18.16 and 26.x alike; [`TestClickHouse`] is what helpers take.
//! - [`ClickHouseCluster`]: two such servers as the two shards of one cluster, with a
//!   private [`ZooKeeperServer`] for `ON CLUSTER` DDL when asked (`testing/cluster.rs`).
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
//! A missing server binary or chdb virtualenv is an error naming the fix
//! (`scripts/install-deps`), never a skipped test. Set `CLICKHOUSE_SERVER_BIN` to test
//! another build (a `clickhouse-server` or a single `clickhouse` binary), and
//! `ZERO_LOGS_CHDB_VENV` to use another chdb virtualenv.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::codec::EncodedBatch;
use crate::record::Record;
use crate::sink::{Sink, SinkError};

mod cluster;
pub use cluster::{ClickHouseCluster, ZooKeeperServer};

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
    #[error(
        "{python} not found: run scripts/install-deps (it builds target/chdb-venv, the \
         ClickHouse 26.x engine of the tests), or point ZERO_LOGS_CHDB_VENV at that venv"
    )]
    ChdbNotInstalled { python: PathBuf },
    #[error("the chdb test front {what}; log {log}\n{log_tail}")]
    ChdbStart {
        what: String,
        log: PathBuf,
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

/// The surface [`ClickHouseServer`] and [`ChdbServer`] share, over their fields `dir`,
/// `http_port`, `child`, `databases` and `startup` and their `launch`.
macro_rules! shared_fixture_methods {
    () => {
        /// `http://127.0.0.1:PORT`, for `CLICKHOUSE_URL`.
        pub fn http_url(&self) -> String {
            format!("http://127.0.0.1:{}", self.http_port)
        }

        pub fn http_port(&self) -> u16 {
            self.http_port
        }

        /// The PID of the process serving ClickHouse while it runs.
        pub fn pid(&self) -> Option<u32> {
            self.child.as_ref().map(Child::id)
        }

        /// How long the last (re)start took until it answered.
        pub fn startup_time(&self) -> Duration {
            self.startup
        }

        /// The temp directory holding data and logs (and the server's config).
        pub fn dir(&self) -> &Path {
            &self.dir
        }

        /// Runs `sql` over HTTP and returns the body (TSV unless the SQL says
        /// otherwise). A ClickHouse error becomes [`FixtureError::Query`] carrying its
        /// message.
        pub fn query(&self, sql: &str) -> Result<String, FixtureError> {
            http_query(self.http_port, sql)
        }

        /// Creates and returns a database no other test of this ClickHouse uses:
        /// `t_<pid>_<n>`.
        ///
        /// # Panics
        /// When ClickHouse refuses (the fixture is broken; nothing useful to return).
        pub fn fresh_database(&self) -> String {
            fresh_database(&self.databases, |sql| self.query(sql))
        }

        /// SIGTERM, wait for exit (SIGKILL after 2 s). Ports and data stay for
        /// [`restart`](Self::restart). A no-op when not running.
        pub fn stop(&mut self) {
            stop_child(&mut self.child);
        }

        /// SIGKILL and reap: a crash rather than a shutdown. Ports and data stay.
        pub fn kill(&mut self) {
            kill_child(&mut self.child);
        }

        /// Starts it again on the same ports and data directory (stopping it first if
        /// it runs) and waits until it answers.
        pub fn restart(&mut self) -> Result<(), FixtureError> {
            self.stop();
            self.launch()
        }
    };
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
    /// XML elements added to the config's root (the [`cluster`] fixture's servers).
    extra_config: String,
}

impl ClickHouseServer {
    /// Starts a server on free ports and waits until it answers (about 0.25 s; up to
    /// 30 s, then an error with the tail of its log). Blocking.
    pub fn start() -> Result<ClickHouseServer, FixtureError> {
        let mut server = ClickHouseServer::prepare()?;
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
                    server.announce();
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

    /// A server not started yet: binary found, temp directory made, no ports.
    fn prepare() -> Result<ClickHouseServer, FixtureError> {
        let binary = find_server_binary()?;
        let dir = make_temp_dir()?;
        let server = ClickHouseServer {
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
            extra_config: String::new(),
        };
        for sub in ["data", "tmp", "user_files", "format_schemas", "log"] {
            let path = server.dir.join(sub);
            fs::create_dir_all(&path).map_err(io_error(format!("creating {}", path.display())))?;
        }
        Ok(server)
    }

    fn announce(&self) {
        let version = self.query("SELECT version()").unwrap_or_default();
        eprintln!(
            "[testing] ClickHouse {} started in {} ms: {} (pid {}, dir {})",
            version.trim(),
            self.startup.as_millis(),
            self.http_url(),
            self.pid().unwrap_or(0),
            self.dir.display()
        );
    }

    shared_fixture_methods!();

    /// The native-protocol port (for `clickhouse-client --port`).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The last `lines` lines of the server's logs (error log, then stdout/stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.dir.join("log");
        log_tail(
            &[
                log.join("clickhouse-server.err.log"),
                log.join("stdout.log"),
            ],
            lines,
        )
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
{extra}</yandex>
"#,
            http = self.http_port,
            tcp = self.tcp_port,
            interserver = self.interserver_port,
            token = self.token,
            extra = self.extra_config,
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
        let mut command = command_dying_with_parent(&self.binary);
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

// === ChdbServer ===

/// The current ClickHouse engine for one test: PyPI's `chdb-core` (26.x) in
/// `target/chdb-venv` (or `$ZERO_LOGS_CHDB_VENV`), served by `tests/chdb/server.py` on
/// a free loopback port, its data in a temp directory. The same surface as
/// [`ClickHouseServer`]; the front's documentation says what of ClickHouse's HTTP
/// interface it speaks. Start-up takes ~0.6 s (loading the engine), `stop` ~0.2 s.
#[derive(Debug)]
pub struct ChdbServer {
    python: PathBuf,
    script: PathBuf,
    /// Holds `data/` (the engine's), `tmp/` (INSERTs' rows on their way in) and
    /// `log/server.log` (the front's stderr).
    dir: PathBuf,
    /// 0 until the first start, which lets the front pick it; restarts reuse it.
    http_port: u16,
    child: Option<Child>,
    databases: AtomicU64,
    version: String,
    startup: Duration,
}

impl ChdbServer {
    /// Starts the front on a free port and waits until it listens (the engine is
    /// loaded by then). Blocking. A missing venv is [`FixtureError::ChdbNotInstalled`].
    pub fn start() -> Result<ChdbServer, FixtureError> {
        let python = chdb_python(std::env::var_os("ZERO_LOGS_CHDB_VENV").map(PathBuf::from))?;
        let dir = make_temp_dir()?;
        let mut server = ChdbServer {
            python,
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chdb/server.py"),
            dir,
            http_port: 0,
            child: None,
            databases: AtomicU64::new(0),
            version: String::new(),
            startup: Duration::ZERO,
        };
        for sub in ["data", "tmp", "log"] {
            let path = server.dir.join(sub);
            fs::create_dir_all(&path).map_err(io_error(format!("creating {}", path.display())))?;
        }
        server.launch()?;
        server.version = server.query("SELECT version()")?.trim().to_string();
        eprintln!(
            "[testing] ClickHouse {} (chdb front) started in {} ms: {} (pid {}, dir {})",
            server.version,
            server.startup.as_millis(),
            server.http_url(),
            server.pid().unwrap_or(0),
            server.dir.display()
        );
        Ok(server)
    }

    shared_fixture_methods!();

    /// What `SELECT version()` answered at start, e.g. `26.9.2.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The last `lines` lines of the front's log (all its starts, appended).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&[self.log_path()], lines)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log").join("server.log")
    }

    /// Spawns the front on `self.http_port` and waits for its `LISTENING 127.0.0.1:PORT`
    /// line, printed once the engine is loaded and the port bound.
    fn launch(&mut self) -> Result<(), FixtureError> {
        let started = Instant::now();
        let log_path = self.log_path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(format!("opening {}", log_path.display())))?;
        let mut command = command_dying_with_parent(&self.python);
        command
            .arg("-u")
            .arg(&self.script)
            .arg("--data")
            .arg(self.dir.join("data"))
            .arg("--tmp")
            .arg(self.dir.join("tmp"))
            .args(["--port", &self.http_port.to_string()])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command
            .spawn()
            .map_err(io_error(format!("starting {}", self.python.display())))?;
        let stdout = child.stdout.take();
        self.child = Some(child);

        // A thread reads the first line (std has no read with a timeout), then drains
        // the pipe until the front exits so that it never blocks on stdout.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        let deadline = started + START_TIMEOUT;
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(Ok(line)) => break line,
                Ok(Err(error)) => return Err(self.start_failed(format!("stdout: {error}"))),
                Err(mpsc::RecvTimeoutError::Disconnected) => break String::new(),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    self.kill();
                    let what = format!("printed no LISTENING line within {START_TIMEOUT:?}");
                    return Err(self.start_failed(what));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        };
        let port = line
            .trim()
            .strip_prefix("LISTENING 127.0.0.1:")
            .and_then(|port| port.parse::<u16>().ok());
        let Some(port) = port else {
            // EOF: it exited (port taken, engine failed to load); say how.
            let status = self.child.as_mut().map(Child::wait);
            self.child = None;
            let what = match status {
                Some(Ok(status)) if line.is_empty() => format!("exited during start-up ({status})"),
                _ => format!("printed {line:?} instead of LISTENING 127.0.0.1:PORT"),
            };
            return Err(self.start_failed(what));
        };
        self.http_port = port;
        self.startup = started.elapsed();
        Ok(())
    }

    fn start_failed(&self, what: String) -> FixtureError {
        FixtureError::ChdbStart {
            what,
            log: self.log_path(),
            log_tail: self.log_tail(30),
        }
    }
}

impl Drop for ChdbServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The chdb venv's Python: `venv` or `target/chdb-venv` of this repository.
fn chdb_python(venv: Option<PathBuf>) -> Result<PathBuf, FixtureError> {
    let venv =
        venv.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chdb-venv"));
    let python = venv.join("bin").join("python");
    if python.is_file() {
        Ok(python)
    } else {
        Err(FixtureError::ChdbNotInstalled { python })
    }
}

// === Engine ===

/// Which ClickHouse a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// A `clickhouse-server` process ([`ClickHouseServer`]): Debian's 18.16 unless
    /// `CLICKHOUSE_SERVER_BIN` names another build.
    Server,
    /// The 26.x engine behind the chdb front ([`ChdbServer`]).
    Chdb,
}

/// A ClickHouse of either kind, with the surface the integration tests use.
#[derive(Debug)]
pub enum Engine {
    Server(ClickHouseServer),
    Chdb(ChdbServer),
}

/// Calls the same method on whichever engine `$self` holds.
macro_rules! on_engine {
    ($self:expr, $engine:ident => $call:expr) => {
        match $self {
            Engine::Server($engine) => $call,
            Engine::Chdb($engine) => $call,
        }
    };
}

impl Engine {
    /// Starts a private ClickHouse of `kind` (see [`ClickHouseServer::start`] and
    /// [`ChdbServer::start`]).
    pub fn start(kind: EngineKind) -> Result<Engine, FixtureError> {
        Ok(match kind {
            EngineKind::Server => Engine::Server(ClickHouseServer::start()?),
            EngineKind::Chdb => Engine::Chdb(ChdbServer::start()?),
        })
    }

    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Server(_) => EngineKind::Server,
            Engine::Chdb(_) => EngineKind::Chdb,
        }
    }

    pub fn http_url(&self) -> String {
        on_engine!(self, e => e.http_url())
    }

    pub fn query(&self, sql: &str) -> Result<String, FixtureError> {
        on_engine!(self, e => e.query(sql))
    }

    pub fn fresh_database(&self) -> String {
        on_engine!(self, e => e.fresh_database())
    }

    pub fn pid(&self) -> Option<u32> {
        on_engine!(self, e => e.pid())
    }

    pub fn stop(&mut self) {
        on_engine!(self, e => e.stop())
    }

    pub fn kill(&mut self) {
        on_engine!(self, e => e.kill())
    }

    pub fn restart(&mut self) -> Result<(), FixtureError> {
        on_engine!(self, e => e.restart())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        on_engine!(self, e => e.log_tail(lines))
    }
}

/// Runs each `async fn NAME(kind: EngineKind) -> anyhow::Result<()>` listed as two
/// tests, `NAME::server` (Debian's clickhouse-server 18.16) and `NAME::chdb` (the 26.x
/// engine); the caller's module must have `EngineKind` and `Result` in scope.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn server() -> Result<()> {
                super::$name(EngineKind::Server).await
            }

            #[tokio::test]
            async fn chdb() -> Result<()> {
                super::$name(EngineKind::Chdb).await
            }
        }
    )*};
}

/// What test helpers need of a ClickHouse, whichever fixture runs it.
pub trait TestClickHouse {
    /// `http://127.0.0.1:PORT`, for `CLICKHOUSE_URL`.
    fn http_url(&self) -> String;
    /// Runs `sql` over HTTP and returns the body (TSV unless the SQL says otherwise).
    fn query(&self, sql: &str) -> Result<String, FixtureError>;
    /// Creates and returns a database no other test of this ClickHouse uses.
    fn fresh_database(&self) -> String;
}

macro_rules! test_clickhouse_by_inherent_methods {
    ($($fixture:ty),*) => {$(
        impl TestClickHouse for $fixture {
            fn http_url(&self) -> String {
                <$fixture>::http_url(self)
            }
            fn query(&self, sql: &str) -> Result<String, FixtureError> {
                <$fixture>::query(self, sql)
            }
            fn fresh_database(&self) -> String {
                <$fixture>::fresh_database(self)
            }
        }
    )*};
}
test_clickhouse_by_inherent_methods!(ClickHouseServer, ChdbServer, Engine);

/// How to read the sink's columns back from a table of `layout`, as SQL expressions.
#[derive(Debug, Clone, Copy)]
pub struct ColumnsSql {
    /// The event time as nanoseconds since the epoch.
    pub ns: &'static str,
    /// The attribute keys, then the values, as `Array(String)` in the client's order.
    pub keys: &'static str,
    pub values: &'static str,
}

impl ColumnsSql {
    pub fn of(layout: crate::sink::Layout) -> ColumnsSql {
        use crate::sink::Layout;
        let (ns, keys, values) = match layout {
            Layout::Legacy => ("timestamp_ns", "`attributes.key`", "`attributes.value`"),
            Layout::DateTime64Nested => (
                "toUnixTimestamp64Nano(timestamp)",
                "`attributes.key`",
                "`attributes.value`",
            ),
            Layout::DateTime64Map => (
                "toUnixTimestamp64Nano(timestamp)",
                "mapKeys(attributes)",
                "mapValues(attributes)",
            ),
            Layout::Otel => (
                "toUnixTimestamp64Nano(Timestamp)",
                "mapKeys(LogAttributes)",
                "mapValues(LogAttributes)",
            ),
        };
        ColumnsSql { ns, keys, values }
    }

    /// The expressions for `database.table` as it really is (`system.columns`).
    ///
    /// # Panics
    /// When the table is missing or fits no layout (the test is broken).
    pub fn of_table(ch: &impl TestClickHouse, database: &str, table: &str) -> ColumnsSql {
        let listed = ch
            .query(&format!(
                "SELECT name, type FROM system.columns WHERE database = '{database}' \
                 AND table = '{table}' FORMAT TabSeparatedRaw"
            ))
            .unwrap_or_else(|e| panic!("columns of {database}.{table}: {e}"));
        let columns: Vec<(String, String)> = listed
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(name, ty)| (name.to_string(), ty.to_string()))
            .collect();
        let qualified = crate::sink::schema::qualified_table(database, table);
        let schema = if columns.iter().any(|(name, _)| name == "Body") {
            crate::config::TableSchema::Otel
        } else {
            crate::config::TableSchema::Native
        };
        let layout = crate::sink::schema::detect_layout(&columns, &qualified, schema)
            .unwrap_or_else(|e| panic!("{database}.{table} has no known layout: {e}"));
        ColumnsSql::of(layout)
    }
}

/// Runs `sql` on the ClickHouse HTTP interface on `port` and returns the body; an
/// answer other than 200 becomes [`FixtureError::Query`].
fn http_query(port: u16, sql: &str) -> Result<String, FixtureError> {
    let (status, body) = http_post(port, sql, QUERY_TIMEOUT)
        .map_err(io_error(format!("querying ClickHouse on port {port}")))?;
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

/// Creates `t_<pid>_<n>` with the next `n` of `counter` through `query`.
fn fresh_database(
    counter: &AtomicU64,
    query: impl Fn(&str) -> Result<String, FixtureError>,
) -> String {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let name = format!("t_{}_{n}", std::process::id());
    if let Err(error) = query(&format!("CREATE DATABASE {name}")) {
        panic!("cannot create test database {name}: {error}");
    }
    name
}

/// SIGTERM, wait for exit (SIGKILL after [`STOP_TIMEOUT`]), reap. No-op when `None`.
fn stop_child(slot: &mut Option<Child>) {
    let Some(mut child) = slot.take() else {
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

/// SIGKILL and reap. No-op when `None`.
fn kill_child(slot: &mut Option<Child>) {
    if let Some(mut child) = slot.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The last `lines` lines of each of `files` that has any, each under its name.
fn log_tail(files: &[PathBuf], lines: usize) -> String {
    let mut out = String::new();
    for path in files {
        let text = fs::read_to_string(path).unwrap_or_default();
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

/// A command that runs `program` with a parent-death SIGKILL when `setpriv` exists
/// (see the module documentation), else `program` itself.
fn command_dying_with_parent(program: &Path) -> Command {
    match find_in_path("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => Command::new(program),
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
    /// An insert holding a row whose message contains the text fails with the error
    /// (a row-level refusal, as a table constraint gives).
    poison: Mutex<Option<(String, SinkError)>>,
    /// The token of every successful insert, in order.
    tokens: Mutex<Vec<Option<String>>>,
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

    /// Every insert holding a row whose message contains `needle` fails with `error`,
    /// nothing of it stored (until called again with another needle).
    pub fn refuse_messages_containing(&self, needle: &str, error: SinkError) {
        *lock(&self.poison) = Some((needle.to_string(), error));
    }

    /// The deduplication token of every successful insert so far, in order.
    pub fn tokens(&self) -> Vec<Option<String>> {
        lock(&self.tokens).clone()
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
        token: Option<&str>,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        // Built by `EncodedBatch::encode` or checked by `from_payload`.
        let decoded: Vec<Record> = batches
            .iter()
            .flat_map(|batch| batch.decode().expect("queued batches decode").records)
            .collect();
        let poisoned = lock(&self.poison).as_ref().and_then(|(needle, error)| {
            let hit = decoded.iter().any(|r| r.message.contains(needle.as_str()));
            hit.then(|| error.clone())
        });
        let failure = self
            .outage()
            .or_else(|| lock(&self.script).pop_front())
            .or(poisoned);
        let result = match failure {
            Some(error) => Err(error),
            None => {
                lock(&self.rows).extend(decoded);
                lock(&self.tokens).push(token.map(str::to_string));
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
            otel: None,
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
    fn a_missing_engine_names_the_fix() {
        let server = locate_server_binary(Some("/nonexistent/clickhouse-server".into()));
        let chdb = chdb_python(Some("/nonexistent/chdb-venv".into()));
        for (error, path) in [
            (server.unwrap_err(), "/nonexistent/clickhouse-server"),
            (chdb.unwrap_err(), "/nonexistent/chdb-venv/bin/python"),
        ] {
            let error = error.to_string();
            assert!(error.contains("scripts/install-deps"), "{error}");
            assert!(error.contains(path), "{error}");
        }
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
