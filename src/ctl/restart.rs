//! `zero-logs-ctl restart`: a rolling restart, one instance at a time.
//!
//! For each running instance (numbered ones in order, then named ones):
//! `RestartUnit` — SIGTERM, the worker drains while the shared socket keeps
//! queueing connections for the others — then wait for the job, for the unit
//! to be `active/running` again with a *new* main PID (`Type=notify`: READY=1
//! was sent) and for its `/health` to say ok, before touching the next one.
//! An instance that does not come back stops the roll: the ones not yet
//! restarted keep running, and the exit status is 1 with the reason.
//!
//! `--surge` first starts `zero-logs@surge` (named instances always pass the
//! generator's `ExecCondition=`, see docs/SYSTEMD.md), so capacity never drops
//! below N during the roll, and drains it at the end. When the roll fails the
//! surge instance is left running, to make up for the instance that is down.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use tokio::time::Instant;

use super::ctx::Ctx;
use super::inventory::{sort_key, INSTANCE_PATTERN};
use super::scale::job_failure;
use super::systemd::{instance_of, unit_name, JobWatcher, Systemd, UnitListEntry};
use super::worker_client::{AdminClient, HealthReply};

/// The instance `--surge` starts.
pub const SURGE: &str = "surge";
const POLL: Duration = Duration::from_millis(100);

/// Arguments of `restart`.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Restart only this instance (e.g. `2`), still waiting until it is ready and healthy.
    #[arg(long, value_name = "K")]
    pub instance: Option<String>,
    /// Start an extra instance, zero-logs@surge, before the roll and drain it after,
    /// so capacity never drops below N.
    #[arg(long)]
    pub surge: bool,
    /// Seconds one instance may take to come back (restart job, READY=1, /health ok).
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub timeout: u64,
}

/// `restart` as a command: progress lines on stdout.
pub async fn run(ctx: &Ctx, args: &RestartArgs) -> anyhow::Result<ExitCode> {
    let summary = rolling_restart(ctx, args, &mut |line| println!("{line}")).await?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// The roll; see the module docs. The management daemon calls this too.
pub async fn rolling_restart(
    ctx: &Ctx,
    args: &RestartArgs,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<String> {
    let within = Duration::from_secs(args.timeout);
    let sd = Systemd::connect(ctx.bus).await?;
    let mut jobs = sd.watch_jobs().await?;

    let units = sd.list_units(&[INSTANCE_PATTERN]).await?;
    let targets = instances_to_restart(&units, args)?;
    if args.surge {
        let state = state_of(&units, SURGE);
        start_surge(&sd, &ctx.admin, &mut jobs, state, within, progress).await?;
    }
    roll(
        &sd, &ctx.admin, &mut jobs, &targets, args.surge, within, progress,
    )
    .await?;
    if args.surge {
        stop_surge(&sd, &mut jobs, within, progress).await?;
    }
    Ok(format!(
        "restart: {} instance(s) restarted one at a time{}",
        targets.len(),
        if args.surge {
            ", with a surge instance"
        } else {
            ""
        }
    ))
}

/// The active state of instance `name` among `units`; `inactive` when not listed.
fn state_of<'a>(units: &'a [UnitListEntry], name: &str) -> &'a str {
    units
        .iter()
        .find(|e| instance_of(&e.0) == Some(name))
        .map_or("inactive", |e| e.3.as_str())
}

/// The instances to restart, in order: `--instance`, which must be running, or
/// every running one (but the surge instance with `--surge`).
fn instances_to_restart(
    units: &[UnitListEntry],
    args: &RestartArgs,
) -> anyhow::Result<Vec<String>> {
    let mut targets: Vec<String> = match &args.instance {
        Some(k) => {
            let state = state_of(units, k);
            if state != "active" {
                bail!("zero-logs@{k} is {state}, not running: nothing to restart");
            }
            vec![k.clone()]
        }
        None => units
            .iter()
            .filter(|e| e.3 == "active")
            .filter_map(|e| instance_of(&e.0))
            .filter(|i| !(args.surge && *i == SURGE))
            .map(str::to_string)
            .collect(),
    };
    targets.sort_by_key(|i| sort_key(i));
    if targets.is_empty() {
        bail!(
            "no zero-logs instance is running; start them with `systemctl start zero-logs.target`"
        );
    }
    Ok(targets)
}

