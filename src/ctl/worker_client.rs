//! A minimal HTTP/1.1 client for the workers' admin sockets
//! (`/run/zero-logs/<instance>/admin.sock`, see [`crate::admin`]).
//!
//! One `GET` per connection with `Connection: close`, reading to EOF (bounded
//! in size and time), then `Content-Length` or chunked decoding. That is all the
//! admin endpoints need, and it keeps a full HTTP client stack (and its pool of
//! kept-alive connections to processes that come and go) out of the ctl.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin::{CAUSE_CLICKHOUSE_DOWN, CAUSE_SPOOL_FULL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Where the instances' runtime directories live (`RuntimeDirectory=zero-logs/%i`).
pub const RUNTIME_DIR: &str = "/run/zero-logs";
/// Larger answers are refused: `/stats` is well under 4 KiB.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no answer within {within:?}")]
    Timeout { path: PathBuf, within: Duration },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET /stats` of a worker, as far as the ctl uses it. Unknown fields are
/// ignored and missing ones default, so a ctl and a worker of neighbouring
/// versions still understand each other; a test checks each field against what
/// the worker sends ([`crate::stats::WorkerStats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerStatsView {
    pub pid: u32,
    pub worker_id: String,
    pub uptime_seconds: f64,
    pub healthy: bool,
    pub health_reason: Option<String>,
    pub rss_bytes: u64,
    pub requests: u64,
    pub requests_failed: u64,
    pub records_accepted: u64,
    pub rows_inserted: u64,
    pub queue_rows: i64,
}

/// What `/health` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthReply {
    Ok,
    Unhealthy(String),
    /// 503 for a cause outside the worker (ClickHouse down, spool full): restarting
    /// it would not help.
    Blocked(String),
}

#[derive(Deserialize)]
struct HealthBody {
    #[serde(default)]
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    cause: Option<String>,
}

/// Talks to the admin sockets under one runtime directory.
#[derive(Debug, Clone)]
pub struct AdminClient {
    runtime_dir: PathBuf,
    timeout: Duration,
}

impl AdminClient {
    pub fn new(runtime_dir: impl Into<PathBuf>, timeout: Duration) -> AdminClient {
        AdminClient {
            runtime_dir: runtime_dir.into(),
            timeout,
        }
    }

    /// The same sockets with another timeout.
    pub fn with_timeout(&self, timeout: Duration) -> AdminClient {
        AdminClient {
            runtime_dir: self.runtime_dir.clone(),
            timeout,
        }
    }

    /// `<runtime dir>/<instance>/admin.sock`.
    pub fn socket_path(&self, instance: &str) -> PathBuf {
        self.runtime_dir.join(instance).join("admin.sock")
    }

    /// `GET path` on `instance`'s admin socket, whatever the status.
    pub async fn get(&self, instance: &str, path: &str) -> Result<Reply, AdminError> {
        let socket = self.socket_path(instance);
        match tokio::time::timeout(self.timeout, get_raw(&socket, path)).await {
            Ok(result) => result,
            Err(_) => Err(AdminError::Timeout {
                path: socket,
                within: self.timeout,
            }),
        }
    }

    /// `/stats`; an error unless `200` with the expected JSON.
    pub async fn stats(&self, instance: &str) -> Result<WorkerStatsView, AdminError> {
        let reply = self.get(instance, "/stats").await?;
        if reply.status != 200 {
            return Err(AdminError::Status {
                status: reply.status,
                body: String::from_utf8_lossy(&reply.body).into_owned(),
            });
        }
        Ok(serde_json::from_slice(&reply.body)?)
    }

    /// `/health`: `200` is ok, `503` carries the reason; anything else is an error.
    pub async fn health(&self, instance: &str) -> Result<HealthReply, AdminError> {
        let reply = self.get(instance, "/health").await?;
        parse_health(&reply)
    }
}

fn parse_health(reply: &Reply) -> Result<HealthReply, AdminError> {
    match reply.status {
        200 => Ok(HealthReply::Ok),
        503 => {
            let body = serde_json::from_slice::<HealthBody>(&reply.body).ok();
            let external = body
                .as_ref()
                .and_then(|b| b.cause.as_deref())
                .is_some_and(|c| c == CAUSE_CLICKHOUSE_DOWN || c == CAUSE_SPOOL_FULL);
            let reason = body
                .map(|b| b.reason.unwrap_or(b.status))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).trim().to_string());
            Ok(if external {
                HealthReply::Blocked(reason)
            } else {
                HealthReply::Unhealthy(reason)
            })
        }
        status => Err(AdminError::Status {
            status,
            body: String::from_utf8_lossy(&reply.body).into_owned(),
        }),
    }
}

