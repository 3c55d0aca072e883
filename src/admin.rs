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
use crate::stats::{self, rss_bytes, Stats, WorkerStats};

/// What the admin endpoints read.
pub struct AdminState {
    pub stats: Arc<Stats>,
    pub batcher: BatcherHandle,
    pub worker_id: String,
    pub started: Instant,
    pub clickhouse_version: String,
    /// Every ClickHouse endpoint's state and counters (`/stats`, `/metrics`).
    pub endpoints: Arc<crate::sink::endpoints::EndpointBoard>,
    /// Cancelled once the worker stops accepting.
    pub accepting: CancellationToken,
    /// The acknowledgement point's spool (`ACK_MODE=spool`).
    pub spool: Option<Spool>,
    /// API keys: their counters go into `/stats` (`auth`) and `/metrics`.
    pub auth: Arc<crate::auth::Auth>,
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
            clickhouse_endpoints: self.endpoints.snapshot(),
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
            auth: self.auth.enabled().then(|| self.auth.report()),
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
    let body = stats::prometheus_text(&state.worker_stats());
    (
        [(header::CONTENT_TYPE, stats::PROMETHEUS_CONTENT_TYPE)],
        body,
    )
        .into_response()
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
