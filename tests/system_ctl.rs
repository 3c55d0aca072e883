//! System tests of `zero-logs-ctl` against a real systemd booted in a throw-away
//! container (harness: `tests/system/`, recipe: SYSTEMD-TESTS.md). The harness
//! installs the freshly built `zero-logs-ctl` as `/usr/bin/zero-logs-ctl`; every
//! command here runs it inside the container, as root, the way an operator would.
//!
//! - `status_stats_health_and_scale`: status table and JSON over both D-Bus
//!   transports, `stats --json` shape and request totals, `health` exit statuses,
//!   `scale` up / refused / down, persistence across `daemon-reload`.
//! - `rolling_restart_under_load_fails_nothing`: `restart`, `restart --instance`
//!   and `restart --surge` under load: zero failed requests, zero lost rows,
//!   new PIDs.
//!
//! Needs root, `systemd-nspawn` (`scripts/install-deps`) and Debian's ClickHouse;
//! fails loudly without them. Run:
//! `cargo test --features test-support --test system_ctl -- --nocapture`.

mod system;

use std::time::{Duration, Instant};

use system::cluster::{assert_scaled_up, check_cluster_stats, running, Cluster};
use system::{load, LoadReport, LoadSpec, SystemdContainer};

/// What one `zero-logs-ctl` run did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `zero-logs-ctl args…` inside the container and prints what it said.
fn ctl(c: &SystemdContainer, args: &[&str]) -> Run {
    let mut full = vec!["zero-logs-ctl"];
    full.extend_from_slice(args);
    let started = Instant::now();
    let out = c.exec_timeout(&full, Duration::from_secs(120));
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "[ctl] $ {} -> exit {} in {} ms\n{}{}",
        full.join(" "),
        run.code,
        started.elapsed().as_millis(),
        run.stdout,
        run.stderr
    );
    run
}

