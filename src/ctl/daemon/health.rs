//! The daemon's periodic loop, every `HEALTH_CHECK_INTERVAL`: one inventory
//! (systemd's view + each running instance's `/health` and `/stats` over its
//! admin socket, each bounded by the health timeout), then
//!
//! 1. **health**: an instance that misses 2 checks in a row (no answer within
//!    the timeout, or `503`) is restarted through systemd (`RestartUnit`,
//!    waiting for the job, for `READY=1` and for `/health` ok): the worker
//!    drains, the shared socket queues connections meanwhile. One exception:
//!    when *every* running instance answers `503` (a common cause, typically
//!    ClickHouse down), none is restarted — a worker cannot start without
//!    ClickHouse, so restarts would turn a degraded pipeline into a stopped
//!    one. A `503` whose `cause` is outside the worker (`clickhouse_down`,
//!    `spool_full`) is never a miss. An instance that does not answer at all
//!    is restarted regardless.
//! 2. **memory**: an instance over the daemon's memory limit (`MemoryCurrent`,
//!    or the worker's RSS where systemd has no memory accounting) at 2 checks
//!    in a row with the same PID is restarted the same graceful way. The
//!    daemon's limit is above the worker's own `WORKER_MEMORY_LIMIT` (see
//!    docs/CTL.md), so the worker's self-restart comes first and the two never
//!    race: an instance already draining is not `active/running` and is left
//!    alone.
//! 3. **stats line** (`LOG_CLUSTER_STATS=true`): one `EVENT=cluster_stats`
//!    entry every `HEALTH_REPORT_INTERVAL`;
//! 4. **autoscaling** sample (see [`super::autoscale`]).
//!
//! Restarts go through [`Daemon::run_op`]: while an operator's scale or
//! restart runs, the check only counts, and acts at the first tick after.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::autoscale::{Autoscaler, Decision};
use super::events;
use super::ops::{Daemon, Op, OpError};
use crate::ctl::ctx::cpus;
use crate::ctl::inventory::{Health, Instance, Inventory};
use crate::ctl::restart::RestartArgs;
use crate::ctl::status;

/// Consecutive misses before a restart.
pub const MISSES: u32 = 2;
/// How long an instance may take to come back from a watchdog restart.
const RESTART_TIMEOUT_SECS: u64 = 90;

/// Why an instance is to be restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Unhealthy {
        misses: u32,
        reason: String,
    },
    Memory {
        bytes: u64,
        limit: u64,
        source: &'static str,
    },
}

/// One restart to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub instance: String,
    pub pid: u32,
    pub cause: Cause,
}

/// Counts misses and memory overruns per instance and PID.
#[derive(Debug, Default)]
pub struct Judge {
    memory_limit: Option<u64>,
    /// instance → (pid, consecutive health misses, consecutive memory overruns)
    counts: HashMap<String, (u32, u32, u32)>,
}

impl Judge {
    pub fn new(memory_limit: Option<u64>) -> Judge {
        Judge {
            memory_limit,
            counts: HashMap::new(),
        }
    }

    /// Takes one inventory; returns the restarts due now.
    pub fn observe(&mut self, instances: &[Instance]) -> Vec<Action> {
        let running: Vec<&Instance> = instances
            .iter()
            .filter(|i| i.unit.is_running() && i.unit.main_pid() != 0)
            .collect();
        let all_say_unhealthy = !running.is_empty()
            && running
                .iter()
                .all(|i| matches!(i.health, Health::Unhealthy(_)));
        self.counts
            .retain(|name, _| running.iter().any(|i| &i.name == name));
        let mut actions = Vec::new();
        for i in running {
            let pid = i.unit.main_pid();
            let entry = self.counts.entry(i.name.clone()).or_insert((pid, 0, 0));
            if entry.0 != pid {
                *entry = (pid, 0, 0);
            }
            // Blocked (ClickHouse down, spool full) is not this process's fault: a
            // restart would only replay the same spool against the same ClickHouse.
            entry.1 = match i.health {
                Health::Ok | Health::Blocked(_) => 0,
                _ => entry.1 + 1,
            };
            let memory = i.memory();
            let over = match (memory, self.memory_limit) {
                (Some((bytes, _)), Some(limit)) => bytes > limit,
                _ => false,
            };
            entry.2 = if over { entry.2 + 1 } else { 0 };
            if entry.1 >= MISSES {
                let reason = match &i.health {
                    Health::Unreachable(e) => format!("no answer: {e}"),
                    other => other.describe(),
                };
                if all_say_unhealthy {
                    tracing::warn!(
                        worker_id = %i.name,
                        "zero-logs@{} unhealthy ({reason}) for {} checks, like every other \
                         instance: a common cause (ClickHouse?); not restarting",
                        i.name,
                        entry.1
                    );
                    continue;
                }
                actions.push(Action {
                    instance: i.name.clone(),
                    pid,
                    cause: Cause::Unhealthy {
                        misses: entry.1,
                        reason,
                    },
                });
            } else if entry.2 >= MISSES {
                let (bytes, source) = memory.unwrap_or_default();
                actions.push(Action {
                    instance: i.name.clone(),
                    pid,
                    cause: Cause::Memory {
                        bytes,
                        limit: self.memory_limit.unwrap_or_default(),
                        source,
                    },
                });
            }
        }
        actions
    }

