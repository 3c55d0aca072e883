//! Several zero-logs hosts on one machine, for `tests/scale_hosts.rs`: each host a
//! network namespace ([`netns`]) running one real worker process with its own spool
//! ([`HostWorker`]), and a private HAProxy in front of them ([`haproxy`]).

pub mod haproxy;
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{client, get};
use netns::Netns;

/// Port the worker listens on inside its namespace (each namespace has its own
/// ports, so a fixed one cannot collide).
pub const WORKER_PORT: u16 = 8080;

/// A `zero-logs serve` process inside a host's namespace, killed by PID on drop.
pub struct HostWorker {
    child: Option<Child>,
    /// `http://<inner address>:8080`, reachable from the test's namespace.
    pub base: String,
    log: PathBuf,
}

impl HostWorker {
    /// Starts the worker in `ns` (`ip netns exec` executes it in place, so the PID
    /// we hold is the worker's) with `SPOOL_DIR=<spool_root>` and `WORKER_ID=<id>`,
    /// its log appended to `<spool_root>.log`, and waits for `/health`.
    pub async fn start(
        ns: &Netns,
        id: &str,
        clickhouse_url: &str,
        database: &str,
        spool_root: &Path,
    ) -> HostWorker {
        let listen = format!("{}:{WORKER_PORT}", ns.inner);
        let log = spool_root.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(env!("CARGO_BIN_EXE_zero-logs"))
            .args(["serve", "--listen", &listen])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("WORKER_ID", id)
            .env("CLICKHOUSE_URL", clickhouse_url)
            .env("CLICKHOUSE_DATABASE", database)
            .env("BATCH_MAX_AGE", "50")
            .env("SPOOL_DIR", spool_root)
            .env("SPOOL_SEGMENT_BYTES", "1MiB")
            // A listener on a non-loopback address refuses to start without keys
            // unless told; the namespaces are private to this test.
            .env("INGEST_AUTH", "none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("run `ip netns exec … zero-logs serve`");
        let worker = HostWorker {
            child: Some(child),
            base: format!("http://{listen}"),
            log,
        };
        worker.wait_healthy(Duration::from_secs(30)).await;
        let stats = worker.stats().await;
        assert_eq!(
            stats["pid"],
            worker.pid(),
            "the PID we hold is not the worker's (did `ip netns exec` fork?)"
        );
        worker
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    async fn wait_healthy(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let client = client();
        loop {
            if let Ok((200, _, _)) = get(&client, &format!("{}/health", self.base)).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker {} not healthy within {within:?}; its log ends:\n{}",
                self.base,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL by PID, as a host dying would stop it: no drain, nothing flushed.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        crate::common::signal(child.id(), "KILL");
        child.wait().expect("reap worker");
    }

    pub async fn stats(&self) -> serde_json::Value {
        let (status, _, body) = get(&client(), &format!("{}/stats", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {}/stats: {e}", self.base));
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// `records_accepted` of `/stats`.
    pub async fn accepted(&self) -> u64 {
        self.stats().await["records_accepted"].as_u64().unwrap()
    }

    /// Spooled frames ClickHouse has not confirmed yet.
    pub async fn unacked_frames(&self) -> u64 {
        self.stats().await["spool"]["unacked_frames"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for HostWorker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