/// [`ctl`] that must exit 0; returns stdout.
fn ctl_ok(c: &SystemdContainer, args: &[&str]) -> String {
    let run = ctl(c, args);
    assert_eq!(
        run.code,
        0,
        "zero-logs-ctl {args:?} failed:\n{}{}\n{}",
        run.stdout,
        run.stderr,
        c.diagnostics()
    );
    run.stdout
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Instances `zero-logs.target` wants, sorted by number.
fn wanted(c: &SystemdContainer) -> Vec<u32> {
    let mut v: Vec<u32> = c
        .unit_property("zero-logs.target", "Wants")
        .split_whitespace()
        .filter_map(|u| {
            u.strip_prefix("zero-logs@")?
                .strip_suffix(".service")?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn status_stats_health_and_scale() {
    let f = Cluster::start(2, &[("CLUSTER_MAX_WORKERS", "6")]);
    let c = f.c();

    // Which D-Bus transports this container has: the tool must work on either.
    let dbus = c.systemctl(&["is-active", "dbus.socket", "dbus.service"]);
    let dbus_state = String::from_utf8_lossy(&dbus.stdout).replace('\n', " ");
    let dbus_active = dbus.status.success();
    eprintln!("[ctl] dbus.socket dbus.service: {dbus_state}");

    // status: both instances, with systemd's PIDs.
    let pids = running(c);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let table = ctl_ok(c, &["status"]);
    for (instance, pid) in &pids {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(instance.as_str()))
            .unwrap_or_else(|| panic!("no row for instance {instance}:\n{table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "active/running", "{row}");
        assert_eq!(cells[2], pid.to_string(), "{row}");
        assert!(row.ends_with(" ok"), "{row}");
    }
    assert!(
        table.contains("N = 2 (CLUSTER_WORKERS=2 from /etc/zero-logs/zero-logs.env"),
        "{table}"
    );
    for bus in ["private", "system"] {
        if bus == "system" && !dbus_active {
            continue;
        }
        let s = json(&ctl_ok(c, &["--bus", bus, "status", "--json"]));
        assert_eq!(s["bus"], bus, "{s}");
        assert_eq!(s["workers"]["running"], 2, "{s}");
        assert_eq!(s["workers"]["healthy"], 2, "{s}");
        let instances = s["instances"].as_array().unwrap();
        for i in instances {
            let pid = pids[i["instance"].as_str().unwrap()];
            assert_eq!(i["pid"], pid, "{i}");
            assert!(i["uptime"].as_f64().unwrap() > 0.0, "{i}");
            // No memory accounting in the container: the worker's RSS stands in.
            assert_eq!(i["memorySource"], "rss", "{i}");
            assert!(i["memoryBytes"].as_u64().unwrap() > 1 << 20, "{i}");
        }
    }

    // stats --json: the cluster API shape; requestsHandled adds up to the load.
    let report: LoadReport = f.rt.block_on(load::run(
        &c.base_url(),
        LoadSpec {
            clients: 4,
            records_per_request: 5,
            max_requests_per_client: 25,
            duration: Duration::from_secs(30),
            service: "ctl-stats".into(),
            fresh_connections: true,
            ..LoadSpec::default()
        },
    ));
    report.assert_no_failures();
    assert_eq!(report.requests, 100, "{}", report.summary());
    let stats = json(&ctl_ok(c, &["stats", "--json"]));
    let cluster = &stats["cluster"];
    assert_eq!(cluster["workers"], 2, "{stats}");
    assert_eq!(cluster["wantedWorkers"], 2, "{stats}");
    assert_eq!(cluster["healthyWorkers"], 2, "{stats}");
    assert_eq!(cluster["maxWorkers"], 6, "{stats}");
    assert_eq!(cluster["totalRequests"], report.requests, "{stats}");
    let handled = check_cluster_stats(&stats, &pids);
    assert_eq!(handled, report.requests, "{stats}");
    assert_eq!(
        f.wait_rows("ctl-stats", report.acknowledged_records),
        report.acknowledged_records
    );

    // health: 0 healthy, 1 degraded, 2 down.
    let h = ctl(c, &["health"]);
    assert_eq!((h.code, h.stdout.trim()), (0, "healthy: 2/2 instances ok"));
    c.systemctl_ok(&["stop", "zero-logs@2.service"]);
    let h = ctl(c, &["health"]);
    assert_eq!(h.code, 1, "{}", h.stdout);
    assert!(
        h.stdout.starts_with("degraded: 1/2") && h.stdout.contains("zero-logs@2"),
        "{}",
        h.stdout
    );
    let hj = json(&ctl(c, &["health", "--json"]).stdout);
    assert_eq!(
        (hj["status"].as_str(), hj["healthy"].as_u64()),
        (Some("degraded"), Some(1)),
        "{hj}"
    );
    c.systemctl_ok(&["stop", "zero-logs@1.service"]);
    let h = ctl(c, &["health"]);
    assert_eq!(h.code, 2, "{}", h.stdout);
    assert!(h.stdout.starts_with("down: "), "{}", h.stdout);
    c.systemctl_ok(&["start", "zero-logs.target"]);
    c.wait_instances_running(2, Duration::from_secs(30));

    // scale 4: two more instances, persistent across daemon-reload.
    let before = running(c);
    let t = Instant::now();
    let out = ctl_ok(c, &["scale", "4"]);
    let scale_up = t.elapsed();
    assert!(out.contains("zero-logs@3.service: running"), "{out}");
    assert!(out.contains("zero-logs@4.service: running"), "{out}");
    let after = assert_scaled_up(c, &before, &["1", "2", "3", "4"]);
    let scale_file = "/etc/zero-logs/zero-logs.env.d/50-scale.env";
    let persisted = c.read_file(scale_file).expect("50-scale.env");
    assert!(
        persisted.lines().any(|l| l == "CLUSTER_WORKERS=4"),
        "{persisted}"
    );
    c.daemon_reload();
    assert_eq!(wanted(c), [1, 2, 3, 4]);
    assert_eq!(running(c), after, "daemon-reload changed the running set");
    let table = ctl_ok(c, &["status"]);
    assert!(
        table.contains("N = 4 (CLUSTER_WORKERS=4 from /etc/zero-logs/zero-logs.env.d/50-scale.env"),
        "{table}"
    );
    assert_eq!(ctl(c, &["health"]).code, 0);

    // scale 99: refused, nothing changed.
    let refused = ctl(c, &["scale", "99"]);
    assert_eq!(refused.code, 2, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("above CLUSTER_MAX_WORKERS=6"),
        "{}",
        refused.stderr
    );
    assert_eq!(c.read_file(scale_file).as_deref(), Some(persisted.as_str()));
    assert_eq!(running(c), after);
    assert_eq!(wanted(c), [1, 2, 3, 4]);

    // scale 1: three instances drained and stopped cleanly. systemd unloads an
    // instance the target no longer wants as soon as it stops, so its exit
    // status is gone from `systemctl show` afterwards: the journal keeps it.
    let deactivated = |unit: &str| {
        c.journal_json(unit)
            .iter()
            .filter(|e| {
                e["MESSAGE"]
                    .as_str()
                    .is_some_and(|m| m.contains("Deactivated successfully"))
            })
            .count()
    };
    let before_down: Vec<usize> = (2..=4)
        .map(|i| deactivated(&format!("zero-logs@{i}.service")))
        .collect();
    // Over the system bus when there is one: job and property signals come
    // only after Subscribe() there (the private socket gets them unasked).
    let bus_for_scale_down = if dbus_active {
        "--bus=system"
    } else {
        "--bus=private"
    };
    let t = Instant::now();
    let out = ctl_ok(c, &[bus_for_scale_down, "scale", "1"]);
    let scale_down = t.elapsed();
    let now = running(c);
    assert_eq!(now.keys().collect::<Vec<_>>(), ["1"], "{now:?}");
    assert_eq!(now["1"], after["1"]);
    for i in 2..=4 {
        let unit = format!("zero-logs@{i}.service");
        assert!(
            out.contains(&format!("{unit}: stopped cleanly (exit status 0)")),
            "{out}"
        );
        let p = c.unit_properties(&unit, &["ActiveState", "Result"]);
        assert_eq!(
            (p["ActiveState"].as_str(), p["Result"].as_str()),
            ("inactive", "success"),
            "{unit}: {p:?}"
        );
        assert_eq!(
            deactivated(&unit),
            before_down[i - 2] + 1,
            "{unit}: no clean stop in the journal"
        );
        let failures: Vec<String> = c
            .journal_json(&unit)
            .iter()
            .filter_map(|e| e["MESSAGE"].as_str().map(str::to_string))
            .filter(|m| m.contains("Main process exited") || m.contains("Failed with result"))
            .collect();
        assert!(failures.is_empty(), "{unit}: {failures:?}");
    }
    assert_eq!(wanted(c), [1]);
    // The generator's bound holds for a restart of the whole target too.
    c.systemctl_ok(&["restart", "zero-logs.target"]);
    c.wait_instances_running(1, Duration::from_secs(30));
    assert_eq!(running(c).keys().collect::<Vec<_>>(), ["1"]);

    // Without dbus-daemon the private socket still works (auto picks it as
    // root); asking for the system bus then fails as "unknown" (3).
    if dbus_active {
        c.systemctl_ok(&["stop", "dbus.socket", "dbus.service"]);
        let h = ctl(c, &["health"]);
        assert_eq!((h.code, h.stdout.trim()), (0, "healthy: 1/1 instances ok"));
        let h = ctl(c, &["--bus", "system", "health"]);
        assert_eq!(h.code, 3, "{}{}", h.stdout, h.stderr);
        assert!(
            h.stderr.contains("cannot connect to systemd"),
            "{}",
            h.stderr
        );
    }

    eprintln!(
        "[ctl] scale 2->4 {} ms, scale 4->1 {} ms",
        scale_up.as_millis(),
        scale_down.as_millis()
    );
    f.done("status_stats_health_and_scale");
}

#[test]
fn rolling_restart_under_load_fails_nothing() {
    let f = Cluster::start(2, &[]);
    let c = f.c();
    let spec = |service: &str, clients, fresh| LoadSpec {
        clients,
        records_per_request: 10,
        duration: Duration::from_secs(90),
        service: service.to_string(),
        fresh_connections: fresh,
        ..LoadSpec::default()
    };
    let fresh = f.load(spec("ctl-restart-fresh", 4, true));
    let keepalive = f.load(spec("ctl-restart-keepalive", 2, false));
    std::thread::sleep(Duration::from_millis(500));

    // Every instance, one at a time.
    let before = running(c);
    let t = Instant::now();
    let out = ctl_ok(c, &["restart"]);
    let roll = t.elapsed();
    let after = running(c);
    assert_eq!(after.keys().collect::<Vec<_>>(), ["1", "2"], "{after:?}");
    for (instance, pid) in &after {
        assert_ne!(*pid, before[instance], "zero-logs@{instance} kept its pid");
        assert!(
            out.contains(&format!(
                "zero-logs@{instance}.service: running again (pid {pid}) and healthy"
            )),
            "{out}"
        );
    }

    // One instance only.
    // Over the system bus when there is one (job signals via Subscribe there).
    let dbus = c.systemctl(&["is-active", "dbus.service"]);
    let bus = if dbus.status.success() {
        "--bus=system"
    } else {
        "--bus=private"
    };
    let out = ctl_ok(c, &[bus, "restart", "--instance", "2"]);
    let single = running(c);
    assert_eq!(single["1"], after["1"]);
    assert_ne!(single["2"], after["2"]);
    assert!(out.contains("[1/1] zero-logs@2.service"), "{out}");

    // With a surge instance: three instances serve while one restarts.
    let t = Instant::now();
    let out = ctl_ok(c, &["restart", "--surge"]);
    let surge_roll = t.elapsed();
    let final_pids = running(c);
    assert_eq!(
        final_pids.keys().collect::<Vec<_>>(),
        ["1", "2"],
        "{final_pids:?}"
    );
    assert_ne!(final_pids["1"], single["1"]);
    assert_ne!(final_pids["2"], single["2"]);
    assert!(out.contains("surge: zero-logs@surge running"), "{out}");
    assert!(
        out.contains("surge: zero-logs@surge.service stopped cleanly (exit status 0)"),
        "{out}"
    );
    assert_eq!(
        c.unit_property("zero-logs@surge.service", "ActiveState"),
        "inactive"
    );
    std::thread::sleep(Duration::from_millis(500));

    let fresh = f.rt.block_on(fresh.stop());
    let keepalive = f.rt.block_on(keepalive.stop());
    eprintln!(
        "[ctl] fresh-connection load: {}\n[ctl]   timeline {}",
        fresh.summary(),
        fresh.timeline()
    );
    eprintln!(
        "[ctl] keep-alive load: {}\n[ctl]   timeline {}",
        keepalive.summary(),
        keepalive.timeline()
    );
    fresh.assert_no_failures();
    keepalive.assert_no_failures();
    for (service, report) in [
        ("ctl-restart-fresh", &fresh),
        ("ctl-restart-keepalive", &keepalive),
    ] {
        assert_eq!(
            f.wait_rows(service, report.acknowledged_records),
            report.acknowledged_records,
            "{service}: rows in ClickHouse differ from acknowledged records"
        );
    }
    eprintln!(
        "[ctl] rolling restart of 2: {} ms; with surge: {} ms",
        roll.as_millis(),
        surge_roll.as_millis()
    );
    f.done("rolling_restart_under_load_fails_nothing");
}
