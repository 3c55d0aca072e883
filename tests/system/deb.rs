//! The `.deb` in a container: build it with `packaging/build-deb`, boot a container
//! with nothing of zero-logs installed ([`BootOptions::bare`]), install, upgrade,
//! remove and purge it there with apt/dpkg, as an operator would.
//!
//! The packages are built from the release binaries already in `target/release`
//! (`packaging/build-deb --no-build`; `scripts/test` builds them in its `build`
//! step before the tests). cargo holds its lock while tests run, so a test cannot
//! build them itself: when they are missing the test fails with the fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::container::describe;
use super::{BootOptions, SystemdContainer};

/// Where the packages are copied inside the container.
pub const DEB_DIR_INSIDE: &str = "/root/zero-logs-debs";
/// The test's own env file: ClickHouse and fast flushes. A file of
/// `zero-logs.env.d/`, so the package's conffile stays as shipped.
pub const TEST_ENV_INSIDE: &str = "/etc/zero-logs/zero-logs.env.d/00-system-test.env";
/// The package's conffile.
pub const CONFFILE: &str = "/etc/zero-logs/zero-logs.env";
pub const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// The version `packaging/build-deb` gives the package by default (Cargo.toml's).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// A later version built from the same binaries, for the upgrade test.
pub fn upgrade_version() -> String {
    format!("{}+systest1", version())
}

/// `target/` (the parent of `CARGO_TARGET_TMPDIR`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

/// A built package.
#[derive(Debug, Clone)]
pub struct Package {
    pub version: String,
    pub path: PathBuf,
    pub build_time: Duration,
}

impl Package {
    /// File name (`zero-logs_<version>_<arch>.deb`).
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .expect("package path has a file name")
            .to_string_lossy()
            .into_owned()
    }

    /// Path inside the container (see [`BootOptions`] from [`boot_options`]).
    pub fn inside(&self) -> String {
        format!("{DEB_DIR_INSIDE}/{}", self.file_name())
    }
}

/// `packaging/build-deb --no-build --version V`, once per version and test
/// process, into `target/tmp/system-deb/`. Panics with the script's output (and
/// the fix) when it fails.
pub fn package(version: &str) -> Package {
    static BUILT: Mutex<Vec<Package>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.iter().find(|p| p.version == version) {
        return p.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("system-deb");
    let started = Instant::now();
    let out = Command::new(root.join("packaging/build-deb"))
        .args(["--no-build", "--version", version, "--out-dir"])
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("NO_COLOR", "1")
        .output()
        .expect("running packaging/build-deb");
    assert!(
        out.status.success(),
        "packaging/build-deb --no-build --version {version} failed; it packages \
         target/release/zero-logs{{,-ctl}}: build them first with \
         `cargo build --release --bins` (scripts/test does, in its build step)\n{}",
        describe(&["packaging/build-deb"], &out)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "build-deb printed {path:?}, not a file");
    let p = Package {
        version: version.to_string(),
        path,
        build_time: started.elapsed(),
    };
    eprintln!(
        "[deb] built {} ({} KiB) in {} ms",
        p.path.display(),
        std::fs::metadata(&p.path)
            .map(|m| m.len() / 1024)
            .unwrap_or(0),
        p.build_time.as_millis()
    );
    built.push(p.clone());
    p
}

/// What policy-rc.d says in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No `/usr/sbin/policy-rc.d` (removed after boot, should the host have one):
    /// maintainer scripts may start and restart services.
    None,
    /// A policy-rc.d that answers 101 to everything, as in Docker images.
    Deny,
}

/// Options for a bare container with `packages` copied in, the test env file
/// (`CLICKHOUSE_URL`… from `env`) in `zero-logs.env.d/`, and `policy`.
pub fn boot_options(packages: &[&Package], env: &[(&str, String)], policy: Policy) -> BootOptions {
    let mut opts = BootOptions::bare();
    for p in packages {
        let bytes =
            std::fs::read(&p.path).unwrap_or_else(|e| panic!("reading {}: {e}", p.path.display()));
        opts = opts.file(&p.inside(), bytes);
    }
    let mut text = String::from("# system test (tests/system/deb.rs)\n");
    for (k, v) in env {
        text.push_str(&format!("{k}={v}\n"));
    }
    opts = opts.file(TEST_ENV_INSIDE, text);
    if policy == Policy::Deny {
        opts = opts.executable(
            POLICY_RC_D,
            "#!/bin/sh\n# system test: no service actions from maintainer scripts\nexit 101\n",
        );
    }
    opts
}

