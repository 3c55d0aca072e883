//! The binary's edges: `--help`, configuration errors (exit 2, naming the
//! variable), an unreachable ClickHouse (exit 1, naming the URL), and socket
//! activation with fds passed the systemd way (`systemd-socket-activate`).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use zero_logs::testing::ClickHouseServer;

const BIN: &str = env!("CARGO_BIN_EXE_zero-logs");

#[test]
fn help_documents_every_setting() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "LISTEN_ADDRS",
        "ADMIN_SOCKET",
        "WORKER_ID",
        "CLICKHOUSE_URL",
        "CLICKHOUSE_DATABASE",
        "CLICKHOUSE_TABLE",
        "CLICKHOUSE_USER",
        "CLICKHOUSE_PASSWORD",
        "CLICKHOUSE_CREATE_TABLE",
        "CLICKHOUSE_RETRY_BUDGET",
        "CLICKHOUSE_INSERT_TIMEOUT",
        "BATCH_MAX_ROWS",
        "BATCH_MAX_BYTES",
        "BATCH_MAX_AGE",
        "BATCH_MAX_INFLIGHT_INSERTS",
        "BATCH_MAX_QUEUE_ROWS",
        "MAX_BODY_BYTES",
        "MAX_INFLIGHT_BYTES",
        "MAX_BATCH_RECORDS",
        "MAX_MESSAGE_BYTES",
        "MAX_SERVICE_BYTES",
        "MAX_ATTRIBUTES",
        "MAX_ATTRIBUTE_KEY_BYTES",
        "MAX_ATTRIBUTE_VALUE_BYTES",
        "ENABLE_WORKER_VALIDATION",
        "WORKER_POOL_MIN_WORKERS",
        "WORKER_POOL_MAX_WORKERS",
        "GRACEFUL_SHUTDOWN_TIMEOUT",
        "WORKER_MEMORY_LIMIT",
    ] {
        assert!(help.contains(var), "--help does not mention {var}:\n{help}");
    }
}

#[test]
fn invalid_setting_exits_2_naming_the_variable() {
    let out = Command::new(BIN)
        .arg("serve")
        .env("BATCH_MAX_ROWS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BATCH_MAX_ROWS") && err.contains("lots") && err.contains("whole number"),
        "{err}"
    );
}

#[test]
fn unreachable_clickhouse_exits_1_naming_the_url() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let spool = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("CLICKHOUSE_URL", &url)
        .env("SPOOL_DIR", spool.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_every_socket_passed_by_systemd() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let (a, b) = (free_port(), free_port());
    let spool = tempfile::tempdir().unwrap();
    let mut child = Command::new("systemd-socket-activate")
        .args([
            "-l",
            &format!("127.0.0.1:{a}"),
            "-l",
            &format!("127.0.0.1:{b}"),
        ])
        .args(["-E", &format!("CLICKHOUSE_URL={}", ch.http_url())])
        .args(["-E", &format!("CLICKHOUSE_DATABASE={db}")])
        .args(["-E", "BATCH_MAX_AGE=50"])
        .args(["-E", &format!("SPOOL_DIR={}", spool.path().display())])
        // The configured address must be ignored when systemd passes sockets.
        .args([BIN, "serve", "--listen", "127.0.0.1:1"])
        .stdin(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (package systemd) must be installed");
    let client = client();
    let body = r#"[{"service":"sock","message":"via an inherited fd"}]"#;
    for port in [a, b] {
        let url = format!("http://127.0.0.1:{port}/api/v1/logs");
        // systemd-socket-activate starts the worker on the first connection.
        let mut reply = Err(String::new());
        for _ in 0..100 {
            reply = post(&client, &url, &[], body).await;
            if matches!(reply, Ok((202, _, _))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(matches!(reply, Ok((202, _, _))), "port {port}: {reply:?}");
    }
    signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(count_rows(&ch, &db), 2);
}

/// The shipped env file lists every setting of `serve --help`, commented with its default.
#[test]
fn shipped_env_file_lists_every_setting() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let env_file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/zero-logs.env"
    ))
    .unwrap();
    let vars: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .next()
        })
        .chain(["CLICKHOUSE_PASSWORD"])
        .collect();
    assert!(vars.len() > 25, "{vars:?}");
    let missing: Vec<&&str> = vars
        .iter()
        .filter(|v| {
            !env_file
                .lines()
                .any(|l| l.starts_with(&format!("#{v}=")) || l.starts_with(&format!("{v}=")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "systemd/zero-logs.env lacks {missing:?}"
    );
}

/// `zero-logs config` names where each value came from and masks the password.
#[test]
fn config_prints_each_setting_with_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zero-logs.env"),
        "# a comment\nBATCH_MAX_AGE=50\nMAX_ATTRIBUTES=8\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "--env-dir"])
        .arg(dir.path())
        .args(["--batch-max-rows", "5"])
        .env("CLICKHOUSE_PASSWORD", "s3cret")
        .env("MAX_ATTRIBUTES", "9")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |var: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{var}=")))
            .unwrap_or_else(|| panic!("no {var}:\n{text}"))
            .to_string()
    };
    let file = dir.path().join("zero-logs.env");
    assert!(
        line("BATCH_MAX_ROWS").contains("# flag --batch-max-rows"),
        "{text}"
    );
    assert!(
        line("BATCH_MAX_AGE").starts_with("BATCH_MAX_AGE=50 "),
        "{text}"
    );
    assert!(
        line("BATCH_MAX_AGE").ends_with(&format!("# env file {}:2", file.display())),
        "{text}"
    );
    // The process environment wins over the env files, as for a worker started by hand.
    assert!(
        line("MAX_ATTRIBUTES").starts_with("MAX_ATTRIBUTES=9 "),
        "{text}"
    );
    assert!(line("MAX_ATTRIBUTES").ends_with("# environment"), "{text}");
    assert!(line("CLICKHOUSE_PASSWORD").contains("********"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(line("BATCH_MAX_BYTES").ends_with("# default"), "{text}");
    assert!(
        line("WORKER_POOL_MAX_WORKERS").contains("# default: CPU cores"),
        "{text}"
    );

    let bad = Command::new(BIN)
        .args(["config", "--env-dir"])
        .arg(dir.path())
        .env("SPOOL_MAX_BYTES", "12")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("SPOOL_MAX_BYTES") && err.contains("at least 1MiB"),
        "{err}"
    );
}
