//! `zero-logs-ctl scale N`: persist N, let the generator apply it, start or
//! drain instances to match.
//!
//! 1. Check N against `CLUSTER_MIN_WORKERS`/`CLUSTER_MAX_WORKERS` (and that no
//!    later env.d file would override ours): refused ⇒ nothing changes, exit 2.
//! 2. Connect to systemd and subscribe to job signals *before* changing
//!    anything, so a missing bus also changes nothing.
//! 3. Write `CLUSTER_WORKERS=N` to `zero-logs.env.d/50-scale.env` atomically.
//!    This is what makes N survive `daemon-reload` and reboots: the generator
//!    reads it every time.
//! 4. `Reload` (daemon-reload): the generator rewrites the target's wants and
//!    the `ExecCondition=` bound. If the reload fails, the previous file is put
//!    back. The target's new `Wants=` is checked, so a generator that did not
//!    run is reported instead of silently ignored.
//! 5. `StartUnit` each missing instance `1..N` (only while the target is
//!    active: a stopped service stays stopped) and `StopUnit` each running
//!    numbered instance above N — SIGTERM, the worker drains and exits 0 —
//!    all at once, then wait for every job and check each unit's end state.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::time::Instant;
use zbus::zvariant::OwnedObjectPath;

use super::ctx::{cpus, Ctx};
use super::env_files::{self, EnvFiles};
use super::inventory::{sort_key, INSTANCE_PATTERN, TARGET};
use super::systemd::{
    instance_of, unit_name, JobOutcome, JobWatcher, ServiceWatch, Systemd, SystemdError,
    UnitSnapshot,
};

/// Arguments of `scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Number of worker instances: a whole number ≥ 1, or `auto` (or 0) for one per CPU
    /// core.
    #[arg(value_name = "N")]
    pub workers: String,
    /// Seconds to wait for each start or stop job (a drain can take up to
    /// GRACEFUL_SHUTDOWN_TIMEOUT).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub timeout: u64,
}

