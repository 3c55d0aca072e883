//! [`SystemdContainer`]: a real systemd booted with `systemd-nspawn` on a throw-away
//! overlay of the host's root, following the shared SYSTEMD-TESTS.md recipe (`../shared/` next to the repository).
//!
//! # How a container is built
//!
//! ```text
//! test process ── keeper thread ── setpriv --pdeathsig TERM
//!                                   └ timeout -k 15 <lifetime> unshare --mount --pid --fork --kill-child --mount-proc
//!                                      └ sh launch.sh  (PID 1 of a new PID namespace, private mount namespace)
//!                                         1. moves itself into its own cgroup  <own cgroup>/zl-systest-<pid>-<n>
//!                                         2. tmpfs on <work>/base; overlay lowerdir=/ upper/work in the tmpfs
//!                                         3. private tmpfs on /run/systemd/nspawn (nspawn's scratch space)
//!                                         4. masks units, installs binaries, units, env file, drop-ins
//!                                         5. exec systemd-nspawn --boot --register=no --keep-unit ...
//!                                            └ /usr/lib/systemd/systemd  (the container's PID 1)
//! ```
//!
//! Why each layer (all observed on Debian 12 / systemd 252 with a cgroup v1+v2 hybrid):
//!
//! - **Own cgroup per container.** `--keep-unit` makes nspawn use *its own* cgroup as
//!   the container's; two containers started from the same cgroup both create
//!   `/payload/system.slice/zero-logs@1.service` — the same cgroup directory for units
//!   of two different systemds. The launcher therefore moves itself into a fresh child
//!   of the test process's cgroup (in the `name=systemd` and the unified hierarchies,
//!   which carry no resource controllers), removed again on drop.
//! - **nspawn as PID 1 of an extra PID namespace.** SIGKILL of `systemd-nspawn`
//!   leaves the container's systemd running, orphaned. As PID 1 of the outer
//!   namespace, its death makes the kernel kill everything inside, the container
//!   included; `unshare --kill-child` ties that to the `unshare` process, which
//!   `timeout --kill-after` kills when the lifetime runs out.
//! - **A `/proc` of that PID namespace (`--mount-proc`).** nspawn looks its
//!   children up in `/proc` by the PIDs it sees; with the host's `/proc` it read
//!   `/proc/<host PID with the same number>`, and the boot failed with "Failed to
//!   get container cgroup path: No such process" whenever that host PID did not
//!   exist — which depended only on how many processes the launch script had
//!   forked (observed: installing one more binary broke every boot of a test;
//!   one more `sleep` mended it).
//! - **`setpriv --pdeathsig TERM`** on `timeout`, spawned from a keeper thread that
//!   lives exactly as long as the container: if the test process dies without running
//!   `Drop` (killed, aborted), `timeout` gets SIGTERM and forwards it to its process
//!   group (nspawn shuts the container down), then SIGKILLs after 15 s.
//! - **Private tmpfs on `/run/systemd/nspawn`**: `/run` is not a tmpfs on these hosts
//!   and nspawn leaves `propagate/<machine>` directories there otherwise.
//!
//! Teardown (`Drop`): SIGTERM to nspawn (clean poweroff of the container, ~2 s),
//! SIGKILL after [`STOP_GRACE`], wait for the launcher to exit (the mount namespace
//! and its tmpfs vanish with it), remove the cgroup directories and the work
//! directory. Every signal goes to a PID this harness started, checked against the
//! process start time first. When the test is panicking, diagnostics (failed units,
//! unit status, journal, nspawn's console log) are printed and saved under
//! `target/tmp/system-tests/<machine>/` first.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Units masked in every container: consoles, logind, and services the host image
/// carries that have no business in a test (databases, timers).
pub const MASKED_UNITS: &[&str] = &[
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "console-getty.service",
    "systemd-logind.service",
    "clickhouse-server.service",
    "postgresql.service",
    "mariadb.service",
    "mysql.service",
    "redis-server.service",
    "cron.service",
    "ssh.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
    "systemd-tmpfiles-clean.timer",
];

/// Path of the env file inside the container.
pub const ENV_FILE: &str = "/etc/zero-logs/zero-logs.env";
/// Drop-in that moves `zero-logs.socket` to the container's own loopback port.
pub const SOCKET_DROPIN: &str = "/etc/systemd/system/zero-logs.socket.d/zz-system-test.conf";
/// How long `Drop` waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// Default bound of one command run inside the container.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

const PATH_INSIDE: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const FIX: &str = "run scripts/install-deps (as root)";

/// Why a container could not be booted.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("system tests cannot run: {what}; {fix}")]
    Prerequisite { what: String, fix: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("unit files: {0}")]
    Units(String),
    #[error("container {name} exited during boot ({status}); console log {log}:\n{tail}")]
    Exited {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "container {name} did not finish booting within {within:?} (last state: {state}); \
         console log {log}:\n{tail}"
    )]
    BootTimeout {
        name: String,
        within: Duration,
        state: String,
        log: PathBuf,
        tail: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

/// Where the units to install come from.
#[derive(Debug, Clone)]
pub enum UnitFiles {
    /// The repository's `systemd/` directory (the default).
    Repo,
    /// Another directory laid out like `systemd/`.
    Dir(PathBuf),
    /// `(file name as it would be in systemd/, contents)` pairs.
    Inline(Vec<(String, String)>),
    /// Nothing (a bare container).
    None,
}

/// What to boot. Build with [`BootOptions::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Units, generator, sysusers/tmpfiles snippets.
    pub units: UnitFiles,
    /// Lines of `/etc/zero-logs/zero-logs.env`, in order (written, maybe empty,
    /// unless `env_file` is false).
    pub env: Vec<(String, String)>,
    /// Write [`ENV_FILE`] (default true; false for a package test, where the
    /// package brings it as a conffile).
    pub env_file: bool,
    /// Host paths of binaries installed as `/usr/bin/<file name>`, mode 0755.
    pub binaries: Vec<PathBuf>,
    /// Extra files `(absolute path inside, contents, mode)`.
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Units masked in addition to [`MASKED_UNITS`].
    pub mask: Vec<String>,
    /// Units enabled before boot (`systemctl --root enable`, as a package's
    /// postinst would); none by default, so tests start what they test.
    pub enable: Vec<String>,
    /// Loopback port of `zero-logs.socket`; `None` picks a free one.
    pub port: Option<u16>,
    /// Write [`SOCKET_DROPIN`] (default true).
    pub socket_dropin: bool,
    /// Bound of the boot until `running`/`degraded`.
    pub boot_timeout: Duration,
    /// Hard lifetime of the container (`timeout`): the net under a test that hangs.
    pub lifetime: Duration,
}

