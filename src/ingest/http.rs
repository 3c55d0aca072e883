//! The native HTTP API: `POST /api/v1/logs`.
//!
//! Accepts a JSON array, `{"logs":[…]}` or NDJSON (`application/x-ndjson`),
//! optionally gzip/zstd; answers `202 {"accepted":N}` once the batch is
//! acknowledged, or a JSON error from [`super::reject`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::{body, now_ns, Ingest, Work};
use crate::validate;

pub const LOGS_PATH: &str = "/api/v1/logs";

pub fn routes(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route(LOGS_PATH, post(post_logs))
        .with_state(ingest)
}

async fn post_logs(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let mut body_bytes = 0;
    let result = handle(&ingest, &headers, body, &mut body_bytes).await;
    ingest.record_outcome(&result, body_bytes, started);
    match result {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "accepted": accepted })),
        )
            .into_response(),
        Err(rejection) => {
            tracing::debug!(status = %rejection.http_status(), error = %rejection.message, "request refused");
            rejection.into_response()
        }
    }
}

async fn handle(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
    body_bytes: &mut usize,
) -> Result<usize, super::reject::Rejection> {
    let format = body::format(headers)?;
    let encoding = body::encoding(headers)?;
    let max = ingest.max_body_bytes;
    let raw = body::collect(headers, body, max).await?;
    *body_bytes = raw.len();
    let cost = body::admission_cost(raw.len(), encoding, max);
    // Decompression is CPU work too: it runs with validation, on the pool.
    let work = Work::of(raw.len(), encoding != body::Encoding::Identity);
    ingest
        .accept(cost, work, move |limits| {
            let plain = body::decompress(raw, encoding, max)?;
            Ok(validate::decode(&plain, format, limits, now_ns())?)
        })
        .await
}
