//! System tests of the Debian package (`packaging/build-deb`, `debian/`) in a real
//! systemd booted in a throw-away container with nothing of zero-logs installed
//! (harness: `tests/system/`, `.deb` helpers: `tests/system/deb.rs`). Each test
//! boots a fresh overlay and installs the package with `apt-get install ./…deb`,
//! as an operator would.
//!
//! - `install_enables_starts_and_ingests`: user, directories, conffile, units
//!   enabled and started by the postinst; rows reach ClickHouse.
//! - `install_honours_policy_rc_d`: with policy-rc.d saying 101, enabled but not
//!   started; `systemctl start zero-logs.target` then works; an upgrade restarts
//!   nothing until `zero-logs-ctl restart`.
//! - `upgrade_under_load_is_a_rolling_restart`: `apt-get install` of a newer
//!   package while clients send: 0 failed requests, 0 lost rows, every worker a new
//!   PID running the new file, the socket never restarted, the edited conffile kept.
//! - `remove_keeps_config_and_state_purge_removes_everything`.
//!
//! Needs root, `systemd-nspawn`, Debian's ClickHouse (`scripts/install-deps`) and
//! the release binaries (`cargo build --release --bins`); fails loudly without
//! them. Run: `cargo build --release --bins && cargo test --features test-support
//! --test system_deb -- --nocapture`.

mod system;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use system::deb::{self, Package, Policy, CONFFILE};
use system::{load, LoadReport, LoadSpec, SystemdContainer};
use zero_logs::testing::ClickHouseServer;

/// The env file as the repository ships it: the package's conffile must be it.
const SHIPPED_ENV: &str = include_str!("../systemd/zero-logs.env");

struct Fixture {
    // Field order = drop order: the container goes before its ClickHouse.
    c: SystemdContainer,
    ch: ClickHouseServer,
    db: String,
    rt: tokio::runtime::Runtime,
    t0: Instant,
}

impl Fixture {
    fn boot(packages: &[&Package], policy: Policy) -> Fixture {
        let t0 = Instant::now();
        let ch = ClickHouseServer::start().unwrap_or_else(|e| panic!("{e}"));
        let db = ch.fresh_database();
        let env = [
            ("CLICKHOUSE_URL", ch.http_url()),
            ("CLICKHOUSE_DATABASE", db.clone()),
            ("BATCH_MAX_AGE", "50".to_string()),
        ];
        let c = deb::boot(deb::boot_options(packages, &env, policy), policy);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Fixture { c, ch, db, rt, t0 }
    }

    /// `apt-get install ./<package>`; returns apt's output and the time.
    fn install(&self, p: &Package) -> (String, Duration) {
        deb::apt_get_ok(&self.c, &["install", &p.inside()])
    }

    /// A short load of `requests` requests of 10 records with `service`; all must
    /// be acknowledged and land in ClickHouse.
    fn ingest(&self, service: &str, requests: u64) -> LoadReport {
        let spec = LoadSpec {
            clients: 1,
            records_per_request: 10,
            duration: Duration::from_secs(30),
            max_requests_per_client: requests,
            service: service.to_string(),
            ..LoadSpec::default()
        };
        let report = self.rt.block_on(load::run(&self.c.base_url(), spec));
        report.assert_no_failures();
        assert_eq!(
            report.acknowledged_requests,
            requests,
            "{}",
            report.summary()
        );
        assert_eq!(
            deb::wait_rows(&self.ch, &self.db, service, report.acknowledged_records),
            report.acknowledged_records,
            "rows in ClickHouse differ from acknowledged records"
        );
        report
    }

    fn running(&self) -> BTreeMap<String, u32> {
        self.c
            .instances()
            .into_iter()
            .filter(|(_, s)| s.is_running())
            .map(|(i, s)| (i, s.main_pid))
            .collect()
    }

    fn done(&self, scenario: &str, extra: &str) {
        eprintln!(
            "[timing] {scenario}: boot {} ms, test total {} ms{extra}",
            self.c.boot_time().as_millis(),
            self.t0.elapsed().as_millis()
        );
    }
}

