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
//! [`TaskTracker`] and the whole drain is bounded by `GRACEFUL_SHUTDOWN_TIMEOUT`.
//! Last, whatever happened, the spool persists its acknowledgements and closes.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{AckMode, Config, ProcessEnv, ServeFlags};
use crate::feeder;
use crate::ingest::{self, AckPoint, Ingest};
use crate::listen;
use crate::notify;
use crate::sched;
use crate::serve::{ServeOptions, Server};
use crate::sink::{Batcher, ClickHouseSink, SinkError};
use crate::spool::{Spool, SpoolError};
use crate::stats::Stats;
use crate::telemetry;
use crate::watchdog::{Heartbeat, StopReason, Supervisor, Watched};

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
    #[command(after_help = SERVE_ENV_ONLY)]
    Serve(ServeFlags),
}

const SERVE_ENV_ONLY: &str = "\
Environment only:
  CLICKHOUSE_PASSWORD  ClickHouse password (no flag, so it never shows in ps) [default: empty]
  RUST_LOG             log filter, e.g. info or zero_logs=debug [default: info]

Exit status: 0 after a clean stop, 1 on a runtime failure (e.g. ClickHouse unreachable
at start), 2 for an invalid setting.";

/// What stopped a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
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
}

/// Entry point of the `zero-logs` binary. Exit 2 for bad configuration.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve(flags) = cli.command;
    let cfg = match Config::load(&flags, &ProcessEnv) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("zero-logs: {err}");
            return ExitCode::from(2);
        }
    };
    let target = telemetry::init(&cfg.admin.worker_id);
    tracing::debug!(?target, "logging initialised");
    // Before the runtime: its threads (and theirs) inherit the slice.
    sched::apply_to_process(cfg.supervision.cpu_slice);
    match serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "worker failed");
            eprintln!("zero-logs: {err}");
            ExitCode::FAILURE
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
        let (listeners, origin) = listen::listeners(&cfg.listen.addrs)?;
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
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();

    // Opened first: it is local, and a locked or unwritable spool is the error to show.
    let spool = match cfg.ack_mode {
        AckMode::Spool => Some(Spool::open(cfg.spool.clone()).await?),
        AckMode::ClickHouse => None,
    };
    let sink = Arc::new(ClickHouseSink::connect(&cfg.clickhouse).await?);
    let clickhouse_version = sink.server_version().to_string();
    let retry_budget = match cfg.ack_mode {
        // Spooled rows are durable: retrying for ever loses nothing, giving up would.
        AckMode::Spool => std::time::Duration::MAX,
        AckMode::ClickHouse => cfg.clickhouse.retry_budget,
    };
    let mut batch_cfg = cfg.batch.clone();
    if cfg.ack_mode == AckMode::Spool {
        // The backlog waits on disk, not in memory: the batcher only needs what keeps
        // every INSERT slot busy plus the one being cut.
        let enough = cfg.batch.max_rows * (cfg.batch.max_inflight_inserts + 1);
        batch_cfg.max_queue_rows = batch_cfg.max_queue_rows.min(enough);
    }
    let batcher = Batcher::spawn(
        batch_cfg,
        retry_budget,
        sink,
        stats.clone(),
        &tracker,
        hard_stop.clone(),
    );
    let stop_pulling = CancellationToken::new();
    let stop_adopting = hard_stop.child_token();
    let (ack, spool, feeder) = match spool {
        Some((spool, reader)) => {
            let feeder = tracker.spawn(feeder::feed(
                spool.clone(),
                reader,
                batcher.clone(),
                stop_pulling.clone(),
            ));
            tracker.spawn(feeder::adopt_orphans(
                spool.clone(),
                cfg.spool.adopt_interval,
                stop_adopting.clone(),
            ));
            (AckPoint::Spool(spool.clone()), Some(spool), Some(feeder))
        }
        None => (AckPoint::ClickHouse(batcher.clone()), None, None),
    };

    let ingest = Arc::new(Ingest::new(&cfg.ingest, ack, stats.clone())?);
    let admin_state = Arc::new(AdminState {
        stats: stats.clone(),
        batcher: batcher.clone(),
        worker_id: cfg.admin.worker_id.clone(),
        started,
        clickhouse_version,
        accepting: shutdown.clone(),
        spool: spool.clone(),
    });
    let router = ingest::router(ingest, admin::routes(admin_state.clone()));
    #[cfg(feature = "test-hooks")]
    let router = router.merge(crate::test_hooks::routes(batcher.clone()));

    let listeners = listeners
        .into_iter()
        .map(tokio::net::TcpListener::from_std)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| WorkerError::Listen(listen::ListenError::Adopt { index: 0, source }))?;
    let server = Server::start(
        listeners,
        router,
        ServeOptions {
            balance: origin == listen::Origin::Systemd,
            max_age: cfg.listen.connection_max_age,
        },
        shutdown.clone(),
    );
    // The admin socket stays up through the drain so the control tool sees it.
    if let Some(path) = &cfg.admin.socket {
        let unix = admin::bind_socket(path).map_err(|source| WorkerError::AdminSocket {
            path: path.display().to_string(),
            source,
        })?;
        let admin_router = admin::routes(admin_state.clone());
        #[cfg(feature = "test-hooks")]
        let admin_router = admin_router.merge(crate::test_hooks::routes(batcher.clone()));
        let stop = hard_stop.clone();
        tracker.spawn(async move {
            let _ = axum::serve(unix, admin_router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }

    let supervisor = Supervisor::spawn(
        cfg.supervision.clone(),
        Watched {
            runtime: Arc::new(Heartbeat::new()),
            batcher: batcher.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        },
    )
    .map_err(WorkerError::Supervisor)?;

    notify::ready("serving");
    tracing::info!(
        watchdog_ms = cfg.supervision.watchdog.map(|w| w.as_millis() as u64),
        memory_limit_bytes = cfg.supervision.memory_limit,
        "ready"
    );
    shutdown.cancelled().await;
    notify::stopping();
    if let Some(StopReason::MemoryLimit { rss, limit }) = supervisor.stop_reason() {
        tracing::info!(
            rss_bytes = rss,
            limit_bytes = limit,
            "draining for a memory-limit restart"
        );
    }
    let deadline = cfg.shutdown_timeout;
    let drained = tokio::time::timeout(deadline, async {
        server.wait().await;
        if let (Some(spool), Some(mut feeder)) = (&spool, feeder) {
            spool.close_appends();
            stop_adopting.cancel();
            // Deliver the rest while ClickHouse takes it: up to half the budget, or
            // until it has been down for a second (the spool keeps the rest).
            let give_up = async {
                tokio::select! {
                    () = tokio::time::sleep(deadline / 2) => "drain budget spent",
                    () = clickhouse_down_for(&batcher, Duration::from_secs(1)) => "ClickHouse is down",
                }
            };
            tokio::select! {
                _ = &mut feeder => {}
                why = give_up => {
                    tracing::info!(reason = why, "leaving the rest of the spool for the next start");
                    stop_pulling.cancel();
                    batcher.close();
                    let _ = feeder.await;
                }
            }
        }
        batcher.close();
        hard_stop.cancel();
        tracker.close();
        tracker.wait().await;
    })
    .await;
    let counters = stats.snapshot();
    match drained {
        Ok(()) => tracing::info!(
            rows_inserted = counters.rows_inserted,
            records_accepted = counters.records_accepted,
            "drained; exiting"
        ),
        Err(_) if spool.is_some() => tracing::warn!(
            timeout_ms = deadline.as_millis() as u64,
            queue_rows = counters.queue_rows,
            "drain did not finish within GRACEFUL_SHUTDOWN_TIMEOUT; every request was answered, \
             batches not yet in ClickHouse stay in the spool (replayed at the next start or \
             adopted by a running instance)"
        ),
        Err(_) => tracing::warn!(
            timeout_ms = deadline.as_millis() as u64,
            queue_rows = counters.queue_rows,
            "drain did not finish within GRACEFUL_SHUTDOWN_TIMEOUT; unacknowledged requests were cut off"
        ),
    }
    if let Some(spool) = &spool {
        // Persists the acknowledgements received, even after a drain timeout, so that
        // only frames really not committed replay.
        spool.shutdown().await;
        let s = spool.stats();
        tracing::info!(
            unacked_frames = s.unacked_frames,
            bytes = s.bytes,
            "spool closed; unacknowledged frames replay at the next start"
        );
    }
    supervisor.stop();
    if let Some(path) = &cfg.admin.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Resolves once the batcher has reported ClickHouse down for `long` without a break.
async fn clickhouse_down_for(batcher: &crate::sink::BatcherHandle, long: Duration) {
    let mut down_since: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if batcher.health().is_healthy() {
            down_since = None;
        } else if now - *down_since.get_or_insert(now) >= long {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