impl Default for BootOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl BootOptions {
    /// The repository's units, the freshly built binaries (`zero-logs`, and
    /// `zero-logs-ctl` once that binary exists; see [`build_binary`]), an empty
    /// env file, a free port.
    pub fn new() -> BootOptions {
        let mut binaries = vec![build_binary(env!("CARGO_BIN_EXE_zero-logs"))];
        if let Some(ctl) = option_env!("CARGO_BIN_EXE_zero-logs-ctl") {
            binaries.push(build_binary(ctl));
        }
        BootOptions {
            units: UnitFiles::Repo,
            env: Vec::new(),
            env_file: true,
            binaries,
            files: Vec::new(),
            mask: Vec::new(),
            enable: Vec::new(),
            port: None,
            socket_dropin: true,
            boot_timeout: Duration::from_secs(60),
            lifetime: Duration::from_secs(600),
        }
    }

    /// Appends `KEY=value` to the env file.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub fn units(mut self, units: UnitFiles) -> Self {
        self.units = units;
        self
    }

    /// An extra file, mode 0644.
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((path.to_string(), contents.into(), 0o644));
        self
    }

    /// An extra file, mode 0755.
    pub fn executable(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((path.to_string(), contents.into(), 0o755));
        self
    }

    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binaries.push(path.into());
        self
    }

    pub fn mask(mut self, unit: &str) -> Self {
        self.mask.push(unit.to_string());
        self
    }

    /// Enables `unit` before boot (so it starts at boot if its `[Install]` says so).
    pub fn enable(mut self, unit: &str) -> Self {
        self.enable.push(unit.to_string());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// A container without anything of zero-logs installed: no binaries, no units,
    /// no env file (the socket drop-in stays, so an installed package listens on
    /// this container's own port). For installing the `.deb` inside.
    pub fn bare() -> Self {
        BootOptions {
            units: UnitFiles::None,
            binaries: Vec::new(),
            env_file: false,
            ..BootOptions::new()
        }
    }

    /// Does not write [`ENV_FILE`].
    pub fn without_env_file(mut self) -> Self {
        self.env_file = false;
        self
    }

    pub fn without_socket_dropin(mut self) -> Self {
        self.socket_dropin = false;
        self
    }

    pub fn boot_timeout(mut self, within: Duration) -> Self {
        self.boot_timeout = within;
        self
    }

    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }
}

/// This test process's own copy of a binary cargo built for it, taken the first
/// time it is asked for and used by every container of the process.
///
/// `CARGO_BIN_EXE_*` names the shared `target/debug/<bin>`, which any other cargo
/// command on the same target directory rewrites — with *its* features: a plain
/// `cargo build` drops the dev-dependency features (`test-hooks`), so a container
/// booted after it would run a worker without the `/debug/…` hooks (observed
/// while another session built concurrently). A hard link keeps the inode cargo
/// built for this run (cargo and the linker replace the file, they do not write
/// into it); a copy when linking fails. Kept in `<tmp>/zl-systest-<pid>-bin/`,
/// which the next run's orphan sweep removes.
pub fn build_binary(path: &str) -> PathBuf {
    static SNAPSHOTS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut snapshots = lock(&SNAPSHOTS);
    if let Some(done) = snapshots.get(path) {
        return done.clone();
    }
    let src = PathBuf::from(path);
    let dir = std::env::temp_dir().join(format!("zl-systest-{}-bin", std::process::id()));
    let dest = dir.join(src.file_name().unwrap_or_default());
    let made = fs::create_dir_all(&dir).and_then(|()| {
        let _ = fs::remove_file(&dest);
        fs::hard_link(&src, &dest).or_else(|_| fs::copy(&src, &dest).map(|_| ()))
    });
    let chosen = match made {
        Ok(()) => dest,
        Err(e) => {
            eprintln!(
                "[system] cannot snapshot {} into {} ({e}); using it in place",
                src.display(),
                dir.display()
            );
            src
        }
    };
    snapshots.insert(path.to_string(), chosen.clone());
    chosen
}

/// State of one `zero-logs@<instance>.service`, from `systemctl show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    pub unit: String,
    pub instance: String,
    pub active_state: String,
    pub sub_state: String,
    /// Container-relative PID (0 when not running). See [`SystemdContainer::host_pid`].
    pub main_pid: u32,
    pub n_restarts: u32,
    pub result: String,
}

impl InstanceState {
    /// `ActiveState=active` and `SubState=running` (for `Type=notify`: READY=1 was sent).
    pub fn is_running(&self) -> bool {
        self.active_state == "active" && self.sub_state == "running"
    }
}

/// A booted container; see the module documentation. Dropping it tears it down.
pub struct SystemdContainer {
    name: String,
    work: PathBuf,
    log: PathBuf,
    port: u16,
    keeper: Arc<Keeper>,
    keeper_thread: Option<JoinHandle<()>>,
    launcher: Proc,
    nspawn: Option<Proc>,
    init: Option<Proc>,
    cgroups: Vec<PathBuf>,
    boot_time: Duration,
    /// Keep diagnostics even when not panicking (boot failed).
    failed: bool,
    _permit: Permit,
}

/// A process this harness started: PID plus start time (so a recycled PID is
/// never signalled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    start: u64,
}

impl Proc {
    fn of(pid: u32) -> Option<Proc> {
        proc_stat(pid).map(|s| Proc {
            pid,
            start: s.start,
        })
    }

    fn alive(&self) -> bool {
        proc_stat(self.pid).is_some_and(|s| s.start == self.start && s.state != 'Z')
    }

    /// kill(1) by PID, only if it is still the process we started.
    fn signal(&self, name: &str) -> bool {
        self.alive()
            && Command::new("kill")
                .env("PATH", PATH_INSIDE)
                .arg(format!("-{name}"))
                .arg(self.pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }
}

/// Runs commands inside a container (a cheap, `Send + 'static` handle, so async tests
/// can use it from `spawn_blocking`).
#[derive(Debug, Clone)]
pub struct Nsenter {
    init: Proc,
    name: String,
}

impl Nsenter {
    /// `args` inside every namespace of the container (`nsenter -a`), bounded by
    /// [`EXEC_TIMEOUT`], with a clean environment. Never panics on the command's own
    /// failure: look at `status`.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_with(args, None, EXEC_TIMEOUT)
    }

    pub fn exec_timeout(&self, args: &[&str], within: Duration) -> Output {
        self.exec_with(args, None, within)
    }

