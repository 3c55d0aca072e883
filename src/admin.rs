//! Per-worker admin endpoints: `/health`, `/stats`, `/metrics`.
//!
//! Served on the public listeners and, with `--admin-socket`, on a private
//! unix socket per instance — the shared public port cannot address one
//! instance, the control tool can. Read-only: nothing here changes the
//! pipeline.

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::AckMode;
use crate::sink::BatcherHandle;
use crate::spool::{Spool, SpoolStats};
use crate::stats::{rss_bytes, Stats, StatsSnapshot};

/// What the admin endpoints read.
pub struct AdminState {
    pub stats: Arc<Stats>,
    pub batcher: BatcherHandle,
    pub worker_id: String,
    pub started: Instant,
    pub clickhouse_version: String,
    /// Cancelled once the worker stops accepting.
    pub accepting: CancellationToken,
    /// The acknowledgement point's spool (`ACK_MODE=spool`).
    pub spool: Option<Spool>,
}

/// `GET /stats` body. Field names are part of the API (the control tool reads them).
#[derive(Debug, Serialize)]
pub struct WorkerStats {
    pub pid: u32,
    pub worker_id: String,
    pub uptime_seconds: f64,
    pub healthy: bool,
    pub health_reason: Option<String>,
    pub clickhouse_version: String,
    pub rss_bytes: u64,
    /// `spool` or `clickhouse`.
    pub ack_mode: &'static str,
    /// The CPU slice the kernel gives the worker's threads, in µs (the thread that
    /// answers is asked; all inherit the main thread's): 100 by default
    /// (`WORKER_CPU_SLICE_US`), 0 where the kernel keeps none (before Linux 6.12).
    pub cpu_slice_us: u64,
    /// Set when healthy but not at full strength (ClickHouse down while spooling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_reason: Option<String>,
    #[serde(flatten)]
    pub counters: StatsSnapshot,
    /// Present with `ACK_MODE=spool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolStats>,
}

/// `GET /health` body.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// With a 503, what refuses: `shutting_down`, or a cause outside this process
    /// (`clickhouse_down`, `spool_full`) that a restart of the worker would not cure —
    /// the control daemon restarts only for the former or for no answer at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
}

/// `cause` of a 503 `/health`: stopping — the worker itself.
pub const CAUSE_SHUTTING_DOWN: &str = "shutting_down";
/// `cause` of a 503 `/health`: the spool is at its cap — outside the worker.
pub const CAUSE_SPOOL_FULL: &str = "spool_full";
/// `cause` of a 503 `/health`: ClickHouse down without a spool — outside the worker.
pub const CAUSE_CLICKHOUSE_DOWN: &str = "clickhouse_down";

/// Whether the worker can take requests, and how well.
enum Condition {
    Ok,
    /// Accepting (into the spool) while ClickHouse is down.
    Degraded(String),
    /// Refusing requests: shutting down, ClickHouse down without a spool, spool full.
    Unavailable(&'static str, String),
}

impl AdminState {
    /// `None` when healthy, else why not.
    pub fn unhealthy_reason(&self) -> Option<String> {
        match self.condition(self.spool.as_ref().map(Spool::stats).as_ref()) {
            Condition::Unavailable(_, reason) => Some(reason),
            Condition::Ok | Condition::Degraded(_) => None,
        }
    }

    fn condition(&self, spool: Option<&SpoolStats>) -> Condition {
        if self.accepting.is_cancelled() {
            return Condition::Unavailable(CAUSE_SHUTTING_DOWN, "shutting down".into());
        }
        if let Some(s) = spool {
            // Within one small frame of the cap: appends are being refused.
            if s.bytes + (64 << 10) >= s.max_bytes {
                return Condition::Unavailable(
                    CAUSE_SPOOL_FULL,
                    format!(
                        "spool full ({} of {} bytes); answering 429 until ClickHouse catches up",
                        s.bytes, s.max_bytes
                    ),
                );
            }
        }
        let Some(down) = self.batcher.health().down else {
            return Condition::Ok;
        };
        let reason = format!(
            "ClickHouse sink down for {:.1}s: {}",
            down.since.elapsed().as_secs_f64(),
            down.reason
        );
        match spool {
            Some(s) => Condition::Degraded(format!(
                "{reason}; spooling ({} of {} bytes used)",
                s.bytes, s.max_bytes
            )),
            None => Condition::Unavailable(CAUSE_CLICKHOUSE_DOWN, reason),
        }
    }

