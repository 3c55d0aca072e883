//! `status`, `stats` and `health`: pure renderings of an [`Inventory`].
//!
//! - `status`: a table for people, or `--json` with systemd's words.
//! - `stats --json`: the old Node.js cluster API's shape (`master`, `cluster`,
//!   `workers`, camelCase keys), so dashboards and scripts written for it keep
//!   working. Here systemd is the master, so `master` describes systemd's
//!   view: PID 1, its version, and `zero-logs.target` (its state; `uptime` is
//!   how long the target has been active — what the old master's uptime meant,
//!   the cluster's age). `ctlPid` is this process.
//! - `health`: a verdict with an exit status for scripts and monitoring.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::env_files::ClusterSize;
use super::inventory::{Health, Instance, Inventory};

// === status ===

/// The table `zero-logs-ctl status` prints.
pub fn render_table(inv: &Inventory, size: Option<&ClusterSize>) -> String {
    let mut out = String::new();
    let wanted = inv.wanted().count();
    let running = inv.instances.iter().filter(|i| i.unit.is_running()).count();
    let healthy = inv.instances.iter().filter(|i| i.health.is_ok()).count();
    let _ = write!(
        out,
        "{}: {}, {wanted} wanted, {running} running, {healthy} healthy",
        inv.target.id,
        inv.target.state()
    );
    if let Some(up) = inv.target_uptime() {
        let _ = write!(out, ", up {}", human_duration(up));
    }
    out.push('\n');
    if let Some(size) = size {
        let _ = writeln!(out, "N = {} ({})", size.workers, size.source());
        if size.workers as usize != wanted {
            let _ = writeln!(
                out,
                "note: the env files say {} but the target wants {wanted}: run `systemctl daemon-reload`",
                size.workers
            );
        }
    }
    let header = [
        "INSTANCE", "STATE", "PID", "UPTIME", "RESTARTS", "MEMORY", "REQUESTS", "HEALTH",
    ];
    let rows: Vec<[String; 8]> = inv.instances.iter().map(table_row).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    if inv.instances.is_empty() {
        out.push_str("(no instances)\n");
    }
    out
}

fn table_row(i: &Instance) -> [String; 8] {
    let pid = i.unit.main_pid();
    let name = if i.wanted {
        i.name.clone()
    } else {
        format!("{} (extra)", i.name)
    };
    [
        name,
        i.unit.state(),
        if pid == 0 {
            "-".into()
        } else {
            pid.to_string()
        },
        i.uptime.map_or("-".into(), human_duration),
        i.restarts().to_string(),
        match i.memory() {
            Some((bytes, "rss")) => format!("{} (rss)", human_bytes(bytes)),
            Some((bytes, _)) => human_bytes(bytes),
            None => "-".into(),
        },
        i.stats
            .as_ref()
            .map_or("-".into(), |s| s.requests.to_string()),
        i.health.describe(),
    ]
}

