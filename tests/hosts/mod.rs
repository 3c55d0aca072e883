//! Several zero-logs hosts on one machine, for `tests/scale_hosts.rs`: each host a
//! network namespace ([`netns`]) running one real worker process with its own spool
//! ([`HostWorker`]), and a private HAProxy in front of them ([`haproxy`]).

pub mod haproxy;
pub mod netns;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{client, free_port, get};
use haproxy::{Backend, Balancer, HOSTS_BACKEND};
use netns::{free_subnet, random_u64, Netns};
use zero_logs::testing::ClickHouseServer;

/// Port the worker listens on inside its namespace (each namespace has its own
/// ports, so a fixed one cannot collide).
pub const WORKER_PORT: u16 = 8080;

/// Everything of two hosts `a` and `b` but their workers: a private ClickHouse, the
/// two namespaces, the balancer and the spool roots. Start workers with
/// [`Rig::worker`] *after* the rig, so they are dropped before it: no process holds
/// a namespace when it is deleted.
pub struct Rig {
    // Dropped in this order: haproxy, the namespaces, the spools, ClickHouse.
    pub lb: Balancer,
    net_a: Netns,
    net_b: Netns,
    spools: tempfile::TempDir,
    pub ch: ClickHouseServer,
    pub db: String,
}

impl Rig {
    pub fn start() -> Rig {
        let ch = ClickHouseServer::start().expect("start ClickHouse (run scripts/install-deps)");
        let db = ch.fresh_database();
        let ch_port = ch.http_port();
        let tag = format!("{:06x}", random_u64() & 0xff_ffff);
        let subnet = free_subnet();
        let net_a = Netns::create(&tag, "a", subnet, 0);
        let net_b = Netns::create(&tag, "b", subnet, 1);
        let backend = |name: &str, ns: &Netns| Backend {
            name: name.into(),
            ingest: SocketAddr::from((ns.inner, WORKER_PORT)),
            clickhouse_bind: SocketAddr::from((ns.outer, ch_port)),
        };
        let lb = Balancer::start(
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            &[backend("a", &net_a), backend("b", &net_b)],
            SocketAddr::from(([127, 0, 0, 1], ch_port)),
        );
        Rig {
            lb,
            net_a,
            net_b,
            spools: tempfile::tempdir().expect("spools tempdir"),
            ch,
            db,
        }
    }

    fn net(&self, host: &str) -> &Netns {
        match host {
            "a" => &self.net_a,
            "b" => &self.net_b,
            _ => panic!("no host {host}"),
        }
    }

    /// The `SPOOL_DIR` of `host`; its own spool is `<that>/<host>`.
    pub fn spool_root(&self, host: &str) -> PathBuf {
        self.spools.path().join(host)
    }

    /// Starts `host`'s worker (`WORKER_ID=<host>`) on its spool, reaching ClickHouse
    /// through its frontend on the balancer, with `env` on top.
    pub async fn worker(&self, host: &str, env: &[(&str, &str)]) -> HostWorker {
        let ns = self.net(host);
        let clickhouse = format!("http://{}:{}", ns.outer, self.ch.http_port());
        HostWorker::start(ns, host, &clickhouse, &self.db, &self.spool_root(host), env).await
    }

    /// Waits until the balancer's checks have `host` up (or down); how long it took.
    pub fn wait_in_rotation(&self, host: &str, up: bool) -> Duration {
        tokio::task::block_in_place(|| {
            self.lb
                .wait_server(HOSTS_BACKEND, host, up, Duration::from_secs(10))
        })
    }

    /// The one ingest URL the clients use.
    pub fn ingest_url(&self) -> String {
        format!("http://{}/api/v1/logs", self.lb.ingest)
    }
}

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
        env: &[(&str, &str)],
    ) -> HostWorker {
        let listen = format!("{}:{WORKER_PORT}", ns.inner);
        let log = spool_root.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
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
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("run `ip netns exec … zero-logs serve`");
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
        let describe = || format!("worker {}; its log ends:\n{}", self.base, self.log_tail());
        crate::common::wait_healthy_at(&self.base, within, describe).await;
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