async fn get_raw(socket: &Path, path: &str) -> Result<Reply, AdminError> {
    let io = |source| AdminError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| AdminError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: zero-logs-ctl\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::with_capacity(4096);
    let mut limited = (&mut stream).take(MAX_RESPONSE_BYTES as u64 + 1);
    limited.read_to_end(&mut raw).await.map_err(io)?;
    if raw.len() > MAX_RESPONSE_BYTES {
        return Err(AdminError::Malformed(format!(
            "response larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    }
    parse_response(&raw)
}

/// Parses a whole HTTP/1.1 response read to EOF.
pub fn parse_response(raw: &[u8]) -> Result<Reply, AdminError> {
    let malformed = |what: &str| AdminError::Malformed(what.to_string());
    let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| malformed("no end of headers"))?;
    let head =
        std::str::from_utf8(&raw[..head_end]).map_err(|_| malformed("headers are not UTF-8"))?;
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(malformed(&format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(&format!("bad status line {status_line:?}")))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(&format!("bad header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| malformed("bad Content-Length"))?,
            );
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(len) = length {
        if body.len() < len {
            return Err(malformed(&format!(
                "body ended after {} of {len} bytes",
                body.len()
            )));
        }
        body[..len].to_vec()
    } else {
        // Connection: close without a length: the body is whatever came.
        body.to_vec()
    };
    Ok(Reply { status, body })
}

/// Decodes a chunked body (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, AdminError> {
    let malformed = |what: &str| AdminError::Malformed(format!("chunked body: {what}"));
    let mut out = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or_else(|| malformed("no chunk size line"))?;
        let size_text = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| malformed("chunk size is not text"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err(malformed("truncated chunk"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_response() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";
        let reply = parse_response(raw).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"{\"status\":\"ok\"}");
        assert_eq!(parse_health(&reply).unwrap(), HealthReply::Ok);
    }

    #[test]
    fn chunked_response() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                    a;ext=1\r\n{\"status\":\r\n1e\r\n\"unavailable\",\"reason\":\"down\"}\r\n0\r\n\r\n";
        let reply = parse_response(raw).unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.body,
            br#"{"status":"unavailable","reason":"down"}"#.to_vec()
        );
        assert_eq!(
            parse_health(&reply).unwrap(),
            HealthReply::Unhealthy("down".into())
        );
    }

    #[test]
    fn a_503_for_an_outside_cause_is_blocked_not_unhealthy() {
        let body = |cause: &str| {
            format!(r#"{{"status":"unavailable","reason":"full","cause":"{cause}"}}"#)
        };
        for (cause, want) in [
            ("spool_full", HealthReply::Blocked("full".into())),
            ("clickhouse_down", HealthReply::Blocked("full".into())),
            ("shutting_down", HealthReply::Unhealthy("full".into())),
        ] {
            let raw = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{}",
                body(cause).len(),
                body(cause)
            );
            let reply = parse_response(raw.as_bytes()).unwrap();
            assert_eq!(parse_health(&reply).unwrap(), want, "{cause}");
        }
    }

    #[test]
    fn body_until_eof_without_length() {
        let reply = parse_response(b"HTTP/1.0 200 OK\r\n\r\nhello").unwrap();
        assert_eq!(reply.body, b"hello");
    }

    #[test]
    fn malformed_responses_are_errors() {
        for raw in [
            &b"garbage"[..],
            b"SSH-2.0 200\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
        ] {
            assert!(
                matches!(parse_response(raw), Err(AdminError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn unexpected_status_is_an_error() {
        let reply = Reply {
            status: 404,
            body: b"not found".to_vec(),
        };
        assert!(matches!(
            parse_health(&reply),
            Err(AdminError::Status { status: 404, .. })
        ));
    }

    #[test]
    fn stats_view_tolerates_extra_and_missing_fields() {
        let json = r#"{"pid":7,"worker_id":"2","uptime_seconds":1.5,"healthy":true,
                       "health_reason":null,"rss_bytes":1048576,"requests":12,"new_field":[1]}"#;
        let s: WorkerStatsView = serde_json::from_str(json).unwrap();
        assert_eq!((s.pid, s.requests, s.rss_bytes), (7, 12, 1 << 20));
        assert_eq!(s.records_accepted, 0);
    }

    /// The view defaults what is missing (for neighbouring versions), so a field the
    /// worker stopped sending, or never sent under that name, would read as 0 quietly.
    #[test]
    fn every_field_the_ctl_reads_is_one_stats_sends() {
        let sent = serde_json::to_value(crate::stats::WorkerStats::example()).unwrap();
        let read = serde_json::to_value(WorkerStatsView::default()).unwrap();
        for key in read.as_object().unwrap().keys() {
            assert!(sent.get(key).is_some(), "/stats has no {key:?}: {sent}");
        }
        let view: WorkerStatsView = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(
            serde_json::to_value(&view).unwrap()["requests"],
            sent["requests"]
        );
        assert_eq!(
            (view.pid, view.rss_bytes, view.queue_rows),
            (4242, 1 << 25, -20)
        );
    }

    #[tokio::test]
    async fn talks_to_a_unix_socket_and_times_out() {
        use tokio::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let client = AdminClient::new(dir.path(), Duration::from_millis(300));
        std::fs::create_dir_all(dir.path().join("1")).unwrap();
        let listener = UnixListener::bind(client.socket_path("1")).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 29\r\n\r\n{\"pid\":42,\"requests\":3,\"x\":1}",
            )
            .await
            .unwrap();
            drop(s);
            // A second client that never gets an answer.
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            req
        });
        let stats = client.stats("1").await.unwrap();
        assert_eq!((stats.pid, stats.requests), (42, 3));
        let err = client.health("1").await.unwrap_err();
        assert!(matches!(err, AdminError::Timeout { .. }), "{err}");
        let missing = client.health("2").await.unwrap_err();
        assert!(matches!(missing, AdminError::Connect { .. }), "{missing}");
        server.abort();
    }
}