/// `status --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusJson {
    pub bus: String,
    pub systemd_version: String,
    pub target: TargetJson,
    pub workers: WorkersJson,
    pub instances: Vec<InstanceJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetJson {
    pub unit: String,
    pub active_state: String,
    pub sub_state: String,
    /// Seconds since the target became active.
    pub uptime: Option<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkersJson {
    pub wanted: usize,
    pub running: usize,
    pub healthy: usize,
    /// N from the env files (what the generator computes).
    pub configured: Option<u32>,
    /// Where N comes from.
    pub source: Option<String>,
    pub min_workers: Option<u32>,
    pub max_workers: Option<u32>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceJson {
    pub instance: String,
    pub unit: String,
    pub wanted: bool,
    pub active_state: String,
    pub sub_state: String,
    pub pid: u32,
    pub uptime: Option<f64>,
    pub restarts: u32,
    pub memory_bytes: Option<u64>,
    /// `cgroup` (systemd's MemoryCurrent) or `rss` (the worker's own).
    pub memory_source: Option<&'static str>,
    pub requests: Option<u64>,
    pub health: &'static str,
    pub health_reason: Option<String>,
    /// The worker's `STATUS=` line.
    pub status_text: String,
}

pub fn status_json(inv: &Inventory, bus: &str, size: Option<&ClusterSize>) -> StatusJson {
    StatusJson {
        bus: bus.to_string(),
        systemd_version: inv.systemd_version.clone(),
        target: TargetJson {
            unit: inv.target.id.clone(),
            active_state: inv.target.active_state.clone(),
            sub_state: inv.target.sub_state.clone(),
            uptime: inv.target_uptime().map(secs),
        },
        workers: WorkersJson {
            wanted: inv.wanted().count(),
            running: inv.instances.iter().filter(|i| i.unit.is_running()).count(),
            healthy: inv.instances.iter().filter(|i| i.health.is_ok()).count(),
            configured: size.map(|s| s.workers),
            source: size.map(ClusterSize::source),
            min_workers: size.and_then(|s| s.min.as_ref()).map(|b| b.value),
            max_workers: size.and_then(|s| s.max.as_ref()).map(|b| b.value),
        },
        instances: inv
            .instances
            .iter()
            .map(|i| InstanceJson {
                instance: i.name.clone(),
                unit: i.unit.id.clone(),
                wanted: i.wanted,
                active_state: i.unit.active_state.clone(),
                sub_state: i.unit.sub_state.clone(),
                pid: i.unit.main_pid(),
                uptime: i.uptime.map(secs),
                restarts: i.restarts(),
                memory_bytes: i.memory().map(|m| m.0),
                memory_source: i.memory().map(|m| m.1),
                requests: i.stats.as_ref().map(|s| s.requests),
                health: i.health.key(),
                health_reason: i.health.reason().map(str::to_string),
                status_text: i
                    .unit
                    .service
                    .as_ref()
                    .map(|s| s.status_text.clone())
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

// === stats ===

/// `stats --json`: the old cluster API's shape.
#[derive(Debug, Serialize)]
pub struct ClusterStats {
    pub master: MasterStats,
    pub cluster: ClusterTotals,
    pub workers: Vec<WorkerStats>,
}

/// systemd as the master (see the module docs).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MasterStats {
    /// PID 1: systemd supervises the workers.
    pub pid: u32,
    pub supervisor: &'static str,
    pub version: String,
    pub unit: String,
    pub state: String,
    /// Seconds `zero-logs.target` has been active (0 when it is not).
    pub uptime: f64,
    /// This `zero-logs-ctl` process.
    pub ctl_pid: u32,
    pub timestamp: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTotals {
    /// Instances running (`active/running`).
    pub workers: usize,
    /// Instances the target wants (N).
    pub wanted_workers: usize,
    pub healthy_workers: usize,
    pub min_workers: Option<u32>,
    pub max_workers: Option<u32>,
    pub total_requests: u64,
    pub total_requests_failed: u64,
    pub total_restarts: u64,
    #[serde(rename = "totalMemoryMB")]
    pub total_memory_mb: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStats {
    /// The instance name (`1`, `2`, `surge`).
    pub id: String,
    pub unit: String,
    /// 0 when not running.
    pub pid: u32,
    pub state: String,
    pub wanted: bool,
    /// Seconds the current process has been running.
    pub uptime: f64,
    /// systemd's `NRestarts` (crashes, watchdog kills, memory-limit restarts).
    pub restarts: u32,
    /// Ingest requests this process handled (resets when it restarts).
    pub requests_handled: u64,
    pub requests_failed: u64,
    pub records_accepted: u64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: f64,
    pub healthy: bool,
    pub health_reason: Option<String>,
    /// When the ctl asked `/health` (RFC 3339, UTC), null when not running.
    pub last_health_check: Option<String>,
}

pub fn cluster_stats(inv: &Inventory, size: Option<&ClusterSize>) -> ClusterStats {
    let workers: Vec<WorkerStats> = inv
        .instances
        .iter()
        .map(|i| {
            let stats = i.stats.clone().unwrap_or_default();
            WorkerStats {
                id: i.name.clone(),
                unit: i.unit.id.clone(),
                pid: i.unit.main_pid(),
                state: i.unit.state(),
                wanted: i.wanted,
                uptime: i.uptime.map_or(0.0, secs),
                restarts: i.restarts(),
                requests_handled: stats.requests,
                requests_failed: stats.requests_failed,
                records_accepted: stats.records_accepted,
                memory_mb: i.memory().map_or(0.0, |(b, _)| mebibytes(b)),
                healthy: i.health.is_ok(),
                health_reason: i.health.reason().map(str::to_string),
                last_health_check: i.checked_at.map(rfc3339),
            }
        })
        .collect();
    ClusterStats {
        master: MasterStats {
            pid: 1,
            supervisor: "systemd",
            version: inv.systemd_version.clone(),
            unit: inv.target.id.clone(),
            state: inv.target.state(),
            uptime: inv.target_uptime().map_or(0.0, secs),
            ctl_pid: std::process::id(),
            timestamp: rfc3339(inv.taken_at),
        },
        cluster: ClusterTotals {
            workers: inv.instances.iter().filter(|i| i.unit.is_running()).count(),
            wanted_workers: inv.wanted().count(),
            healthy_workers: workers.iter().filter(|w| w.healthy).count(),
            min_workers: size.and_then(|s| s.min.as_ref()).map(|b| b.value),
            max_workers: size.and_then(|s| s.max.as_ref()).map(|b| b.value),
            total_requests: workers.iter().map(|w| w.requests_handled).sum(),
            total_requests_failed: workers.iter().map(|w| w.requests_failed).sum(),
            total_restarts: workers.iter().map(|w| u64::from(w.restarts)).sum(),
            total_memory_mb: round1(workers.iter().map(|w| w.memory_mb).sum()),
        },
        workers,
    }
}

/// `stats` without `--json`: a few lines for people.
pub fn render_stats(s: &ClusterStats) -> String {
    let c = &s.cluster;
    let mut out = format!(
        "cluster: {}/{} workers running, {} healthy; {} requests ({} failed), {} restarts, {:.1} MiB\n",
        c.workers,
        c.wanted_workers,
        c.healthy_workers,
        c.total_requests,
        c.total_requests_failed,
        c.total_restarts,
        c.total_memory_mb
    );
    for w in &s.workers {
        let _ = writeln!(
            out,
            "worker {}: {}, pid {}, up {}, {} requests, {} restarts, {:.1} MiB, {}",
            w.id,
            w.state,
            w.pid,
            human_duration(Duration::from_secs_f64(w.uptime)),
            w.requests_handled,
            w.restarts,
            w.memory_mb,
            if w.healthy { "healthy" } else { "not healthy" }
        );
    }
    out
}

// === health ===

/// The verdict of `health`, with its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every wanted instance is healthy: exit 0.
    Healthy,
    /// Some wanted instance is not: exit 1.
    Degraded,
    /// No instance is healthy: exit 2.
    Down,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Degraded => 1,
            Verdict::Down => 2,
        }
    }
}

/// `health --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthJson {
    pub status: Verdict,
    pub wanted: usize,
    pub healthy: usize,
    pub message: String,
}

/// Judges the cluster: see [`Verdict`]. Instances outside the wanted set (a
/// surge instance) count toward "some instance serves" but not toward N.
pub fn verdict(inv: &Inventory) -> HealthJson {
    let wanted: Vec<&Instance> = inv.wanted().collect();
    let healthy_wanted = wanted.iter().filter(|i| i.health.is_ok()).count();
    let healthy_any = inv.instances.iter().filter(|i| i.health.is_ok()).count();
    let problems: Vec<String> = wanted
        .iter()
        .filter(|i| !i.health.is_ok())
        .map(|i| match &i.health {
            Health::NotRunning => format!("zero-logs@{}: {}", i.name, i.unit.state()),
            other => format!("zero-logs@{}: {}", i.name, other.describe()),
        })
        .collect();
    let (status, message) = if healthy_any == 0 {
        let detail = if wanted.is_empty() {
            format!("{} wants no instance", inv.target.id)
        } else {
            problems.join("; ")
        };
        (
            Verdict::Down,
            format!("down: no instance is healthy ({detail})"),
        )
    } else if !wanted.is_empty() && healthy_wanted == wanted.len() {
        (
            Verdict::Healthy,
            format!("healthy: {healthy_wanted}/{} instances ok", wanted.len()),
        )
    } else if wanted.is_empty() {
        (
            Verdict::Degraded,
            format!(
                "degraded: {} wants no instance; {healthy_any} other instance(s) healthy",
                inv.target.id
            ),
        )
    } else {
        (
            Verdict::Degraded,
            format!(
                "degraded: {healthy_wanted}/{} instances healthy; {}",
                wanted.len(),
                problems.join("; ")
            ),
        )
    };
    HealthJson {
        status,
        wanted: wanted.len(),
        healthy: healthy_wanted,
        message,
    }
}

// === formatting ===

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn mebibytes(bytes: u64) -> f64 {
    round1(bytes as f64 / (1024.0 * 1024.0))
}

/// `45s`, `3m07s`, `2h05m`, `3d04h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `512B`, `7.9MiB`, `1.2GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// RFC 3339 in UTC with milliseconds, e.g. `2024-05-01T12:00:00.123Z` (what a
/// JavaScript `Date` serialises to).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    crate::record::format_rfc3339(d.as_nanos() as i128, 3)
}

#[cfg(test)]
mod tests;
