//! `zero-logs-ctl`, the operator's tool: status, stats, health, scale and
//! rolling restarts of the `zero-logs@N` workers.
//!
//! systemd is the master: the ctl never forks or signals workers itself. It
//! asks systemd over D-Bus ([`systemd`]) to start, stop and restart units and
//! reads their state, and asks each instance for its own health and counters
//! over its admin socket ([`worker_client`]). N lives in the env files
//! ([`env_files`]), where the generator reads it at every `daemon-reload` and
//! boot.
//!
//! # Layout
//!
//! - [`ctx`]: [`Ctx`], what every command works with (bus, env files, admin client).
//! - [`systemd`]: D-Bus proxies for `org.freedesktop.systemd1`, unit properties.
//! - [`signals`]: waiting for jobs and service exits (systemd's signals).
//! - `private_bus`: zbus over systemd's private socket (its non-unique sender fixed).
//! - [`worker_client`]: HTTP/1.1 GET over the per-instance admin sockets.
//! - [`env_files`]: the env files as the generator reads them; `50-scale.env`.
//! - [`inventory`]: one look at every instance (systemd + admin socket).
//! - [`status`]: `status`, `stats` (old cluster API shape), `health` verdicts.
//! - [`scale`], [`restart`]: the mutating commands.
//!
//! The management daemon (HTTP API, health watchdog, memory-limit restarts)
//! builds on the same pieces: [`inventory::collect`], [`scale::scale`] and
//! [`restart::rolling_restart`] report progress through a callback, not stdout.
//!
//! Errors: each module has its `thiserror` type; the command handlers
//! (`run` functions) use `anyhow` and [`main`] maps them to exit statuses.

pub mod ctx;
pub mod daemon;
pub mod env_files;
pub mod inventory;
mod private_bus;
pub mod restart;
pub mod scale;
pub mod signals;
pub mod status;
pub mod systemd;
pub mod worker_client;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use self::ctx::Ctx;
use self::env_files::ScaleError;
use self::systemd::{BusChoice, Systemd};
use self::worker_client::AdminClient;

const EXIT_CODES: &str = "\
Exit status:
  0  success (health: every wanted instance is healthy)
  1  failure, with the reason on stderr (health: degraded)
  2  usage error or a refused value, e.g. scale beyond CLUSTER_MAX_WORKERS (health: down)
  3  health only: the state could not be read (no connection to systemd)";
const READ_EXIT: &str = "\
Exit status:
  0  the state was read (whatever it is)
  1  it could not be read (no connection to systemd), the reason on stderr
  2  usage error";
const HEALTH_EXIT: &str = "\
Exit status:
  0  healthy: every wanted instance runs and its /health says ok
  1  degraded: some wanted instance is not running or not healthy
  2  down: no instance is healthy (also: usage error)
  3  unknown: the state could not be read (no connection to systemd)";
const SCALE_EXIT: &str = "\
Exit status:
  0  N is saved and applied: instances 1..N run, none above N
  1  failed: D-Bus, daemon-reload (the previous 50-scale.env is put back), or an
     instance that did not start or did not drain cleanly (N stays saved); the
     reason on stderr
  2  N refused (not a number, outside CLUSTER_MIN_WORKERS..CLUSTER_MAX_WORKERS,
     or overridden by a later zero-logs.env.d file): nothing was changed";
const RESTART_EXIT: &str = "\
Exit status:
  0  every instance came back with a new PID and /health ok
  1  an instance did not come back within --timeout (the roll stopped there; the
     rest keep running), nothing to restart, or no connection to systemd
  2  usage error";

const DAEMON_EXIT: &str = "\
Exit status:
  0  stopped by SIGTERM/SIGINT
  1  failed: systemd unreachable at start, the API port taken, …
  2  an invalid setting or an unusable token file (named on stderr)";
const VALIDATE_EXIT: &str = "\
Exit status:
  0  every setting is valid
  1  only warnings: lines skipped, or values the generator replaces (e.g. a
     CLUSTER_WORKERS outside the bounds)
  2  errors: a worker or the daemon would refuse to start";