    /// Like [`exec`](Self::exec), feeding `stdin`.
    pub fn exec_with(&self, args: &[&str], stdin: Option<&[u8]>, within: Duration) -> Output {
        assert!(
            self.init.alive(),
            "container {} is gone (its systemd, pid {}, exited); cannot run {args:?}",
            self.name,
            self.init.pid
        );
        let mut cmd = Command::new("timeout");
        cmd.arg("--kill-after=5")
            .arg(format!("{}", within.as_secs_f64()))
            .arg("nsenter")
            .arg("-t")
            .arg(self.init.pid.to_string())
            .arg("-a")
            .arg("--")
            .args(args)
            .env_clear()
            .env("PATH", PATH_INSIDE)
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("SYSTEMD_PAGER", "cat")
            .env("SYSTEMD_COLORS", "0")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run timeout/nsenter for {args:?}: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let input = input.to_vec();
            // A writer thread, so a command that does not read cannot deadlock us.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {args:?} in the container: {e}"))
    }

    /// [`exec`](Self::exec) that panics (with stdout and stderr) unless it exits 0;
    /// returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(out.status.success(), "{}", describe(args, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut full = vec!["systemctl", "--no-pager"];
        full.extend_from_slice(args);
        self.exec(&full)
    }
}

/// How [`SystemdContainer::debug_post`] reached the instance.
#[derive(Debug, Clone)]
pub struct DebugPost {
    /// "admin socket", or the shared port on a pinned connection.
    pub via: String,
    /// What the admin socket answered first (the final status when `via` is it).
    pub admin_socket_status: u16,
    pub status: u16,
    /// Response header lines (through the shared port only).
    pub headers: Vec<String>,
    pub body: String,
}

