//! One look at the cluster: which instances exist, what systemd says about
//! each, and what each says about itself over its admin socket.
//!
//! The instances shown are the ones `zero-logs.target` wants (`zero-logs@1..N`,
//! from the generator) plus any other loaded instance that is not plainly
//! stopped (a surge instance, one still draining after scale-down, a failed
//! one). Admin requests go out concurrently, each bounded by the client's
//! timeout, so one hung worker cannot stall `status`.
//!
//! `status`, `stats` and `health` render this; the management daemon will
//! serve the same thing.

use std::time::{Duration, SystemTime};

use futures_util::future::join_all;

use super::systemd::{self, Systemd, SystemdError, UnitSnapshot};
use super::worker_client::{AdminClient, HealthReply, WorkerStatsView};

/// The target grouping the instances.
pub const TARGET: &str = "zero-logs.target";
/// Every instance of the template.
pub const INSTANCE_PATTERN: &str = "zero-logs@*.service";

/// An instance's health as the ctl judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `/health` answered 200.
    Ok,
    /// `/health` answered 503 with this reason.
    Unhealthy(String),
    /// `/health` answered 503 for a cause outside the worker (ClickHouse down, spool
    /// full): not serving, but a restart would not help.
    Blocked(String),
    /// Running, but the admin socket did not answer (the error).
    Unreachable(String),
    /// No process (inactive, failed, between restarts).
    NotRunning,
}

impl Health {
    pub fn is_ok(&self) -> bool {
        matches!(self, Health::Ok)
    }

    /// `ok`, `unhealthy: reason`, `unreachable`, `not running`.
    pub fn describe(&self) -> String {
        match self {
            Health::Ok => "ok".into(),
            Health::Unhealthy(reason) => format!("unhealthy: {reason}"),
            Health::Blocked(reason) => format!("blocked: {reason}"),
            Health::Unreachable(_) => "unreachable".into(),
            Health::NotRunning => "not running".into(),
        }
    }

    /// `ok`, `unhealthy`, `unreachable`, `not-running` (JSON).
    pub fn key(&self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Unhealthy(_) => "unhealthy",
            Health::Blocked(_) => "blocked",
            Health::Unreachable(_) => "unreachable",
            Health::NotRunning => "not-running",
        }
    }

    /// The reason or error, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Unhealthy(r) | Health::Blocked(r) | Health::Unreachable(r) => Some(r),
            _ => None,
        }
    }
}

/// One instance, from systemd and its admin socket.
#[derive(Debug, Clone)]
pub struct Instance {
    /// `1`, `2`, `surge`.
    pub name: String,
    /// Wanted by the target (one of `1..N`).
    pub wanted: bool,
    pub unit: UnitSnapshot,
    /// Seconds the current main process has been running.
    pub uptime: Option<Duration>,
    /// `/stats`, when it answered.
    pub stats: Option<WorkerStatsView>,
    pub health: Health,
    /// When `/health` was asked (None: not asked, the instance is not running).
    pub checked_at: Option<SystemTime>,
}

impl Instance {
    /// Numbered instances sort by number, named ones after them.
    pub fn sort_key(&self) -> (u32, String) {
        sort_key(&self.name)
    }

    /// Memory in bytes and where it came from (`cgroup` or `rss`).
    pub fn memory(&self) -> Option<(u64, &'static str)> {
        if let Some(m) = self.unit.service.as_ref().and_then(|s| s.memory_current) {
            return Some((m, "cgroup"));
        }
        self.stats
            .as_ref()
            .filter(|s| s.rss_bytes > 0)
            .map(|s| (s.rss_bytes, "rss"))
    }

    pub fn restarts(&self) -> u32 {
        self.unit.service.as_ref().map_or(0, |s| s.n_restarts)
    }
}

/// `(number, name)`: numbers first in order, then names.
pub fn sort_key(name: &str) -> (u32, String) {
    (name.parse().unwrap_or(u32::MAX), name.to_string())
}

