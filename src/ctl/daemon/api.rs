//! The management HTTP API (`CLUSTER_API_HOST:CLUSTER_API_PORT`, loopback
//! 9100 by default).
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /stats` | `200`, the old cluster API's JSON (`master`, `cluster`, `workers`), as `zero-logs-ctl stats --json` |
//! | `GET /health` | `200` when every wanted instance is healthy, else `503`; body as `zero-logs-ctl health --json` |
//! | `POST /restart` (body empty, `{}` or `{"instance":K}`) | rolling restart (or of instance K); `200` when every instance came back |
//! | `POST /scale` `{"workers":N}` | scale to N (persistent); `200` when done |
//!
//! The `POST`s need `Authorization: Bearer <token>` (the token file, see
//! [`super::auth`]): none gives `401`, a wrong one `403`. A body that is not
//! what is described gives `400`, N outside `CLUSTER_MIN_WORKERS..CLUSTER_MAX_WORKERS`
//! too; another operation still running gives `409`; an operation that fails
//! gives `500`. Every error is `{"error":"…"}`. A mutation runs to its end in
//! its own task even when the client goes away, and its answer lists its
//! progress lines.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{Daemon, Op, OpError, OpOutcome};
use crate::ctl::env_files::{self, EnvFiles};
use crate::ctl::restart::RestartArgs;
use crate::ctl::status::{self, Verdict};

/// How long one instance may take to come back in an API restart.
const RESTART_TIMEOUT: Duration = Duration::from_secs(90);

/// The router.
pub fn router(daemon: Arc<Daemon>) -> Router {
    let mutating = Router::new()
        .route("/restart", post(restart))
        .route("/scale", post(scale_handler))
        .route_layer(middleware::from_fn_with_state(daemon.clone(), authorize));
    Router::new()
        .route("/stats", get(stats))
        .route("/health", get(health))
        .merge(mutating)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see docs/CTL.md") })
        .with_state(daemon)
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn authorize(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            format!(
                "this endpoint needs Authorization: Bearer <token> (the token is in {})",
                d.cfg.token_file.display()
            ),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return resp;
    };
    let presented = value
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .map(|t| t.trim_ascii())
        .unwrap_or_default();
    if !d.token.matches(presented) {
        tracing::warn!(
            "management API: refused a {} {} with a wrong token",
            req.method(),
            req.uri().path()
        );
        return error(StatusCode::FORBIDDEN, "wrong token");
    }
    next.run(req).await
}

async fn stats(State(d): State<Arc<Daemon>>) -> Response {
    match d.inventory().await {
        Ok(inv) => {
            let size = d.cluster_size();
            Json(status::cluster_stats(&inv, Some(&size))).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

async fn health(State(d): State<Arc<Daemon>>) -> Response {
    match d.inventory().await {
        Ok(inv) => {
            let verdict = status::verdict(&inv);
            let code = if verdict.status == Verdict::Healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(verdict)).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartBody {
    instance: Option<InstanceName>,
}

/// `2` or `"2"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InstanceName {
    Number(u32),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    workers: u32,
}

/// The body as JSON; `None` for an empty body when `empty_ok`; else why not (a 400).
fn parse_body<T: serde::de::DeserializeOwned>(
    body: &Bytes,
    empty_ok: bool,
) -> Result<Option<T>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(None)
        } else {
            Err("empty body; expected JSON".into())
        };
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| format!("invalid JSON body: {e}"))
}

async fn restart(State(d): State<Arc<Daemon>>, body: Bytes) -> Response {
    let parsed: Option<RestartBody> = match parse_body(&body, true) {
        Ok(b) => b,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let instance = match parsed.and_then(|b| b.instance) {
        None => None,
        Some(InstanceName::Number(n)) => Some(n.to_string()),
        Some(InstanceName::Name(name)) => {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid instance {name:?}: expected an instance name such as 2"),
                );
            }
            Some(name)
        }
    };
    let args = RestartArgs {
        instance,
        surge: false,
        timeout: RESTART_TIMEOUT.as_secs(),
    };
    let reason = "API request".to_string();
    respond(d.run_op(Op::Restart { args, reason }).await)
}

async fn scale_handler(State(d): State<Arc<Daemon>>, body: Bytes) -> Response {
    let requested = match parse_body::<ScaleBody>(&body, false) {
        Ok(Some(b)) => b.workers,
        Ok(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "empty body; expected {\"workers\":N}",
            )
        }
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    if requested == 0 {
        return error(StatusCode::BAD_REQUEST, "workers must be at least 1");
    }
    // Refused values change nothing: checked here for a 400, and again by scale().
    let env = EnvFiles::load(&d.ctx.config_dir);
    if let Err(e) = env_files::check_scale(&requested.to_string(), &env, super::cpus()) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    respond(
        d.run_op(Op::Scale {
            workers: requested,
            by: "api",
        })
        .await,
    )
}

/// An operation's outcome as an HTTP answer.
fn respond(outcome: Result<OpOutcome, OpError>) -> Response {
    match outcome {
        Err(e @ OpError::Busy { .. }) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Ok(OpOutcome {
            result: Ok(summary),
            progress,
        }) => Json(json!({ "ok": true, "summary": summary, "progress": progress })).into_response(),
        Ok(OpOutcome {
            result: Err(reason),
            progress,
        }) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": reason, "progress": progress })),
        )
            .into_response(),
    }
}
