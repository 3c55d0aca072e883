//! Lifecycle events as structured journal entries, and the watcher that sees
//! workers start and exit.
//!
//! Every event is one entry with `EVENT=<name>` and `WORKER_ID=<instance>`
//! (where it concerns one), so `journalctl -u zero-logs-ctl EVENT=worker_exited`
//! lists exits and an alerting rule can match on the field:
//!
//! | `EVENT=` | when | other fields |
//! |---|---|---|
//! | `worker_started` | a main process was started (systemd forked it) | `WORKER_PID` |
//! | `worker_exited` | a main process ended | `WORKER_PID`, `EXIT_CODE` (exited/killed/dumped), `EXIT_STATUS` (status or signal number), `UPTIME_SECONDS` |
//! | `worker_restarted` | systemd's `Restart=` restarted it, or the daemon did | `RESTARTED_BY` (systemd/zero-logs-ctl), `REASON`, `NRESTARTS` |
//! | `worker_unhealthy` | 2 health checks in a row missed | `WORKER_PID`, `MISSES`, `REASON` |
//! | `worker_memory_limit` | over the daemon's memory limit twice in a row | `WORKER_PID`, `MEMORY_BYTES`, `LIMIT_BYTES`, `MEMORY_SOURCE` |
//! | `worker_restart_failed` | a restart the daemon asked for did not come back | `REASON` |
//! | `scaled` | the worker count changed through the daemon | `FROM_WORKERS`, `TO_WORKERS`, `SCALED_BY` (api/autoscale) |
//! | `cluster_stats` | every `HEALTH_REPORT_INTERVAL` with `LOG_CLUSTER_STATS=true` | totals |
//!
//! # Why D-Bus signals, not polling
//!
//! Starts and exits come from systemd's `PropertiesChanged` signals of the
//! `org.freedesktop.systemd1.Service` interface, for every `zero-logs@`
//! unit. Polling the inventory every `HEALTH_CHECK_INTERVAL` would miss what
//! matters most: a worker that crashes is restarted by systemd after
//! `RestartSec` (1 s), and the new start resets `ExecMainCode`/`ExecMainStatus`,
//! so a poll 5 s later sees a new PID but no longer how the old one ended. The
//! signal carries the exit status and both timestamps when it happens.
//! systemd sends every "emits-change" property of the interface in each
//! signal, so each one is compared with the last value seen per unit: a new
//! `ExecMainExitTimestampMonotonic` is an exit, a new
//! `ExecMainStartTimestampMonotonic` a start, a higher `NRestarts` an automatic
//! restart. The known units are read once at (re)connect, so old exits are not
//! reported again. If the connection drops, the watcher reconnects after 1 s.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use zbus::zvariant::OwnedValue;

use crate::ctl::inventory::INSTANCE_PATTERN;
use crate::ctl::systemd::{
    instance_of, unit_of_path, BusChoice, ServiceSnapshot, Systemd, SystemdError,
};

// === events ===

/// `worker_started`.
pub fn worker_started(instance: &str, pid: u32) {
    tracing::info!(
        event = "worker_started",
        worker_id = instance,
        worker_pid = pid,
        "zero-logs@{instance} started (pid {pid})"
    );
}

/// `worker_exited`; `uptime` None when systemd did not record the start.
pub fn worker_exited(instance: &str, pid: u32, code: i32, status: i32, uptime: Option<Duration>) {
    let (kind, how) = match code {
        1 => ("exited", format!("exit status {status}")),
        2 => ("killed", format!("killed by signal {status}")),
        3 => ("dumped", format!("dumped core on signal {status}")),
        _ => ("unknown", "ended".to_string()),
    };
    let uptime_seconds = uptime.map_or(-1.0, |u| (u.as_secs_f64() * 1000.0).round() / 1000.0);
    macro_rules! exited {
        ($level:ident) => {
            tracing::$level!(
                event = "worker_exited",
                worker_id = instance,
                worker_pid = pid,
                exit_code = kind,
                exit_status = status,
                uptime_seconds,
                "zero-logs@{instance} (pid {pid}) exited: {how} after {uptime_seconds} s"
            )
        };
    }
    if code == 1 && status == 0 {
        exited!(info);
    } else {
        exited!(warn);
    }
}

/// `worker_restarted` by systemd's `Restart=`.
pub fn worker_restarted_by_systemd(instance: &str, n_restarts: u32) {
    tracing::warn!(
        event = "worker_restarted",
        worker_id = instance,
        restarted_by = "systemd",
        reason = "Restart= after the process ended",
        nrestarts = n_restarts,
        "zero-logs@{instance} restarted by systemd (restart #{n_restarts})"
    );
}

