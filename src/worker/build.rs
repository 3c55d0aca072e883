//! The build step: every component from the `Config`, in the start-up order, ending
//! with a [`Worker`] that serves and holds what the drain needs.
//!
//! Order: TLS files (an invalid setting, shown before anything else), spool (local;
//! its errors are the ones to show), ClickHouse, batcher, feeder and adopter, ingest,
//! admin state, router, accept loops, TLS reloader, admin socket, supervisor.
//! `READY=1` comes after all of it, from [`announce_ready`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::WorkerError;
use crate::admin::{self, AdminState};
use crate::auth::{self, Auth};
use crate::config::{AckMode, Config, SupervisionConfig};
use crate::feeder;
use crate::ingest::{self, AckPoint, Ingest};
use crate::listen;
use crate::notify;
use crate::serve::{Listener, ServeOptions, Server};
use crate::sink::dead_letter::{ClickHouseDeadLetters, DeadLetterFile, Salvage, Salvager};
use crate::sink::endpoints::EndpointBoard;
use crate::sink::{Batcher, BatcherHandle, ClickHouseEndpoints};
use crate::spool::{Spool, SpoolReader};
use crate::stats::Stats;
use crate::tls::{self, TlsListeners};
use crate::watchdog::{Heartbeat, Supervisor, Watched};

/// A serving worker: what the drain stops, waits for and closes.
pub(super) struct Worker {
    pub(super) stats: Arc<Stats>,
    /// Every background task: batcher, feeder, adopter, admin socket.
    pub(super) tracker: TaskTracker,
    /// Cancelled at the end of the drain: batcher, adopter and admin socket stop.
    pub(super) hard_stop: CancellationToken,
    pub(super) batcher: BatcherHandle,
    /// `ACK_MODE=spool` only.
    pub(super) delivery: Option<SpoolDelivery>,
    pub(super) server: Server,
    pub(super) supervisor: Supervisor,
    /// Removed once the drain is over.
    pub(super) admin_socket: Option<PathBuf>,
}

/// With `ACK_MODE=spool`: the spool and the tasks that deliver it to the batcher.
pub(super) struct SpoolDelivery {
    pub(super) spool: Spool,
    pub(super) feeder: JoinHandle<()>,
    /// Cancelled when the drain leaves the rest of the spool for the next start.
    pub(super) stop_pulling: CancellationToken,
    /// Cancelled when the drain begins (and with `hard_stop`).
    pub(super) stop_adopting: CancellationToken,
}

impl Worker {
    /// Builds and starts every component; `shutdown` stops accepting (SIGTERM, or the
    /// supervisor at the memory limit).
    pub(super) async fn build(
        cfg: &Config,
        listeners: Vec<std::net::TcpListener>,
        origin: listen::Origin,
        shutdown: &CancellationToken,
    ) -> Result<Worker, WorkerError> {
        let started = Instant::now();
        let locals = listeners.iter().map(std::net::TcpListener::local_addr);
        let locals = locals.collect::<Result<Vec<_>, _>>().map_err(|source| {
            WorkerError::Listen(listen::ListenError::Adopt { index: 0, source })
        })?;
        // First: a worker exposed without keys, or with unusable certificates, must
        // not open its spool or ClickHouse.
        let keys = auth::decide(&cfg.auth, &locals)?;
        let stats = Arc::new(Stats::default());
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let tls = TlsListeners::load(&cfg.tls, &locals, &stats)?;

        let Storage {
            batcher,
            delivery,
            clickhouse_version,
            endpoints,
        } = Storage::start(cfg, &stats, &tracker, &hard_stop).await?;
        let ack = match &delivery {
            Some(delivery) => AckPoint::Spool(delivery.spool.clone()),
            None => AckPoint::ClickHouse(batcher.clone()),
        };
        let ingest = Arc::new(Ingest::new(&cfg.ingest, ack, stats.clone())?);
        let spool = delivery.as_ref().map(|d| d.spool.clone());
        let auth = Arc::new(Auth::new(cfg.auth.clone(), keys, spool));
        tracker.spawn(auth::reload::watch(auth.clone(), hard_stop.clone()));
        let admin_state = Arc::new(AdminState {
            stats: stats.clone(),
            batcher: batcher.clone(),
            worker_id: cfg.admin.worker_id.clone(),
            started,
            clickhouse_version,
            endpoints,
            accepting: shutdown.clone(),
            spool: delivery.as_ref().map(|d| d.spool.clone()),
            auth: auth.clone(),
        });
        let router = ingest::router(ingest, admin_routes(&admin_state), auth);
        // Before the first request can be served: the reloader's SIGHUP listener
        // replaces SIGHUP's default action (exit), and a client that saw `/health`
        // answer may send SIGHUP (`systemctl reload`) at once.
        tls::spawn_reloader(
            &cfg.tls,
            tls.acceptor.clone(),
            stats.clone(),
            &tracker,
            hard_stop.clone(),
        );
        // The admin socket stays up through the drain so the control tool sees it. It
        // is bound before the first request is served, so a client that saw `/health`
        // answer finds it there.
        if let Some(path) = &cfg.admin.socket {
            serve_admin_socket(path, admin_routes(&admin_state), &tracker, &hard_stop)?;
        }
        let server = start_server(cfg, listeners, &tls, origin, router, shutdown)?;
        let supervisor = supervise(cfg, &batcher, &stats, shutdown)?;
        Ok(Worker {
            stats,
            tracker,
            hard_stop,
            batcher,
            delivery,
            server,
            supervisor,
            admin_socket: cfg.admin.socket.clone(),
        })
    }
}

