//! `zero-logs-ctl daemon`: the management daemon, run by
//! `zero-logs-ctl.service` (see docs/CTL.md).
//!
//! systemd stays the master: the daemon never forks or signals a worker. It
//! reuses the ctl's pieces (inventory, `scale`, rolling `restart`, D-Bus to
//! systemd, admin sockets) and adds:
//!
//! - [`api`]: the management HTTP API (`/stats`, `/health`, `/restart`, `/scale`),
//!   loopback by default, mutations behind a bearer token ([`auth`]);
//! - [`health`]: every `HEALTH_CHECK_INTERVAL`, each running instance's
//!   `/health` and memory; 2 misses in a row, or memory above the daemon's
//!   limit twice in a row, restart it through systemd (it drains); the stats
//!   line; autoscaling samples ([`autoscale`], off by default);
//! - [`events`]: lifecycle events in the journal (`EVENT=`), starts and exits
//!   seen through systemd's signals;
//! - [`config`]: the typed settings, and `zero-logs-ctl validate`;
//! - [`ops`]: the shared state ([`Daemon`]) and the operations (scale, restart).
//!
//! One mutation at a time: an API call, a watchdog restart and an autoscaling
//! step all go through [`Daemon::run_op`], which refuses (`409` in the API)
//! while another one runs, and runs the operation in its own task so that a
//! client that goes away cannot cut it in half. SIGTERM/SIGINT cancel one
//! [`CancellationToken`]; the daemon stops serving, lets a running operation
//! end, and exits 0.

pub mod api;
pub mod auth;
pub mod autoscale;
pub mod config;
pub mod events;
pub mod health;
pub mod ops;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::auth::{Token, TokenSource};
use self::config::DaemonConfig;
use self::ops::Daemon;
use super::ctx::Ctx;
use super::env_files::EnvFiles;
use super::systemd::Systemd;

/// How long a stop waits for a running operation (a scale drains workers).
const STOP_GRACE: Duration = Duration::from_secs(150);

/// `zero-logs-ctl daemon`: runs until SIGTERM or SIGINT.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // No field prefix: an event's `event` field becomes `EVENT=` in the journal.
    crate::telemetry::init_with("zero-logs-ctl", &[]);
    let files = EnvFiles::load(&ctx.config_dir);
    for warning in &files.warnings {
        tracing::warn!("{warning}");
    }
    let cfg = DaemonConfig::load(&files.behind_process_env())?;
    let (token, source) = Token::load_or_create(&cfg.token_file)?;
    if source == TokenSource::Created {
        tracing::info!(
            "created {} with a new random API token (mode 0600)",
            cfg.token_file.display()
        );
    }
    // Fail before READY=1 when systemd cannot be reached at all.
    Systemd::connect(ctx.bus).await?;
    let addr = std::net::SocketAddr::from((cfg.api_host, cfg.api_port));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding the management API to {addr} (CLUSTER_API_HOST, CLUSTER_API_PORT)")
    })?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let daemon = Arc::new(Daemon {
        ctx: Ctx {
            admin: ctx.admin.with_timeout(cfg.health_timeout()),
            ..ctx.clone()
        },
        cfg,
        token,
        current: Mutex::new(None),
        tracker: tracker.clone(),
    });
    tracker.spawn(events::watch(ctx.bus, shutdown.clone()));
    tracker.spawn(health::run(Arc::clone(&daemon), shutdown.clone()));
    let server = axum::serve(listener, api::router(Arc::clone(&daemon)))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let served = tracker.spawn(async move { server.await });

    crate::notify::ready(&format!("management API on http://{addr}"));
    tracing::info!(
        api = %addr,
        health_check_interval_ms = daemon.cfg.health_check_interval.as_millis() as u64,
        memory_limit_bytes = daemon.cfg.memory_limit,
        autoscale = daemon.cfg.autoscale.enabled,
        "zero-logs-ctl daemon ready: management API on http://{addr}"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        r = served => {
            // The server ended on its own: an accept error it could not survive.
            shutdown.cancel();
            anyhow::bail!("the management API stopped: {:?}", r);
        }
    }
    crate::notify::stopping();
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(STOP_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("an operation was still running after {STOP_GRACE:?}; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
