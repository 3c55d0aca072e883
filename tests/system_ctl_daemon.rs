//! System tests of the management daemon (`zero-logs-ctl daemon`, run by
//! `systemd/zero-logs-ctl.service`) against a real systemd booted in a
//! throw-away container (harness: `tests/system/`). The test process talks
//! to the daemon's API directly: the container shares the host's loopback.
//!
//! - `api_scale_stats_events_and_persistence_under_load`: the token file's
//!   rules (group-readable: refused to start, exit 2), `validate`, `GET /stats`
//!   (shape, and requests handled = requests sent), `GET /health`, 401/403/400,
//!   `POST /scale` 2→4→1 under load (0 failed, 0 lost, drained), the count
//!   across `daemon-reload` and a "reboot" (see the test), lifecycle events
//!   and the stats line in the journal.
//! - `watchdog_replaces_a_silent_worker_and_one_over_memory_under_load`:
//!   `POST /restart {"instance":2}` (404 for one not running); an
//!   instance whose admin socket stops answering is restarted after 2 missed
//!   checks, an instance over the daemon's memory limit is replaced, both
//!   gracefully under load (0 failed, 0 lost); a SIGKILLed worker gives
//!   `worker_exited` with the signal and systemd's restart.
//!
//! Needs root, `systemd-nspawn` and Debian's ClickHouse (`scripts/install-deps`);
//! fails loudly without them. Run:
//! `cargo test --features test-support --test system_ctl_daemon -- --nocapture`.

mod system;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use system::cluster::{assert_scaled_up, check_cluster_stats, http, running, Cluster};
use system::{load, wait_until, LoadReport, LoadSpec, SystemdContainer};

const TOKEN_FILE: &str = "/etc/zero-logs/api-token";
const TOKEN: &str = "test-token-0123456789abcdef";

/// A [`Cluster`] whose daemon API is on `api_port`.
struct Fixture {
    cl: Cluster,
    api_port: u16,
}

impl Fixture {
    /// `workers` running, `env` in the env file (and `CLUSTER_API_PORT`).
    fn start(workers: usize, env: &[(&str, &str)]) -> Fixture {
        let port = system::container::free_port().to_string();
        let mut all = vec![("CLUSTER_API_PORT", port.as_str())];
        all.extend_from_slice(env);
        Fixture {
            cl: Cluster::start(workers, &all),
            api_port: port.parse().unwrap(),
        }
    }

    fn c(&self) -> &SystemdContainer {
        self.cl.c()
    }

    /// Writes the token file 0600 and starts the daemon.
    fn start_daemon(&self) {
        let c = self.c();
        c.write_file(TOKEN_FILE, format!("{TOKEN}\n"));
        c.exec_ok(&["chmod", "600", TOKEN_FILE]);
        c.systemctl_ok(&["start", "zero-logs-ctl.service"]);
        assert_eq!(
            c.unit_property("zero-logs-ctl.service", "ActiveState"),
            "active"
        );
    }

    fn load(&self, service: &str, clients: usize, fresh: bool) -> system::RunningLoad {
        self.cl.load(LoadSpec {
            clients,
            records_per_request: 10,
            duration: Duration::from_secs(120),
            service: service.to_string(),
            fresh_connections: fresh,
            ..LoadSpec::default()
        })
    }

    fn stop(&self, running: system::RunningLoad, service: &str) -> LoadReport {
        let report = self.cl.rt.block_on(running.stop());
        eprintln!(
            "[daemon] load {service}: {}\n[daemon]   timeline {}",
            report.summary(),
            report.timeline()
        );
        report.assert_no_failures();
        assert_eq!(
            self.cl.wait_rows(service, report.acknowledged_records),
            report.acknowledged_records,
            "{service}: rows in ClickHouse differ from acknowledged records"
        );
        report
    }