/// `READY=1`, once every component is up.
pub(super) fn announce_ready(cfg: &SupervisionConfig) {
    notify::ready("serving");
    tracing::info!(
        watchdog_ms = cfg.watchdog.map(|w| w.as_millis() as u64),
        memory_limit_bytes = cfg.memory_limit,
        "ready"
    );
}

/// The storage side of a worker: where acknowledged rows go.
struct Storage {
    batcher: BatcherHandle,
    delivery: Option<SpoolDelivery>,
    clickhouse_version: String,
    endpoints: Arc<EndpointBoard>,
}

impl Storage {
    /// Spool, ClickHouse, batcher, then feeder and adopter.
    async fn start(
        cfg: &Config,
        stats: &Arc<Stats>,
        tracker: &TaskTracker,
        hard_stop: &CancellationToken,
    ) -> Result<Storage, WorkerError> {
        // Opened first: it is local, and a locked or unwritable spool is the error to show.
        let spool = match cfg.ack_mode {
            AckMode::Spool => Some(Spool::open(cfg.spool.clone()).await?),
            AckMode::ClickHouse => None,
        };
        // Probes of endpoints that are down run until the end of the drain.
        let sink =
            ClickHouseEndpoints::connect_all(&cfg.clickhouse, tracker, hard_stop.clone()).await?;
        let clickhouse_version = sink.first_version();
        let endpoints = sink.board();
        let salvage = match &spool {
            Some((spool, _)) => Some(salvager(&sink, cfg, spool, stats).await),
            None => None,
        };
        let sends_tokens = sink.sends_dedup_token();
        // Config has applied ACK_MODE to both (queue clamp, endless retries of spooled rows).
        let batcher = Batcher::spawn(
            cfg.batch.clone(),
            cfg.clickhouse.retry_budget,
            sink,
            stats.clone(),
            tracker,
            hard_stop.clone(),
        );
        let delivery = spool.map(|(spool, reader)| {
            if sends_tokens {
                // Replays then repeat the INSERTs that may have committed (no need where
                // tokens are not sent: nothing would be deduplicated anyway).
                feeder::record_ranges(&spool, &batcher);
            }
            SpoolDelivery::start(spool, reader, &batcher, salvage, cfg, tracker, hard_stop)
        });
        Ok(Storage {
            batcher,
            delivery,
            clickhouse_version,
            endpoints,
        })
    }
}