/// `--surge`, before the roll: starts zero-logs@surge (now in `state`) and waits
/// until it is up and healthy; if it does not come up, stops it again.
async fn start_surge(
    sd: &Systemd,
    admin: &AdminClient,
    jobs: &mut JobWatcher,
    state: &str,
    within: Duration,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<()> {
    if !matches!(state, "inactive" | "failed") {
        bail!(
            "zero-logs@{SURGE} is already {state} (left over from an interrupted restart?); \
             stop it first: systemctl stop zero-logs@{SURGE}"
        );
    }
    progress(format!("surge: starting zero-logs@{SURGE}"));
    let t = Instant::now();
    let come_up = async {
        let job = sd.start_unit(&unit_name(SURGE)).await?;
        wait_back(sd, admin, jobs, SURGE, &job, 0, within).await
    };
    match come_up.await {
        Ok(pid) => progress(format!(
            "surge: zero-logs@{SURGE} running (pid {pid}) and healthy after {:.1}s",
            t.elapsed().as_secs_f64()
        )),
        Err(e) => {
            let cleanup = match sd.stop_unit(&unit_name(SURGE)).await {
                Ok(_) => "stopped it again",
                Err(_) => "could not stop it",
            };
            bail!("zero-logs@{SURGE} did not come up: {e} ({cleanup}); no instance was restarted");
        }
    }
    Ok(())
}

/// Restarts `targets` one at a time, each waited for until it is back; stops at
/// the first that does not come back (`surge`: the surge instance is up).
async fn roll(
    sd: &Systemd,
    admin: &AdminClient,
    jobs: &mut JobWatcher,
    targets: &[String],
    surge: bool,
    within: Duration,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<()> {
    let total = targets.len();
    for (index, name) in targets.iter().enumerate() {
        let step = format!("[{}/{total}]", index + 1);
        let unit = unit_name(name);
        let old_pid = sd.unit(&unit).await?.main_pid();
        progress(format!("{step} {unit}: restarting (pid {old_pid})"));
        let t = Instant::now();
        let back = async {
            let job = sd.restart_unit(&unit).await?;
            wait_back(sd, admin, jobs, name, &job, old_pid, within).await
        };
        match back.await {
            Ok(pid) => progress(format!(
                "{step} {unit}: running again (pid {pid}) and healthy after {:.1}s",
                t.elapsed().as_secs_f64()
            )),
            Err(e) => bail!(not_back(&unit, &e, &targets[index + 1..], surge)),
        }
    }
    Ok(())
}

/// Why the roll stopped at `unit`, what is still running unrestarted (`rest`),
/// and whether the surge instance was left running.
fn not_back(unit: &str, e: &anyhow::Error, rest: &[String], surge: bool) -> String {
    let mut msg = format!("{unit} did not come back: {e}");
    if !rest.is_empty() {
        msg.push_str(&format!(
            "; not restarted, still running: {}",
            rest.iter()
                .map(|r| format!("zero-logs@{r}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if surge {
        msg.push_str(&format!(
            "; zero-logs@{SURGE} left running to make up for it \
             (systemctl stop zero-logs@{SURGE} when done)"
        ));
    }
    msg
}

/// `--surge`, after the roll: stops zero-logs@surge and checks that it drained
/// cleanly.
async fn stop_surge(
    sd: &Systemd,
    jobs: &mut JobWatcher,
    within: Duration,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<()> {
    progress(format!("surge: stopping zero-logs@{SURGE} (draining)"));
    let unit = unit_name(SURGE);
    // Not wanted by the target: systemd unloads it once stopped, so its
    // exit status comes from the watch.
    let mut watch = sd.watch_service(&unit).await?;
    let job = sd.stop_unit(&unit).await?;
    let outcome = jobs.wait(&job, &unit, within).await?;
    if !outcome.is_done() {
        let snap = sd.unit(&unit).await?;
        bail!(
            "all instances restarted, but stopping {unit} failed: {}",
            job_failure(&outcome, &snap)
        );
    }
    let exit = watch.exit();
    if !exit.exited_cleanly() {
        bail!(
            "all instances restarted, but {unit} did not drain cleanly: {} (Result={}); \
             see `journalctl -u {unit}`",
            exit.exit_description(),
            exit.result
        );
    }
    progress(format!(
        "surge: {unit} stopped cleanly ({})",
        exit.exit_description()
    ));
    Ok(())
}

/// Waits for `job` to end, then for `instance` to run with a main PID other
/// than `old_pid` and answer `/health` ok; returns the new PID.
async fn wait_back(
    sd: &Systemd,
    admin: &AdminClient,
    jobs: &mut JobWatcher,
    instance: &str,
    job: &zbus::zvariant::OwnedObjectPath,
    old_pid: u32,
    within: Duration,
) -> anyhow::Result<u32> {
    let unit = unit_name(instance);
    let deadline = Instant::now() + within;
    let outcome = jobs.wait(job, &unit, within).await?;
    if !outcome.is_done() {
        let snap = sd.unit(&unit).await?;
        bail!("{}", job_failure(&outcome, &snap));
    }
    loop {
        let snap = sd.unit(&unit).await?;
        let pid = snap.main_pid();
        if snap.active_state == "failed"
            || (snap.active_state == "inactive" && !snap.condition_result)
        {
            bail!("{}", job_failure(&outcome, &snap));
        }
        let last = if snap.is_running() && pid != 0 && pid != old_pid {
            match admin.health(instance).await {
                Ok(HealthReply::Ok) => return Ok(pid),
                // Up and answering; what refuses is outside it (spool full): waiting
                // would not change that, and the other instances still need their turn.
                Ok(HealthReply::Blocked(reason)) => {
                    tracing::warn!(instance, reason = %reason, "restarted instance is up but blocked");
                    return Ok(pid);
                }
                Ok(HealthReply::Unhealthy(reason)) => format!("pid {pid}, unhealthy: {reason}"),
                Err(e) => format!("pid {pid}, /health: {e}"),
            }
        } else {
            format!("{} (pid {pid})", snap.state())
        };
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "not ready and healthy within {within:?}; last seen: {last}"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