/// zero-logs-ctl: operate the zero-logs workers that systemd runs
/// (zero-logs@1..N.service, grouped by zero-logs.target).
///
/// Talks to systemd over D-Bus (never through systemctl) and to each worker
/// over its admin socket /run/zero-logs/INSTANCE/admin.sock. Needs root (or
/// a polkit rule on the system bus) for scale and restart.
#[derive(Debug, Parser)]
#[command(name = "zero-logs-ctl", version, about, long_about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// How to reach systemd: its private socket /run/systemd/private (root only,
    /// works without dbus-daemon), the system bus, or auto (private socket as
    /// root, else the system bus; then the other one).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        help_heading = "Global options"
    )]
    pub bus: BusChoice,
    /// Directory of zero-logs.env and zero-logs.env.d/.
    #[arg(long, global = true, value_name = "DIR", default_value = env_files::CONF_DIR, help_heading = "Global options")]
    pub config_dir: PathBuf,
    /// Directory of the instances' admin sockets (DIR/INSTANCE/admin.sock).
    #[arg(long, global = true, value_name = "DIR", default_value = worker_client::RUNTIME_DIR, help_heading = "Global options")]
    pub runtime_dir: PathBuf,
    /// Milliseconds one admin-socket request (/health, /stats) may take.
    #[arg(
        long,
        global = true,
        value_name = "MS",
        default_value_t = 1000,
        help_heading = "Global options"
    )]
    pub admin_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show every instance: state, PID, uptime, restarts, memory, requests, health.
    ///
    /// Lists the instances zero-logs.target wants (1..N) and any other loaded
    /// instance that is not stopped (e.g. zero-logs@surge), and says where N
    /// comes from. MEMORY is systemd's MemoryCurrent, or the worker's own RSS
    /// "(rss)" where systemd has no memory accounting. HEALTH is the instance's
    /// /health: ok, unhealthy: REASON, unreachable (admin socket did not
    /// answer) or not running. Exit status 0 whenever the state could be read.
    #[command(after_help = READ_EXIT)]
    Status(JsonArg),
    /// Cluster statistics; --json gives the old cluster API's shape.
    ///
    /// {"master":{…},"cluster":{workers, wantedWorkers, healthyWorkers,
    /// totalRequests, totalRestarts, …},"workers":[{id, pid, uptime, restarts,
    /// requestsHandled, memoryMB, healthy, lastHealthCheck, …}]}. systemd is the
    /// master here: "master" is PID 1 and zero-logs.target (uptime = how long
    /// the target has been active). requestsHandled counts since each process
    /// started. Exit status 0 whenever the state could be read.
    #[command(after_help = READ_EXIT)]
    Stats(JsonArg),
    /// Exit 0 if every wanted instance is healthy, 1 if degraded, 2 if down.
    ///
    /// Wanted instances are zero-logs@1..N (N from the generator). Degraded:
    /// some are not running or not healthy. Down: no instance at all is
    /// healthy. 3: the state could not be read. Prints one line of explanation.
    #[command(after_help = HEALTH_EXIT)]
    Health(JsonArg),
    /// Set the number of worker instances, persistently, and apply it.
    ///
    /// Checks N against CLUSTER_MIN_WORKERS/CLUSTER_MAX_WORKERS (refused: exit 2,
    /// nothing changed), writes CLUSTER_WORKERS=N to
    /// zero-logs.env.d/50-scale.env (atomically), runs daemon-reload so the
    /// generator applies N, then starts missing instances and stops the ones
    /// above N (each drains in-flight requests and exits 0), waiting for every
    /// job. N survives daemon-reload and reboots; delete 50-scale.env and
    /// daemon-reload to go back to zero-logs.env's CLUSTER_WORKERS.
    #[command(after_help = SCALE_EXIT)]
    Scale(scale::ScaleArgs),
    /// Rolling restart: one instance at a time, each ready and healthy before the next.
    ///
    /// Each running instance is restarted (drains, then a new process starts) and must
    /// be active/running with a new PID and answer /health ok before the next
    /// one is touched; the shared socket queues connections meanwhile, so no
    /// request fails. If one does not come back, the roll stops there (exit 1)
    /// and the rest keep running. --surge adds capacity first.
    #[command(after_help = RESTART_EXIT)]
    Restart(restart::RestartArgs),
    /// Run the management daemon (what zero-logs-ctl.service runs).
    ///
    /// Serves the management API on CLUSTER_API_HOST:CLUSTER_API_PORT
    /// (127.0.0.1:9100): GET /stats, GET /health, POST /restart, POST /scale
    /// {"workers":N}; the POSTs need `Authorization: Bearer <token>` from
    /// CLUSTER_API_TOKEN_FILE (/etc/zero-logs/api-token, created 0600 if
    /// missing; refused if group/world-readable). Every HEALTH_CHECK_INTERVAL
    /// it asks each instance for /health and restarts (through systemd) one
    /// that missed 2 checks in a row or uses more memory than CTL_MEMORY_LIMIT;
    /// lifecycle events go to the journal with EVENT=. Settings come from the
    /// environment, then the env files. Stops on SIGTERM. See docs/CTL.md.
    #[command(after_help = DAEMON_EXIT)]
    Daemon,
    /// Check the env files: every setting of the workers, the daemon and the cluster.
    ///
    /// Reads zero-logs.env and zero-logs.env.d/*.env (--config-dir) as the
    /// workers, the generator and the daemon do, and prints each problem with
    /// its file, line and variable. Run it after editing, before
    /// `systemctl daemon-reload` and a restart.
    #[command(after_help = VALIDATE_EXIT)]
    Validate,
    /// Print the daemon's and the cluster's effective settings and where each came from.
    ///
    /// One NAME=value line per setting of zero-logs-ctl daemon and of
    /// zero-logs-generator, followed by its origin: the process environment, an
    /// env file with its line (--config-dir), or the default. Exit status 2 (with
    /// the variable named) if a setting is invalid. `zero-logs config` does the
    /// same for a worker.
    Config,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The binary's entry point: parse, run, map the outcome to an exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zero-logs-ctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = Ctx {
        bus: cli.global.bus,
        config_dir: cli.global.config_dir.clone(),
        admin: AdminClient::new(
            &cli.global.runtime_dir,
            Duration::from_millis(cli.global.admin_timeout),
        ),
    };
    let is_health = matches!(cli.command, Command::Health(_));
    match runtime.block_on(dispatch(&ctx, &cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("zero-logs-ctl: {err:#}");
            if err.downcast_ref::<ScaleError>().is_some()
                || err
                    .downcast_ref::<daemon::config::DaemonConfigError>()
                    .is_some()
                || err.downcast_ref::<daemon::auth::TokenError>().is_some()
            {
                ExitCode::from(2)
            } else if is_health {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn dispatch(ctx: &Ctx, command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Status(a) => status_cmd(ctx, a.json).await,
        Command::Stats(a) => stats_cmd(ctx, a.json).await,
        Command::Health(a) => health_cmd(ctx, a.json).await,
        Command::Scale(a) => scale::run(ctx, a).await,
        Command::Restart(a) => restart::run(ctx, a).await,
        Command::Daemon => daemon::run(ctx).await,
        Command::Validate => Ok(validate_cmd(ctx)),
        Command::Config => {
            print!("{}", daemon::config::explain_env(&ctx.config_dir)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate_cmd(ctx: &Ctx) -> ExitCode {
    let (errors, warnings) = daemon::config::validate_env(&ctx.config_dir, ctx::cpus());
    for w in &warnings {
        println!("warning: {w}");
    }
    for e in &errors {
        println!("error: {e}");
    }
    if errors.is_empty() && warnings.is_empty() {
        println!(
            "ok: the env files in {} are valid",
            ctx.config_dir.display()
        );
    }
    ExitCode::from(if !errors.is_empty() {
        2
    } else {
        u8::from(!warnings.is_empty())
    })
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn status_cmd(ctx: &Ctx, json: bool) -> anyhow::Result<ExitCode> {
    let sd = Systemd::connect(ctx.bus).await?;
    let inv = inventory::collect(&sd, &ctx.admin).await?;
    let size = ctx.cluster_size();
    if json {
        print_json(&status::status_json(&inv, sd.kind().key(), Some(&size)))?;
    } else {
        print!("{}", status::render_table(&inv, Some(&size)));
    }
    Ok(ExitCode::SUCCESS)
}

async fn stats_cmd(ctx: &Ctx, json: bool) -> anyhow::Result<ExitCode> {
    let sd = Systemd::connect(ctx.bus).await?;
    let inv = inventory::collect(&sd, &ctx.admin).await?;
    let stats = status::cluster_stats(&inv, Some(&ctx.cluster_size()));
    if json {
        print_json(&stats)?;
    } else {
        print!("{}", status::render_stats(&stats));
    }
    Ok(ExitCode::SUCCESS)
}

async fn health_cmd(ctx: &Ctx, json: bool) -> anyhow::Result<ExitCode> {
    let sd = Systemd::connect(ctx.bus).await?;
    let inv = inventory::collect(&sd, &ctx.admin).await?;
    let verdict = status::verdict(&inv);
    if json {
        print_json(&verdict)?;
    } else {
        println!("{}", verdict.message);
    }
    Ok(ExitCode::from(verdict.status.exit_code()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_every_command_has_help() {
        Cli::command().debug_assert();
        let mut cmd = Cli::command();
        for sub in cmd.get_subcommands_mut() {
            assert!(sub.get_about().is_some(), "{} lacks help", sub.get_name());
            assert!(
                sub.get_long_about().is_some(),
                "{} lacks long help",
                sub.get_name()
            );
        }
    }

    #[test]
    fn parses_the_documented_forms() {
        let cli =
            Cli::try_parse_from(["zero-logs-ctl", "scale", "4", "--config-dir", "/tmp/x"]).unwrap();
        assert_eq!(cli.global.config_dir, PathBuf::from("/tmp/x"));
        assert!(matches!(cli.command, Command::Scale(ref a) if a.workers == "4"));
        let cli = Cli::try_parse_from([
            "zero-logs-ctl",
            "--bus",
            "private",
            "restart",
            "--surge",
            "--instance",
            "2",
        ])
        .unwrap();
        assert_eq!(cli.global.bus, BusChoice::Private);
        assert!(
            matches!(cli.command, Command::Restart(ref a) if a.surge && a.instance.as_deref() == Some("2"))
        );
        assert!(Cli::try_parse_from(["zero-logs-ctl", "stats", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["zero-logs-ctl", "scale"]).is_err());
    }
}
