//! The load balancer of the multi-host test: a private HAProxy process (Debian's
//! `haproxy`, run in the foreground from a config in a temporary directory, never
//! the system service), killed by PID on drop. It has two jobs:
//!
//! - the ingest address: an HTTP frontend on loopback that balances requests over
//!   the hosts, health-checked on `GET /health`;
//! - each host's way to ClickHouse: a TCP frontend on the test side of that host's
//!   veth forwarding to the private ClickHouse on 127.0.0.1, which a namespace
//!   cannot reach itself. Putting that server in maintenance through the runtime API
//!   cuts one host off ClickHouse without touching the other.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Backend of the ingest frontend.
pub const HOSTS_BACKEND: &str = "hosts";

/// One host as the balancer sees it.
pub struct Backend {
    /// Server name in the `hosts` backend, and suffix of its ClickHouse frontend
    /// (`ch_<name>`).
    pub name: String,
    /// The worker's listener in the host's namespace.
    pub ingest: SocketAddr,
    /// Where the host reaches ClickHouse (test side of its veth).
    pub clickhouse_bind: SocketAddr,
}

pub struct Balancer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The one ingest address clients use.
    pub ingest: SocketAddr,
}

/// The health-check cadence: a host is out after `FALL` failed checks `INTER_MS`
/// apart and back after `RISE` good ones.
pub const INTER_MS: u64 = 200;
pub const FALL: u32 = 2;
pub const RISE: u32 = 2;

fn config(
    dir: &std::path::Path,
    ingest: SocketAddr,
    hosts: &[Backend],
    clickhouse: SocketAddr,
) -> String {
    let mut cfg = format!(
        "global
    stats socket {sock} mode 600 level admin
    maxconn 1024
    nbthread 1

defaults
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s

frontend ingest
    mode http
    bind {ingest}
    default_backend {HOSTS_BACKEND}

# Retries, each on another host (redispatch), only what no host kept: a failed
# connection (nothing was sent) and a 503 (a worker stopping: nothing written). A
# request a host received and did not answer is not retried: the host may have
# spooled it, and sending it again would store it twice. One connection to a host
# per request (http-server-close), so no request is sent on a kept-alive connection
# to a host that has just died, which would fail instead of being retried.
backend {HOSTS_BACKEND}
    mode http
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    retries 3
    option redispatch 1
    retry-on conn-failure 503
    option http-server-close
    default-server inter {INTER_MS} fall {FALL} rise {RISE}
",
        sock = dir.join("admin.sock").display(),
    );
    for h in hosts {
        cfg.push_str(&format!("    server {} {} check\n", h.name, h.ingest));
    }
    for h in hosts {
        cfg.push_str(&format!(
            "
frontend ch_{name}
    mode tcp
    bind {bind}
    default_backend ch_{name}

backend ch_{name}
    mode tcp
    server ch {clickhouse}
",
            name = h.name,
            bind = h.clickhouse_bind,
        ));
    }
    cfg
}

/// The haproxy binary: on PATH, else where Debian puts it.
fn binary() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin"])
    {
        let candidate = PathBuf::from(dir).join("haproxy");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "haproxy not found (on PATH or /usr/sbin): the multi-host test runs Debian's \
         haproxy as its load balancer; run scripts/install-deps as root"
    );
}

impl Balancer {
    /// Writes the config, checks it (`haproxy -c`) and starts haproxy in the
    /// foreground (`-db`), so the PID we hold is the process to kill.
    pub fn start(ingest: SocketAddr, hosts: &[Backend], clickhouse: SocketAddr) -> Balancer {
        let bin = binary();
        let dir = tempfile::tempdir().expect("haproxy tempdir");
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, config(dir.path(), ingest, hosts, clickhouse)).unwrap();
        let check = Command::new(&bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg_path)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c refused the test's config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(&bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let balancer = Balancer {
            child: Some(child),
            dir,
            ingest,
        };
        balancer.wait_socket(Duration::from_secs(10));
        balancer
    }

    fn wait_socket(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while UnixStream::connect(self.dir.path().join("admin.sock")).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy's runtime socket did not appear within {within:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// One command on the runtime API; its answer.
    pub fn command(&self, cmd: &str) -> String {
        let mut sock = UnixStream::connect(self.dir.path().join("admin.sock"))
            .unwrap_or_else(|e| panic!("haproxy runtime socket: {e}; log:\n{}", self.log()));
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        sock.read_to_string(&mut answer)
            .unwrap_or_else(|e| panic!("haproxy runtime command {cmd:?}: {e}"));
        answer
    }

    /// Whether the health checks have `server` of `backend` up
    /// (`show servers state`: column 6, `srv_op_state`, is 2 when running).
    pub fn server_up(&self, backend: &str, server: &str) -> bool {
        let state = self.command(&format!("show servers state {backend}"));
        state
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 5 && f[1] == backend && f[3] == server)
            .unwrap_or_else(|| panic!("no server {backend}/{server} in:\n{state}"))[5]
            == "2"
    }

    /// Waits until `server` of `backend` is `up` (or down); how long that took.
    pub fn wait_server(&self, backend: &str, server: &str, up: bool, within: Duration) -> Duration {
        let started = Instant::now();
        while self.server_up(backend, server) != up {
            assert!(
                started.elapsed() < within,
                "haproxy did not see {backend}/{server} {} within {within:?}; log:\n{}",
                if up { "up" } else { "down" },
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        started.elapsed()
    }

    /// Cuts host `name` off ClickHouse: its ClickHouse server goes to maintenance (new
    /// connections are closed at once) and its open connections are shut.
    pub fn block_clickhouse(&self, name: &str) {
        self.command(&format!("set server ch_{name}/ch state maint"));
        self.command(&format!("shutdown sessions server ch_{name}/ch"));
    }

    pub fn unblock_clickhouse(&self, name: &str) {
        self.command(&format!("set server ch_{name}/ch state ready"));
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
