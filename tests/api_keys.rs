//! Issue 20, items 2 and 3: API keys and per-key limits, against the real worker
//! binary and a real ClickHouse, loopback only. Every dialect (native HTTP and gRPC,
//! OTLP/HTTP and OTLP/gRPC) refuses a missing or unknown key, accepts a known one
//! (the key's name then shows in `/stats` and `/metrics`, its secret nowhere), keeps
//! a key to its services, follows the key file while running, and limits one key
//! without slowing the others. The official OpenTelemetry Python SDK sends with
//! `OTEL_EXPORTER_OTLP_HEADERS`.

mod common;
#[path = "api_keys/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use serde_json::Value;
use support::*;
use zero_logs::testing::ClickHouseServer;

#[tokio::test]
async fn every_dialect_refuses_a_missing_or_unknown_key_and_takes_a_known_one() {
    let t = Setup::start(TWO_KEYS, &[]).await;

    // Native HTTP: 401, WWW-Authenticate, JSON error.
    for (secret, challenge) in [
        (None, "Bearer realm=\"zero-logs\""),
        (Some("wrong-secret-0000000"), "invalid_token"),
    ] {
        let reply = t.native(secret, "web", 2).await;
        assert_eq!(reply.0, 401, "{:?}", reply.2);
        assert!(
            header(&reply, "www-authenticate").contains(challenge),
            "{reply:?}"
        );
        let body: Value = serde_json::from_slice(&reply.2).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("Bearer") || secret.is_some(),
            "{body}"
        );
    }
    // OTLP/HTTP: 401 with a google.rpc.Status in the request's encoding.
    for secret in [None, Some("wrong-secret-0000000")] {
        let reply = t
            .post(
                "/v1/logs",
                secret,
                &[PROTOBUF],
                otlp(&[("web", 1)]).encode_to_vec(),
            )
            .await;
        assert_eq!(reply.0, 401);
        assert_eq!(header(&reply, "content-type"), "application/x-protobuf");
        assert!(header(&reply, "www-authenticate").starts_with("Bearer"));
        let status = tonic_types::Status::decode(reply.2.clone()).unwrap();
        assert_eq!(status.code, 16, "{status:?}");
    }
    // Native gRPC and OTLP/gRPC: UNAUTHENTICATED.
    for secret in [None, Some("wrong-secret-0000000")] {
        let err = t
            .grpc()
            .await
            .ingest(with_key(native_grpc("web", 1), secret))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        let err = t
            .otlp_grpc()
            .await
            .export(with_key(otlp(&[("web", 1)]), secret))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    }
    // /health stays open; /stats and /metrics need a key.
    assert_eq!(t.get("/health", None).await.0, 200);
    assert_eq!(t.get("/stats", None).await.0, 401);
    assert_eq!(t.get("/metrics", Some("wrong-secret-0000000")).await.0, 401);

    // The right key, every dialect: accepted, rows land.
    assert_eq!(t.native(Some(WEB), "web", 3).await.0, 202);
    let reply = t
        .post(
            "/v1/logs",
            Some(WEB),
            &[PROTOBUF],
            otlp(&[("web", 2)]).encode_to_vec(),
        )
        .await;
    assert_eq!(reply.0, 200);
    let answer = t
        .grpc()
        .await
        .ingest(with_key(native_grpc("web", 4), Some(WEB)))
        .await
        .unwrap();
    assert_eq!(answer.into_inner().accepted, 4);
    let answer = t
        .otlp_grpc()
        .await
        .export(with_key(otlp(&[("web", 5)]), Some(WEB)))
        .await
        .unwrap();
    assert!(answer.into_inner().partial_success.is_none());
    assert_eq!(t.wait_rows_of("web", 14).await, 14);

    // The key's name in /stats and /metrics, its secret nowhere.
    let web = t.key_stats(WEB, "web").await;
    assert_eq!(web["requests"], 4, "{web}");
    assert_eq!(web["records_accepted"], 14, "{web}");
    let stats = t.stats(WEB).await;
    assert_eq!(stats["auth"]["failures_missing"], 5, "{stats}");
    assert_eq!(stats["auth"]["failures_unknown"], 5, "{stats}");
    let (status, _, metrics) = t.get("/metrics", Some(CHECKOUT)).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("zero_logs_key_records_accepted_total{worker_id=\"1\",key=\"web\"} 14\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("zero_logs_auth_failures_total{worker_id=\"1\",reason=\"unknown\"} 5\n")
    );
    for page in [stats.to_string(), metrics] {
        assert!(
            !page.contains(WEB) && !page.contains(CHECKOUT),
            "a secret leaked: {page}"
        );
    }
}