/// `worker_restarted` by the daemon, once the new process is ready and healthy.
pub fn worker_restarted(instance: &str, old_pid: u32, new_pid: u32, reason: &str) {
    tracing::info!(
        event = "worker_restarted",
        worker_id = instance,
        restarted_by = "zero-logs-ctl",
        reason,
        worker_pid = new_pid,
        old_pid,
        "zero-logs@{instance} restarted ({reason}): pid {old_pid} -> {new_pid}"
    );
}

/// `worker_restart_failed`.
pub fn worker_restart_failed(instance: &str, reason: &str, error: &str) {
    tracing::error!(
        event = "worker_restart_failed",
        worker_id = instance,
        reason,
        error,
        "zero-logs@{instance}: restart ({reason}) failed: {error}"
    );
}

/// `worker_unhealthy`.
pub fn worker_unhealthy(instance: &str, pid: u32, misses: u32, reason: &str) {
    tracing::warn!(
        event = "worker_unhealthy",
        worker_id = instance,
        worker_pid = pid,
        misses,
        reason,
        "zero-logs@{instance} (pid {pid}) missed {misses} health checks: {reason}; restarting it"
    );
}

/// `worker_memory_limit`.
pub fn worker_memory_limit(instance: &str, pid: u32, bytes: u64, limit: u64, source: &str) {
    tracing::warn!(
        event = "worker_memory_limit",
        worker_id = instance,
        worker_pid = pid,
        memory_bytes = bytes,
        limit_bytes = limit,
        memory_source = source,
        "zero-logs@{instance} (pid {pid}) uses {bytes} bytes ({source}), above the limit {limit}; \
         replacing it gracefully"
    );
}

/// `scaled`.
pub fn scaled(from: usize, to: u32, by: &str) {
    tracing::info!(
        event = "scaled",
        from_workers = from,
        to_workers = to,
        scaled_by = by,
        "scaled from {from} to {to} workers ({by})"
    );
}

// === watcher ===

/// What was last seen of one unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    start_us: u64,
    exit_us: u64,
    n_restarts: u32,
}

/// What one signal (or snapshot) means for a unit, given what was seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Exited {
        pid: u32,
        code: i32,
        status: i32,
        uptime: Option<Duration>,
    },
    Started {
        pid: u32,
    },
    AutoRestarted {
        n_restarts: u32,
    },
}

/// Compares a new snapshot with what was seen; updates `seen`.
fn changes(
    seen: &mut Seen,
    now: &ServiceSnapshot,
    props: &HashMap<String, OwnedValue>,
) -> Vec<Change> {
    let mut out = Vec::new();
    let has = |name: &str| props.contains_key(name);
    if has("ExecMainExitTimestampMonotonic")
        && now.exec_main_exit_monotonic_us != 0
        && now.exec_main_exit_monotonic_us != seen.exit_us
    {
        let start = now.exec_main_start_monotonic_us;
        out.push(Change::Exited {
            pid: now.exec_main_pid,
            code: now.exec_main_code,
            status: now.exec_main_status,
            uptime: (start != 0 && start <= now.exec_main_exit_monotonic_us)
                .then(|| Duration::from_micros(now.exec_main_exit_monotonic_us - start)),
        });
        seen.exit_us = now.exec_main_exit_monotonic_us;
    }
    if has("NRestarts") && now.n_restarts > seen.n_restarts {
        out.push(Change::AutoRestarted {
            n_restarts: now.n_restarts,
        });
    }
    if has("NRestarts") {
        seen.n_restarts = now.n_restarts;
    }
    if has("ExecMainStartTimestampMonotonic")
        && now.exec_main_start_monotonic_us != 0
        && now.exec_main_start_monotonic_us != seen.start_us
        && now.exec_main_exit_monotonic_us == 0
    {
        out.push(Change::Started {
            pid: now.exec_main_pid,
        });
        seen.start_us = now.exec_main_start_monotonic_us;
    }
    out
}

fn report(instance: &str, change: &Change) {
    match change {
        Change::Exited {
            pid,
            code,
            status,
            uptime,
        } => worker_exited(instance, *pid, *code, *status, *uptime),
        Change::Started { pid } => worker_started(instance, *pid),
        Change::AutoRestarted { n_restarts } => worker_restarted_by_systemd(instance, *n_restarts),
    }
}

