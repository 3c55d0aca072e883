//! The native HTTP API: `POST /api/v1/logs`.
//!
//! Accepts a JSON array, `{"logs":[…]}` or NDJSON (`application/x-ndjson`),
//! optionally gzip/zstd; answers `202 {"accepted":N}` once the batch is
//! acknowledged, or a JSON error from [`super::reject`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::{body, now_ns, Ingest, Work};
use crate::auth::{services, Caller};
use crate::validate;

pub const LOGS_PATH: &str = "/api/v1/logs";

pub fn routes(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route(LOGS_PATH, post(post_logs))
        .with_state(ingest)
}

async fn post_logs(
    State(ingest): State<Arc<Ingest>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let caller = caller.map(|Extension(c)| c);
    let mut body_bytes = 0;
    let result = handle(&ingest, caller.as_ref(), &headers, body, &mut body_bytes).await;
    ingest.record_outcome(&result, body_bytes, started);
    if let Some(caller) = &caller {
        caller.finish_batch(&result, body_bytes);
    }
    match result {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "accepted": accepted })),
        )
            .into_response(),
        Err(rejection) => {
            tracing::debug!(
                key = caller.as_ref().map(Caller::name),
                status = %rejection.http_status(),
                error = %rejection.message,
                "request refused"
            );
            rejection.into_response()
        }
    }
}

async fn handle(
    ingest: &Ingest,
    caller: Option<&Caller>,
    headers: &HeaderMap,
    body: Body,
    body_bytes: &mut usize,
) -> Result<usize, super::reject::Rejection> {
    let format = body::format(headers)?;
    let encoding = body::encoding(headers)?;
    let max = ingest.max_body_bytes;
    let (admitted, raw) = ingest.receive(headers, body, encoding).await?;
    *body_bytes = raw.len();
    // Decompression is CPU work too: it runs with validation, on the pool.
    let work = Work::of(raw.len(), encoding != body::Encoding::Identity);
    let key = caller.cloned();
    let (accepted, ()) = ingest
        .accept_admitted(admitted, caller, work, move |limits| {
            let plain = body::decompress(raw, encoding, max)?;
            let batch = validate::decode_encoded(&plain, format, limits, now_ns())?;
            if let Some(key) = &key {
                services::check_encoded(key, &batch)?;
            }
            Ok((batch, ()))
        })
        .await?;
    Ok(accepted)
}
