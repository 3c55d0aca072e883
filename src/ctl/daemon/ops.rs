//! The daemon's shared state ([`Daemon`]) and its one rule: one mutation at a time.
//!
//! An API call, a watchdog restart and an autoscaling step are each an [`Op`], run by
//! [`Daemon::run_op`]: it refuses ([`OpError::Busy`], `409` in the API) while another
//! one runs, and runs the operation in its own task so that a client that goes away
//! cannot cut it in half; the daemon's stop waits for that task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::auth::Token;
use super::config::DaemonConfig;
use super::events;
use crate::ctl::ctx::Ctx;
use crate::ctl::env_files::ClusterSize;
use crate::ctl::inventory::{self, Inventory, INSTANCE_PATTERN};
use crate::ctl::restart::{self, RestartArgs};
use crate::ctl::scale;
use crate::ctl::systemd::{instance_of, Systemd, SystemdError};

/// Start and stop jobs of a scale may take this long each.
const SCALE_JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// The daemon's shared state.
pub struct Daemon {
    /// The ctl context; its admin client times out after the health timeout.
    pub ctx: Ctx,
    pub cfg: DaemonConfig,
    pub(super) token: Token,
    /// The operation running now (see the module docs).
    pub(super) current: Mutex<Option<String>>,
    pub(super) tracker: TaskTracker,
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
        self.ctx.cluster_size()
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
                    restart::rolling_restart(&me.ctx, args, &mut push).await
                }
                Op::Scale { workers, .. } => {
                    scale::scale(&me.ctx, &workers.to_string(), SCALE_JOB_TIMEOUT, &mut push).await
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