fn is_enabled(c: &SystemdContainer, unit: &str) -> String {
    let out = c.systemctl(&["is-enabled", unit]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_active(c: &SystemdContainer, unit: &str) -> String {
    let out = c.systemctl(&["is-active", unit]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn install_enables_starts_and_ingests() {
    let v1 = deb::package(deb::version());
    let f = Fixture::boot(&[&v1], Policy::None);
    let c = &f.c;
    assert_eq!(deb::dpkg_status(c), None, "zero-logs already known to dpkg");
    assert!(
        !deb::getent(c, "passwd", "zero-logs"),
        "user exists before install"
    );

    let (apt, install_time) = f.install(&v1);
    assert_eq!(
        deb::dpkg_status(c).as_deref(),
        Some(format!("install ok installed {}", v1.version).as_str()),
        "{apt}"
    );

    // Files where the units expect them.
    for path in [
        "/usr/bin/zero-logs",
        "/usr/bin/zero-logs-ctl",
        "/usr/lib/systemd/system/zero-logs.socket",
        "/usr/lib/systemd/system/zero-logs.target",
        "/usr/lib/systemd/system/zero-logs@.service",
        "/usr/lib/systemd/system-generators/zero-logs-generator",
        "/usr/lib/sysusers.d/zero-logs.conf",
        "/usr/lib/tmpfiles.d/zero-logs.conf",
        "/usr/share/man/man8/zero-logs.8.gz",
        "/usr/share/man/man8/zero-logs-ctl.8.gz",
        "/usr/share/doc/zero-logs/copyright",
    ] {
        assert!(deb::exists(c, path), "{path} not installed");
    }
    let version = c.exec_ok(&["zero-logs-ctl", "--version"]);
    assert!(version.starts_with("zero-logs-ctl "), "{version}");
    // The man page documents the subcommands, from their --help.
    let man = c.exec_ok(&["sh", "-c", "zcat /usr/share/man/man8/zero-logs.8.gz"]);
    assert!(
        man.contains("zero-logs serve") && man.contains("CLICKHOUSE_URL"),
        "zero-logs.8 lacks serve's options"
    );

    // The conffile: as shipped, every setting commented out, not world-readable.
    assert_eq!(c.read_file(CONFFILE).as_deref(), Some(SHIPPED_ENV));
    assert_eq!(deb::stat(c, "%a %U:%G", CONFFILE), "640 root:root");
    let settings: Vec<&str> = SHIPPED_ENV
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    assert!(settings.is_empty(), "uncommented settings: {settings:?}");
    // Every variable the installed worker reads is there, with its default.
    let help = c.exec_ok(&["zero-logs", "serve", "--help"]);
    let vars: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(&[']', '=', ' '][..]).next())
        .collect();
    assert!(vars.len() >= 20, "few [env: …] in serve --help: {vars:?}");
    let missing: Vec<&&str> = vars
        .iter()
        .filter(|v| {
            !SHIPPED_ENV
                .lines()
                .any(|l| l.starts_with(&format!("#{v}=")))
        })
        .collect();
    assert!(missing.is_empty(), "not in the env file: {missing:?}");
    let conffiles = c.exec_ok(&["dpkg-query", "-W", "-f=${Conffiles}", "zero-logs"]);
    assert!(conffiles.contains(CONFFILE), "not a conffile: {conffiles}");

    // User, group, directories.
    assert!(deb::getent(c, "passwd", "zero-logs"), "no user zero-logs");
    assert!(deb::getent(c, "group", "zero-logs"), "no group zero-logs");
    assert_eq!(
        deb::stat(c, "%a %U:%G", "/var/lib/zero-logs"),
        "750 zero-logs:zero-logs"
    );
    assert!(deb::exists(c, "/run/zero-logs"));

    // Enabled and started by the postinst.
    for unit in ["zero-logs.socket", "zero-logs.target"] {
        assert_eq!(is_enabled(c, unit), "enabled", "{unit}");
        assert_eq!(is_active(c, unit), "active", "{unit}\n{apt}");
    }
    let n = deb::wanted_instances(c);
    assert!(n >= 1, "the generator made the target want no instance");
    c.wait_instances_running(n, Duration::from_secs(60));

    // What the operator does next.
    c.systemctl_ok(&["start", "zero-logs.target"]);
    let report = f.ingest("deb-install", 20);
    let status = c.exec_ok(&["zero-logs-ctl", "status"]);
    eprintln!("[deb] zero-logs-ctl status:\n{status}");

    f.done(
        "install_enables_starts_and_ingests",
        &format!(
            ", apt-get install {} ms, package {} KiB, {n} workers, {} rows",
            install_time.as_millis(),
            std::fs::metadata(&v1.path)
                .map(|m| m.len() / 1024)
                .unwrap_or(0),
            report.acknowledged_records
        ),
    );
}

#[test]
fn install_honours_policy_rc_d() {
    let v1 = deb::package(deb::version());
    let f = Fixture::boot(&[&v1], Policy::Deny);
    let c = &f.c;
    let (apt, _) = f.install(&v1);
    assert!(apt.contains("policy-rc.d returned 101"), "{apt}");

    // Enabled (for the next boot), but nothing started.
    for unit in ["zero-logs.socket", "zero-logs.target"] {
        assert_eq!(is_enabled(c, unit), "enabled", "{unit}");
        assert_ne!(
            is_active(c, unit),
            "active",
            "{unit} started despite policy-rc.d"
        );
    }
    assert!(f.running().is_empty(), "{:?}", f.running());
    assert!(deb::getent(c, "passwd", "zero-logs"), "no user zero-logs");

    // The operator starts it.
    c.systemctl_ok(&["start", "zero-logs.target"]);
    let n = deb::wanted_instances(c);
    c.wait_instances_running(n, Duration::from_secs(60));
    assert_eq!(is_active(c, "zero-logs.socket"), "active");
    f.ingest("deb-policy", 5);

    // An upgrade under the same policy restarts nothing: the workers keep
    // serving from the old file until the operator rolls them.
    let v2 = deb::package(&deb::upgrade_version());
    c.write_file(
        &v2.inside(),
        std::fs::read(&v2.path).expect("reading the package"),
    );
    let before = f.running();
    let (apt, _) = f.install(&v2);
    assert!(apt.contains("policy-rc.d forbids restarts"), "{apt}");
    assert_eq!(f.running(), before, "workers restarted despite policy-rc.d");
    for pid in before.values() {
        assert_eq!(deb::exe_of(c, *pid), "/usr/bin/zero-logs (deleted)");
    }
    let roll = c.exec_ok(&["zero-logs-ctl", "restart"]);
    for (instance, pid) in f.running() {
        assert_ne!(pid, before[&instance], "{roll}");
        assert_eq!(deb::exe_of(c, pid), "/usr/bin/zero-logs");
    }
    f.ingest("deb-policy-upgraded", 5);
    f.done("install_honours_policy_rc_d", "");
}

#[test]
fn upgrade_under_load_is_a_rolling_restart() {
    let v1 = deb::package(deb::version());
    let v2 = deb::package(&deb::upgrade_version());
    let f = Fixture::boot(&[&v1, &v2], Policy::None);
    let c = &f.c;
    f.install(&v1);

    // The operator edits the conffile: two workers, and a note of their own.
    let marker = "# edited by the operator (system test)";
    let edited = format!("{SHIPPED_ENV}\n{marker}\nCLUSTER_WORKERS=2\n");
    c.write_file(CONFFILE, &edited);
    c.daemon_reload();
    c.systemctl_ok(&["restart", "zero-logs.target"]);
    c.wait_instances_running(2, Duration::from_secs(60));
    let before = f.running();
    assert_eq!(before.keys().collect::<Vec<_>>(), ["1", "2"], "{before:?}");
    for pid in before.values() {
        assert_eq!(deb::exe_of(c, *pid), "/usr/bin/zero-logs");
    }
    let socket_since = c.unit_property("zero-logs.socket", "ActiveEnterTimestampMonotonic");
    let target_since = c.unit_property("zero-logs.target", "ActiveEnterTimestampMonotonic");

    let spec = |service: &str, clients, fresh| LoadSpec {
        clients,
        records_per_request: 10,
        duration: Duration::from_secs(120),
        service: service.to_string(),
        fresh_connections: fresh,
        ..LoadSpec::default()
    };
    let (fresh, keepalive) = {
        let _guard = f.rt.enter();
        (
            load::start(&c.base_url(), spec("deb-upgrade-fresh", 4, true)),
            load::start(&c.base_url(), spec("deb-upgrade-keepalive", 2, false)),
        )
    };
    std::thread::sleep(Duration::from_millis(1000));

    let (apt, upgrade_time) = f.install(&v2);
    std::thread::sleep(Duration::from_millis(500));
    let fresh = f.rt.block_on(fresh.stop());
    let keepalive = f.rt.block_on(keepalive.stop());
    eprintln!(
        "[deb] fresh-connection load: {}\n[deb]   timeline {}",
        fresh.summary(),
        fresh.timeline()
    );
    eprintln!(
        "[deb] keep-alive load: {}\n[deb]   timeline {}",
        keepalive.summary(),
        keepalive.timeline()
    );

    // The new version is installed, through a rolling restart.
    assert_eq!(
        deb::dpkg_status(c).as_deref(),
        Some(format!("install ok installed {}", v2.version).as_str())
    );
    assert!(
        apt.contains("rolling restart of the running workers"),
        "the postinst did not roll: {apt}"
    );
    for instance in ["1", "2"] {
        assert!(
            apt.contains(&format!("zero-logs@{instance}.service: running again")),
            "zero-logs-ctl restart did not report instance {instance}: {apt}"
        );
    }
    assert!(!apt.contains("WARNING"), "{apt}");

    // Every worker is a new process running the new file; the socket and the
    // target were never restarted.
    let after = f.running();
    assert_eq!(after.keys().collect::<Vec<_>>(), ["1", "2"], "{after:?}");
    for (instance, pid) in &after {
        assert_ne!(*pid, before[instance], "zero-logs@{instance} kept its pid");
        assert_eq!(
            deb::exe_of(c, *pid),
            "/usr/bin/zero-logs",
            "zero-logs@{instance}"
        );
    }
    assert_eq!(
        c.unit_property("zero-logs.socket", "ActiveEnterTimestampMonotonic"),
        socket_since,
        "zero-logs.socket was restarted"
    );
    assert_eq!(
        c.unit_property("zero-logs.target", "ActiveEnterTimestampMonotonic"),
        target_since,
        "zero-logs.target was restarted"
    );

    // The edited conffile is kept, and dpkg left no copy beside it.
    assert_eq!(c.read_file(CONFFILE).as_deref(), Some(edited.as_str()));
    let leftovers = c.exec_ok(&["sh", "-c", "ls /etc/zero-logs | grep -F .dpkg- || true"]);
    assert!(leftovers.trim().is_empty(), "{leftovers}");

    // Nothing failed, nothing lost.
    fresh.assert_no_failures();
    keepalive.assert_no_failures();
    for (service, report) in [
        ("deb-upgrade-fresh", &fresh),
        ("deb-upgrade-keepalive", &keepalive),
    ] {
        assert_eq!(
            deb::wait_rows(&f.ch, &f.db, service, report.acknowledged_records),
            report.acknowledged_records,
            "{service}: rows in ClickHouse differ from acknowledged records"
        );
    }
    f.done(
        "upgrade_under_load_is_a_rolling_restart",
        &format!(
            ", apt-get install (upgrade) {} ms; requests {} + {}, failed {} + {}",
            upgrade_time.as_millis(),
            fresh.requests,
            keepalive.requests,
            fresh.failed_requests,
            keepalive.failed_requests
        ),
    );
}

#[test]
fn remove_keeps_config_and_state_purge_removes_everything() {
    let v1 = deb::package(deb::version());
    let f = Fixture::boot(&[&v1], Policy::None);
    let c = &f.c;
    f.install(&v1);
    let n = deb::wanted_instances(c);
    c.wait_instances_running(n, Duration::from_secs(60));
    f.ingest("deb-remove", 5);
    // The operator's edit, and something in the state directory (the spool).
    let edited = format!("{SHIPPED_ENV}\n# edited by the operator (system test)\n");
    c.write_file(CONFFILE, &edited);
    let state_file = "/var/lib/zero-logs/system-test-state";
    c.write_file(state_file, "kept across remove");

    // remove: everything stopped and disabled; config, state and user kept.
    let (apt, remove_time) = deb::apt_get_ok(c, &["remove", "zero-logs"]);
    assert_eq!(
        deb::dpkg_status(c).as_deref(),
        Some(format!("deinstall ok config-files {}", v1.version).as_str()),
        "{apt}"
    );
    let active: Vec<(String, String)> = deb::zero_logs_units(c)
        .into_iter()
        .filter(|(_, state)| state != "inactive")
        .collect();
    assert!(active.is_empty(), "units not stopped: {active:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", c.port())).is_err(),
        "port {} still accepts",
        c.port()
    );
    for unit in ["zero-logs.socket", "zero-logs.target"] {
        let state = is_enabled(c, unit);
        assert!(!state.starts_with("enabled"), "{unit} is {state}");
    }
    let links = c.exec_ok(&[
        "sh",
        "-c",
        "find /etc/systemd/system -name 'zero-logs*' ! -path '*/zero-logs.socket.d*' -print",
    ]);
    assert!(links.trim().is_empty(), "enable links left: {links}");
    for path in [
        "/usr/bin/zero-logs",
        "/usr/bin/zero-logs-ctl",
        "/usr/lib/systemd/system/zero-logs@.service",
        "/usr/lib/systemd/system-generators/zero-logs-generator",
    ] {
        assert!(!deb::exists(c, path), "{path} left after remove");
    }
    assert_eq!(c.read_file(CONFFILE).as_deref(), Some(edited.as_str()));
    assert!(deb::exists(c, deb::TEST_ENV_INSIDE));
    assert_eq!(
        c.read_file(state_file).as_deref(),
        Some("kept across remove")
    );
    assert!(
        deb::getent(c, "passwd", "zero-logs"),
        "user removed by remove"
    );

    // purge: config, state and the user go too.
    let (apt, purge_time) = deb::apt_get_ok(c, &["purge", "zero-logs"]);
    let status = deb::dpkg_status(c);
    assert!(
        status.is_none() || status.as_deref() == Some("unknown ok not-installed"),
        "dpkg still knows zero-logs: {status:?}\n{apt}"
    );
    for path in ["/etc/zero-logs", "/var/lib/zero-logs", "/run/zero-logs"] {
        assert!(!deb::exists(c, path), "{path} left after purge");
    }
    assert!(
        !deb::getent(c, "passwd", "zero-logs"),
        "user left after purge"
    );
    assert!(
        !deb::getent(c, "group", "zero-logs"),
        "group left after purge"
    );
    let state = c.exec_ok(&[
        "sh",
        "-c",
        "grep -rl zero-logs /var/lib/systemd/deb-systemd-helper-enabled 2>/dev/null || true",
    ]);
    assert!(
        state.trim().is_empty(),
        "deb-systemd-helper state left: {state}"
    );
    f.done(
        "remove_keeps_config_and_state_purge_removes_everything",
        &format!(
            ", remove {} ms, purge {} ms",
            remove_time.as_millis(),
            purge_time.as_millis()
        ),
    );
}
