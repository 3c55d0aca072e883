//! Fault injection for the system tests (cargo feature `test-hooks` only;
//! release packages are built without it, so none of this is reachable there).
//!
//! - `POST /debug/stall-flusher?ms=N`: the flush loop hangs for N ms, its
//!   heartbeat goes stale and the watchdog thread withholds `WATCHDOG=1`.
//! - `POST /debug/grow-memory?mb=N`: leaks N MiB of touched memory, to push
//!   RSS over `WORKER_MEMORY_LIMIT`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::post;
use axum::Router;

use crate::sink::BatcherHandle;

pub fn routes(batcher: BatcherHandle) -> Router {
    Router::new()
        .route("/debug/stall-flusher", post(stall_flusher))
        .route("/debug/grow-memory", post(grow_memory))
        .with_state(batcher)
}

fn number(query: &HashMap<String, String>, key: &str) -> u64 {
    query.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn stall_flusher(
    State(batcher): State<BatcherHandle>,
    Query(query): Query<HashMap<String, String>>,
) -> String {
    let ms = number(&query, "ms");
    batcher.stall_flusher(Duration::from_millis(ms));
    tracing::warn!(ms, "test hook: flush loop will stall");
    format!("flush loop stalls for {ms} ms\n")
}

async fn grow_memory(Query(query): Query<HashMap<String, String>>) -> String {
    let mb = number(&query, "mb").min(4096) as usize;
    // Touch every page so it counts in RSS, then keep it for the process's life.
    let block = vec![0xA5u8; mb << 20];
    std::hint::black_box(&block);
    Box::leak(block.into_boxed_slice());
    tracing::warn!(mb, "test hook: leaked memory");
    format!("leaked {mb} MiB\n")
}
