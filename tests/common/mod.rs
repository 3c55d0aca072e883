//! Shared helpers of the integration tests: a real `zero-logs serve` process
//! against a real ClickHouse the test started, and a small HTTP client.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use zero_logs::testing::TestClickHouse;

pub mod otel_sdk;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

/// A free loopback port (bound then released; the worker binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `zero-logs serve` child process, killed by PID on drop.
pub struct Worker {
    pub child: Option<Child>,
    pub port: u16,
    pub base: String,
    /// The spool root of this worker (`SPOOL_DIR`), unless the caller set its own.
    pub spool_dir: Option<tempfile::TempDir>,
}

/// Polls `{base}/health` every 50 ms until it answers 200; fails the test after
/// `within`, naming the worker as `describe` says (evaluated only then).
pub async fn wait_healthy_at(base: &str, within: Duration, describe: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + within;
    let client = client();
    loop {
        if let Ok((200, _, _)) = get(&client, &format!("{base}/health")).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not healthy within {within:?}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Worker {
    /// Starts the worker binary against `ch`/`database` and waits for `/health`. Its
    /// spool goes to a fresh temporary directory unless `env` sets `SPOOL_DIR`.
    pub async fn start(ch: &impl TestClickHouse, database: &str, env: &[(&str, &str)]) -> Worker {
        Worker::start_wrapped(ch, database, env, &[]).await
    }

    /// [`start`](Self::start), with the binary run through `wrapper` (a program and its
    /// arguments that end by executing the rest of the command line, e.g. `unshare … sh
    /// -c '…; exec "$@"' sh`), so the PID we hold is the worker's after the `exec`.
    pub async fn start_wrapped(
        ch: &impl TestClickHouse,
        database: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Worker {
        let port = free_port();
        let spool_dir = (!env.iter().any(|(k, _)| *k == "SPOOL_DIR"))
            .then(|| tempfile::tempdir().expect("spool tempdir"));
        let bin = env!("CARGO_BIN_EXE_zero-logs");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("CLICKHOUSE_URL", ch.http_url())
            .env("CLICKHOUSE_DATABASE", database)
            .env("BATCH_MAX_AGE", "50")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(dir) = &spool_dir {
            cmd.env("SPOOL_DIR", dir.path());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start zero-logs binary");
        let worker = Worker {
            child: Some(child),
            port,
            base: format!("http://127.0.0.1:{port}"),
            spool_dir,
        };
        worker.wait_healthy(Duration::from_secs(30)).await;
        worker
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub async fn wait_healthy(&self, within: Duration) {
        let port = self.port;
        wait_healthy_at(&self.base, within, || format!("worker on port {port}")).await;
    }

    /// SIGTERM by PID and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        child.wait().expect("wait worker")
    }

    pub async fn stats(&self) -> serde_json::Value {
        let (status, _, body) = get(&client(), &format!("{}/stats", self.base))
            .await
            .unwrap();
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal to one PID we started.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Response as (status, headers, body).
pub type Reply = (u16, http::HeaderMap, Bytes);

pub async fn get(client: &HttpClient, url: &str) -> Result<Reply, String> {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(client, req).await
}

pub async fn post(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, String> {
    let mut req = http::Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(Full::new(body.into())).unwrap()).await
}

async fn send(client: &HttpClient, req: http::Request<Full<Bytes>>) -> Result<Reply, String> {
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .map_err(|_| "request timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, body))
}

/// Waits until `database.logs` holds at least `expected` rows (acknowledged rows reach
/// ClickHouse shortly after the `202` when spooled) and returns the count then, or
/// the last count seen after `within`.
pub async fn wait_rows(
    ch: &impl TestClickHouse,
    database: &str,
    expected: u64,
    within: Duration,
) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = count_rows(ch, database);
        if n >= expected || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Number of rows in `database.logs`.
pub fn count_rows(ch: &impl TestClickHouse, database: &str) -> u64 {
    ch.query(&format!("SELECT count() FROM {database}.logs"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}
