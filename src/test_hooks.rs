//! Fault injection for the system tests (cargo feature `test-hooks` only;
//! release packages are built without it, so none of this is reachable there).
//!
//! - `POST /debug/stall-flusher?ms=N`: the flush loop hangs for N ms, its
//!   heartbeat goes stale and the watchdog thread withholds `WATCHDOG=1`.
//! - `POST /debug/grow-memory?mb=N`: leaks N MiB of touched memory, to push
//!   RSS over `WORKER_MEMORY_LIMIT`.
//! - `POST /debug/stall-health?ms=N[&mode=hang|503]`: for N ms this instance's
//!   admin socket stops answering (`hang`, the default: connections are
//!   accepted and never answered) or answers everything with `503` — what
//!   the management daemon's health watchdog must notice. The ingest path is
//!   untouched. Done without touching the admin server: the live socket file
//!   is renamed aside (the server keeps serving that inode, unreachable by
//!   name) and a stand-in listener takes its path; after N ms the stand-in
//!   goes and the real socket is renamed back. The path comes from
//!   `--admin-socket`/`ADMIN_SOCKET`, as the unit passes it.

use std::collections::HashMap;
use std::time::Duration;

use std::path::PathBuf;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tokio::io::AsyncWriteExt;

use crate::sink::BatcherHandle;

pub fn routes(batcher: BatcherHandle) -> Router {
    Router::new()
        .route("/debug/stall-flusher", post(stall_flusher))
        .route("/debug/grow-memory", post(grow_memory))
        .route("/debug/stall-health", post(stall_health))
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

/// This process's admin socket, as the unit or the operator passed it.
fn admin_socket_path() -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    for (i, arg) in args.iter().enumerate() {
        if let Some(v) = arg.strip_prefix("--admin-socket=") {
            return Some(v.into());
        }
        if arg == "--admin-socket" {
            return args.get(i + 1).map(Into::into);
        }
    }
    std::env::var_os("ADMIN_SOCKET")
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

async fn stall_health(Query(query): Query<HashMap<String, String>>) -> (StatusCode, String) {
    let ms = number(&query, "ms");
    let answer_503 = match query.get("mode").map(String::as_str) {
        None | Some("hang") => false,
        Some("503") => true,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("mode {other:?}: expected hang or 503\n"),
            )
        }
    };
    let Some(path) = admin_socket_path() else {
        return (
            StatusCode::CONFLICT,
            "no admin socket (--admin-socket / ADMIN_SOCKET)\n".into(),
        );
    };
    let aside = path.with_extension("sock.stalled");
    if let Err(e) = std::fs::rename(&path, &aside) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("renaming {}: {e}\n", path.display()),
        );
    }
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::rename(&aside, &path);
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("binding {}: {e}\n", path.display()),
            );
        }
    };
    let until = tokio::time::Instant::now() + Duration::from_millis(ms);
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                accepted = listener.accept() => {
                    let Ok((mut stream, _)) = accepted else { continue };
                    if answer_503 {
                        let body = r#"{"status":"unavailable","reason":"test hook: stall-health"}"#;
                        let reply = format!(
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(reply.as_bytes()).await;
                    } else {
                        held.push(stream);
                    }
                }
            }
        }
        drop(held);
        drop(listener);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::rename(&aside, &path);
        tracing::warn!("test hook: admin socket answers again");
    });
    tracing::warn!(ms, answer_503, "test hook: admin socket stalls");
    (
        StatusCode::OK,
        format!(
            "admin socket stalls for {ms} ms ({})\n",
            if answer_503 { "503" } else { "hang" }
        ),
    )
}