/// `$ args` + exit status + stdout + stderr, for assertion messages.
pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "$ {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl SystemdContainer {
    /// Builds and boots a container; blocks until its systemd reports `running` or
    /// `degraded` (printing `systemctl --failed` then). Call it from the test's own
    /// thread (it blocks; in async tests use a multi-thread runtime).
    pub fn boot(opts: BootOptions) -> Result<SystemdContainer, ContainerError> {
        check_prerequisites()?;
        let permit = Permit::acquire();
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_orphans);

        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("zl-systest-{pid}-{n}");
        let work = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(work.join("stage"))
            .map_err(io_err(format!("creating {}", work.display())))?;
        fs::create_dir_all(work.join("base"))
            .map_err(io_err(format!("creating {}", work.join("base").display())))?;
        let port = opts.port.unwrap_or_else(free_port);
        let plan = match install_plan(&opts, &work, port) {
            Ok(plan) => plan,
            Err(e) => {
                let _ = fs::remove_dir_all(&work);
                return Err(e);
            }
        };
        for note in &plan.notes {
            eprintln!("[system] {name}: {note}");
        }

        let cgroups = match make_cgroups(&name) {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&work);
                return Err(e);
            }
        };
        let script = launch_script(&name, &work, &cgroups, &opts, &plan);
        let script_path = work.join("launch.sh");
        let log = work.join("console.log");
        let prepared = fs::write(&script_path, script)
            .map_err(io_err(format!("writing {}", script_path.display())))
            .and_then(|()| {
                fs::File::create(&log).map_err(io_err(format!("creating {}", log.display())))
            });
        let log_file = match prepared {
            Ok(f) => f,
            Err(e) => {
                remove_cgroups(&cgroups);
                let _ = fs::remove_dir_all(&work);
                return Err(e);
            }
        };

        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "TERM", "--", "timeout", "--kill-after=15"])
            .arg(format!("{}", opts.lifetime.as_secs()))
            .args([
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
            ])
            .arg(&script_path)
            .env_clear()
            .env("PATH", PATH_INSIDE)
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .envs(
                // nspawn's own debug log into the console log, for boot failures.
                std::env::var_os("ZERO_LOGS_SYSTEM_TESTS_NSPAWN_DEBUG")
                    .map(|_| ("SYSTEMD_LOG_LEVEL", "debug")),
            )
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(io_err("duplicating the log fd"))?,
            )
            .stderr(log_file);

        let started = Instant::now();
        let keeper = Arc::new(Keeper::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let keeper2 = Arc::clone(&keeper);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-keeper"))
            .spawn(move || match cmd.spawn() {
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let status = child
                        .wait()
                        .map_or_else(|e| format!("wait failed: {e}"), |s| s.to_string());
                    keeper2.finish(status);
                }
            })
            .map_err(io_err("spawning the keeper thread"))?;
        let launcher_pid = match rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(e)) => {
                let _ = thread.join();
                remove_cgroups(&cgroups);
                let _ = fs::remove_dir_all(&work);
                return Err(ContainerError::Io {
                    what: "starting setpriv/timeout/unshare".into(),
                    source: e,
                });
            }
            Err(_) => panic!("keeper thread vanished"),
        };
        let launcher = Proc::of(launcher_pid).unwrap_or(Proc {
            pid: launcher_pid,
            start: 0,
        });

        let mut container = SystemdContainer {
            name,
            work,
            log,
            port,
            keeper,
            keeper_thread: Some(thread),
            launcher,
            nspawn: None,
            init: None,
            cgroups,
            boot_time: Duration::ZERO,
            failed: false,
            _permit: permit,
        };
        match container.wait_booted(started, opts.boot_timeout) {
            Ok(()) => {
                container.boot_time = started.elapsed();
                eprintln!(
                    "[system] {} booted in {} ms (systemd pid {} on the host, socket 127.0.0.1:{})",
                    container.name,
                    container.boot_time.as_millis(),
                    container.init_proc().pid,
                    container.port
                );
                Ok(container)
            }
            Err(e) => {
                container.failed = true;
                Err(e)
            }
        }
    }

    fn wait_booted(&mut self, started: Instant, within: Duration) -> Result<(), ContainerError> {
        let deadline = started + within;
        let mut state = String::from("(container process not found yet)");
        loop {
            if let Some(status) = self.keeper.status() {
                return Err(ContainerError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log.clone(),
                    tail: tail(&self.log, 40),
                });
            }
            if self.init.is_none() {
                if let Some((nspawn, init)) = find_container(self.launcher.pid) {
                    self.nspawn = Some(nspawn);
                    self.init = Some(init);
                }
            }
            if self.init.is_some() {
                let out = self
                    .nsenter()
                    .exec_timeout(&["systemctl", "is-system-running"], Duration::from_secs(10));
                let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
                match text.as_str() {
                    "running" => return Ok(()),
                    "degraded" => {
                        let failed = self.nsenter().systemctl(&["--failed", "--plain"]);
                        eprintln!(
                            "[system] {} booted DEGRADED; failed units:\n{}",
                            self.name,
                            String::from_utf8_lossy(&failed.stdout)
                        );
                        return Ok(());
                    }
                    _ => state = format!("{text} {}", String::from_utf8_lossy(&out.stderr).trim()),
                }
            }
            if Instant::now() >= deadline {
                return Err(ContainerError::BootTimeout {
                    name: self.name.clone(),
                    within,
                    state,
                    log: self.log.clone(),
                    tail: tail(&self.log, 40),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn init_proc(&self) -> Proc {
        self.init.expect("container booted")
    }

    /// The machine name (also the work directory's and the cgroup's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Loopback port of `zero-logs.socket` (set by [`SOCKET_DROPIN`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From spawning the launcher to `running`.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Host PID of the container's systemd.
    pub fn init_pid(&self) -> u32 {
        self.init_proc().pid
    }

    /// nspawn's console log (the container's boot messages).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A `Send + 'static` handle running commands inside.
    pub fn nsenter(&self) -> Nsenter {
        Nsenter {
            init: self.init_proc(),
            name: self.name.clone(),
        }
    }

    /// See [`Nsenter::exec`].
    pub fn exec(&self, args: &[&str]) -> Output {
        self.nsenter().exec(args)
    }

    pub fn exec_timeout(&self, args: &[&str], within: Duration) -> Output {
        self.nsenter().exec_timeout(args, within)
    }

    /// Panics unless exit 0; returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        self.nsenter().exec_ok(args)
    }

    /// `sh -c script` inside.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// `systemctl --no-pager args…`.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.nsenter().systemctl(args)
    }

    /// `systemctl` that must succeed; returns stdout.
    pub fn systemctl_ok(&self, args: &[&str]) -> String {
        let mut full = vec!["systemctl", "--no-pager"];
        full.extend_from_slice(args);
        self.exec_ok(&full)
    }

    /// `systemctl` from an async test without blocking its runtime.
    pub async fn systemctl_async(&self, args: &[&str]) -> Output {
        let handle = self.nsenter();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            handle.systemctl(&args)
        })
        .await
        .expect("systemctl task")
    }

    /// `exec` from an async test without blocking its runtime.
    pub async fn exec_async(&self, args: &[&str]) -> Output {
        let handle = self.nsenter();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            handle.exec(&args)
        })
        .await
        .expect("exec task")
    }

    /// `systemctl show -p PROP --value UNIT`, trimmed. Panics if systemctl fails.
    pub fn unit_property(&self, unit: &str, prop: &str) -> String {
        self.systemctl_ok(&["show", "-p", prop, "--value", unit])
            .trim()
            .to_string()
    }

    /// Several properties of one unit at once.
    pub fn unit_properties(&self, unit: &str, props: &[&str]) -> BTreeMap<String, String> {
        let mut args = vec!["show"];
        for p in props {
            args.push("-p");
            args.push(p);
        }
        args.push(unit);
        parse_show(&self.systemctl_ok(&args))
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    pub fn daemon_reload(&self) {
        self.systemctl_ok(&["daemon-reload"]);
    }

    /// Journal entries of units matching `unit_glob` (`journalctl -u GLOB -o json`),
    /// after `journalctl --sync`, oldest first.
    pub fn journal_json(&self, unit_glob: &str) -> Vec<serde_json::Value> {
        let _ = self.exec(&["journalctl", "--sync"]);
        let out = self.exec_ok(&["journalctl", "-u", unit_glob, "-o", "json", "--no-pager"]);
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}")))
            .collect()
    }

    /// `journalctl --no-pager -o json ARGS…` (after `journalctl --sync`), parsed,
    /// oldest first: e.g. `&["-u", "zero-logs@*", "WORKER_ID=2"]`.
    pub fn journal_query(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let _ = self.exec(&["journalctl", "--sync"]);
        let mut full = vec!["journalctl", "--no-pager", "-o", "json"];
        full.extend_from_slice(args);
        let out = self.exec_ok(&full);
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}")))
            .collect()
    }

    /// Every loaded `zero-logs@*.service`, by instance name.
    pub fn instances(&self) -> BTreeMap<String, InstanceState> {
        let list = self.systemctl_ok(&[
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "--type=service",
            "zero-logs@*.service",
        ]);
        let units: Vec<&str> = list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|u| u.starts_with("zero-logs@") && u.ends_with(".service"))
            .collect();
        if units.is_empty() {
            return BTreeMap::new();
        }
        let mut args = vec![
            "show",
            "-p",
            "Id",
            "-p",
            "ActiveState",
            "-p",
            "SubState",
            "-p",
            "MainPID",
            "-p",
            "NRestarts",
            "-p",
            "Result",
        ];
        args.extend(units);
        parse_show(&self.systemctl_ok(&args))
            .into_iter()
            .filter_map(|p| {
                let unit = p.get("Id")?.clone();
                let instance = unit
                    .strip_prefix("zero-logs@")?
                    .strip_suffix(".service")?
                    .to_string();
                let get = |k: &str| p.get(k).cloned().unwrap_or_default();
                Some((
                    instance.clone(),
                    InstanceState {
                        unit,
                        instance,
                        active_state: get("ActiveState"),
                        sub_state: get("SubState"),
                        main_pid: get("MainPID").parse().unwrap_or(0),
                        n_restarts: get("NRestarts").parse().unwrap_or(0),
                        result: get("Result"),
                    },
                ))
            })
            .collect()
    }

    /// Instance → `MainPID` (container-relative) of the instances that have one.
    pub fn main_pids(&self) -> BTreeMap<String, u32> {
        self.instances()
            .into_iter()
            .filter(|(_, s)| s.main_pid != 0)
            .map(|(i, s)| (i, s.main_pid))
            .collect()
    }

    /// Waits until exactly `n` instances are `active`/`running` (others may be
    /// loaded but inactive); returns all instances' states.
    pub fn wait_instances_running(
        &self,
        n: usize,
        within: Duration,
    ) -> BTreeMap<String, InstanceState> {
        super::wait_until(
            &format!("{n} zero-logs@ instances active/running in {}", self.name),
            within,
            |last| {
                let all = self.instances();
                let running = all.values().filter(|s| s.is_running()).count();
                *last = format!("{all:?}");
                (running == n).then_some(all)
            },
        )
    }

    /// Sends `signal` (e.g. "STOP", "KILL") to a container-relative PID, with kill(1)
    /// inside the container. Panics if kill fails.
    pub fn kill_inside(&self, container_pid: u32, signal: &str) {
        self.exec_ok(&["kill", &format!("-{signal}"), &container_pid.to_string()]);
    }

    /// Host PID of a process known inside the container by `container_pid`.
    pub fn host_pid(&self, container_pid: u32) -> Option<u32> {
        let ns = ns_link(self.init_proc().pid, "pid")?;
        proc_pids().into_iter().find(|&pid| {
            ns_link(pid, "pid").as_deref() == Some(ns.as_str())
                && ns_pids(pid).and_then(|p| p.last().copied()) == Some(container_pid)
        })
    }

    /// Path (inside the container) of an instance's admin socket, read from the
    /// running process: `ADMIN_SOCKET` in its environment or `--admin-socket` on
    /// its command line. `None` when the instance is not running or has none.
    pub fn admin_socket(&self, instance: &str) -> Option<String> {
        let main = self.instances().get(instance)?.main_pid;
        if main == 0 {
            return None;
        }
        let host = self.host_pid(main)?;
        let cmdline = fs::read(format!("/proc/{host}/cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        for (i, arg) in args.iter().enumerate() {
            if let Some(v) = arg.strip_prefix("--admin-socket=") {
                return Some(v.to_string());
            }
            if arg == "--admin-socket" {
                return args.get(i + 1).cloned();
            }
        }
        let environ = fs::read(format!("/proc/{host}/environ")).ok()?;
        environ
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("ADMIN_SOCKET=").map(str::to_string))
            .filter(|v| !v.is_empty())
    }

    /// `GET <path>` on an instance's admin socket (curl inside the container);
    /// returns (HTTP status, body).
    pub fn admin_get(&self, instance: &str, path: &str) -> Result<(u16, String), String> {
        self.admin_request(instance, "GET", path)
    }

    /// `POST <path>` (empty body) on an instance's admin socket; (status, body).
    pub fn admin_post(&self, instance: &str, path: &str) -> Result<(u16, String), String> {
        self.admin_request(instance, "POST", path)
    }

    /// `method <path>` on an instance's admin socket (curl inside the container);
    /// returns (HTTP status, body). `Err` when the instance has no admin socket or
    /// curl fails (connection refused, timeout).
    pub fn admin_request(
        &self,
        instance: &str,
        method: &str,
        path: &str,
    ) -> Result<(u16, String), String> {
        let socket = self
            .admin_socket(instance)
            .ok_or_else(|| format!("instance {instance} has no admin socket (not running?)"))?;
        let url = format!("http://localhost{path}");
        let out = self.exec_timeout(
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "-X",
                method,
                "--unix-socket",
                &socket,
                "-w",
                "\n%{http_code}",
                &url,
            ],
            Duration::from_secs(10),
        );
        if !out.status.success() {
            return Err(describe(
                &["curl", "-X", method, "--unix-socket", &socket, &url],
                &out,
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let code = code
            .trim()
            .parse()
            .map_err(|_| format!("curl printed no status: {text:?}"))?;
        Ok((code, body.to_string()))
    }

    /// `POST <path>` to one instance's test hook (`/debug/…`): on its admin socket
    /// when that serves the path; otherwise (404/405 there) through the shared
    /// port on a connection [`Pinned`](super::Pinned) to that instance. Returns
    /// which way it went, the HTTP status and the body.
    pub fn debug_post(&self, instance: &str, path: &str) -> Result<DebugPost, String> {
        let (status, body) = self.admin_post(instance, path)?;
        if status != 404 && status != 405 {
            return Ok(DebugPost {
                via: "admin socket".into(),
                admin_socket_status: status,
                status,
                headers: Vec::new(),
                body,
            });
        }
        let mut pinned = super::Pinned::to_instance(self.port, instance, 200)?;
        let answer = pinned.request("POST", path, None)?;
        Ok(DebugPost {
            via: format!(
                "shared port, connection pinned to instance {instance} (after {} connections)",
                pinned.attempts
            ),
            admin_socket_status: status,
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
        })
    }

    /// `/stats` of one instance, over its admin socket.
    pub fn instance_stats(&self, instance: &str) -> Result<serde_json::Value, String> {
        let (status, body) = self.admin_get(instance, "/stats")?;
        if status != 200 {
            return Err(format!(
                "/stats of instance {instance}: HTTP {status}: {body}"
            ));
        }
        serde_json::from_str(&body).map_err(|e| format!("/stats of {instance}: {e}: {body}"))
    }

    /// `/stats` of every running instance.
    pub fn stats_all(&self) -> BTreeMap<String, serde_json::Value> {
        self.instances()
            .into_iter()
            .filter(|(_, s)| s.is_running())
            .filter_map(|(i, _)| {
                let stats = self.instance_stats(&i).ok()?;
                Some((i, stats))
            })
            .collect()
    }

    /// One numeric `/stats` field per running instance (e.g. `"requests"`): the
    /// spread of the load over the instances.
    pub fn spread(&self, field: &str) -> BTreeMap<String, u64> {
        self.stats_all()
            .into_iter()
            .map(|(i, s)| (i, s.get(field).and_then(|v| v.as_u64()).unwrap_or(0)))
            .collect()
    }

    /// Writes a file inside the running container (parent directories created).
    pub fn write_file(&self, path: &str, contents: impl AsRef<[u8]>) {
        let args = [
            "sh",
            "-c",
            "mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\"",
            "sh",
            path,
        ];
        let out = self
            .nsenter()
            .exec_with(&args, Some(contents.as_ref()), EXEC_TIMEOUT);
        assert!(out.status.success(), "{}", describe(&args, &out));
    }

    /// A file's contents inside the container, `None` when it cannot be read.
    pub fn read_file(&self, path: &str) -> Option<String> {
        let out = self.exec(&["cat", path]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `systemd-analyze verify` of `units` (paths or names) inside the container.
    pub fn analyze_verify(&self, units: &[&str]) -> Output {
        let mut args = vec!["systemd-analyze", "verify"];
        args.extend_from_slice(units);
        self.exec_timeout(&args, Duration::from_secs(120))
    }

    /// Failed units, status of zero-logs units, their journal: for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        if self.init.is_none_or(|p| !p.alive()) {
            return "container not running".into();
        }
        let short = Duration::from_secs(10);
        let n = self.nsenter();
        for args in [
            &["systemctl", "--no-pager", "--failed", "--plain"][..],
            &[
                "systemctl",
                "--no-pager",
                "status",
                "--lines=0",
                "zero-logs*",
            ][..],
            &[
                "journalctl",
                "--no-pager",
                "-o",
                "short-precise",
                "-n",
                "300",
                "-u",
                "zero-logs*",
            ][..],
        ] {
            let o = n.exec_timeout(args, short);
            let _ = writeln!(out, "{}", describe(args, &o));
        }
        out
    }

    /// Saves diagnostics, the console log and the launch script under
    /// `target/tmp/system-tests/<name>/`; returns that directory.
    fn save_artifacts(&self) -> PathBuf {
        let dir = artifacts_dir(&self.name);
        let _ = fs::create_dir_all(&dir);
        let _ = fs::copy(&self.log, dir.join("console.log"));
        let _ = fs::copy(self.work.join("launch.sh"), dir.join("launch.sh"));
        if self.init.is_some_and(|p| p.alive()) {
            let _ = fs::write(dir.join("diagnostics.txt"), self.diagnostics());
            let journal = self.nsenter().exec_timeout(
                &["journalctl", "--no-pager", "-b", "-o", "short-precise"],
                Duration::from_secs(20),
            );
            let _ = fs::write(dir.join("journal.txt"), &journal.stdout);
        }
        dir
    }

    fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        if !self.keeper.exited() {
            if self.nspawn.is_none() {
                if let Some((nspawn, init)) = find_container(self.launcher.pid) {
                    self.nspawn = Some(nspawn);
                    self.init = Some(init);
                }
            }
            // nspawn turns SIGTERM into a clean poweroff of the container. Before
            // nspawn runs, `timeout` forwards SIGTERM to its process group, and the
            // launch script (PID 1 of its namespace) traps it and exits.
            self.nspawn.unwrap_or(self.launcher).signal("TERM");
            if !self.keeper.wait(STOP_GRACE) {
                eprintln!(
                    "[system] {}: no clean poweroff within {STOP_GRACE:?}; SIGKILL",
                    self.name
                );
                // The death of unshare's parent SIGKILLs PID 1 of the outer PID
                // namespace (--kill-child); the kernel then kills everything inside.
                let unshare = find_child(self.launcher.pid, "unshare");
                for p in [self.nspawn, self.init, unshare].into_iter().flatten() {
                    p.signal("KILL");
                }
                if !self.keeper.wait(Duration::from_secs(5)) {
                    self.launcher.signal("KILL");
                    if !self.keeper.wait(Duration::from_secs(5)) {
                        eprintln!(
                            "[system] {}: LEAK: launcher pid {} still running after SIGKILL",
                            self.name, self.launcher.pid
                        );
                        return started.elapsed();
                    }
                }
            }
        }
        if let Some(thread) = self.keeper_thread.take() {
            let _ = thread.join();
        }
        started.elapsed()
    }
}