/// The dead letters of `ACK_MODE=spool` (`sink::dead_letter`): `<table>_rejected`
/// (created now when tables are), else `quarantine/dead-letter.jsonl` in the spool.
async fn salvager(
    sink: &Arc<ClickHouseEndpoints>,
    cfg: &Config,
    spool: &Spool,
    stats: &Arc<Stats>,
) -> Arc<dyn Salvage> {
    let table = ClickHouseDeadLetters::new(Arc::clone(sink), &cfg.clickhouse);
    table.ensure_table(&cfg.clickhouse).await;
    let file = DeadLetterFile::in_dir(&spool.dir().join(crate::spool::segment::QUARANTINE_DIR));
    let source = format!("{}.{}", cfg.clickhouse.database, cfg.clickhouse.table);
    Arc::new(Salvager::new(
        Arc::clone(sink),
        Arc::new(table),
        file,
        Arc::clone(stats),
        source,
    ))
}

impl SpoolDelivery {
    /// Spawns the feeder (spool → batcher) and the adoption of orphaned spools.
    fn start(
        spool: Spool,
        reader: SpoolReader,
        batcher: &BatcherHandle,
        salvage: Option<Arc<dyn Salvage>>,
        cfg: &Config,
        tracker: &TaskTracker,
        hard_stop: &CancellationToken,
    ) -> SpoolDelivery {
        let stop_pulling = CancellationToken::new();
        let stop_adopting = hard_stop.child_token();
        let feeder = tracker.spawn(feeder::feed(
            spool.clone(),
            reader,
            batcher.clone(),
            salvage,
            stop_pulling.clone(),
        ));
        tracker.spawn(feeder::adopt_orphans(
            spool.clone(),
            cfg.spool.adopt_interval,
            stop_adopting.clone(),
        ));
        SpoolDelivery {
            spool,
            feeder,
            stop_pulling,
            stop_adopting,
        }
    }
}

/// `/health`, `/stats`, `/metrics` (and the test hooks when built with them).
fn admin_routes(state: &Arc<AdminState>) -> axum::Router {
    let routes = admin::routes(state.clone());
    #[cfg(feature = "test-hooks")]
    let routes = routes.merge(crate::test_hooks::routes(state.batcher.clone()));
    routes
}

/// Starts the accept loops on `listeners`; they stop when `shutdown` is cancelled.
fn start_server(
    cfg: &Config,
    listeners: Vec<std::net::TcpListener>,
    tls: &TlsListeners,
    origin: listen::Origin,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> Result<Server, WorkerError> {
    let listeners = listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
            Ok(Listener {
                listener: tokio::net::TcpListener::from_std(listener)?,
                tls: tls.for_listener(index),
            })
        })
        .collect::<Result<Vec<_>, std::io::Error>>()
        .map_err(|source| WorkerError::Listen(listen::ListenError::Adopt { index: 0, source }))?;
    Ok(Server::start(
        listeners,
        router,
        ServeOptions {
            balance: origin == listen::Origin::Systemd,
            max_age: cfg.listen.connection_max_age,
        },
        shutdown.clone(),
    ))
}

/// Serves `routes` on the per-instance unix socket until `hard_stop`.
fn serve_admin_socket(
    path: &Path,
    routes: axum::Router,
    tracker: &TaskTracker,
    hard_stop: &CancellationToken,
) -> Result<(), WorkerError> {
    let unix = admin::bind_socket(path).map_err(|source| WorkerError::AdminSocket {
        path: path.display().to_string(),
        source,
    })?;
    let stop = hard_stop.clone();
    tracker.spawn(async move {
        let _ = axum::serve(unix, routes)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(())
}

/// Starts the supervision thread: watchdog pings, memory limit.
fn supervise(
    cfg: &Config,
    batcher: &BatcherHandle,
    stats: &Arc<Stats>,
    shutdown: &CancellationToken,
) -> Result<Supervisor, WorkerError> {
    Supervisor::spawn(
        cfg.supervision.clone(),
        Watched {
            runtime: Arc::new(Heartbeat::new()),
            batcher: batcher.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        },
    )
    .map_err(WorkerError::Supervisor)
}