/// The whole picture.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub target: UnitSnapshot,
    pub instances: Vec<Instance>,
    pub systemd_version: String,
    /// When the inventory was taken.
    pub taken_at: SystemTime,
}

impl Inventory {
    /// Instances the target wants.
    pub fn wanted(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| i.wanted)
    }

    /// How long the target has been active (the cluster's uptime).
    pub fn target_uptime(&self) -> Option<Duration> {
        if self.target.active_state != "active" || self.target.active_enter_realtime_us == 0 {
            return None;
        }
        let since =
            SystemTime::UNIX_EPOCH + Duration::from_micros(self.target.active_enter_realtime_us);
        self.taken_at.duration_since(since).ok()
    }
}

/// Collects the inventory.
pub async fn collect(sd: &Systemd, admin: &AdminClient) -> Result<Inventory, SystemdError> {
    let target = sd.unit(TARGET).await?;
    let mut names: Vec<(String, bool)> = target
        .wants
        .iter()
        .filter_map(|u| systemd::instance_of(u))
        .map(|i| (i.to_string(), true))
        .collect();
    for entry in sd.list_units(&[INSTANCE_PATTERN]).await? {
        let (unit, active_state) = (&entry.0, &entry.3);
        let Some(instance) = systemd::instance_of(unit) else {
            continue;
        };
        if active_state != "inactive" && !names.iter().any(|(n, _)| n == instance) {
            names.push((instance.to_string(), false));
        }
    }
    names.sort_by_key(|(n, _)| sort_key(n));

    let mut units = Vec::with_capacity(names.len());
    for (name, _) in &names {
        units.push(sd.unit(&systemd::unit_name(name)).await?);
    }
    let now_mono = systemd::monotonic_now_us();
    let probes = names
        .iter()
        .zip(units)
        .map(|((name, wanted), unit)| probe(admin, name.clone(), *wanted, unit, now_mono));
    let instances = join_all(probes).await;
    let systemd_version = sd.version().await.unwrap_or_default();
    Ok(Inventory {
        target,
        instances,
        systemd_version,
        taken_at: SystemTime::now(),
    })
}

async fn probe(
    admin: &AdminClient,
    name: String,
    wanted: bool,
    unit: UnitSnapshot,
    now_mono_us: u64,
) -> Instance {
    let service = unit.service.clone().unwrap_or_default();
    let has_process = service.main_pid != 0 && unit.is_up();
    let uptime = (has_process && service.exec_main_start_monotonic_us > 0).then(|| {
        Duration::from_micros(now_mono_us.saturating_sub(service.exec_main_start_monotonic_us))
    });
    if !has_process {
        return Instance {
            name,
            wanted,
            unit,
            uptime: None,
            stats: None,
            health: Health::NotRunning,
            checked_at: None,
        };
    }
    let (health, stats) = tokio::join!(admin.health(&name), admin.stats(&name));
    let checked_at = Some(SystemTime::now());
    let health = match health {
        Ok(HealthReply::Ok) => Health::Ok,
        Ok(HealthReply::Unhealthy(reason)) => Health::Unhealthy(reason),
        Ok(HealthReply::Blocked(reason)) => Health::Blocked(reason),
        Err(e) => Health::Unreachable(e.to_string()),
    };
    Instance {
        name,
        wanted,
        unit,
        uptime,
        stats: stats.ok(),
        health,
        checked_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_instances_sort_numerically_then_named() {
        let mut names = vec!["10", "surge", "2", "1", "a"];
        names.sort_by_key(|n| sort_key(n));
        assert_eq!(names, ["1", "2", "10", "a", "surge"]);
    }

    #[test]
    fn health_words() {
        assert_eq!(Health::Ok.describe(), "ok");
        assert_eq!(
            Health::Unhealthy("sink down".into()).describe(),
            "unhealthy: sink down"
        );
        assert_eq!(Health::Unreachable("x".into()).describe(), "unreachable");
        assert_eq!(Health::Unreachable("x".into()).reason(), Some("x"));
        assert_eq!(Health::NotRunning.key(), "not-running");
    }
}
