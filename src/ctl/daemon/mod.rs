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
//! - [`config`]: the typed settings, and `zero-logs-ctl validate`.
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

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::auth::{Token, TokenSource};
use self::config::{DaemonConfig, Layered};
use super::env_files::{ClusterSize, EnvFiles};
use super::inventory::{self, Inventory, INSTANCE_PATTERN};
use super::restart::RestartArgs;
use super::systemd::{instance_of, Systemd, SystemdError};
use super::Ctx;
use crate::config::ProcessEnv;

/// How long a stop waits for a running operation (a scale drains workers).
const STOP_GRACE: Duration = Duration::from_secs(150);
/// Start and stop jobs of a scale may take this long each.
const SCALE_JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// The daemon's shared state.
pub struct Daemon {
    /// The ctl context; its admin client times out after the health timeout.
    pub ctx: Ctx,
    pub cfg: DaemonConfig,
    token: Token,
    /// The operation running now (see the module docs).
    current: Mutex<Option<String>>,
    tracker: TaskTracker,
}

/// A mutation.
#[derive(Debug)]
pub enum Op {
    /// A rolling restart, or of one instance; `reason` goes into the events.
    Restart { args: RestartArgs, reason: String },
    /// Scale to `workers`; `by` goes into the `scaled` event.
    Scale { workers: u32, by: &'static str },
}

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::Restart { args, reason } => match &args.instance {
                Some(i) => format!("restart of zero-logs@{i} ({reason})"),
                None => format!("rolling restart ({reason})"),
            },
            Op::Scale { workers, by } => format!("scale to {workers} ({by})"),
        }
    }
}

/// Why an operation did not run.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("another operation is running ({running}); try again when it is done")]
    Busy { running: String },
    #[error("the operation's task ended abnormally: {0}")]
    Task(String),
}

/// How an operation that ran ended.
#[derive(Debug)]
pub struct OpOutcome {
    /// The summary line, or the reason it failed.
    pub result: Result<String, String>,
    /// Its progress lines, in order.
    pub progress: Vec<String>,
}

/// Clears [`Daemon::current`] when the operation ends, however it ends.
struct Claim<'a>(&'a Mutex<Option<String>>);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Daemon {
    /// A fresh look at the cluster.
    pub async fn inventory(&self) -> Result<Inventory, SystemdError> {
        let sd = Systemd::connect(self.ctx.bus).await?;
        inventory::collect(&sd, &self.ctx.admin).await
    }

    /// N and the bounds as the env files say now.
    pub fn cluster_size(&self) -> ClusterSize {
        ClusterSize::from_env(&EnvFiles::load(&self.ctx.config_dir), cpus())
    }

    /// Main PIDs of the instances that have one.
    async fn pids(&self) -> Result<HashMap<String, u32>, SystemdError> {
        let sd = Systemd::connect(self.ctx.bus).await?;
        let mut pids = HashMap::new();
        for entry in sd.list_units(&[INSTANCE_PATTERN]).await? {
            if let Some(instance) = instance_of(&entry.0) {
                let pid = sd.unit(&entry.0).await?.main_pid();
                if pid != 0 {
                    pids.insert(instance.to_string(), pid);
                }
            }
        }
        Ok(pids)
    }

    /// Runs `op` unless another operation runs; see the module docs.
    pub async fn run_op(self: &Arc<Self>, op: Op) -> Result<OpOutcome, OpError> {
        let what = op.describe();
        {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(running) = current.as_ref() {
                return Err(OpError::Busy {
                    running: running.clone(),
                });
            }
            *current = Some(what.clone());
        }
        let me = Arc::clone(self);
        let task = self.tracker.spawn(async move {
            let _claim = Claim(&me.current);
            tracing::info!("{what}: starting");
            let before = me.pids().await.unwrap_or_default();
            let wanted_before = me.cluster_size().workers as usize;
            let mut progress = Vec::new();
            let mut push = |line: String| {
                tracing::info!("{line}");
                progress.push(line);
            };
            let result = match &op {
                Op::Restart { args, .. } => {
                    super::restart::rolling_restart(&me.ctx, args, &mut push).await
                }
                Op::Scale { workers, .. } => {
                    super::scale::scale(&me.ctx, &workers.to_string(), SCALE_JOB_TIMEOUT, &mut push)
                        .await
                }
            };
            let after = me.pids().await.unwrap_or_default();
            match (&op, &result) {
                (Op::Restart { args, reason }, _) => {
                    // Only what this operation restarted (a crash elsewhere is
                    // systemd's restart, reported by the event watcher).
                    let ours = |i: &String| args.instance.as_ref().is_none_or(|k| k == i);
                    for (instance, old) in before.iter().filter(|(i, _)| ours(i)) {
                        if let Some(new) = after.get(instance).filter(|new| *new != old) {
                            events::worker_restarted(instance, *old, *new, reason);
                        }
                    }
                    if let Err(e) = &result {
                        let who = args.instance.as_deref().unwrap_or("*");
                        events::worker_restart_failed(who, reason, &format!("{e:#}"));
                    }
                }
                (Op::Scale { workers, by }, Ok(_)) => events::scaled(wanted_before, *workers, by),
                (Op::Scale { .. }, Err(e)) => tracing::error!("{what} failed: {e:#}"),
            }
            OpOutcome {
                result: result.map_err(|e| format!("{e:#}")),
                progress,
            }
        });
        task.await.map_err(|e| OpError::Task(e.to_string()))
    }
}

/// CPUs this process may use (what `auto` workers means).
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// `zero-logs-ctl daemon`: runs until SIGTERM or SIGINT.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // No field prefix: an event's `event` field becomes `EVENT=` in the journal.
    crate::telemetry::init_with("zero-logs-ctl", &[]);
    let files = EnvFiles::load(&ctx.config_dir);
    for warning in &files.warnings {
        tracing::warn!("{warning}");
    }
    let cfg = DaemonConfig::load(&Layered {
        first: &ProcessEnv,
        then: &files,
    })?;
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