    /// Forgets `instance` (it was just restarted).
    pub fn reset(&mut self, instance: &str) {
        self.counts.remove(instance);
    }
}

/// instance → (main PID, its `requests` counter).
type Counters = HashMap<String, (u32, u64)>;

/// Ingest requests per second per running worker between two inventories,
/// from each process's `requests` counter (a new PID starts from zero).
#[derive(Debug, Default)]
pub struct RateMeter {
    last: Option<(Instant, Counters)>,
}

impl RateMeter {
    /// `(running workers, requests/s per worker)`, None on the first call.
    pub fn observe(&mut self, now: Instant, inv: &Inventory) -> Option<(u32, f64)> {
        let counters: Counters = inv
            .instances
            .iter()
            .filter(|i| i.unit.is_running())
            .filter_map(|i| {
                Some((
                    i.name.clone(),
                    (i.unit.main_pid(), i.stats.as_ref()?.requests),
                ))
            })
            .collect();
        let running = inv.instances.iter().filter(|i| i.unit.is_running()).count() as u32;
        let previous = self.last.replace((now, counters.clone()));
        let (then, before) = previous?;
        let secs = now.duration_since(then).as_secs_f64();
        if secs <= 0.0 || running == 0 {
            return None;
        }
        let delta: u64 = counters
            .iter()
            .map(|(name, (pid, n))| match before.get(name) {
                Some((old_pid, old)) if old_pid == pid => n.saturating_sub(*old),
                _ => *n,
            })
            .sum();
        Some((running, delta as f64 / secs / f64::from(running)))
    }
}

/// The loop; see the module docs.
pub async fn run(d: Arc<Daemon>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(d.cfg.health_check_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut judge = Judge::new(d.cfg.memory_limit);
    let mut rates = RateMeter::default();
    let mut scaler: Option<Autoscaler> = None;
    let mut next_report = Instant::now() + d.cfg.health_report_interval;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let inv = match d.inventory().await {
            Ok(inv) => inv,
            Err(e) => {
                tracing::warn!("health check: cannot read the cluster's state: {e}");
                continue;
            }
        };
        let healthy = inv.instances.iter().filter(|i| i.health.is_ok()).count();
        crate::notify::status(&format!(
            "{healthy}/{} instances healthy; API on {}:{}",
            inv.wanted().count(),
            d.cfg.api_host,
            d.cfg.api_port
        ));
        for action in judge.observe(&inv.instances) {
            if shutdown.is_cancelled() {
                return;
            }
            let reason = match &action.cause {
                Cause::Unhealthy { misses, reason } => {
                    events::worker_unhealthy(&action.instance, action.pid, *misses, reason);
                    "unhealthy".to_string()
                }
                Cause::Memory {
                    bytes,
                    limit,
                    source,
                } => {
                    events::worker_memory_limit(
                        &action.instance,
                        action.pid,
                        *bytes,
                        *limit,
                        source,
                    );
                    "memory limit".to_string()
                }
            };
            let op = Op::Restart {
                args: RestartArgs {
                    instance: Some(action.instance.clone()),
                    surge: false,
                    timeout: RESTART_TIMEOUT_SECS,
                },
                reason,
            };
            match d.run_op(op).await {
                Ok(_) => judge.reset(&action.instance),
                Err(OpError::Busy { running }) => tracing::info!(
                    "zero-logs@{}: restart postponed, {running} is in progress",
                    action.instance
                ),
                Err(e) => tracing::error!("zero-logs@{}: {e}", action.instance),
            }
        }
        let now = Instant::now();
        if d.cfg.log_cluster_stats && now >= next_report {
            next_report = now + d.cfg.health_report_interval;
            log_stats(&d, &inv);
        }
        if let Some((running, rps)) = rates.observe(now, &inv) {
            let size = d.cluster_size();
            let min = size.min.as_ref().map_or(1, |b| b.value);
            let max = size.max.as_ref().map_or(cpus(), |b| b.value);
            let scaler =
                scaler.get_or_insert_with(|| Autoscaler::new(d.cfg.autoscale.clone(), min, max));
            scaler.set_bounds(min, max);
            if let Some(Decision::ScaleTo(n)) = scaler.observe(now, running, rps) {
                tracing::info!(
                    "autoscale: {rps:.0} requests/s per worker with {running} running; scaling to {n}"
                );
                if let Err(e) = d
                    .run_op(Op::Scale {
                        workers: n,
                        by: "autoscale",
                    })
                    .await
                {
                    tracing::info!("autoscale: {e}");
                }
            }
        }
    }
}