impl Drop for SystemdContainer {
    fn drop(&mut self) {
        let failing = std::thread::panicking() || self.failed;
        let keep = failing || std::env::var_os("ZERO_LOGS_SYSTEM_TESTS_KEEP").is_some();
        if keep {
            let dir = self.save_artifacts();
            if self.init.is_some_and(|p| p.alive()) && !self.failed {
                eprintln!(
                    "[system] {} diagnostics (test failed):\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            eprintln!(
                "[system] {}: console log, journal and diagnostics saved in {}",
                self.name,
                dir.display()
            );
        }
        let took = self.shutdown();
        if keep {
            // The console log now ends with the container's shutdown.
            let dir = artifacts_dir(&self.name);
            let _ = fs::copy(&self.log, dir.join("console.log"));
        }
        // Processes are gone; cgroup directories empty out as they are reaped.
        for _ in 0..20 {
            if remove_cgroups(&self.cgroups) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = fs::remove_dir_all(&self.work);
        eprintln!(
            "[system] {} torn down in {} ms",
            self.name,
            took.as_millis()
        );
    }
}

/// `target/tmp/system-tests/<name>/`: where a failed (or, with
/// `ZERO_LOGS_SYSTEM_TESTS_KEEP=1`, every) container's logs are saved.
pub fn artifacts_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("system-tests")
        .join(name)
}

// === launcher ===

#[derive(Default)]
struct Keeper {
    exit: Mutex<Option<String>>,
    cv: Condvar,
}

impl Keeper {
    fn finish(&self, status: String) {
        *lock(&self.exit) = Some(status);
        self.cv.notify_all();
    }