/// Boots; with [`Policy::None`] removes a policy-rc.d the host image may carry
/// (inside the overlay only).
pub fn boot(opts: BootOptions, policy: Policy) -> SystemdContainer {
    let c = SystemdContainer::boot(opts).unwrap_or_else(|e| panic!("{e}"));
    if policy == Policy::None {
        c.exec_ok(&["rm", "-f", POLICY_RC_D]);
    }
    c
}

/// `apt-get -y ARGS…` inside, non-interactive, bounded by 240 s; prints what it
/// said and how long it took. Returns the output and the time.
pub fn apt_get(c: &SystemdContainer, args: &[&str]) -> (Output, Duration) {
    let mut full = vec![
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "-y",
        "-q",
        "-o",
        "Dpkg::Use-Pty=0",
    ];
    full.extend_from_slice(args);
    let started = Instant::now();
    let out = c.exec_timeout(&full, Duration::from_secs(240));
    let took = started.elapsed();
    eprintln!(
        "[deb] $ apt-get {} -> {} in {} ms\n{}{}",
        args.join(" "),
        out.status,
        took.as_millis(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, took)
}

/// [`apt_get`] that must succeed; returns stdout + stderr and the time.
pub fn apt_get_ok(c: &SystemdContainer, args: &[&str]) -> (String, Duration) {
    let (out, took) = apt_get(c, args);
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(args, &out),
        c.diagnostics()
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, took)
}

/// `dpkg-query` status and version of zero-logs (`"install ok installed 0.1.0"`),
/// `None` when dpkg does not know the package at all.
pub fn dpkg_status(c: &SystemdContainer) -> Option<String> {
    let out = c.exec(&["dpkg-query", "-W", "-f=${Status} ${Version}", "zero-logs"]);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `ActiveState` of each loaded `zero-logs*` unit (`systemctl list-units --all`).
pub fn zero_logs_units(c: &SystemdContainer) -> Vec<(String, String)> {
    c.systemctl_ok(&[
        "list-units",
        "--all",
        "--plain",
        "--no-legend",
        "zero-logs*",
    ])
    .lines()
    .filter_map(|l| {
        let mut cols = l.split_whitespace();
        let unit = cols.next()?.to_string();
        let _load = cols.next()?;
        let active = cols.next()?.to_string();
        Some((unit, active))
    })
    .collect()
}

/// Instances `zero-logs.target` wants (the generator's N).
pub fn wanted_instances(c: &SystemdContainer) -> usize {
    c.unit_property("zero-logs.target", "Wants")
        .split_whitespace()
        .filter(|u| u.starts_with("zero-logs@"))
        .count()
}

/// Whether `path` exists inside the container.
pub fn exists(c: &SystemdContainer, path: &str) -> bool {
    c.exec(&["test", "-e", path]).status.success()
}

/// `stat -c FORMAT path` inside.
pub fn stat(c: &SystemdContainer, format: &str, path: &str) -> String {
    c.exec_ok(&["stat", "-c", format, path]).trim().to_string()
}

/// Whether `getent DB NAME` finds it inside.
pub fn getent(c: &SystemdContainer, db: &str, name: &str) -> bool {
    c.exec(&["getent", db, name]).status.success()
}

/// The host's view of where a container process's executable is
/// (`/usr/bin/zero-logs`, or `… (deleted)` when the file was replaced since).
pub fn exe_of(c: &SystemdContainer, container_pid: u32) -> String {
    let host = c
        .host_pid(container_pid)
        .unwrap_or_else(|| panic!("no host pid for container pid {container_pid}"));
    std::fs::read_link(format!("/proc/{host}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}

/// Records of `service` in ClickHouse `db.logs`, waiting up to 15 s for `want`.
pub fn wait_rows(
    ch: &zero_logs::testing::ClickHouseServer,
    db: &str,
    service: &str,
    want: u64,
) -> u64 {
    let sql = format!("SELECT count() FROM {db}.logs WHERE service = '{service}'");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows: u64 = ch
            .query(&sql)
            .ok()
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or(0);
        if rows >= want || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
