//! [`Cluster`]: the fixture of the ctl and daemon system tests — a private
//! ClickHouse, a booted container with `zero-logs.target` running N workers
//! that write to it, and a tokio runtime for the load generator.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use zero_logs::testing::ClickHouseServer;

use super::{load, BootOptions, LoadSpec, RunningLoad, SystemdContainer};

pub struct Cluster {
    // Field order = drop order: the container goes before its ClickHouse.
    c: Option<SystemdContainer>,
    pub ch: ClickHouseServer,
    /// The database the workers write to (`<db>.logs`).
    pub db: String,
    pub rt: tokio::runtime::Runtime,
    pub t0: Instant,
}

impl Cluster {
    /// Boot options pointing the workers at `ch`/`db` (flushes every 50 ms),
    /// with `zero-logs-ctl` installed.
    pub fn options(ch: &ClickHouseServer, db: &str) -> BootOptions {
        let opts = BootOptions::new()
            .env("CLICKHOUSE_URL", ch.http_url())
            .env("CLICKHOUSE_DATABASE", db)
            .env("BATCH_MAX_AGE", "50");
        assert!(
            opts.binaries.iter().any(|b| b.ends_with("zero-logs-ctl")),
            "the harness did not pick up zero-logs-ctl: {:?}",
            opts.binaries
        );
        opts
    }

    /// `CLUSTER_WORKERS=workers` plus `extra` in the env file; the target started
    /// and every instance running.
    pub fn start(workers: usize, extra: &[(&str, &str)]) -> Cluster {
        let t0 = Instant::now();
        let ch = ClickHouseServer::start().unwrap_or_else(|e| panic!("{e}"));
        let db = ch.fresh_database();
        let mut opts = Self::options(&ch, &db).env("CLUSTER_WORKERS", workers.to_string());
        for (k, v) in extra {
            opts = opts.env(k, *v);
        }
        let c = SystemdContainer::boot(opts).unwrap_or_else(|e| panic!("{e}"));
        c.systemctl_ok(&["start", "zero-logs.target"]);
        let states = c.wait_instances_running(workers, Duration::from_secs(60));
        assert!(
            states.values().all(|s| s.n_restarts == 0),
            "an instance restarted while starting: {states:?}"
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Cluster {
            c: Some(c),
            ch,
            db,
            rt,
            t0,
        }
    }

    /// The container.
    pub fn c(&self) -> &SystemdContainer {
        self.c.as_ref().expect("the container is up")
    }

    /// Tears the container down and boots `opts` in its place (same ClickHouse).
    pub fn reboot(&mut self, opts: BootOptions) {
        // At most one container per test process: the old one goes first.
        drop(self.c.take());
        self.c = Some(SystemdContainer::boot(opts).unwrap_or_else(|e| panic!("{e}")));
    }

    /// Starts a load on the shared port.
    pub fn load(&self, spec: LoadSpec) -> RunningLoad {
        let _guard = self.rt.enter();
        load::start(&self.c().base_url(), spec)
    }

    /// Stops a load and returns what it counted.
    pub fn stop(&self, running: RunningLoad) -> super::LoadReport {
        self.rt.block_on(running.stop())
    }

    /// Rows of `service` in ClickHouse now.
    pub fn rows(&self, service: &str) -> u64 {
        let sql = format!(
            "SELECT count() FROM {}.logs WHERE service = '{service}'",
            self.db
        );
        self.ch
            .query(&sql)
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Rows of `service` in ClickHouse, once they stopped growing toward `want`.
    pub fn wait_rows(&self, service: &str, want: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let rows = self.rows(service);
            if rows >= want || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn done(&self, scenario: &str) {
        eprintln!(
            "[timing] {scenario}: boot {} ms, test total {} ms",
            self.c().boot_time().as_millis(),
            self.t0.elapsed().as_millis()
        );
    }
}

/// Instances `active/running`, by name, with their MainPID.
pub fn running(c: &SystemdContainer) -> BTreeMap<String, u32> {
    c.instances()
        .into_iter()
        .filter(|(_, s)| s.is_running())
        .map(|(i, s)| (i, s.main_pid))
        .collect()
}

/// After a scale-up: exactly `expected` instances run, and those of `before` kept
/// their PIDs (scaling up never restarts a running instance). Returns `after`.
pub fn assert_scaled_up(
    c: &SystemdContainer,
    before: &BTreeMap<String, u32>,
    expected: &[&str],
) -> BTreeMap<String, u32> {
    let after = running(c);
    assert_eq!(after.keys().collect::<Vec<_>>(), expected, "{after:?}");
    for (instance, pid) in before {
        assert_eq!(
            after[instance], *pid,
            "running instance {instance} untouched"
        );
    }
    after
}

/// Checks a `stats --json` / `GET /stats` document against the old cluster
/// API's shape and the running instances' PIDs; every worker must be healthy.
/// Returns the sum of `requestsHandled`.
pub fn check_cluster_stats(stats: &serde_json::Value, pids: &BTreeMap<String, u32>) -> u64 {
    for key in ["pid", "uptime", "supervisor", "version", "ctlPid"] {
        assert!(
            stats["master"].get(key).is_some(),
            "master lacks {key}: {stats}"
        );
    }
    let workers = stats["workers"].as_array().expect("workers[]");
    assert_eq!(workers.len(), pids.len(), "{stats}");
    let mut handled = 0;
    for w in workers {
        for key in [
            "id",
            "pid",
            "uptime",
            "restarts",
            "requestsHandled",
            "memoryMB",
            "healthy",
            "lastHealthCheck",
        ] {
            assert!(w.get(key).is_some(), "worker lacks {key}: {w}");
        }
        assert_eq!(w["pid"], pids[w["id"].as_str().unwrap()], "{w}");
        assert_eq!(w["healthy"], true, "{w}");
        assert!(w["lastHealthCheck"].as_str().unwrap().ends_with('Z'), "{w}");
        handled += w["requestsHandled"].as_u64().unwrap();
    }
    handled
}

/// A minimal HTTP/1.1 exchange with `Connection: close` (the API answers
/// with Content-Length).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s =
        TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("API on {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head: {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    (status, rest.to_string())
}