    fn status(&self) -> Option<String> {
        lock(&self.exit).clone()
    }

    fn exited(&self) -> bool {
        lock(&self.exit).is_some()
    }

    /// Waits up to `within` for the launcher to exit; true when it has.
    fn wait(&self, within: Duration) -> bool {
        let guard = lock(&self.exit);
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, within, |s| s.is_none())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Process-wide gate: at most `ZERO_LOGS_SYSTEM_TESTS_PARALLEL` (default 1)
/// containers at once.
struct Permit;

static GATE: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl Permit {
    fn acquire() -> Permit {
        let cap: usize = std::env::var("ZERO_LOGS_SYSTEM_TESTS_PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(1);
        let waited = Instant::now();
        let guard = lock(&GATE.0);
        let (mut guard, timeout) = GATE
            .1
            .wait_timeout_while(guard, Duration::from_secs(900), |n| *n >= cap)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(
            !timeout.timed_out(),
            "waited 15 min for another system test's container to go away"
        );
        *guard += 1;
        if waited.elapsed() > Duration::from_millis(100) {
            eprintln!(
                "[system] waited {} ms for a container slot",
                waited.elapsed().as_millis()
            );
        }
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        *lock(&GATE.0) -= 1;
        GATE.1.notify_all();
    }
}

fn check_prerequisites() -> Result<(), ContainerError> {
    let missing = |what: String| ContainerError::Prerequisite {
        what,
        fix: FIX.to_string(),
    };
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(ContainerError::Prerequisite {
            what: format!("they need root (mount, unshare, systemd-nspawn); effective uid is {euid}"),
            fix: "run the system tests as root (e.g. sudo -E cargo test …); scripts/install-deps installs what else they need".into(),
        });
    }
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("timeout", "coreutils"),
        ("mount", "mount"),
        ("curl", "curl"),
    ] {
        if find_in_path(tool).is_none() {
            return Err(missing(format!(
                "`{tool}` not found (Debian package {package})"
            )));
        }
    }
    if !Path::new("/usr/lib/systemd/systemd").exists()
        && !Path::new("/lib/systemd/systemd").exists()
    {
        return Err(missing(
            "systemd is not installed (/lib/systemd/systemd)".into(),
        ));
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
    {
        return Err(ContainerError::Prerequisite {
            what: "the kernel has no overlayfs (not in /proc/filesystems)".into(),
            fix: "load it with `modprobe overlay` (as root)".into(),
        });
    }
    Ok(())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|c| c.is_file())
}

/// A free loopback port (probed by binding; systemd binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probing a free loopback port")
}

/// One file to put into the overlay before boot.
#[derive(Debug)]
struct Install {
    src: PathBuf,
    dest: String,
    mode: u32,
}

#[derive(Debug, Default)]
struct Plan {
    installs: Vec<Install>,
    notes: Vec<String>,
    has_sysusers: bool,
}

