//! System-test harness: a real systemd (252, Debian 12) booted in a throw-away
//! `systemd-nspawn` container on a copy-on-write overlay of the host's root, with the
//! freshly built binaries and the repository's `systemd/` units installed in it.
//! Recipe and observed facts: the shared SYSTEMD-TESTS.md recipe (`../shared/` next to the repository).
//!
//! Use from a test file (`tests/system_units.rs`):
//!
//! ```ignore
//! mod system;
//! use system::{BootOptions, SystemdContainer};
//!
//! let c = SystemdContainer::boot(BootOptions::new().env("CLUSTER_WORKERS", "3"))?;
//! c.systemctl_ok(&["start", "zero-logs.target"]);
//! let running = c.wait_instances_running(3, Duration::from_secs(30));
//! ```
//!
//! - [`container`]: [`SystemdContainer`] — boot, run commands inside, inspect units,
//!   journal, per-instance admin sockets; torn down by `Drop`, pass or fail.
//! - [`load`]: a bounded loopback load generator counting acknowledged records and
//!   failed requests.
//! - [`cluster`]: [`Cluster`](cluster::Cluster), ClickHouse + a container
//!   running `zero-logs.target` + a runtime for loads (ctl and daemon tests).
//! - [`pinned`]: a keep-alive connection to the shared port known to be served by
//!   one given instance (to reach that worker through the public port).
//!
//! Requirements (checked at boot, failing loudly with the fix `scripts/install-deps`,
//! never skipping): root, `systemd-nspawn` (package `systemd-container`), `unshare`,
//! `nsenter`, `timeout`, `setpriv`, `curl`, overlayfs in the kernel.
//!
//! **Concurrency.** Containers are isolated from each other (own machine name, base
//! directory, mount and PID namespaces, cgroup subtree, loopback port), so they *can*
//! run in parallel; but by default at most one container per test process is up at a
//! time (a process-wide gate taken in `boot`, released in `Drop`): on a 2-core machine
//! parallel containers distort timings (watchdog, drain, load spread) and save little.
//! `ZERO_LOGS_SYSTEM_TESTS_PARALLEL=N` raises the gate to N containers.
//!
//! **Logs.** A container whose test fails (panics while it is alive) prints failed
//! units, `systemctl status zero-logs*` and the zero-logs journal, and saves them
//! with nspawn's console log and the whole boot's journal under
//! `target/tmp/system-tests/<machine>/`; `ZERO_LOGS_SYSTEM_TESTS_KEEP=1` saves them
//! for passing tests too.
//!
//! **Bounds.** Every command run inside is under `timeout` (60 s by default); boot
//! waits at most 60 s; a container lives at most 600 s (`BootOptions::lifetime`)
//! even if the test process is killed outright (see `container.rs`).
#![allow(dead_code)]

pub mod cluster;
pub mod container;
pub mod deb;
pub mod load;
pub mod pinned;

#[allow(unused_imports)]
pub use container::{BootOptions, ContainerError, InstanceState, SystemdContainer, UnitFiles};
#[allow(unused_imports)]
pub use load::{LoadReport, LoadSpec, RunningLoad};
#[allow(unused_imports)]
pub use pinned::Pinned;

use std::time::{Duration, Instant};

/// Polls `probe` every 100 ms until it returns `Some`, at most `within`; then panics
/// naming `what` and the last thing `probe` reported through `last`.
pub fn wait_until<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut(&mut String) -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        if let Some(value) = probe(&mut last) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}; last seen: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
