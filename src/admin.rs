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

use crate::sink::BatcherHandle;
use crate::stats::{Stats, StatsSnapshot};

/// What the admin endpoints read.
pub struct AdminState {
    pub stats: Arc<Stats>,
    pub batcher: BatcherHandle,
    pub worker_id: String,
    pub started: Instant,
    pub clickhouse_version: String,
    /// Cancelled once the worker stops accepting.
    pub accepting: CancellationToken,
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
    #[serde(flatten)]
    pub counters: StatsSnapshot,
}

/// `GET /health` body.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl AdminState {
    /// `None` when healthy, else why not.
    pub fn unhealthy_reason(&self) -> Option<String> {
        if self.accepting.is_cancelled() {
            return Some("shutting down".into());
        }
        self.batcher.health().down.map(|down| {
            format!(
                "ClickHouse sink down for {:.1}s: {}",
                down.since.elapsed().as_secs_f64(),
                down.reason
            )
        })
    }

    pub fn worker_stats(&self) -> WorkerStats {
        let reason = self.unhealthy_reason();
        WorkerStats {
            pid: std::process::id(),
            worker_id: self.worker_id.clone(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            healthy: reason.is_none(),
            health_reason: reason,
            clickhouse_version: self.clickhouse_version.clone(),
            rss_bytes: rss_bytes().unwrap_or(0),
            counters: self.stats.snapshot(),
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
    match state.unhealthy_reason() {
        None => Json(Health {
            status: "ok",
            reason: None,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
                reason: Some(reason),
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
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{worker_id=\"{}\"}} {value}", s.worker_id);
    }
    out
}

/// Resident set size from `/proc/self/status` (`VmRSS`, kB).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
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