    pub fn worker_stats(&self) -> WorkerStats {
        let spool = self.spool.as_ref().map(Spool::stats);
        let (reason, degraded) = match self.condition(spool.as_ref()) {
            Condition::Ok => (None, None),
            Condition::Degraded(why) => (None, Some(why)),
            Condition::Unavailable(_, why) => (Some(why), None),
        };
        WorkerStats {
            pid: std::process::id(),
            worker_id: self.worker_id.clone(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            healthy: reason.is_none(),
            health_reason: reason,
            clickhouse_version: self.clickhouse_version.clone(),
            rss_bytes: rss_bytes().unwrap_or(0),
            ack_mode: if self.spool.is_some() {
                AckMode::Spool.as_str()
            } else {
                AckMode::ClickHouse.as_str()
            },
            cpu_slice_us: crate::sched::thread_slice().map_or(0, |s| s.as_micros() as u64),
            degraded_reason: degraded,
            counters: self.stats.snapshot(),
            spool,
        }
    }
}

pub fn routes(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health(State(state): State<Arc<AdminState>>) -> Response {
    let spool = state.spool.as_ref().map(Spool::stats);
    match state.condition(spool.as_ref()) {
        Condition::Ok => Json(Health {
            status: "ok",
            reason: None,
            cause: None,
        })
        .into_response(),
        Condition::Degraded(reason) => Json(Health {
            status: "degraded",
            reason: Some(reason),
            cause: None,
        })
        .into_response(),
        Condition::Unavailable(cause, reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
                reason: Some(reason),
                cause: Some(cause),
            }),
        )
            .into_response(),
    }
}

async fn stats(State(state): State<Arc<AdminState>>) -> Json<WorkerStats> {
    Json(state.worker_stats())
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let body = prometheus_text(&state.worker_stats());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Renders the counters in the Prometheus text format.
pub fn prometheus_text(s: &WorkerStats) -> String {
    use std::fmt::Write;
    let c = &s.counters;
    let rows: [(&str, &str, &str, f64); 15] = [
        (
            "zero_logs_requests_total",
            "counter",
            "Ingest requests handled.",
            c.requests as f64,
        ),
        (
            "zero_logs_requests_failed_total",
            "counter",
            "Ingest requests refused or failed.",
            c.requests_failed as f64,
        ),
        (
            "zero_logs_records_accepted_total",
            "counter",
            "Records acknowledged to clients.",
            c.records_accepted as f64,
        ),
        (
            "zero_logs_records_rejected_total",
            "counter",
            "Records that failed validation.",
            c.records_rejected as f64,
        ),
        (
            "zero_logs_received_bytes_total",
            "counter",
            "Request body bytes received (before decompression).",
            c.bytes_received as f64,
        ),
        (
            "zero_logs_rows_inserted_total",
            "counter",
            "Rows committed to ClickHouse.",
            c.rows_inserted as f64,
        ),
        (
            "zero_logs_rows_failed_total",
            "counter",
            "Rows ClickHouse refused permanently.",
            c.rows_failed as f64,
        ),
        (
            "zero_logs_inserts_total",
            "counter",
            "INSERT statements committed.",
            c.inserts as f64,
        ),
        (
            "zero_logs_insert_failures_total",
            "counter",
            "INSERT attempts that failed.",
            c.insert_failures as f64,
        ),
        (
            "zero_logs_queue_rows",
            "gauge",
            "Rows waiting for ClickHouse.",
            c.queue_rows as f64,
        ),
        (
            "zero_logs_last_flush_timestamp_seconds",
            "gauge",
            "Unix time of the last successful INSERT.",
            c.last_flush_unix_ms as f64 / 1000.0,
        ),
        (
            "zero_logs_resident_memory_bytes",
            "gauge",
            "Resident set size of the worker.",
            s.rss_bytes as f64,
        ),
        (
            "zero_logs_uptime_seconds",
            "gauge",
            "Seconds since the worker started.",
            s.uptime_seconds,
        ),
        (
            "zero_logs_healthy",
            "gauge",
            "1 when the worker can accept and its sink works.",
            if s.healthy { 1.0 } else { 0.0 },
        ),
        (
            "zero_logs_process_id",
            "gauge",
            "PID of the worker.",
            s.pid as f64,
        ),
    ];
    let mut out = String::with_capacity(4096);
    let spool_rows = s.spool.as_ref().map(spool_metrics).unwrap_or_default();
    for (name, kind, help, value) in rows.into_iter().chain(spool_rows) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{worker_id=\"{}\"}} {value}", s.worker_id);
    }
    let mut summaries = vec![(
        "zero_logs_request_seconds",
        "Accepted requests' handling time, last 30-60 s (bucket upper bounds).",
        [c.request_p50_us, c.request_p99_us],
    )];
    if let Some(sp) = &s.spool {
        summaries.push((
            "zero_logs_spool_commit_seconds",
            "Append-to-durable time, last 30-60 s (bucket upper bounds).",
            [sp.commit_p50_us, sp.commit_p99_us],
        ));
        summaries.push((
            "zero_logs_spool_fsync_seconds",
            "One group's fdatasync, last 30-60 s (bucket upper bounds).",
            [sp.fsync_p50_us, sp.fsync_p99_us],
        ));
    }
    for (name, help, quantiles_us) in summaries {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
        for (q, us) in ["0.5", "0.99"].into_iter().zip(quantiles_us) {
            let value = us as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}{{worker_id=\"{}\",quantile=\"{q}\"}} {value}",
                s.worker_id
            );
        }
    }
    out
}

type Metric = (&'static str, &'static str, &'static str, f64);

fn spool_metrics(s: &SpoolStats) -> Vec<Metric> {
    vec![
        (
            "zero_logs_spool_bytes",
            "gauge",
            "Bytes of spool segments on disk.",
            s.bytes as f64,
        ),
        (
            "zero_logs_spool_max_bytes",
            "gauge",
            "Spool cap (SPOOL_MAX_BYTES).",
            s.max_bytes as f64,
        ),
        (
            "zero_logs_spool_segments",
            "gauge",
            "Spool segment files.",
            s.segments as f64,
        ),
        (
            "zero_logs_spool_unacked_frames",
            "gauge",
            "Spooled batches not yet committed to ClickHouse.",
            s.unacked_frames as f64,
        ),
        (
            "zero_logs_spool_oldest_unacked_age_seconds",
            "gauge",
            "Age of the oldest spooled batch not yet committed.",
            s.oldest_unacked_age_ms as f64 / 1000.0,
        ),
        (
            "zero_logs_spool_appended_records_total",
            "counter",
            "Records acknowledged into the spool.",
            s.appended_records as f64,
        ),
        (
            "zero_logs_spool_fsyncs_total",
            "counter",
            "Group commits that reached the disk.",
            s.fsyncs as f64,
        ),
        (
            "zero_logs_spool_replayed_frames_total",
            "counter",
            "Batches replayed from an earlier run.",
            s.replayed_frames as f64,
        ),
        (
            "zero_logs_spool_quarantined_frames_total",
            "counter",
            "Corrupt spool frames moved to quarantine.",
            s.quarantined_frames as f64,
        ),
        (
            "zero_logs_spool_quarantined_bytes_total",
            "counter",
            "Corrupt spool bytes moved to quarantine.",
            s.quarantined_bytes as f64,
        ),
        (
            "zero_logs_spool_rejected_frames_total",
            "counter",
            "Batches ClickHouse refused for good, kept in quarantine.",
            s.rejected_frames as f64,
        ),
        (
            "zero_logs_spool_full_refusals_total",
            "counter",
            "Requests refused because the spool was at its cap.",
            s.full_refusals as f64,
        ),
        (
            "zero_logs_spool_no_space_errors_total",
            "counter",
            "Requests refused because the spool's filesystem was full.",
            s.no_space_errors as f64,
        ),
        (
            "zero_logs_spool_adopted_frames_total",
            "counter",
            "Batches adopted from stopped instances' spools.",
            s.adopted_frames as f64,
        ),
    ]
}

/// Binds the private admin socket, replacing a stale file from a previous run.
pub fn bind_socket(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    // Owner and group only: the control tool runs as root or in the service's group.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}