/// Where a file of `systemd/` goes, and its mode.
fn destination(name: &str) -> Option<(String, u32)> {
    const UNITS: &[&str] = &[
        ".service", ".socket", ".target", ".timer", ".path", ".slice", ".mount",
    ];
    if UNITS.iter().any(|s| name.ends_with(s)) {
        Some((format!("/usr/lib/systemd/system/{name}"), 0o644))
    } else if name.ends_with("-generator") {
        Some((format!("/usr/lib/systemd/system-generators/{name}"), 0o755))
    } else if let Some(stem) = name.strip_suffix(".sysusers") {
        Some((format!("/usr/lib/sysusers.d/{stem}.conf"), 0o644))
    } else if let Some(stem) = name.strip_suffix(".tmpfiles") {
        Some((format!("/usr/lib/tmpfiles.d/{stem}.conf"), 0o644))
    } else if name.ends_with(".preset") {
        Some((format!("/usr/lib/systemd/system-preset/{name}"), 0o644))
    } else {
        None
    }
}

/// Where the files of a subdirectory of `systemd/` go.
fn dir_destination(dir: &str) -> Option<(String, u32)> {
    match dir {
        "sysusers.d" => Some(("/usr/lib/sysusers.d".into(), 0o644)),
        "tmpfiles.d" => Some(("/usr/lib/tmpfiles.d".into(), 0o644)),
        "system-generators" => Some(("/usr/lib/systemd/system-generators".into(), 0o755)),
        "system-preset" => Some(("/usr/lib/systemd/system-preset".into(), 0o644)),
        d if d.ends_with(".d") => Some((format!("/usr/lib/systemd/system/{d}"), 0o644)),
        _ => None,
    }
}

fn install_plan(opts: &BootOptions, work: &Path, port: u16) -> Result<Plan, ContainerError> {
    let stage = work.join("stage");
    let mut plan = Plan::default();
    let mut staged = 0usize;
    let mut stage_file =
        |plan: &mut Plan, dest: &str, contents: &[u8], mode: u32| -> Result<(), ContainerError> {
            staged += 1;
            let src = stage.join(format!("{staged:03}"));
            fs::write(&src, contents).map_err(io_err(format!("writing {}", src.display())))?;
            plan.installs.push(Install {
                src,
                dest: dest.to_string(),
                mode,
            });
            Ok(())
        };

    for bin in &opts.binaries {
        let file = bin
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| ContainerError::Units(format!("bad binary path {}", bin.display())))?;
        if !bin.is_file() {
            return Err(ContainerError::Units(format!(
                "binary {} does not exist (cargo builds it for integration tests)",
                bin.display()
            )));
        }
        plan.installs.push(Install {
            src: bin.clone(),
            dest: format!("/usr/bin/{file}"),
            mode: 0o755,
        });
    }

    let dir = match &opts.units {
        UnitFiles::Repo => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")),
        UnitFiles::Dir(d) => Some(d.clone()),
        UnitFiles::Inline(files) => {
            for (name, contents) in files {
                let (dest, mode) = destination(name).ok_or_else(|| {
                    ContainerError::Units(format!("inline file {name}: unknown kind"))
                })?;
                plan.has_sysusers |= dest.starts_with("/usr/lib/sysusers.d/");
                stage_file(&mut plan, &dest, contents.as_bytes(), mode)?;
            }
            None
        }
        UnitFiles::None => None,
    };
    if let Some(dir) = dir {
        let entries = fs::read_dir(&dir).map_err(|e| {
            ContainerError::Units(format!(
                "{} cannot be read ({e}); the system tests install the units from there",
                dir.display()
            ))
        })?;
        let mut names: Vec<_> = entries.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                let Some((base, mode)) = dir_destination(&name) else {
                    plan.notes.push(format!(
                        "not installed (unknown directory): {}",
                        path.display()
                    ));
                    continue;
                };
                let mut files: Vec<_> = fs::read_dir(&path)
                    .map_err(io_err(format!("reading {}", path.display())))?
                    .flatten()
                    .filter(|e| e.path().is_file())
                    .collect();
                files.sort_by_key(|e| e.file_name());
                for f in files {
                    let dest = format!("{base}/{}", f.file_name().to_string_lossy());
                    plan.has_sysusers |= base == "/usr/lib/sysusers.d";
                    plan.installs.push(Install {
                        src: f.path(),
                        dest,
                        mode,
                    });
                }
            } else if let Some((dest, mode)) = destination(&name) {
                plan.has_sysusers |= dest.starts_with("/usr/lib/sysusers.d/");
                plan.installs.push(Install {
                    src: path,
                    dest,
                    mode,
                });
            } else if name.ends_with(".env") {
                plan.notes.push(format!(
                    "not installed: {} (the test's own env file is {ENV_FILE})",
                    path.display()
                ));
            } else if !name.ends_with(".md") && !name.starts_with('.') {
                plan.notes
                    .push(format!("not installed (unknown kind): {}", path.display()));
            }
        }
        if !plan
            .installs
            .iter()
            .any(|i| i.dest.starts_with("/usr/lib/systemd/system/"))
        {
            return Err(ContainerError::Units(format!(
                "{} holds no unit files",
                dir.display()
            )));
        }
    }

    if opts.env_file {
        let mut env = String::from("# written by the system-test harness (tests/system)\n");
        for (k, v) in &opts.env {
            let _ = writeln!(env, "{k}={v}");
        }
        stage_file(&mut plan, ENV_FILE, env.as_bytes(), 0o644)?;
    } else if !opts.env.is_empty() {
        return Err(ContainerError::Units(format!(
            "env lines {:?} given, but the env file is not written (env_file = false)",
            opts.env
        )));
    }
    if opts.socket_dropin {
        let dropin = format!(
            "# system-test harness: this container's own loopback port\n\
             [Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"
        );
        stage_file(&mut plan, SOCKET_DROPIN, dropin.as_bytes(), 0o644)?;
    }
    for (path, contents, mode) in &opts.files {
        if !path.starts_with('/') {
            return Err(ContainerError::Units(format!(
                "extra file path must be absolute: {path}"
            )));
        }
        stage_file(&mut plan, path, contents, *mode)?;
    }
    Ok(plan)
}

/// Single-quotes for sh.
fn q(s: impl AsRef<str>) -> String {
    format!("'{}'", s.as_ref().replace('\'', r"'\''"))
}