/// Watches every `zero-logs@` unit until `shutdown`; see the module docs.
pub async fn watch(bus: BusChoice, shutdown: CancellationToken) {
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = watch_once(bus) => r,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "lifecycle event watcher: {e}; reconnecting in 1 s");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn watch_once(bus: BusChoice) -> Result<(), SystemdError> {
    let sd = Systemd::connect(bus).await?;
    let mut stream = sd.watch_services().await?;
    // Seed after subscribing: a change in between is seen twice at worst
    // (then compared away), never missed.
    let mut seen: HashMap<String, Seen> = HashMap::new();
    for entry in sd.list_units(&[INSTANCE_PATTERN]).await? {
        if let Ok(unit) = sd.unit(&entry.0).await {
            let s = unit.service.unwrap_or_default();
            seen.insert(
                entry.0.clone(),
                Seen {
                    start_us: s.exec_main_start_monotonic_us,
                    exit_us: s.exec_main_exit_monotonic_us,
                    n_restarts: s.n_restarts,
                },
            );
        }
    }
    while let Some(msg) = stream.next().await {
        let Ok(msg) = msg else { continue };
        let Some(path) = msg.header().path().map(|p| p.to_string()) else {
            continue;
        };
        let Some(unit) = unit_of_path(&path) else {
            continue;
        };
        let Some(instance) = instance_of(&unit) else {
            continue;
        };
        let Ok((_iface, props, _invalidated)) =
            msg.body()
                .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
        else {
            continue;
        };
        let now = ServiceSnapshot::from_props(&props);
        let entry = seen.entry(unit.clone()).or_default();
        for change in changes(entry, &now, &props) {
            report(instance, &change);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, u64)]) -> (ServiceSnapshot, HashMap<String, OwnedValue>) {
        let mut map = HashMap::new();
        for (k, v) in pairs {
            let value = match *k {
                "ExecMainPID" | "NRestarts" => OwnedValue::from(*v as u32),
                "ExecMainCode" | "ExecMainStatus" => OwnedValue::from(*v as i32),
                _ => OwnedValue::from(*v),
            };
            map.insert(k.to_string(), value);
        }
        (ServiceSnapshot::from_props(&map), map)
    }

    #[test]
    fn a_crash_and_restart_are_seen_once_each() {
        let mut seen = Seen {
            start_us: 1_000_000,
            exit_us: 0,
            n_restarts: 0,
        };
        // Running, nothing new.
        let (s, p) = props(&[
            ("ExecMainPID", 10),
            ("ExecMainStartTimestampMonotonic", 1_000_000),
            ("ExecMainExitTimestampMonotonic", 0),
            ("NRestarts", 0),
        ]);
        assert!(changes(&mut seen, &s, &p).is_empty());
        // Killed by SIGKILL after 4 s.
        let (s, p) = props(&[
            ("ExecMainPID", 10),
            ("ExecMainStartTimestampMonotonic", 1_000_000),
            ("ExecMainExitTimestampMonotonic", 5_000_000),
            ("ExecMainCode", 2),
            ("ExecMainStatus", 9),
            ("NRestarts", 0),
        ]);
        assert_eq!(
            changes(&mut seen, &s, &p),
            [Change::Exited {
                pid: 10,
                code: 2,
                status: 9,
                uptime: Some(Duration::from_secs(4))
            }]
        );
        // The same state again (another property changed): nothing.
        assert!(changes(&mut seen, &s, &p).is_empty());
        // systemd restarts it: NRestarts 1, a new start.
        let (s, p) = props(&[
            ("ExecMainPID", 11),
            ("ExecMainStartTimestampMonotonic", 6_000_000),
            ("ExecMainExitTimestampMonotonic", 0),
            ("NRestarts", 1),
        ]);
        assert_eq!(
            changes(&mut seen, &s, &p),
            [
                Change::AutoRestarted { n_restarts: 1 },
                Change::Started { pid: 11 }
            ]
        );
        assert!(changes(&mut seen, &s, &p).is_empty());
    }

    #[test]
    fn partial_signals_change_nothing_they_do_not_carry() {
        let mut seen = Seen {
            start_us: 7,
            exit_us: 0,
            n_restarts: 3,
        };
        let (s, p) = props(&[("ExecMainPID", 12)]);
        assert!(changes(&mut seen, &s, &p).is_empty());
        assert_eq!(seen.n_restarts, 3);
    }
}
