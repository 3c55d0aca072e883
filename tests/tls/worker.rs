//! The TLS tests' worker: a `zero-logs serve` process with TLS listeners (and a
//! plaintext one beside them when asked), its certificate files and its log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use zero_logs::testing::TestClickHouse;

use crate::client::replace_file;
use crate::client::{Ca, Issued, TlsClient};
use crate::common::{free_port, Worker};

/// The certificate files of a worker, in a directory the test owns.
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
}

impl TlsFiles {
    pub fn new(server: &Issued) -> TlsFiles {
        let files = TlsFiles {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(files.cert(), &server.cert_pem).unwrap();
        std::fs::write(files.key(), &server.key_pem).unwrap();
        files
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    pub fn client_ca(&self, ca: &Ca) -> PathBuf {
        let path = self.dir.path().join("clients-ca.crt");
        std::fs::write(&path, ca.pem()).unwrap();
        path
    }

    /// Replaces the certificate and key (each renamed into place).
    pub fn install(&self, server: &Issued) {
        replace_file(&self.key(), &server.key_pem);
        replace_file(&self.cert(), &server.cert_pem);
    }
}

/// A `zero-logs serve` with TLS listeners, its stderr kept in a file.
pub struct TlsWorker {
    /// Killed by PID on drop.
    pub worker: Worker,
    /// The plaintext listener, if any.
    pub plain: Option<SocketAddr>,
    /// The TLS listener.
    pub tls: SocketAddr,
    pub log: PathBuf,
    _log_dir: tempfile::TempDir,
}

/// How a worker's listeners are laid out.
pub enum Layout {
    /// One listener, TLS (TLS_LISTEN_ADDRS empty).
    AllTls,
    /// A plaintext listener and a TLS one (TLS_LISTEN_ADDRS).
    Both,
}

impl TlsWorker {
    /// Starts a worker and waits until its TLS listener answers `/health` to `client`.
    pub async fn start(
        ch: &impl TestClickHouse,
        database: &str,
        layout: Layout,
        env: &[(&str, &str)],
        client: &TlsClient,
    ) -> TlsWorker {
        let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let plain: Option<SocketAddr> = match layout {
            Layout::AllTls => None,
            Layout::Both => Some(format!("127.0.0.1:{}", free_port()).parse().unwrap()),
        };
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("worker.log");
        let spool_dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zero-logs"));
        cmd.arg("serve");
        match plain {
            None => cmd.arg("--listen").arg(tls.to_string()),
            Some(plain) => cmd
                .arg("--listen")
                .arg(plain.to_string())
                .arg("--tls-listen")
                .arg(tls.to_string()),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("CLICKHOUSE_URL", ch.http_url())
            .env("CLICKHOUSE_DATABASE", database)
            .env("BATCH_MAX_AGE", "50")
            .env("SPOOL_DIR", spool_dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("start zero-logs binary");
        let port = plain.unwrap_or(tls).port();
        let worker = TlsWorker {
            worker: Worker {
                child: Some(child),
                port,
                base: format!("http://127.0.0.1:{port}"),
                spool_dir: Some(spool_dir),
            },
            plain,
            tls,
            log,
            _log_dir: log_dir,
        };
        worker.wait_healthy(client).await;
        worker
    }

    async fn wait_healthy(&self, client: &TlsClient) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut conn) = client.http(self.tls).await {
                if let Ok((200, _, _)) = conn.request("GET", "/health", "text/plain", "").await {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "TLS worker not healthy within 30 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/stats` over TLS.
    pub async fn stats(&self, client: &TlsClient) -> serde_json::Value {
        let mut conn = client.http(self.tls).await.expect("stats connection");
        let (status, _, body) = conn
            .request("GET", "/stats", "text/plain", "")
            .await
            .unwrap();
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    pub async fn stat(&self, client: &TlsClient, key: &str) -> u64 {
        self.stats(client).await[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in /stats"))
    }

    /// Waits until the log has a line containing every one of `needles`.
    pub async fn wait_log(&self, needles: &[&str], within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let found = self
                .log_text()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)));
            if found {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn tls_env(files: &TlsFiles) -> Vec<(&'static str, String)> {
    vec![
        ("TLS_CERT_FILE", files.cert().display().to_string()),
        ("TLS_KEY_FILE", files.key().display().to_string()),
    ]
}

pub fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Waits until `/stats` `key` reaches `at_least`; its value then.
pub async fn wait_stat(worker: &TlsWorker, client: &TlsClient, key: &str, at_least: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = worker.stat(client, key).await;
        if n >= at_least || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a worker with `env` and no reachable ClickHouse; (exit code, stderr).
pub fn start_failure(env: &[(&str, String)]) -> (Option<i32>, String) {
    let spool = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_zero-logs"))
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_clear()
        .env("CLICKHOUSE_URL", "http://127.0.0.1:1")
        .env("SPOOL_DIR", spool.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = exited(child);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Waits (at most 20 s, then kills it) for a worker expected to exit on its own.
pub fn exited(mut child: std::process::Child) -> std::process::Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the worker did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `zero-logs serve` under `systemd-socket-activate` (sockets passed as `LISTEN_FDS`),
/// with `env` as `-E` settings: the child holding the worker's PID once it is started.
pub fn socket_activated(
    listen: &[std::net::SocketAddr],
    env: &[(&str, String)],
    stderr: std::process::Stdio,
) -> std::process::Child {
    let mut cmd = std::process::Command::new("systemd-socket-activate");
    for addr in listen {
        cmd.arg("-l").arg(addr.to_string());
    }
    for (k, v) in env {
        cmd.arg("-E").arg(format!("{k}={v}"));
    }
    cmd.args([env!("CARGO_BIN_EXE_zero-logs"), "serve"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("systemd-socket-activate (package systemd) must be installed")
}