fn launch_script(
    name: &str,
    work: &Path,
    cgroups: &[PathBuf],
    opts: &BootOptions,
    plan: &Plan,
) -> String {
    let base = work.join("base");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# container {name}: generated by tests/system/container.rs; runs as PID 1 of a\n\
         # new PID namespace in a private mount namespace (unshare --mount --pid --fork)\n\
         set -eu\n\
         # As PID 1 of its namespace this shell gets SIGTERM only with a handler.\n\
         trap 'exit 143' TERM INT HUP\n\
         BASE={}\n\
         ROOT=\"$BASE/root\"",
        q(base.to_string_lossy())
    );
    for cg in cgroups {
        let _ = writeln!(
            s,
            "echo $$ > {}",
            q(cg.join("cgroup.procs").to_string_lossy())
        );
    }
    let _ = writeln!(
        s,
        "mount -t tmpfs -o mode=0755 zl-systest \"$BASE\"\n\
         mkdir \"$BASE/upper\" \"$BASE/work\" \"$ROOT\"\n\
         mount -t overlay overlay -o \"lowerdir=/,upperdir=$BASE/upper,workdir=$BASE/work\" \"$ROOT\"\n\
         mkdir -p /run/systemd/nspawn\n\
         mount -t tmpfs -o mode=0755 zl-systest-nspawn /run/systemd/nspawn\n\
         mkdir -p \"$ROOT/etc/systemd/system\""
    );
    let masked: Vec<String> = MASKED_UNITS
        .iter()
        .map(|u| u.to_string())
        .chain(opts.mask.iter().cloned())
        .collect();
    for unit in &masked {
        let _ = writeln!(
            s,
            "ln -sfn /dev/null \"$ROOT/etc/systemd/system/\"{}",
            q(unit)
        );
    }
    for i in &plan.installs {
        let _ = writeln!(
            s,
            "install -D -m {:04o} {} \"$ROOT\"{}",
            i.mode,
            q(i.src.to_string_lossy()),
            q(&i.dest)
        );
    }
    if plan.has_sysusers {
        // What the package's postinst does; boot would also run it (ConditionNeedsUpdate).
        let _ = writeln!(s, "systemd-sysusers --root=\"$ROOT\"");
    }
    if !opts.enable.is_empty() {
        let units: Vec<String> = opts.enable.iter().map(q).collect();
        let _ = writeln!(s, "systemctl --root=\"$ROOT\" enable {}", units.join(" "));
    }
    let _ = writeln!(
        s,
        "echo \"[launch] overlay ready; booting\"\n\
         exec systemd-nspawn -q -D \"$ROOT\" --register=no --keep-unit --link-journal=no \
         --boot --machine={}",
        q(name)
    );
    s
}

// === cgroups ===

/// Creates `zl-systest-…` under the test process's own cgroup in the hierarchies
/// systemd uses (cgroup2, and `name=systemd` on hybrid hosts).
fn make_cgroups(name: &str) -> Result<Vec<PathBuf>, ContainerError> {
    let dirs: Vec<PathBuf> = own_cgroup_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .collect();
    for dir in &dirs {
        fs::create_dir(dir).map_err(io_err(format!("creating cgroup {}", dir.display())))?;
    }
    Ok(dirs)
}

/// Removes cgroup directories depth-first; true when all are gone.
fn remove_cgroups(dirs: &[PathBuf]) -> bool {
    fn remove(dir: &Path) -> bool {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&e.path());
                }
            }
        }
        fs::remove_dir(dir).is_ok() || !dir.exists()
    }
    // Every directory is tried, even after a failure.
    let results: Vec<bool> = dirs.iter().map(|d| remove(d)).collect();
    results.into_iter().all(|ok| ok)
}

/// The directories of this process's cgroup in the cgroup2 and `name=systemd`
/// hierarchies.
fn own_cgroup_dirs() -> Vec<PathBuf> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = |key: &str| {
        cgroup.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (controllers == key).then(|| path.to_string())
        })
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount)) = (left.get(3), left.get(4)) else {
            continue;
        };
        let key = match right.first() {
            Some(&"cgroup2") => "",
            Some(&"cgroup")
                if right
                    .get(2)
                    .is_some_and(|o| o.split(',').any(|x| x == "name=systemd")) =>
            {
                "name=systemd"
            }
            _ => continue,
        };
        let Some(path) = own(key) else { continue };
        let rel = path
            .strip_prefix(root.trim_end_matches('/'))
            .unwrap_or(&path);
        let dir = PathBuf::from(mount).join(rel.trim_start_matches('/'));
        if dir.is_dir() && !out.contains(&dir) {
            out.push(dir);
        }
    }
    out
}

/// Removes what test processes killed outright left behind: work directories and
/// (empty) cgroups whose PID no longer exists.
fn sweep_orphans() {
    let dead = |name: &str| {
        name.strip_prefix("zl-systest-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists())
    };
    let mut roots = vec![std::env::temp_dir()];
    roots.extend(own_cgroup_dirs());
    for (i, root) in roots.iter().enumerate() {
        let Ok(entries) = fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            if i == 0 {
                let _ = fs::remove_dir_all(e.path());
            } else {
                remove_cgroups(&[e.path()]);
            }
        }
    }
}

// === /proc ===

struct Stat {
    ppid: u32,
    start: u64,
    state: char,
    comm: String,
}

fn proc_stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 2..].split(' ').collect();
    // rest[0] = state (field 3), rest[1] = ppid (4), rest[19] = starttime (22)
    Some(Stat {
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
        comm,
    })
}

fn proc_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `NSpid:` of a process: its PID in each nested PID namespace, outermost first.
fn ns_pids(pid: u32) -> Option<Vec<u32>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
    )
}

fn ns_link(pid: u32, ns: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The child of `parent` named `comm`.
fn find_child(parent: u32, comm: &str) -> Option<Proc> {
    proc_pids().into_iter().find_map(|pid| {
        let stat = proc_stat(pid)?;
        (stat.ppid == parent && stat.comm == comm).then_some(Proc {
            pid,
            start: stat.start,
        })
    })
}

/// Among the descendants of `launcher`: `systemd-nspawn` and its child that is PID 1
/// of a new namespace and has exec'd systemd.
fn find_container(launcher: u32) -> Option<(Proc, Proc)> {
    let mut children: HashMap<u32, Vec<(u32, Stat)>> = HashMap::new();
    for pid in proc_pids() {
        if let Some(stat) = proc_stat(pid) {
            children.entry(stat.ppid).or_default().push((pid, stat));
        }
    }
    let mut queue = vec![launcher];
    while let Some(parent) = queue.pop() {
        for (pid, stat) in children.get(&parent).into_iter().flatten() {
            if stat.comm == "systemd-nspawn" {
                let depth = ns_pids(*pid)?.len();
                for (child, cstat) in children.get(pid).into_iter().flatten() {
                    let ns = ns_pids(*child)?;
                    if cstat.comm == "systemd" && ns.len() == depth + 1 && ns.last() == Some(&1) {
                        return Some((
                            Proc {
                                pid: *pid,
                                start: stat.start,
                            },
                            Proc {
                                pid: *child,
                                start: cstat.start,
                            },
                        ));
                    }
                }
            }
            queue.push(*pid);
        }
    }
    None
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Blocks of `systemctl show` (separated by blank lines) as maps.
pub fn parse_show(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut current = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else if let Some((k, v)) = line.split_once('=') {
            current.insert(k.to_string(), v.to_string());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