/// `scale` as a command: progress lines on stdout.
pub async fn run(ctx: &Ctx, args: &ScaleArgs) -> anyhow::Result<ExitCode> {
    let summary = scale(
        ctx,
        &args.workers,
        Duration::from_secs(args.timeout),
        &mut |line| println!("{line}"),
    )
    .await?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// Scales to `requested`, reporting each step through `progress`; the
/// returned line sums it up. The management daemon calls this too.
pub async fn scale(
    ctx: &Ctx,
    requested: &str,
    job_timeout: Duration,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<String> {
    let env = EnvFiles::load(&ctx.config_dir);
    for warning in &env.warnings {
        progress(format!("warning: {warning}"));
    }
    let request = env_files::check_scale(requested, &env, cpus())?;
    let n = request.workers;

    let sd = Systemd::connect(ctx.bus).await?;
    let mut jobs = sd.watch_jobs().await?;

    let file = env_files::scale_file(&ctx.config_dir);
    save_and_reload(&sd, &file, &request.value, progress).await?;
    let target = reloaded_target(&sd, n, progress).await?;
    let plan = plan_changes(&sd, &target, n, progress).await?;
    let applied = apply(&sd, &mut jobs, &plan, job_timeout, progress).await;
    if !applied.failures.is_empty() {
        bail!(
            "scale to {n} incomplete (N is saved in {}): {}",
            file.display(),
            applied.failures.join("; ")
        );
    }
    let running = numbered_instances_active(&sd).await?;
    Ok(format!(
        "scale: done, N = {n}; {running} numbered instance(s) active ({} started, {} stopped)",
        applied.starts, applied.stops
    ))
}

/// Steps 3 and 4 of the module docs: writes `CLUSTER_WORKERS=value` to `file`,
/// then reloads systemd; if the reload fails, puts the previous file back.
async fn save_and_reload(
    sd: &Systemd,
    file: &Path,
    value: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<()> {
    let previous = std::fs::read(file).ok();
    env_files::write_atomically(file, env_files::scale_file_content(value).as_bytes())
        .with_context(|| format!("writing {}", file.display()))?;
    progress(format!(
        "scale: CLUSTER_WORKERS={value} written to {}",
        file.display()
    ));
    if let Err(err) = sd.reload().await {
        let restored = restore(file, previous.as_deref());
        bail!("daemon-reload failed: {err}; {restored}");
    }
    Ok(())
}

/// The target after the reload, once its `Wants=` are exactly instances `1..=n`
/// (the generator ran).
async fn reloaded_target(
    sd: &Systemd,
    n: u32,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<UnitSnapshot> {
    let target = sd.unit(TARGET).await?;
    let mut wanted: Vec<u32> = target
        .wants
        .iter()
        .filter_map(|u| instance_of(u)?.parse().ok())
        .collect();
    wanted.sort_unstable();
    if wanted != (1..=n).collect::<Vec<_>>() {
        bail!(
            "after daemon-reload {TARGET} wants instances {wanted:?}, not 1..{n}: did \
             zero-logs-generator run? (see `journalctl -t zero-logs-generator` and \
             `systemctl cat zero-logs@.service`)"
        );
    }
    progress(format!(
        "scale: systemd reloaded; {TARGET} wants zero-logs@1..{n}"
    ));
    Ok(target)
}

/// The instances `scale` starts (numbers) and stops (names).
struct Plan {
    to_start: Vec<u32>,
    to_stop: Vec<String>,
}

/// Instances `1..=n` not running are to start (none while the target is not
/// active); numbered instances above `n` still up are to stop.
async fn plan_changes(
    sd: &Systemd,
    target: &UnitSnapshot,
    n: u32,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<Plan> {
    let mut states: Vec<(String, String)> = sd
        .list_units(&[INSTANCE_PATTERN])
        .await?
        .into_iter()
        .filter_map(|e| Some((instance_of(&e.0)?.to_string(), e.3)))
        .collect();
    states.sort_by_key(|(i, _)| sort_key(i));
    let state_of = |i: u32| {
        states
            .iter()
            .find(|(name, _)| name == &i.to_string())
            .map_or("inactive", |(_, s)| s.as_str())
    };
    let mut to_start: Vec<u32> = (1..=n)
        .filter(|&i| !matches!(state_of(i), "active" | "reloading"))
        .collect();
    let to_stop: Vec<String> = states
        .iter()
        .filter(|(name, state)| {
            name.parse::<u32>().is_ok_and(|i| i > n)
                && !matches!(state.as_str(), "inactive" | "failed")
        })
        .map(|(name, _)| name.clone())
        .collect();
    if !to_start.is_empty() && target.active_state != "active" {
        progress(format!(
            "scale: {TARGET} is {}: not starting instances now; `systemctl start {TARGET}` starts {n}",
            target.active_state
        ));
        to_start.clear();
    }
    Ok(Plan { to_start, to_stop })
}

/// What [`apply`] did: how many start and stop jobs systemd accepted, and every
/// failure as `unit: why`.
struct Applied {
    starts: usize,
    stops: usize,
    failures: Vec<String>,
}

/// Step 5 of the module docs: issues every start and stop job at once, then
/// waits for each and checks its unit's end state, starts first.
async fn apply(
    sd: &Systemd,
    jobs: &mut JobWatcher,
    plan: &Plan,
    job_timeout: Duration,
    progress: &mut (dyn FnMut(String) + Send),
) -> Applied {
    let mut failures = Vec::new();
    let started = Instant::now();
    let start_jobs = issue_starts(sd, &plan.to_start, &mut failures, progress).await;
    let mut stop_jobs = issue_stops(sd, &plan.to_stop, &mut failures, progress).await;
    for (unit, job) in &start_jobs {
        let how = started_outcome(sd, jobs, unit, job, job_timeout)
            .await
            .map(|pid| format!("running (pid {pid})"));
        report_outcome(unit, how, started, &mut failures, progress);
    }
    for (unit, job, watch) in &mut stop_jobs {
        let how = stopped_outcome(sd, jobs, watch, unit, job, job_timeout).await;
        report_outcome(unit, how, started, &mut failures, progress);
    }
    Applied {
        starts: start_jobs.len(),
        stops: stop_jobs.len(),
        failures,
    }
}

/// `StartUnit` for each instance; returns the accepted jobs by unit.
async fn issue_starts(
    sd: &Systemd,
    instances: &[u32],
    failures: &mut Vec<String>,
    progress: &mut (dyn FnMut(String) + Send),
) -> Vec<(String, OwnedObjectPath)> {
    let mut start_jobs = Vec::new();
    for i in instances {
        let unit = unit_name(&i.to_string());
        match sd.start_unit(&unit).await {
            Ok(job) => {
                progress(format!("scale: starting {unit}"));
                start_jobs.push((unit, job));
            }
            Err(e) => failures.push(format!("{unit}: {e}")),
        }
    }
    start_jobs
}

/// `StopUnit` for each instance, each watched first for its exit status;
/// returns the accepted jobs by unit, with their watches.
async fn issue_stops(
    sd: &Systemd,
    instances: &[String],
    failures: &mut Vec<String>,
    progress: &mut (dyn FnMut(String) + Send),
) -> Vec<(String, OwnedObjectPath, ServiceWatch)> {
    let mut stop_jobs = Vec::new();
    for name in instances {
        let unit = unit_name(name);
        let issued = async {
            let watch = sd.watch_service(&unit).await?;
            Ok::<_, SystemdError>((watch, sd.stop_unit(&unit).await?))
        };
        match issued.await {
            Ok((watch, job)) => {
                progress(format!("scale: stopping {unit} (draining)"));
                stop_jobs.push((unit, job, watch));
            }
            Err(e) => failures.push(format!("{unit}: {e}")),
        }
    }
    stop_jobs
}

/// One job's end as a progress line (`how` it ended, time since `started`), or
/// as a failure.
fn report_outcome(
    unit: &str,
    how: anyhow::Result<String>,
    started: Instant,
    failures: &mut Vec<String>,
    progress: &mut (dyn FnMut(String) + Send),
) {
    match how {
        Ok(how) => progress(format!(
            "  {unit}: {how} after {:.1}s",
            started.elapsed().as_secs_f64()
        )),
        Err(e) => {
            progress(format!("  {unit}: FAILED: {e}"));
            failures.push(format!("{unit}: {e}"));
        }
    }
}

/// How many numbered instances (`zero-logs@<number>`) are active.
async fn numbered_instances_active(sd: &Systemd) -> anyhow::Result<usize> {
    Ok(sd
        .list_units(&[INSTANCE_PATTERN])
        .await?
        .iter()
        .filter(|e| e.3 == "active" && instance_of(&e.0).is_some_and(|i| i.parse::<u32>().is_ok()))
        .count())
}

/// A start job's end: the new main PID, or why the instance is not running.
async fn started_outcome(
    sd: &Systemd,
    jobs: &mut JobWatcher,
    unit: &str,
    job: &OwnedObjectPath,
    within: Duration,
) -> anyhow::Result<u32> {
    let outcome = jobs.wait(job, unit, within).await?;
    let snap = sd.unit(unit).await?;
    if outcome.is_done() && snap.active_state == "active" {
        return Ok(snap.main_pid());
    }
    if outcome.result == "skipped" || !snap.condition_result {
        bail!(
            "start skipped by its ExecCondition: the generator's bound is still below this \
             instance (see `systemctl cat {unit}`)"
        );
    }
    bail!("{}", job_failure(&outcome, &snap))
}

/// A stop job's end: "stopped cleanly (exit status 0)", or why it was not clean.
///
/// Not "drained": a clean exit means every request was answered and the worker
/// delivered what it could, but frames ClickHouse did not confirm (ClickHouse down,
/// drain deadline) stay in the instance's spool, for a live instance to adopt.
async fn stopped_outcome(
    sd: &Systemd,
    jobs: &mut JobWatcher,
    watch: &mut ServiceWatch,
    unit: &str,
    job: &OwnedObjectPath,
    within: Duration,
) -> anyhow::Result<String> {
    let outcome = jobs.wait(job, unit, within).await?;
    if !outcome.is_done() {
        let snap = sd.unit(unit).await?;
        bail!("{}", job_failure(&outcome, &snap));
    }
    let exit = watch.exit();
    if exit.exited_cleanly() {
        Ok(format!("stopped cleanly ({})", exit.exit_description()))
    } else {
        bail!(
            "stopped, but not a clean drain: {} (Result={}); see `journalctl -u {unit}`",
            exit.exit_description(),
            exit.result
        )
    }
}

/// Why a job did not leave its unit as asked, in systemd's words.
pub(crate) fn job_failure(outcome: &JobOutcome, snap: &UnitSnapshot) -> String {
    let service = snap.service.clone().unwrap_or_default();
    format!(
        "job {}, unit {} (Result={}, last process: {}); see `journalctl -u {}`",
        outcome.result,
        snap.state(),
        service.result,
        service.exit_description(),
        snap.id
    )
}

/// Puts the previous scale file back (or removes ours); says what it did.
fn restore(file: &Path, previous: Option<&[u8]>) -> String {
    let result = match previous {
        Some(bytes) => env_files::write_atomically(file, bytes),
        None => std::fs::remove_file(file),
    };
    match result {
        Ok(()) => format!("{} restored", file.display()),
        Err(e) => format!("could not restore {}: {e}", file.display()),
    }
}
