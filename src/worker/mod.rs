//! One worker process: build every component from the `Config`, serve, drain.
//!
//! Owns the start-up and shutdown order. With `ACK_MODE=spool` the spool opens
//! before `READY=1` (lock, state, last segment only; replay runs in the background
//! through the feeder while new requests are served) and orphaned sibling spools
//! are adopted at start and every `SPOOL_ADOPT_INTERVAL`.
//!
//! The shutdown token is cancelled on SIGTERM/SIGINT (or by the supervisor at the
//! memory limit): the accept loops stop, open connections are served a little
//! longer with `Connection: close` and then closed once their in-flight requests
//! (each waiting for its acknowledgement) are answered — see [`crate::serve`];
//! then spool appends close and the feeder delivers what is left (at most half of
//! `GRACEFUL_SHUTDOWN_TIMEOUT`, and not at all once ClickHouse has been down for a
//! second: INSERTs of spooled rows stop retrying at a stop; the rest replays at the
//! next start or is adopted); then the
//! batcher is closed and flushes what it holds; everything runs under one
//! [`TaskTracker`](tokio_util::task::TaskTracker) and the whole drain is bounded by
//! `GRACEFUL_SHUTDOWN_TIMEOUT`. Last, whatever happened, the spool persists its
//! acknowledgements and closes.
//!
//! # Files
//!
//! - `mod.rs`: the command line, the runtime, signals and [`run`]: build, `READY=1`,
//!   wait for the shutdown token, drain.
//! - `build.rs`: `Worker::build`, every component in the start-up order; the
//!   settings `ACK_MODE` changes (`batching_for_ack_mode`).
//! - `drain.rs`: `Worker::drain(deadline)`, the shutdown order.
//! - `memory.rs`: transparent huge pages off at start (idle RSS).

mod build;
mod drain;
mod memory;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{docs, env_file, Config, ProcessEnv, ServeFlags};
use crate::ingest;
use crate::listen;
use crate::sched;
use crate::sink::SinkError;
use crate::spool::SpoolError;
use crate::telemetry;
use crate::tls;
use build::Worker;

/// zero-logs worker: receives structured logs over HTTP (JSON/NDJSON) and
/// gRPC, validates them and writes them to ClickHouse.
///
/// Every setting is an environment variable (as in /etc/zero-logs/zero-logs.env)
/// and a flag; flags win. Durations are milliseconds, sizes bytes (512K, 10MB…).
#[derive(Debug, Parser)]
#[command(name = "zero-logs", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one worker: adopt systemd's sockets (LISTEN_FDS) or bind --listen,
    /// serve POST /api/v1/logs, gRPC zerologs.v1.LogService, /health, /stats, /metrics.
    #[command(after_help = docs::serve_after_help())]
    Serve(ServeFlags),
    /// Print the settings a worker would run with, and where each came from.
    ///
    /// One NAME=value line per setting, then its origin: a flag given here, the
    /// process environment, an env file and its line (--env-dir; the process
    /// environment wins, as for a worker started by hand), or the default.
    /// CLICKHOUSE_PASSWORD is masked. Exit status 2 (naming the variable) if a
    /// setting is invalid.
    Config(ConfigArgs),
}

/// `zero-logs config`: the env files' directory and any flag of `serve`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Directory of zero-logs.env and zero-logs.env.d/*.env.
    #[arg(long, value_name = "DIR", default_value = env_file::CONF_DIR)]
    pub env_dir: PathBuf,
    #[command(flatten)]
    pub flags: ServeFlags,
}

/// What stopped a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    /// An invalid setting: exit status 2, like a [`crate::config::ConfigError`].
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Pool(#[from] ingest::PoolError),
    #[error("cannot open the spool (set SPOOL_DIR to a writable directory, or ACK_MODE=clickhouse): {0}")]
    Spool(#[from] SpoolError),
    #[error("cannot bind the admin socket {path}: {source}")]
    AdminSocket {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the supervision thread: {0}")]
    Supervisor(#[source] std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The listeners and the key file do not fit the authentication rule (exit 2).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// Entry point of the `zero-logs` binary. Exit 2 for bad configuration.
pub fn main() -> ExitCode {
    // First: before anything touches more of the allocator's arena.
    let thp = memory::disable_transparent_huge_pages();
    let flags = match Cli::parse().command {
        Command::Serve(flags) => flags,
        Command::Config(args) => return print_config(&args),
    };
    let cfg = match Config::load(&flags, &ProcessEnv) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("zero-logs: {err}");
            return ExitCode::from(2);
        }
    };
    let target = telemetry::init(&cfg.admin.worker_id);
    tracing::debug!(?target, "logging initialised");
    match thp {
        Ok(outcome) => tracing::debug!(?outcome, "transparent huge pages"),
        Err(error) => tracing::warn!(
            %error,
            "cannot turn transparent huge pages off (prctl PR_SET_THP_DISABLE); \
             idle RSS may be ~10 MiB higher; MIMALLOC_ALLOW_THP=0 does the same"
        ),
    }
    // Before the runtime: its threads (and theirs) inherit the slice.
    sched::apply_to_process(cfg.supervision.cpu_slice);
    match serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ (WorkerError::Auth(_) | WorkerError::Tls(_))) => {
            // A configuration error like a bad setting: systemd does not restart on 2
            // (RestartPreventExitStatus), the operator has to act.
            tracing::error!(error = %err, "worker not started");
            eprintln!("zero-logs: {err}");
            ExitCode::from(2)
        }
        Err(err) => {
            tracing::error!(error = %err, "worker failed");
            eprintln!("zero-logs: {err}");
            ExitCode::FAILURE
        }
    }
}

fn print_config(args: &ConfigArgs) -> ExitCode {
    match Config::explain(&args.flags, &args.env_dir) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("zero-logs: {err}");
            ExitCode::from(2)
        }
    }
}

fn serve(cfg: Config) -> Result<(), WorkerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("zero-logs")
        .build()
        .map_err(WorkerError::Runtime)?;
    runtime.block_on(async {
        let (listeners, origin) = listen::listeners(&tls::bind_addrs(&cfg.listen.addrs, &cfg.tls))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        tracing::info!(?addrs, ?origin, worker_id = %cfg.admin.worker_id, "listening");
        run(cfg, listeners, origin, shutdown).await
    })
}

/// SIGTERM/SIGINT start the drain; a second one ends the process at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("stop requested: draining");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second stop signal: exiting without finishing the drain");
    std::process::exit(1);
}

/// Serves `listeners` until `shutdown` is cancelled, then drains.
pub async fn run(
    cfg: Config,
    listeners: Vec<std::net::TcpListener>,
    origin: listen::Origin,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let worker = Worker::build(&cfg, listeners, origin, &shutdown).await?;
    build::announce_ready(&cfg.supervision);
    shutdown.cancelled().await;
    worker.drain(cfg.shutdown_timeout).await;
    Ok(())
}
