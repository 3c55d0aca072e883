//! System tests of the systemd units (`systemd/`) against a real systemd booted in a
//! throw-away container (harness: `tests/system/`, recipe: SYSTEMD-TESTS.md).
//!
//! Needs root, `systemd-nspawn` (`scripts/install-deps`) and Debian's ClickHouse;
//! fails loudly without them. Run:
//! `cargo test --features test-support --test system_units -- --nocapture`.
//! Containers run one at a time (see `tests/system/mod.rs`); each scenario prints its
//! boot time and its total time.

mod system;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use system::{BootOptions, SystemdContainer, UnitFiles};
use zero_logs::testing::ClickHouseServer;

/// The units this file tests, installed as the package does.
const UNITS: [&str; 3] = [
    "/usr/lib/systemd/system/zero-logs.socket",
    "/usr/lib/systemd/system/zero-logs.target",
    "/usr/lib/systemd/system/zero-logs@.service",
];

fn boot(opts: BootOptions) -> SystemdContainer {
    SystemdContainer::boot(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Env file lines every scenario needs: this test's ClickHouse and database, fast
/// flushes.
fn base_options(ch: &ClickHouseServer, database: &str, workers: usize) -> BootOptions {
    BootOptions::new()
        .env("CLICKHOUSE_URL", ch.http_url())
        .env("CLICKHOUSE_DATABASE", database)
        .env("CLUSTER_WORKERS", workers.to_string())
        .env("BATCH_MAX_AGE", "50")
}

async fn post_json(url: &str, body: String) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The zero-logs journal lines that tell why something went wrong.
fn trouble(c: &SystemdContainer) -> String {
    let lines: Vec<String> = c
        .journal_json("zero-logs*")
        .iter()
        .filter_map(|e| {
            let message = e["MESSAGE"].as_str()?;
            let lower = message.to_lowercase();
            [
                "panicked", "exited", "failed", "error", "watchdog", "blocking",
            ]
            .iter()
            .any(|w| lower.contains(w))
            .then(|| {
                format!(
                    "{}: {message}",
                    e["SYSLOG_IDENTIFIER"].as_str().unwrap_or("?")
                )
            })
        })
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn count(ch: &ClickHouseServer, sql: &str) -> u64 {
    ch.query(sql).unwrap().trim().parse().unwrap()
}

/// The harness itself, on a trivial unit: boot, commands, files, units, journal,
/// PIDs across the namespace, and a teardown that leaves nothing behind.
#[test]
fn harness_boots_a_container_and_leaves_nothing_behind() {
    let t0 = Instant::now();
    let unit = "[Unit]\nDescription=harness probe\n[Service]\nType=notify\nNotifyAccess=all\n\
                ExecStart=/bin/sh -c 'echo probe-started; systemd-notify --ready; exec sleep 600'\n";
    let c = boot(
        BootOptions::new()
            .units(UnitFiles::Inline(vec![(
                "probe.service".into(),
                unit.into(),
            )]))
            .env("HELLO", "world"),
    );
    let (name, work, log) = (
        c.name().to_string(),
        std::env::temp_dir().join(c.name()),
        c.log_path().to_path_buf(),
    );
    assert!(work.is_dir());
    assert_eq!(
        c.read_file(system::container::ENV_FILE)
            .unwrap()
            .lines()
            .last(),
        Some("HELLO=world")
    );
    c.write_file("/etc/probe/hello.txt", "hi\n");
    assert_eq!(c.read_file("/etc/probe/hello.txt").as_deref(), Some("hi\n"));
    // The host's root is untouched.
    assert!(!std::path::Path::new("/etc/probe/hello.txt").exists());

    c.systemctl_ok(&["start", "probe.service"]);
    let props = c.unit_properties("probe.service", &["ActiveState", "SubState", "MainPID"]);
    assert_eq!(props["ActiveState"], "active", "{props:?}");
    assert_eq!(props["SubState"], "running", "{props:?}");
    let main: u32 = props["MainPID"].parse().unwrap();
    let host = c.host_pid(main).expect("host pid of the probe");
    assert_ne!(host, main, "the container has its own PID namespace");
    // READY=1 comes from the shell just before it execs sleep.
    system::wait_until("the probe to exec sleep", Duration::from_secs(10), |last| {
        *last = std::fs::read_to_string(format!("/proc/{host}/comm")).unwrap_or_default();
        (last.trim() == "sleep").then_some(())
    });

    let journal = c.journal_json("probe.service");
    assert!(
        journal
            .iter()
            .any(|e| e["MESSAGE"].as_str() == Some("probe-started")),
        "{journal:?}"
    );
    // `systemd-analyze verify` does catch mistakes, in templates too.
    c.write_file(
        "/etc/systemd/system/bogus@.service",
        "[Service]\nExecStart=relative/path %i\nNoSuchKey=1\n",
    );
    let verify = c.analyze_verify(&["/etc/systemd/system/bogus@.service"]);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(!verify.status.success(), "{stderr}");
    assert!(stderr.contains("bogus@"), "{stderr}");
    eprintln!("[harness] verify of a broken template: {stderr}");

    c.kill_inside(main, "KILL");
    system::wait_until("probe to die", Duration::from_secs(10), |last| {
        *last = c.unit_property("probe.service", "ActiveState");
        (last.as_str() == "failed").then_some(())
    });

    let init = c.init_pid();
    let boot_time = c.boot_time();
    let dropped = Instant::now();
    drop(c);
    let teardown = dropped.elapsed();
    assert!(
        !std::path::Path::new(&format!("/proc/{init}")).exists(),
        "container systemd still running"
    );
    assert!(!work.exists(), "{} left behind", work.display());
    assert!(!log.exists());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&name),
        "a mount of {name} is visible on the host"
    );
    for hierarchy in [
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        let leftover = std::path::Path::new(hierarchy).join(&name);
        assert!(
            !leftover.exists(),
            "cgroup {} left behind",
            leftover.display()
        );
    }
    eprintln!(
        "[timing] harness: boot {} ms, teardown {} ms, test total {} ms",
        boot_time.as_millis(),
        teardown.as_millis(),
        t0.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_target_runs_n_ready_instances_and_a_batch_lands() {
    let t0 = Instant::now();
    let ch = ClickHouseServer::start().unwrap_or_else(|e| panic!("{e}"));
    let db = ch.fresh_database();
    let c = boot(base_options(&ch, &db, 3));

    // The installed units pass systemd's own checks, in the container's systemd.
    let verify = c.analyze_verify(&UNITS);
    let report = system::container::describe(&["systemd-analyze", "verify"], &verify);
    assert!(verify.status.success(), "{report}");
    let complaints: Vec<&str> = std::str::from_utf8(&verify.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.contains("zero-logs"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complains:\n{report}"
    );

    let started = Instant::now();
    let out = c.systemctl_async(&["start", "zero-logs.target"]).await;
    assert!(
        out.status.success(),
        "{}",
        system::container::describe(&["systemctl", "start", "zero-logs.target"], &out)
    );
    let instances = c.wait_instances_running(3, Duration::from_secs(60));
    let start_time = started.elapsed();
    assert_eq!(
        instances.keys().map(String::as_str).collect::<Vec<_>>(),
        ["1", "2", "3"],
        "{instances:?}"
    );
    for state in instances.values() {
        // Type=notify: `running` only after READY=1.
        assert_eq!(
            (state.active_state.as_str(), state.sub_state.as_str()),
            ("active", "running"),
            "{state:?}"
        );
        assert_ne!(state.main_pid, 0);
    }
    // Every instance came up on its first try: none crashed and was restarted.
    if instances.values().any(|s| s.n_restarts > 0) {
        panic!(
            "an instance was restarted while zero-logs.target started: {instances:?}\n\
             journal:\n{}",
            trouble(&c)
        );
    }
    eprintln!("[units] {instances:?}");
    assert_eq!(c.unit_property("zero-logs.socket", "ActiveState"), "active");
    assert_eq!(c.unit_property("zero-logs.target", "ActiveState"), "active");

    let batch: Vec<serde_json::Value> = (0..25)
        .map(|i| {
            serde_json::json!({
                "timestamp": "2024-05-01T12:00:00.123456789Z",
                "level": "info",
                "service": "system-units",
                "message": format!("record {i}"),
                "attributes": {"i": i},
            })
        })
        .collect();
    let (status, body) = post_json(
        &format!("{}/api/v1/logs", c.base_url()),
        serde_json::to_string(&batch).unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (202, r#"{"accepted":25}"#));
    // Acknowledged once spooled; in ClickHouse shortly after.
    let sql = format!("SELECT count() FROM {db}.logs WHERE service = 'system-units'");
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(&ch, &sql) < 25 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count(&ch, &sql), 25);

    // Each instance answers on its own admin socket, under its own worker id.
    let stats = c.stats_all();
    assert_eq!(stats.len(), 3, "{stats:?}");
    for (instance, s) in &stats {
        assert_eq!(
            s["worker_id"].to_string().trim_matches('"'),
            instance,
            "{s}"
        );
        // The default ACK_MODE spools under StateDirectory=, one directory per instance.
        assert_eq!(s["ack_mode"], "spool", "{s}");
        assert!(s["spool"]["max_bytes"].as_u64().unwrap_or(0) > 0, "{s}");
        c.exec_ok(&[
            "test",
            "-f",
            &format!("/var/lib/zero-logs/spool/{instance}/LOCK"),
        ]);
    }
    let accepted: u64 = stats
        .values()
        .map(|s| s["records_accepted"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(accepted, 25, "{stats:?}");

    // `systemctl reload` (ExecReload= sends SIGHUP from inside the unit's sandbox)
    // reaches every worker and ends none: same PIDs, no restart.
    let out = c.systemctl(&["reload", "zero-logs@*"]);
    assert!(
        out.status.success(),
        "{}",
        system::container::describe(&["systemctl", "reload"], &out)
    );
    std::thread::sleep(Duration::from_millis(500));
    let reloaded = c.wait_instances_running(3, Duration::from_secs(10));
    for (instance, state) in &reloaded {
        assert_eq!(state.main_pid, instances[instance].main_pid, "{reloaded:?}");
        assert_eq!(state.n_restarts, 0, "{reloaded:?}");
    }
    let sighup_seen = c
        .journal_json("zero-logs@1.service")
        .iter()
        .any(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains("SIGHUP")));
    assert!(sighup_seen, "no SIGHUP seen by worker 1:\n{}", trouble(&c));

    eprintln!(
        "[timing] start_target: ClickHouse + boot {} ms (boot {} ms), target start to 3 running {} ms, test total {} ms",
        (started - t0).as_millis(),
        c.boot_time().as_millis(),
        start_time.as_millis(),
        t0.elapsed().as_millis()
    );
}