fn log_stats(d: &Daemon, inv: &Inventory) {
    let stats = status::cluster_stats(inv, Some(&d.cluster_size()));
    let c = &stats.cluster;
    tracing::info!(
        event = "cluster_stats",
        workers = c.workers,
        wanted_workers = c.wanted_workers,
        healthy_workers = c.healthy_workers,
        total_requests = c.total_requests,
        total_requests_failed = c.total_requests_failed,
        total_restarts = c.total_restarts,
        total_memory_mb = c.total_memory_mb,
        "{}",
        status::render_stats(&stats)
            .lines()
            .next()
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::systemd::{ServiceSnapshot, UnitSnapshot};
    use crate::ctl::worker_client::WorkerStatsView;

    fn instance(name: &str, pid: u32, health: Health, rss: u64) -> Instance {
        Instance {
            name: name.into(),
            wanted: true,
            unit: UnitSnapshot {
                id: format!("zero-logs@{name}.service"),
                active_state: "active".into(),
                sub_state: "running".into(),
                service: Some(ServiceSnapshot {
                    main_pid: pid,
                    ..Default::default()
                }),
                ..Default::default()
            },
            uptime: None,
            stats: Some(WorkerStatsView {
                rss_bytes: rss,
                ..Default::default()
            }),
            health,
            checked_at: None,
        }
    }

    fn unreachable() -> Health {
        Health::Unreachable("timeout".into())
    }

    #[test]
    fn two_misses_in_a_row_restart_one_does_not() {
        let mut j = Judge::new(None);
        let ok = instance("1", 10, Health::Ok, 0);
        assert!(j
            .observe(&[ok.clone(), instance("2", 20, unreachable(), 0)])
            .is_empty());
        // A miss, then ok: the count starts over.
        assert!(j
            .observe(&[ok.clone(), instance("2", 20, Health::Ok, 0)])
            .is_empty());
        assert!(j
            .observe(&[ok.clone(), instance("2", 20, unreachable(), 0)])
            .is_empty());
        let actions = j.observe(&[ok.clone(), instance("2", 20, unreachable(), 0)]);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!((actions[0].instance.as_str(), actions[0].pid), ("2", 20));
        assert!(matches!(
            actions[0].cause,
            Cause::Unhealthy { misses: 2, .. }
        ));
        // A new PID starts a new count.
        assert!(j
            .observe(&[ok, instance("2", 21, unreachable(), 0)])
            .is_empty());
    }

    #[test]
    fn a_blocked_instance_is_never_a_miss() {
        let mut j = Judge::new(None);
        let blocked = instance("1", 10, Health::Blocked("spool full".into()), 0);
        let ok = instance("2", 20, Health::Ok, 0);
        for _ in 0..5 {
            assert!(j.observe(&[blocked.clone(), ok.clone()]).is_empty());
        }
    }

    #[test]
    fn a_common_503_restarts_nothing_but_a_silent_instance_is_restarted() {
        let mut j = Judge::new(None);
        let sick =
            |n: &str, pid| instance(n, pid, Health::Unhealthy("ClickHouse sink down".into()), 0);
        for _ in 0..5 {
            assert!(j.observe(&[sick("1", 10), sick("2", 20)]).is_empty());
        }
        let mut j = Judge::new(None);
        j.observe(&[instance("1", 10, unreachable(), 0)]);
        assert_eq!(j.observe(&[instance("1", 10, unreachable(), 0)]).len(), 1);
        // One 503 among healthy siblings is that instance's own problem.
        let mut j = Judge::new(None);
        let ok = instance("2", 20, Health::Ok, 0);
        j.observe(&[sick("1", 10), ok.clone()]);
        assert_eq!(j.observe(&[sick("1", 10), ok]).len(), 1);
    }

    #[test]
    fn memory_over_the_limit_twice_restarts() {
        let mut j = Judge::new(Some(100));
        assert!(j.observe(&[instance("1", 10, Health::Ok, 150)]).is_empty());
        assert!(j.observe(&[instance("1", 10, Health::Ok, 50)]).is_empty());
        assert!(j.observe(&[instance("1", 10, Health::Ok, 150)]).is_empty());
        let actions = j.observe(&[instance("1", 10, Health::Ok, 150)]);
        assert_eq!(
            actions[0].cause,
            Cause::Memory {
                bytes: 150,
                limit: 100,
                source: "rss"
            }
        );
        j.reset("1");
        assert!(j.observe(&[instance("1", 11, Health::Ok, 150)]).is_empty());
        // No limit: never.
        let mut off = Judge::new(None);
        for _ in 0..3 {
            assert!(off
                .observe(&[instance("1", 10, Health::Ok, u64::MAX)])
                .is_empty());
        }
    }

    #[test]
    fn instances_not_running_are_left_alone() {
        let mut j = Judge::new(Some(1));
        let mut draining = instance("1", 10, unreachable(), 500);
        draining.unit.sub_state = "stop-sigterm".into();
        draining.unit.active_state = "deactivating".into();
        for _ in 0..3 {
            assert!(j.observe(std::slice::from_ref(&draining)).is_empty());
        }
    }
}
