//! TLS on the ingest listeners, against real worker processes, a real ClickHouse
//! and real TLS (certificates made by the test): HTTP/1.1, HTTP/2 (ALPN), native
//! gRPC, OTLP/HTTP and OTLP/gRPC over one TLS port; refused handshakes (wrong CA,
//! client certificates, plaintext on the TLS port) that never reach a handler; a
//! certificate swapped under load with no failed request; a bad new certificate
//! that leaves the old one in use; TLS beside plaintext; bad files at start.

#[path = "tls/client.rs"]
mod client;
mod common;
#[path = "tls/worker.rs"]
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::*;
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use worker::*;
use zero_logs::proto::log_service_client::LogServiceClient;
use zero_logs::proto::{IngestRequest, LogRecord};
use zero_logs::testing::ClickHouseServer;

const H1: &[&[u8]] = &[b"http/1.1"];
const H2: &[&[u8]] = &[b"h2", b"http/1.1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_over_one_tls_port_lands_rows_and_bad_handshakes_reach_no_handler() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let ca = Ca::new("zero-logs test CA");
    let files = TlsFiles::new(&ca.server(1));
    let h1 = TlsClient::new(&[&ca], None, H1);
    let h2 = TlsClient::new(&[&ca], None, H2);
    let env = tls_env(&files);
    let worker = TlsWorker::start(&ch, &db, Layout::AllTls, &as_refs(&env), &h1).await;

    // HTTP/1.1 and HTTP/2 (chosen by ALPN) on the same port.
    let mut conn = h1.http(worker.tls).await.unwrap();
    let (status, version, body) = conn.post_json(records("https-h1", 3)).await.unwrap();
    assert_eq!((status, version), (202, http::Version::HTTP_11), "{body:?}");
    let mut conn = h2.http(worker.tls).await.unwrap();
    let (status, version, body) = conn.post_json(records("https-h2", 4)).await.unwrap();
    assert_eq!((status, version), (202, http::Version::HTTP_2), "{body:?}");
    // OTLP/HTTP (JSON) on that HTTP/2 connection.
    let otlp_json = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"otlp-http-tls"}}]},"scopeLogs":[{"logRecords":[{"timeUnixNano":"1714564800000000000","severityNumber":9,"body":{"stringValue":"hello"}}]}]}]}"#;
    let (status, _, body) = conn
        .request("POST", "/v1/logs", "application/json", otlp_json)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body:?}");

    // Native gRPC and OTLP/gRPC through a TLS channel.
    let channel = h2.channel(worker.tls).await;
    let reply = LogServiceClient::new(channel.clone())
        .ingest(IngestRequest {
            logs: (0..2)
                .map(|i| LogRecord {
                    service: "grpc-tls".into(),
                    message: format!("grpc {i}"),
                    timestamp: "2024-05-01T12:00:00Z".into(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("native gRPC over TLS")
        .into_inner();
    assert_eq!(reply.accepted, 2);
    let reply = LogsServiceClient::new(channel)
        .export(otlp_request("otlp-grpc-tls", 5))
        .await
        .expect("OTLP/gRPC over TLS")
        .into_inner();
    assert!(reply
        .partial_success
        .is_none_or(|p| p.rejected_log_records == 0));

    for (service, n) in [
        ("https-h1", 3),
        ("https-h2", 4),
        ("otlp-http-tls", 1),
        ("grpc-tls", 2),
        ("otlp-grpc-tls", 5),
    ] {
        assert_eq!(wait_rows_of(&ch, &db, service, n).await, n, "{service}");
    }

    let failures = worker.stat(&h1, "tls_handshake_failures").await;
    let requests = worker.stat(&h1, "requests").await;

    // A client that trusts another CA refuses the server's certificate.
    let other = Ca::new("unrelated CA");
    let err = TlsClient::new(&[&other], None, H2)
        .connect(worker.tls)
        .await
        .expect_err("a client trusting another CA must not connect");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A silent client (connected, never says anything) holds up no one.
    let silent = std::net::TcpStream::connect(worker.tls).unwrap();
    let started = tokio::time::Instant::now();
    let mut conn = h1.http(worker.tls).await.unwrap();
    let (status, _, _) = conn.post_json(records("after-silent", 1)).await.unwrap();
    assert_eq!(status, 202);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Plaintext HTTP on the TLS port: closed, no HTTP answer, and nothing stored.
    let tls_addr = worker.tls;
    let answer = tokio::task::spawn_blocking(move || plaintext_request(tls_addr))
        .await
        .unwrap()
        .expect("the server closes a plaintext connection on the TLS port");
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");

    // The worker goes on serving TLS.
    let mut conn = h2.http(worker.tls).await.unwrap();
    let (status, _, _) = conn.post_json(records("after-plaintext", 2)).await.unwrap();
    assert_eq!(status, 202);
    assert_eq!(wait_rows_of(&ch, &db, "after-plaintext", 2).await, 2);
    assert_eq!(rows_of(&ch, &db, "plaintext"), 0);

    // Both refusals are counted; no handler saw them (only our 2 requests counted).
    let now = wait_stat(&worker, &h1, "tls_handshake_failures", failures + 2).await;
    assert_eq!(now, failures + 2, "{}", worker.log_text());
    assert_eq!(worker.stat(&h1, "requests").await, requests + 2);
    let mut conn = h1.http(worker.tls).await.unwrap();
    let (_, _, metrics) = conn
        .request("GET", "/metrics", "text/plain", "")
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    let line = format!("zero_logs_tls_handshake_failures_total{{worker_id=\"1\"}} {now}");
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} not in\n{metrics}"
    );
    // Refused handshakes are not warnings.
    assert!(!worker.log_text().contains("WARN"), "{}", worker.log_text());
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_its_client_certificates_are_let_in() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let ca = Ca::new("server CA");
    let clients_ca = Ca::new("clients CA");
    let rogue_ca = Ca::new("rogue CA");
    let files = TlsFiles::new(&ca.server(1));
    let mut env = tls_env(&files);
    env.push((
        "TLS_CLIENT_CA_FILE",
        files.client_ca(&clients_ca).display().to_string(),
    ));
    let good_id = clients_ca.client("app-1");
    let good = TlsClient::new(&[&ca], Some(&good_id), H2);
    let worker = TlsWorker::start(&ch, &db, Layout::AllTls, &as_refs(&env), &good).await;
    let before = worker.stat(&good, "tls_handshake_failures").await;

    served(&good, worker.tls, "mtls-good").await.unwrap();
    // HTTP/1.1 and gRPC with the certificate too.
    served(
        &TlsClient::new(&[&ca], Some(&good_id), H1),
        worker.tls,
        "mtls-good",
    )
    .await
    .unwrap();
    let reply = LogServiceClient::new(good.channel(worker.tls).await)
        .ingest(IngestRequest {
            logs: vec![LogRecord {
                service: "mtls-good".into(),
                message: "grpc".into(),
                ..Default::default()
            }],
        })
        .await
        .expect("gRPC with a client certificate");
    assert_eq!(reply.into_inner().accepted, 1);

    // No certificate, or one from another CA: the handshake fails, nothing is served.
    // (With TLS 1.3 the client learns it at its first read: the server's alert.)
    let none = TlsClient::new(&[&ca], None, H2);
    assert!(served(&none, worker.tls, "mtls-none").await.is_err());
    let alert = refusal(&none, worker.tls).await;
    assert!(alert.contains("CertificateRequired"), "{alert}");
    let rogue = TlsClient::new(&[&ca], Some(&rogue_ca.client("intruder")), H1);
    assert!(served(&rogue, worker.tls, "mtls-rogue").await.is_err());
    let alert = refusal(&rogue, worker.tls).await;
    assert!(alert.contains("UnknownCA"), "{alert}");

    assert_eq!(wait_rows_of(&ch, &db, "mtls-good", 3).await, 3);
    assert_eq!(rows_of(&ch, &db, "mtls-none"), 0);
    assert_eq!(rows_of(&ch, &db, "mtls-rogue"), 0);
    assert_eq!(
        wait_stat(&worker, &good, "tls_handshake_failures", before + 4).await,
        before + 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_swapped_under_load_fails_no_request() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let (ca1, ca2) = (Ca::new("old CA"), Ca::new("new CA"));
    let (first, second, third) = (ca1.server(1), ca2.server(2), ca1.server(3));
    let files = TlsFiles::new(&first);
    // The clients trust both CAs, as during a planned CA change.
    let clients = [H1, H2].map(|alpn| TlsClient::new(&[&ca1, &ca2], None, alpn));
    let env = tls_env(&files);
    let worker = TlsWorker::start(&ch, &db, Layout::AllTls, &as_refs(&env), &clients[0]).await;
    assert_eq!(presented(&clients[0], worker.tls).await, first.der);

    let seen = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(load(
                clients[i % 2].clone(),
                worker.tls,
                seen.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;

    // 1. New certificate and key renamed into place: new connections get it.
    files.install(&second);
    assert!(
        wait_presented(&clients[1], worker.tls, &second, Duration::from_secs(10)).await,
        "the new certificate was not served within 10 s:\n{}",
        worker.log_text()
    );
    assert!(
        worker
            .wait_log(&["TLS certificate reloaded"], Duration::from_secs(2))
            .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. A garbage certificate: a warning naming the file, the last good one kept.
    replace_file(
        &files.cert(),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    );
    let cert_path = files.cert().display().to_string();
    assert!(
        worker
            .wait_log(
                &["WARN", "TLS reload refused", &cert_path],
                Duration::from_secs(10)
            )
            .await,
        "no warning about the bad certificate:\n{}",
        worker.log_text()
    );
    assert_eq!(presented(&clients[0], worker.tls).await, second.der);
    // Reported once, not at every look at the unchanged bad file.
    tokio::time::sleep(zero_logs::tls::POLL_INTERVAL + Duration::from_millis(500)).await;
    let refusals = worker.log_text().matches("TLS reload refused").count();
    assert_eq!(refusals, 1, "{}", worker.log_text());

    // 3. `systemctl reload` (SIGHUP) takes a new certificate at once.
    files.install(&third);
    signal(worker.worker.pid(), "HUP");
    assert!(
        worker
            .wait_log(
                &["TLS certificate reloaded", "SIGHUP"],
                Duration::from_secs(5)
            )
            .await,
        "{}",
        worker.log_text()
    );
    assert!(wait_presented(&clients[0], worker.tls, &third, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let ok = seen.ok.load(Ordering::Relaxed);
    let failed = seen.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "failed requests: {:?}",
        seen.errors.lock().unwrap()
    );
    assert!(ok >= 100, "too little load to show anything: {ok} requests");
    eprintln!("[tls] swap under load: {ok} requests served, {failed} failed");
    // The load's own connections went from the first certificate to the others.
    let certs = seen.certs.lock().unwrap().clone();
    for (name, cert) in [("first", &first), ("second", &second), ("third", &third)] {
        assert!(
            certs.contains(&cert.der),
            "the load never saw the {name} certificate"
        );
    }
    assert_eq!(wait_rows_of(&ch, &db, "swap", ok * 2).await, ok * 2);
    assert!(worker.stat(&clients[0], "tls_reloads").await >= 2);
    assert!(worker.stat(&clients[0], "tls_reload_failures").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_plaintext_listeners_side_by_side_and_sighup_never_kills() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let ca = Ca::new("zero-logs test CA");
    let files = TlsFiles::new(&ca.server(1));
    let client = TlsClient::new(&[&ca], None, H2);
    let env = tls_env(&files);
    let mut env = as_refs(&env);
    env.push(("CONNECTION_MAX_AGE", "1500"));
    let mut worker = TlsWorker::start(&ch, &db, Layout::Both, &env, &client).await;
    let plain = worker.plain.unwrap();

    let (status, body) = post_plain(plain, "side-plain", 2).await;
    assert_eq!(status, 202, "{body:?}");
    served(&client, worker.tls, "side-tls").await.unwrap();
    // Each listener speaks only its own.
    assert!(
        client.http(plain).await.is_err(),
        "TLS on the plaintext listener"
    );
    let tls_addr = worker.tls;
    let answer = tokio::task::spawn_blocking(move || plaintext_request(tls_addr))
        .await
        .unwrap()
        .expect("closed");
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    assert_eq!(wait_rows_of(&ch, &db, "side-plain", 2).await, 2);
    assert_eq!(wait_rows_of(&ch, &db, "side-tls", 1).await, 1);

    // SIGHUP (the unit's ExecReload=) reloads, and never ends a worker, TLS or not.
    signal(worker.worker.pid(), "HUP");
    assert!(
        worker
            .wait_log(
                &["TLS certificate reloaded", "SIGHUP"],
                Duration::from_secs(5)
            )
            .await
    );
    let mut plain_worker = Worker::start(&ch, &db, &[]).await;
    signal(plain_worker.pid(), "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        plain_worker
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "SIGHUP ended a worker without TLS"
    );
    plain_worker.wait_healthy(Duration::from_secs(2)).await;
    served(&client, worker.tls, "side-tls").await.unwrap();

    // TLS connections age and drain as plaintext ones do: closed gracefully at
    // CONNECTION_MAX_AGE, and an idle one does not hold up a stop.
    let h1 = TlsClient::new(&[&ca], None, H1);
    let mut aging = h1.http(worker.tls).await.unwrap();
    assert_eq!(
        aging.post_json(records("side-tls", 1)).await.unwrap().0,
        202
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let aged = aging.post_json(records("side-aged", 1)).await;
    assert!(aged.is_err(), "not closed at max age: {aged:?}");
    let mut idle = h1.http(worker.tls).await.unwrap();
    assert_eq!(idle.post_json(records("side-tls", 1)).await.unwrap().0, 202);
    let started = tokio::time::Instant::now();
    let status = worker.worker.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rows_of(&ch, &db, "side-aged"), 0);
}

#[test]
fn bad_tls_files_at_start_exit_2_saying_which_file_and_what_to_do() {
    let ca = Ca::new("zero-logs test CA");
    let server = ca.server(1);
    let files = TlsFiles::new(&server);
    let dir = files.dir.path();
    let path = |name: &str| dir.join(name).display().to_string();
    std::fs::write(dir.join("garbage.key"), "hello\n").unwrap();
    std::fs::write(dir.join("other.key"), ca.server(2).key_pem).unwrap();
    let (cert, key) = (
        files.cert().display().to_string(),
        files.key().display().to_string(),
    );

    type Case<'a> = (Vec<(&'a str, String)>, &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            vec![
                ("TLS_CERT_FILE", path("missing.crt")),
                ("TLS_KEY_FILE", key.clone()),
            ],
            &[
                "TLS_CERT_FILE=",
                "missing.crt",
                "No such file",
                "readable by the user",
            ],
        ),
        (
            vec![
                ("TLS_CERT_FILE", cert.clone()),
                ("TLS_KEY_FILE", path("garbage.key")),
            ],
            &["TLS_KEY_FILE=", "garbage.key", "holds no private key"],
        ),
        (
            vec![
                ("TLS_CERT_FILE", cert.clone()),
                ("TLS_KEY_FILE", path("other.key")),
            ],
            &[
                "other.key",
                "cannot be used with TLS_CERT_FILE",
                "private key of the first certificate",
            ],
        ),
        (
            vec![("TLS_CERT_FILE", cert.clone())],
            &["invalid TLS_CERT_FILE=", "needs TLS_KEY_FILE"],
        ),
    ];
    for (env, wanted) in cases {
        let (code, stderr) = start_failure(&env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        for want in wanted {
            assert!(stderr.contains(want), "{env:?}: {want:?} not in {stderr}");
        }
    }
    // The same files, valid, get past TLS (and then fail at ClickHouse, exit 1).
    let (code, stderr) = start_failure(&[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("ClickHouse unavailable"), "{stderr}");
    assert!(!stderr.contains("TLS_"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listen_addrs_pick_systemds_sockets_by_their_address() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let ca = Ca::new("zero-logs test CA");
    let files = TlsFiles::new(&ca.server(1));
    let client = TlsClient::new(&[&ca], None, H2);
    let plain: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tls: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let mut env = tls_env(&files);
    env.extend([
        ("CLICKHOUSE_URL", ch.http_url()),
        ("CLICKHOUSE_DATABASE", db.clone()),
        ("BATCH_MAX_AGE", "50".into()),
        ("SPOOL_DIR", spool.path().display().to_string()),
        // The unit's `ListenStream=PORT` style: any address of the port matches.
        ("TLS_LISTEN_ADDRS", format!("0.0.0.0:{}", tls.port())),
    ]);
    let log = spool.path().join("worker.log");
    let mut child = socket_activated(
        &[plain, tls],
        &env,
        std::fs::File::create(&log).unwrap().into(),
    );
    // The worker starts on the first connection; it may take a moment to serve.
    let mut reply = Err(String::new());
    for _ in 0..50 {
        reply = served(&client, tls, "activated-tls").await;
        if reply.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(err) = reply {
        panic!(
            "no TLS on the socket TLS_LISTEN_ADDRS names: {err}\n{}",
            log_text()
        );
    }
    let (status, _) = post_plain(plain, "activated-plain", 1).await;
    assert_eq!(status, 202, "plaintext on the other socket");
    assert!(
        client.http(plain).await.is_err(),
        "TLS on the plaintext socket"
    );
    assert_eq!(wait_rows_of(&ch, &db, "activated-tls", 1).await, 1);
    assert_eq!(wait_rows_of(&ch, &db, "activated-plain", 1).await, 1);
    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());

    // A TLS_LISTEN_ADDRS that names none of the sockets is an invalid setting.
    let typo = format!("127.0.0.1:{}", free_port());
    env.retain(|(k, _)| *k != "TLS_LISTEN_ADDRS");
    env.push(("TLS_LISTEN_ADDRS", typo.clone()));
    let (plain, tls) = (
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    let child = socket_activated(&[plain, tls], &env, std::process::Stdio::piped());
    // A connection starts the worker (once systemd-socket-activate listens).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(plain).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {plain}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = exited(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&typo) && stderr.contains("ListenStream="),
        "{stderr}"
    );
}

/// Issue 20's remote sender: the official OpenTelemetry Python SDK over TLS (trusting
/// the test CA through `OTEL_EXPORTER_OTLP_CERTIFICATE`) with a bearer key from
/// `OTEL_EXPORTER_OTLP_HEADERS`, over gRPC and HTTP/protobuf. Its rows land; without
/// the key, or without trusting the CA, nothing does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sends_over_tls_with_a_bearer_key() {
    use std::os::unix::fs::PermissionsExt;

    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let ca = Ca::new("zero-logs SDK test CA");
    let files = TlsFiles::new(&ca.server(1));
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "sdk sdk-secret-3e9b7c51a0d2f4 services=checkout\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let ca_file = ca_file.to_str().unwrap();

    let mut env = tls_env(&files);
    env.push(("INGEST_KEYS_FILE", keys.to_str().unwrap().to_owned()));
    let probe = TlsClient::new(&[&ca], None, H1);
    let worker = TlsWorker::start(&ch, &db, Layout::AllTls, &as_refs(&env), &probe).await;
    let endpoint = format!("https://localhost:{}", worker.tls.port());
    let key = (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "authorization=Bearer%20sdk-secret-3e9b7c51a0d2f4",
    );
    let trust = ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file);
    // python-requests (under the SDK's HTTP exporter) lets REQUESTS_CA_BUNDLE or
    // CURL_CA_BUNDLE, when set, override the CA file the exporter gives it; empty
    // values count as unset. (docs/SECURITY.md tells users the same.)
    let (no_bundle, no_curl) = (("REQUESTS_CA_BUNDLE", ""), ("CURL_CA_BUNDLE", ""));

    // The sender with `env` besides the empty bundles; (succeeded, stderr).
    let send = |protocol: &str, case: &str, count: usize, env: &[(&str, &str)]| {
        let run_id = format!("tls-{case}-{}", protocol.replace('/', "-"));
        let timeout: &[&str] = if count > 5 { &[] } else { &["--timeout", "5"] };
        let env = [env, &[no_bundle, no_curl]].concat();
        let out = otel_sdk::run(&endpoint, protocol, &run_id, count, timeout, &env);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stderr)
    };

    let mut expected = 0;
    for protocol in ["grpc", "http/protobuf"] {
        let (ok, stderr) = send(protocol, "keyed", 25, &[key, trust]);
        assert!(
            ok,
            "{protocol} over TLS with the key failed: {stderr}\nworker log:\n{}",
            worker.log_text()
        );
        expected += 25;
        let rows = wait_rows_of(&ch, &db, "checkout", expected).await;
        assert_eq!(rows, expected, "{protocol}");

        // Without the key: refused, nothing stored.
        let (ok, stderr) = send(protocol, "nokey", 5, &[trust]);
        assert!(!ok, "{protocol} without a key was delivered: {stderr}");
        assert!(
            stderr.contains("401") || stderr.contains("UNAUTHENTICATED"),
            "{protocol} without a key: {stderr}"
        );

        // With the key but not trusting the CA: the SDK's own verification fails.
        let (ok, stderr) = send(protocol, "untrusted", 5, &[key]);
        assert!(!ok, "{protocol} trusting no CA was delivered: {stderr}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rows_of(&ch, &db, "checkout"), expected);
}

/// `n` JSON records of `service` posted over plaintext HTTP/1.1; (status, body).
async fn post_plain(plain: std::net::SocketAddr, service: &str, n: usize) -> (u16, bytes::Bytes) {
    let (status, _, body) = post(
        &common::client(),
        &format!("http://{plain}/api/v1/logs"),
        &[("content-type", "application/json")],
        records(service, n),
    )
    .await
    .unwrap();
    (status, body)
}