    /// One API call: (status, JSON body).
    fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let t = Instant::now();
        let (status, text) = http(self.api_port, method, path, token, body);
        eprintln!(
            "[daemon] {method} {path} {} -> {status} in {} ms: {}",
            body.unwrap_or(""),
            t.elapsed().as_millis(),
            text.chars().take(300).collect::<String>()
        );
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (status, json)
    }

    /// Journal entries of the daemon with `EVENT=event` (and more matches).
    fn events(&self, event: &str, more: &[&str]) -> Vec<Value> {
        let matcher = format!("EVENT={event}");
        let mut args = vec!["-u", "zero-logs-ctl.service", matcher.as_str()];
        args.extend_from_slice(more);
        self.c().journal_query(&args)
    }
}

fn field<'a>(entry: &'a Value, name: &str) -> &'a str {
    entry[name].as_str().unwrap_or_default()
}

#[test]
fn api_scale_stats_events_and_persistence_under_load() {
    let mut f = Fixture::start(
        2,
        &[
            ("CLUSTER_MIN_WORKERS", "1"),
            ("CLUSTER_MAX_WORKERS", "4"),
            ("HEALTH_CHECK_INTERVAL", "1000"),
            ("LOG_CLUSTER_STATS", "true"),
            ("HEALTH_REPORT_INTERVAL", "1000"),
        ],
    );
    let c = f.c();

    // The unit passes systemd's checks; its sandbox, rated.
    let verify = c.analyze_verify(&["zero-logs-ctl.service"]);
    let report = system::container::describe(&["systemd-analyze", "verify"], &verify);
    assert!(verify.status.success(), "{report}");
    assert!(
        !String::from_utf8_lossy(&verify.stderr).contains("zero-logs-ctl"),
        "{report}"
    );
    let security = c.exec(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "zero-logs-ctl.service",
    ]);
    let rating = String::from_utf8_lossy(&security.stdout);
    let overall = rating
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("?");
    eprintln!("[daemon] systemd-analyze security zero-logs-ctl.service: {overall}\n{rating}");

    // validate: the shipped settings pass; a bad value is named with its file and line.
    let ok = c.exec(&["zero-logs-ctl", "validate"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    c.write_file("/tmp/bad/zero-logs.env", "HEALTH_CHECK_INTERVAL=soon\n");
    let bad = c.exec(&["zero-logs-ctl", "--config-dir", "/tmp/bad", "validate"]);
    let said = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(2), "{said}");
    assert!(
        said.contains("/tmp/bad/zero-logs.env:1") && said.contains("HEALTH_CHECK_INTERVAL"),
        "{said}"
    );

    // A token file others can read: the daemon refuses to start, exit 2, and says why.
    c.write_file(TOKEN_FILE, format!("{TOKEN}\n"));
    c.exec_ok(&["chmod", "644", TOKEN_FILE]);
    assert!(!c
        .systemctl(&["start", "zero-logs-ctl.service"])
        .status
        .success());
    let p = c.unit_properties("zero-logs-ctl.service", &["ActiveState", "ExecMainStatus"]);
    assert_eq!(
        (p["ActiveState"].as_str(), p["ExecMainStatus"].as_str()),
        ("failed", "2"),
        "{p:?}"
    );
    let said: String = c
        .journal_json("zero-logs-ctl.service")
        .iter()
        .filter_map(|e| e["MESSAGE"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        said.contains("must not be readable or writable by group or others"),
        "{said}"
    );
    c.systemctl_ok(&["reset-failed", "zero-logs-ctl.service"]);
    // 0600 but someone else's: refused too.
    c.exec_ok(&["chmod", "600", TOKEN_FILE]);
    c.exec_ok(&["chown", "65534", TOKEN_FILE]);
    assert!(!c
        .systemctl(&["start", "zero-logs-ctl.service"])
        .status
        .success());
    assert_eq!(
        c.unit_property("zero-logs-ctl.service", "ExecMainStatus"),
        "2"
    );
    c.systemctl_ok(&["reset-failed", "zero-logs-ctl.service"]);
    c.exec_ok(&["chown", "0", TOKEN_FILE]);
    let t = Instant::now();
    f.start_daemon();
    eprintln!("[daemon] start to READY: {} ms", t.elapsed().as_millis());

    // GET /health, GET /stats: the cluster API's shape; requestsHandled adds up to the load.
    let (status, health) = f.api("GET", "/health", None, None);
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("healthy")),
        "{health}"
    );
    let report = f.cl.rt.block_on(load::run(
        &c.base_url(),
        LoadSpec {
            clients: 4,
            records_per_request: 5,
            max_requests_per_client: 25,
            duration: Duration::from_secs(30),
            service: "daemon-stats".into(),
            fresh_connections: true,
            ..LoadSpec::default()
        },
    ));
    report.assert_no_failures();
    let (status, stats) = f.api("GET", "/stats", None, None);
    assert_eq!(status, 200);
    let daemon_pid: u64 = c
        .unit_property("zero-logs-ctl.service", "MainPID")
        .parse()
        .unwrap();
    assert_eq!(stats["master"]["ctlPid"], daemon_pid, "{stats}");
    assert_eq!(stats["cluster"]["workers"], 2, "{stats}");
    assert_eq!(stats["cluster"]["maxWorkers"], 4, "{stats}");
    assert_eq!(stats["cluster"]["totalRequests"], 100, "{stats}");
    let pids = running(c);
    let handled = check_cluster_stats(&stats, &pids);
    assert_eq!(handled, report.requests);
    assert_eq!(
        f.cl.wait_rows("daemon-stats", report.acknowledged_records),
        report.acknowledged_records
    );

    // Under load from here on.
    let fresh = f.load("daemon-scale-fresh", 4, true);
    let keepalive = f.load("daemon-scale-keepalive", 2, false);
    std::thread::sleep(Duration::from_millis(500));

    // Authorization and bad bodies: nothing changes.
    let scale_file = "/etc/zero-logs/zero-logs.env.d/50-scale.env";
    let (s, body) = f.api("POST", "/scale", None, Some(r#"{"workers":3}"#));
    assert_eq!(s, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let (s, body) = f.api(
        "POST",
        "/scale",
        Some("wrong-token-0123456789abcdef"),
        Some(r#"{"workers":3}"#),
    );
    assert_eq!(s, 403, "{body}");
    let (s, body) = f.api("POST", "/restart", Some("x"), None);
    assert_eq!(s, 403, "{body}");
    let (s, body) = f.api("POST", "/scale", Some(TOKEN), Some(r#"{"workers":99}"#));
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("above CLUSTER_MAX_WORKERS=4"),
        "{body}"
    );
    for bad in [
        r#"{"workers":"many"}"#,
        r#"{"workers":0}"#,
        r#"{"nodes":3}"#,
        "3 workers",
        "",
    ] {
        let (s, body) = f.api("POST", "/scale", Some(TOKEN), Some(bad));
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(
        c.read_file(scale_file),
        None,
        "a refused scale wrote {scale_file}"
    );
    assert_eq!(running(c), pids);

    // POST /scale 4, then 1, under load.
    let t = Instant::now();
    let (s, body) = f.api("POST", "/scale", Some(TOKEN), Some(r#"{"workers":4}"#));
    let up = t.elapsed();
    assert_eq!((s, body["ok"].as_bool()), (200, Some(true)), "{body}");
    let four = assert_scaled_up(c, &pids, &["1", "2", "3", "4"]);
    let t = Instant::now();
    let (s, body) = f.api("POST", "/scale", Some(TOKEN), Some(r#"{"workers":1}"#));
    let down = t.elapsed();
    assert_eq!(s, 200, "{body}");
    let progress = body["progress"].to_string();
    for i in 2..=4 {
        assert!(
            progress.contains(&format!(
                "zero-logs@{i}.service: stopped cleanly (exit status 0)"
            )),
            "{progress}"
        );
    }
    assert_eq!(running(c).keys().collect::<Vec<_>>(), ["1"]);
    std::thread::sleep(Duration::from_millis(500));
    let fresh = f.stop(fresh, "daemon-scale-fresh");
    let keepalive = f.stop(keepalive, "daemon-scale-keepalive");
    eprintln!(
        "[daemon] API scale 2->4 {} ms, 4->1 {} ms; under load: {} + {} requests, 0 failed",
        up.as_millis(),
        down.as_millis(),
        fresh.requests,
        keepalive.requests
    );

    // Lifecycle events in the journal, by EVENT=.
    let scaled = f.events("scaled", &[]);
    let tos: Vec<&str> = scaled.iter().map(|e| field(e, "TO_WORKERS")).collect();
    assert_eq!(tos, ["4", "1"], "{scaled:?}");
    assert!(
        scaled.iter().all(|e| field(e, "SCALED_BY") == "api"),
        "{scaled:?}"
    );
    let started = f.events("worker_started", &["WORKER_ID=3"]);
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(field(&started[0], "WORKER_PID"), four["3"].to_string());
    for i in ["2", "3", "4"] {
        let matcher = format!("WORKER_ID={i}");
        let exited = f.events("worker_exited", &[matcher.as_str()]);
        assert_eq!(exited.len(), 1, "instance {i}: {exited:?}");
        let e = &exited[0];
        assert_eq!(
            (field(e, "EXIT_CODE"), field(e, "EXIT_STATUS")),
            ("exited", "0"),
            "{e}"
        );
        assert!(
            field(e, "UPTIME_SECONDS").parse::<f64>().unwrap() > 0.0,
            "{e}"
        );
    }
    // LOG_CLUSTER_STATS=true, HEALTH_REPORT_INTERVAL=1000: stats lines keep
    // coming, and they follow the cluster (one wanted worker now).
    let t = Instant::now();
    let line = wait_until(
        "a cluster_stats line with 1 worker",
        Duration::from_secs(10),
        |last| {
            let e = f.events("cluster_stats", &[]);
            *last = format!("{} lines", e.len());
            e.into_iter()
                .find(|l| field(l, "WANTED_WORKERS") == "1" && field(l, "WORKERS") == "1")
        },
    );
    assert!(
        field(&line, "TOTAL_REQUESTS").parse::<u64>().is_ok(),
        "{line}"
    );
    assert_eq!(field(&line, "HEALTHY_WORKERS"), "1", "{line}");
    eprintln!(
        "[daemon] waited {} ms for a stats line with 1 worker",
        t.elapsed().as_millis()
    );

    // SIGTERM stops the daemon cleanly, the workers keep running.
    let t = Instant::now();
    c.systemctl_ok(&["stop", "zero-logs-ctl.service"]);
    let stop = t.elapsed();
    let p = c.unit_properties(
        "zero-logs-ctl.service",
        &["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"],
    );
    assert_eq!(
        (
            p["ActiveState"].as_str(),
            p["Result"].as_str(),
            p["ExecMainStatus"].as_str()
        ),
        ("inactive", "success", "0"),
        "{p:?}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", f.api_port)).is_err(),
        "API still listening"
    );
    assert_eq!(running(c).keys().collect::<Vec<_>>(), ["1"]);
    eprintln!("[daemon] stop (SIGTERM) took {} ms", stop.as_millis());

    // The count persists: across daemon-reload and a restart of the target ...
    c.daemon_reload();
    c.systemctl_ok(&["restart", "zero-logs.target"]);
    c.wait_instances_running(1, Duration::from_secs(30));
    assert_eq!(running(c).keys().collect::<Vec<_>>(), ["1"]);
    // ... and across a reboot. The harness keeps the container's writable layer
    // in a tmpfs that dies with it, and nspawn's reboot ends the process that
    // holds it, so a reboot here is: the persisted state (/etc/zero-logs, all
    // that survives a reboot of a real host for us) booted in a new container,
    // with the units enabled as the package enables them.
    let persisted = c
        .read_file("/etc/zero-logs/zero-logs.env.d/50-scale.env")
        .expect("50-scale.env");
    assert!(
        persisted.lines().any(|l| l == "CLUSTER_WORKERS=1"),
        "{persisted}"
    );
    let token = c.read_file(TOKEN_FILE).unwrap();
    let t = Instant::now();
    let mut opts = Cluster::options(&f.cl.ch, &f.cl.db)
        .env("CLUSTER_WORKERS", "2")
        .env("CLUSTER_API_PORT", f.api_port.to_string())
        .file("/etc/zero-logs/zero-logs.env.d/50-scale.env", persisted)
        .enable("zero-logs.socket")
        .enable("zero-logs.target")
        .enable("zero-logs-ctl.service");
    opts.files
        .push((TOKEN_FILE.into(), token.into_bytes(), 0o600));
    f.cl.reboot(opts);
    let c = f.c();
    let after_boot = c.wait_instances_running(1, Duration::from_secs(60));
    assert_eq!(
        after_boot.keys().collect::<Vec<_>>(),
        ["1"],
        "{after_boot:?}"
    );
    wait_until(
        "zero-logs-ctl.service active after boot",
        Duration::from_secs(30),
        |last| {
            *last = c.unit_property("zero-logs-ctl.service", "ActiveState");
            (last == "active").then_some(())
        },
    );
    let (s, stats) = f.api("GET", "/stats", None, None);
    assert_eq!(
        (s, stats["cluster"]["wantedWorkers"].as_u64()),
        (200, Some(1)),
        "{stats}"
    );
    eprintln!(
        "[daemon] 'reboot' to 1 instance + daemon up: {} ms",
        t.elapsed().as_millis()
    );
    f.cl.done("api_scale_stats_events_and_persistence_under_load");
}

/// Waits until `instance` runs with a PID other than `old`; returns it.
fn replaced(c: &SystemdContainer, instance: &str, old: u32, within: Duration) -> u32 {
    wait_until(&format!("zero-logs@{instance} replaced"), within, |last| {
        let now = running(c);
        *last = format!("{now:?}");
        now.get(instance).copied().filter(|pid| *pid != old)
    })
}

#[test]
fn watchdog_replaces_a_silent_worker_and_one_over_memory_under_load() {
    let f = Fixture::start(
        2,
        &[
            ("HEALTH_CHECK_INTERVAL", "1000"),
            // The worker's own limit off, the daemon's at 150 MiB: this tests the
            // daemon's line of defence alone (an idle worker has ~11 MiB RSS).
            ("WORKER_MEMORY_LIMIT", "0"),
            ("CTL_MEMORY_LIMIT", "150MiB"),
        ],
    );
    let c = f.c();
    f.start_daemon();
    let fresh = f.load("daemon-watchdog-fresh", 4, true);
    let keepalive = f.load("daemon-watchdog-keepalive", 2, false);
    std::thread::sleep(Duration::from_millis(1500));
    let start = running(c);

    // POST /restart {"instance":K} under load: that instance only, drained.
    let (s, body) = f.api("POST", "/restart", Some(TOKEN), Some(r#"{"instance":7}"#));
    assert_eq!(s, 404, "{body}");
    let t = Instant::now();
    let (s, body) = f.api("POST", "/restart", Some(TOKEN), Some(r#"{"instance":2}"#));
    let api_restart = t.elapsed();
    assert_eq!((s, body["ok"].as_bool()), (200, Some(true)), "{body}");
    let before = running(c);
    assert_eq!(before["1"], start["1"], "instance 1 was touched");
    assert_ne!(before["2"], start["2"], "instance 2 kept its pid");
    let by_api = f.events("worker_restarted", &["WORKER_ID=2"]);
    assert_eq!(by_api.len(), 1, "{by_api:?}");
    assert_eq!(field(&by_api[0], "REASON"), "API request");
    assert_eq!(field(&by_api[0], "OLD_PID"), start["2"].to_string());

    // Instance 2's admin socket stops answering: restarted after 2 missed checks.
    let (s, said) = c.admin_post("2", "/debug/stall-health?ms=120000").unwrap();
    assert_eq!(s, 200, "{said}");
    let t = Instant::now();
    let new2 = replaced(c, "2", before["2"], Duration::from_secs(30));
    let health_restart = t.elapsed();
    assert_eq!(running(c)["1"], before["1"], "instance 1 was touched");
    let unhealthy = f.events("worker_unhealthy", &["WORKER_ID=2"]);
    assert_eq!(unhealthy.len(), 1, "{unhealthy:?}");
    assert_eq!(field(&unhealthy[0], "MISSES"), "2");
    assert!(
        field(&unhealthy[0], "REASON").contains("no answer"),
        "{unhealthy:?}"
    );
    let restarted = wait_until("worker_restarted of 2", Duration::from_secs(10), |last| {
        let e = f.events("worker_restarted", &["WORKER_ID=2", "REASON=unhealthy"]);
        *last = format!("{e:?}");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(field(&restarted[0], "REASON"), "unhealthy");
    assert_eq!(field(&restarted[0], "WORKER_PID"), new2.to_string());
    let exited = f.events("worker_exited", &["WORKER_ID=2"]);
    assert_eq!(
        exited
            .iter()
            .map(|e| (field(e, "EXIT_CODE"), field(e, "EXIT_STATUS")))
            .collect::<Vec<_>>(),
        [("exited", "0"), ("exited", "0")],
        "the worker restarted by the API and the stalled one drained and exited 0: {exited:?}"
    );

    // Instance 1 grows over the daemon's limit: replaced gracefully.
    let (s, said) = c.admin_post("1", "/debug/grow-memory?mb=200").unwrap();
    assert_eq!(s, 200, "{said}");
    let t = Instant::now();
    let new1 = replaced(c, "1", before["1"], Duration::from_secs(30));
    let memory_restart = t.elapsed();
    let over = f.events("worker_memory_limit", &["WORKER_ID=1"]);
    assert_eq!(over.len(), 1, "{over:?}");
    assert_eq!(
        field(&over[0], "MEMORY_SOURCE"),
        "rss",
        "no cgroup memory in the container"
    );
    assert!(field(&over[0], "MEMORY_BYTES").parse::<u64>().unwrap() > 150 << 20);
    let restarted = wait_until("worker_restarted of 1", Duration::from_secs(10), |last| {
        let e = f.events("worker_restarted", &["WORKER_ID=1"]);
        *last = format!("{e:?}");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(field(&restarted[0], "REASON"), "memory limit");
    assert_eq!(field(&restarted[0], "WORKER_PID"), new1.to_string());
    // Only the two restarts: nothing else was touched meanwhile.
    assert_eq!(
        running(c),
        BTreeMap::from([("1".to_string(), new1), ("2".to_string(), new2)])
    );

    std::thread::sleep(Duration::from_millis(500));
    f.stop(fresh, "daemon-watchdog-fresh");
    f.stop(keepalive, "daemon-watchdog-keepalive");

    // A crash (no load now): worker_exited with the signal, then systemd's restart.
    c.kill_inside(new2, "KILL");
    let new2b = replaced(c, "2", new2, Duration::from_secs(30));
    let crash = wait_until(
        "worker_exited by SIGKILL",
        Duration::from_secs(10),
        |last| {
            let e = f.events("worker_exited", &["WORKER_ID=2", "EXIT_CODE=killed"]);
            *last = format!("{e:?}");
            (!e.is_empty()).then_some(e)
        },
    );
    assert_eq!(field(&crash[0], "EXIT_STATUS"), "9");
    assert_eq!(field(&crash[0], "WORKER_PID"), new2.to_string());
    let by_systemd = f.events("worker_restarted", &["WORKER_ID=2", "RESTARTED_BY=systemd"]);
    assert_eq!(by_systemd.len(), 1, "{by_systemd:?}");
    let started = f.events("worker_started", &["WORKER_ID=2"]);
    assert!(
        started
            .iter()
            .any(|e| field(e, "WORKER_PID") == new2b.to_string()),
        "{started:?}"
    );

    eprintln!(
        "[daemon] POST /restart of one instance: {} ms; stalled health -> new process running: {} ms; \
         memory over limit -> replaced: {} ms",
        api_restart.as_millis(),
        health_restart.as_millis(),
        memory_restart.as_millis()
    );
    f.cl.done("watchdog_replaces_a_silent_worker_and_one_over_memory_under_load");
}
