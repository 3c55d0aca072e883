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
//! too; restarting an instance that is not running gives `404`; another
//! operation still running gives `409`; an operation that fails
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

use super::ops::{Daemon, Op, OpError, OpOutcome};
use crate::ctl::ctx::cpus;
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
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let raw = value.as_bytes();
    let presented = match raw.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => raw[7..].trim_ascii(),
        _ => &[][..],
    };
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
    if let Some(k) = &instance {
        match d.inventory().await {
            Ok(inv)
                if !inv
                    .instances
                    .iter()
                    .any(|i| &i.name == k && i.unit.is_running()) =>
            {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("zero-logs@{k} is not running: nothing to restart"),
                );
            }
            Ok(_) => {}
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
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
    if let Err(e) = env_files::check_scale(&requested.to_string(), &env, cpus()) {
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

#[cfg(test)]
mod tests {
    //! The API's edges without systemd: authorization, bodies, bounds, busy.
    use super::*;
    use crate::ctl::ctx::Ctx;
    use crate::ctl::daemon::auth::Token;
    use crate::ctl::daemon::config::DaemonConfig;
    use crate::ctl::systemd::BusChoice;
    use crate::ctl::worker_client::AdminClient;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use serde_json::Value;
    use std::collections::HashMap;
    use tower::ServiceExt;

    fn daemon(dir: &std::path::Path) -> Arc<Daemon> {
        std::fs::write(dir.join("zero-logs.env"), "CLUSTER_MAX_WORKERS=4\n").unwrap();
        Arc::new(Daemon {
            ctx: Ctx {
                // No systemd here: any D-Bus call fails fast (a path that does not exist).
                bus: BusChoice::Private,
                config_dir: dir.to_path_buf(),
                admin: AdminClient::new(dir, Duration::from_millis(100)),
            },
            cfg: DaemonConfig::load(&HashMap::<String, String>::new()).unwrap(),
            token: Token::from_str_for_tests("s3cret"),
            current: Default::default(),
            tracker: Default::default(),
        })
    }

    async fn call(
        d: &Arc<Daemon>,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = router(Arc::clone(d))
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn mutations_need_the_right_token() {
        let dir = tempfile::tempdir().unwrap();
        let d = daemon(dir.path());
        let (s, body) = call(&d, "POST", "/scale", None, r#"{"workers":2}"#).await;
        assert_eq!(s, 401, "{body}");
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
        for wrong in [
            "Bearer nope",
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
        ] {
            let (s, body) = call(&d, "POST", "/restart", Some(wrong), "").await;
            assert_eq!(s, 403, "{wrong}: {body}");
        }
        // The scheme is case-insensitive; the refused body shows the token was accepted.
        let (s, body) = call(&d, "POST", "/scale", Some("bearer s3cret"), "{}").await;
        assert_eq!(s, 400, "{body}");
    }

    #[tokio::test]
    async fn bad_bodies_and_bounds_are_400_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = daemon(dir.path());
        let auth = Some("Bearer s3cret");
        for bad in [
            "",
            "{",
            "[]",
            r#"{"workers":-1}"#,
            r#"{"workers":0}"#,
            r#"{"workers":2,"x":1}"#,
        ] {
            let (s, body) = call(&d, "POST", "/scale", auth, bad).await;
            assert_eq!(s, 400, "{bad:?}: {body}");
            assert!(body["error"].is_string(), "{body}");
        }
        let (s, body) = call(&d, "POST", "/scale", auth, r#"{"workers":5}"#).await;
        assert_eq!(s, 400);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("above CLUSTER_MAX_WORKERS=4"),
            "{body}"
        );
        let (s, body) = call(&d, "POST", "/restart", auth, r#"{"instance":"../x"}"#).await;
        assert_eq!(s, 400, "{body}");
        assert!(
            !dir.path().join("zero-logs.env.d").exists(),
            "a refused scale wrote a file"
        );
        let (s, _) = call(&d, "GET", "/nowhere", None, "").await;
        assert_eq!(s, 404);
    }

    #[tokio::test]
    async fn one_operation_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let d = daemon(dir.path());
        *d.current.lock().unwrap() = Some("scale to 3 (api)".into());
        let (s, body) = call(
            &d,
            "POST",
            "/scale",
            Some("Bearer s3cret"),
            r#"{"workers":2}"#,
        )
        .await;
        assert_eq!(s, 409, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("scale to 3"),
            "{body}"
        );
    }
}