#[tokio::test]
async fn a_key_writes_only_its_services() {
    let t = Setup::start(TWO_KEYS, &[]).await;
    // Native: the batch is refused whole, each record of another service named.
    let body = format!(
        "[{},{},{}]",
        r#"{"service":"checkout","message":"ok"}"#,
        r#"{"service":"billing","message":"not mine"}"#,
        r#"{"service":"cart","message":"ok"}"#
    );
    let reply = t.post("/api/v1/logs", Some(CHECKOUT), &[], body).await;
    assert_eq!(reply.0, 403, "{:?}", reply.2);
    let answer: Value = serde_json::from_slice(&reply.2).unwrap();
    let details = answer["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{answer}");
    assert_eq!(details[0]["index"], 1);
    assert_eq!(details[0]["field"], "service");
    assert!(
        details[0]["reason"]
            .as_str()
            .unwrap()
            .contains("\"billing\""),
        "{answer}"
    );
    // Native gRPC: PERMISSION_DENIED.
    let err = t
        .grpc()
        .await
        .ingest(with_key(native_grpc("billing", 1), Some(CHECKOUT)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // OTLP: the other service's records are rejected one by one, the rest land.
    let request = otlp(&[("checkout", 2), ("billing", 3), ("cart", 1)]);
    let reply = t
        .post(
            "/v1/logs",
            Some(CHECKOUT),
            &[PROTOBUF],
            request.encode_to_vec(),
        )
        .await;
    assert_eq!(reply.0, 200);
    let partial = ExportLogsServiceResponse::decode(reply.2.clone())
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_log_records, 3);
    assert!(
        partial.error_message.contains("record 2") && partial.error_message.contains("\"billing\""),
        "{}",
        partial.error_message
    );
    let answer = t
        .otlp_grpc()
        .await
        .export(with_key(
            otlp(&[("billing", 1), ("checkout", 4)]),
            Some(CHECKOUT),
        ))
        .await
        .unwrap();
    assert_eq!(
        answer
            .into_inner()
            .partial_success
            .unwrap()
            .rejected_log_records,
        1
    );
    assert_eq!(t.wait_rows_of("checkout", 6).await, 6);
    assert_eq!(t.wait_rows_of("cart", 1).await, 1);
    assert_eq!(t.rows_of("billing"), 0);
    // The unrestricted key writes billing.
    assert_eq!(t.native(Some(WEB), "billing", 1).await.0, 202);
    assert_eq!(t.wait_rows_of("billing", 1).await, 1);
    let checkout = t.key_stats(WEB, "checkout").await;
    assert_eq!(checkout["records_forbidden"], 6, "{checkout}");
    assert_eq!(checkout["records_accepted"], 7, "{checkout}");
}

#[tokio::test]
async fn the_key_file_is_followed_while_running_and_a_bad_version_is_ignored() {
    let t = Setup::start(TWO_KEYS, &[]).await;
    let pid = t.worker.pid();
    let newer = "newer-secret-7b1e90c3d2a4";
    t.keys.replace(&format!("web {WEB}\nnewer {newer}\n"));
    // Polled every 2 s: the new key works and the removed one stops within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (added, removed) = (
            t.native(Some(newer), "web", 1).await.0,
            t.native(Some(CHECKOUT), "checkout", 1).await.0,
        );
        if (added, removed) == (202, 401) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "key file change not applied: {added} {removed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A bad version: logged, the old keys stay.
    t.keys.replace(&format!("web {WEB}\nbroken\n"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        t.native(Some(newer), "web", 1).await.0,
        202,
        "the old keys stay in force"
    );
    let stats = t.stats(WEB).await;
    assert!(
        stats["auth"]["reload_failures"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    // SIGHUP re-reads at once (the file did not change, so only the signal can) and
    // does not stop the worker.
    t.keys.replace(&format!("web {WEB}\nnewer {newer}\n"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = t.stats(WEB).await["auth"]["reloads"].as_u64().unwrap();
    signal(pid, "HUP");
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let now = t.stats(WEB).await["auth"]["reloads"].as_u64().unwrap();
        if now == before + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload ({before} → {now})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t.native(Some(newer), "web", 1).await.0, 202);
}

/// Runs `zero-logs serve` expecting it to stop by itself; returns its exit code and
/// stderr.
fn serve_until_exit(listen: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let spool = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zero-logs"))
        .args(["serve", "--listen", listen])
        .env_clear()
        .env("SPOOL_DIR", spool.path())
        .env("CLICKHOUSE_URL", "http://127.0.0.1:9")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn start_up_refuses_an_exposed_port_without_keys_and_a_readable_key_file() {
    let missing = tempfile::tempdir().unwrap();
    let no_file = missing.path().join("keys");
    let no_file = no_file.to_str().unwrap();
    // 0.0.0.0:0: the check runs before the spool or ClickHouse are opened, so the worker
    // never serves on it.
    let (code, stderr) = serve_until_exit("0.0.0.0:0", &[("INGEST_KEYS_FILE", no_file)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("INGEST_AUTH=none") && stderr.contains("add keys"),
        "{stderr}"
    );

    let keys = KeyFile::new(TWO_KEYS);
    std::fs::set_permissions(keys.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = keys.path();
    let (code, stderr) = serve_until_exit(
        &format!("127.0.0.1:{}", free_port()),
        &[("INGEST_KEYS_FILE", path.to_str().unwrap())],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("readable or writable by other users") && stderr.contains("chmod 640"),
        "{stderr}"
    );

    // INGEST_AUTH=keys without the file.
    let (code, stderr) = serve_until_exit(
        &format!("127.0.0.1:{}", free_port()),
        &[("INGEST_KEYS_FILE", no_file), ("INGEST_AUTH", "keys")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(no_file), "{stderr}");
}

#[tokio::test]
async fn auth_none_on_an_exposed_port_starts_with_a_warning() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let spool = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zero-logs"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_clear()
        .env("INGEST_AUTH", "none")
        .env("SPOOL_DIR", spool.path())
        .env("CLICKHOUSE_URL", ch.http_url())
        .env("CLICKHOUSE_DATABASE", &db)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut warned, mut ready) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(Ok(line)) = lines.next() {
        warned |= line.contains("WARN") && line.contains("INGEST_AUTH=none");
        if line.contains("worker::build: ready") {
            ready = true;
            break;
        }
        assert!(Instant::now() < deadline, "no ready line");
    }
    // Stop it at once: it listens on every interface.
    signal(pid, "TERM");
    let status = child.wait().unwrap();
    assert!(warned && ready, "warned {warned} ready {ready}");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_while_another_key_is_served() {
    let keys = "noisy noisy-secret-39d0c7a1e2 records_per_sec=2\n\
                calm  calm-secret-c14e2b9a7f50 records_per_sec=100000\n";
    let t = Setup::start(keys, &[]).await;
    let noisy = "noisy-secret-39d0c7a1e2";
    let calm = "calm-secret-c14e2b9a7f50";
    // 20 records at 2/s: let in (the bucket held 2), then ~9 s of debt.
    assert_eq!(t.native(Some(noisy), "noisy", 20).await.0, 202);
    let (noisy_replies, calm_replies) = tokio::join!(
        async {
            let mut replies = Vec::new();
            for _ in 0..10 {
                replies.push(t.native(Some(noisy), "noisy", 5).await);
            }
            replies
        },
        async {
            let mut replies = Vec::new();
            for _ in 0..10 {
                replies.push(t.native(Some(calm), "calm", 50).await.0);
            }
            replies
        }
    );
    assert_eq!(calm_replies, vec![202; 10], "the other key is not slowed");
    for reply in &noisy_replies {
        assert_eq!(reply.0, 429, "{:?}", reply.2);
        let after: u64 = header(reply, "retry-after").parse().unwrap();
        assert!((1..=10).contains(&after), "Retry-After {after}");
        assert!(String::from_utf8_lossy(&reply.2).contains("2 records/s"));
    }
    // Every dialect in its form.
    let reply = t
        .post(
            "/v1/logs",
            Some(noisy),
            &[PROTOBUF],
            otlp(&[("noisy", 1)]).encode_to_vec(),
        )
        .await;
    assert_eq!(reply.0, 429);
    assert!(!header(&reply, "retry-after").is_empty());
    let err = t
        .grpc()
        .await
        .ingest(with_key(native_grpc("noisy", 1), Some(noisy)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.metadata().get("retry-after").is_some());
    let err = t
        .otlp_grpc()
        .await
        .export(with_key(otlp(&[("noisy", 1)]), Some(noisy)))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "retryable for the SDKs: {err:?}"
    );
    // Stats say who was limited.
    let stats = t.key_stats(calm, "noisy").await;
    assert_eq!(stats["requests_limited"], 13, "{stats}");
    assert_eq!(t.key_stats(calm, "calm").await["requests_limited"], 0);
    assert_eq!(t.wait_rows_of("calm", 500).await, 500);
    assert_eq!(t.rows_of("noisy"), 20);
}

#[tokio::test]
async fn a_key_over_its_spool_share_is_refused_while_others_get_in() {
    let keys = "noisy noisy-secret-39d0c7a1e2 spool_share=10\n\
                calm  calm-secret-c14e2b9a7f50\n";
    let mut t = Setup::start(
        keys,
        &[
            ("SPOOL_MAX_BYTES", "1MiB"),
            ("SPOOL_SEGMENT_BYTES", "64KiB"),
            ("SPOOL_PREALLOCATE", "false"),
        ],
    )
    .await;
    let (noisy, calm) = ("noisy-secret-39d0c7a1e2", "calm-secret-c14e2b9a7f50");
    // ClickHouse down: spooled rows stay unsent.
    t.ch.stop();
    let mut accepted = 0;
    let refusal = loop {
        let reply = t.native(Some(noisy), "noisy", 100).await;
        match reply.0 {
            202 => accepted += 1,
            429 => break reply,
            other => panic!("{other}: {:?}", reply.2),
        }
        assert!(accepted < 100, "never refused");
    };
    assert!(accepted >= 2, "refused after {accepted}");
    let text = String::from_utf8_lossy(&refusal.2).into_owned();
    assert!(text.contains("10% of the cap"), "{text}");
    assert!(!header(&refusal, "retry-after").is_empty());
    // The other key still gets in, with more than the noisy key's share left.
    for _ in 0..3 {
        assert_eq!(t.native(Some(calm), "calm", 100).await.0, 202);
    }
    assert_eq!(t.native(Some(noisy), "noisy", 1).await.0, 429);
    // Once ClickHouse has the rows, the key's share is free again.
    t.ch.restart().unwrap();
    assert_eq!(
        t.wait_rows_of("noisy", accepted * 100).await,
        accepted * 100
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.native(Some(noisy), "noisy", 1).await.0 != 202 {
        assert!(Instant::now() < deadline, "the share was not given back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rows whose message holds `run=<run_id> `.
fn rows_of_run(t: &Setup, run_id: &str) -> u64 {
    let sql = format!(
        "SELECT count() FROM {}.logs WHERE position(message, 'run={run_id} ') > 0",
        t.db
    );
    t.ch.query(&sql).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn the_python_sdk_sends_with_a_bearer_header_and_is_refused_without() {
    let t = Setup::start(TWO_KEYS, &[]).await;
    let header = format!("authorization=Bearer%20{CHECKOUT}");
    for protocol in ["grpc", "http/protobuf"] {
        let run_id = format!("keyed{}", protocol.replace('/', ""));
        let out = otel_sdk::run(
            &t.worker.base,
            protocol,
            &run_id,
            30,
            &[],
            &[("OTEL_EXPORTER_OTLP_HEADERS", &header)],
        );
        assert!(
            out.status.success(),
            "{protocol}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while rows_of_run(&t, &run_id) < 30 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(rows_of_run(&t, &run_id), 30, "{protocol}");

        let run_id = format!("open{}", protocol.replace('/', ""));
        let out = otel_sdk::run(
            &t.worker.base,
            protocol,
            &run_id,
            5,
            &["--timeout", "5"],
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{protocol} without a key was delivered: {stderr}"
        );
        assert!(
            stderr.contains("401") || stderr.contains("UNAUTHENTICATED"),
            "{protocol}: {stderr}"
        );
        assert_eq!(rows_of_run(&t, &run_id), 0);
    }
    let checkout = t.key_stats(WEB, "checkout").await;
    assert_eq!(checkout["records_accepted"], 60, "{checkout}");
}
