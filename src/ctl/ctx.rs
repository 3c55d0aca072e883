//! What every command of the ctl (and the management daemon) works with: how to reach
//! systemd, where the env files are, the admin-socket client; and the host facts the
//! commands share. Built once by [`super::main`] from the global options.

use std::path::PathBuf;

use super::env_files::{ClusterSize, EnvFiles};
use super::systemd::BusChoice;
use super::worker_client::AdminClient;

/// What every command needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub bus: BusChoice,
    pub config_dir: PathBuf,
    pub admin: AdminClient,
}

impl Ctx {
    /// N and the bounds as the env files define them now (for "where N comes from").
    pub fn cluster_size(&self) -> ClusterSize {
        ClusterSize::from_env(&EnvFiles::load(&self.config_dir), cpus())
    }
}

/// CPUs this process may use, as `nproc` counts: what `auto`/`0` workers means.
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}
