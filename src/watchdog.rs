//! Liveness and self-supervision of one worker, reported to systemd.
//!
//! A dedicated OS thread (not a tokio task: it must keep judging when the
//! runtime is wedged) wakes every second and
//! - sends `WATCHDOG=1` only while two heartbeats are fresh: the runtime's (a
//!   tokio task that ticks every 250 ms — it stops when the runtime is frozen
//!   or starved, which would also stop the accept loop and every request) and
//!   the flush loop's (it ticks every 500 ms even when idle, so a stuck flusher
//!   is caught). A stale heartbeat withholds the ping and systemd's
//!   `WatchdogSec` kills and restarts the worker;
//! - keeps the `STATUS=` line current (rate, queue, sink state, RSS);
//! - starts a graceful restart when RSS passes `WORKER_MEMORY_LIMIT`: it
//!   cancels the shutdown token exactly like SIGTERM, the worker drains and
//!   exits 0, and `Restart=always` brings up a fresh process — long before the
//!   kernel's `MemoryMax` would kill it mid-request;
//! - while draining, sends `EXTEND_TIMEOUT_USEC` as long as the drain makes
//!   progress.
//!
//! It decides nothing about health beyond these heartbeats; `/health` stays in
//! [`crate::admin`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::SupervisionConfig;
use crate::notify;
use crate::sink::BatcherHandle;
use crate::stats::{rss_bytes, Stats};

/// The runtime heartbeat ticks this often.
const RUNTIME_BEAT: Duration = Duration::from_millis(250);
/// Without systemd's watchdog, a heartbeat this old is still logged as a stall.
const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(10);
/// How far each `EXTEND_TIMEOUT_USEC` pushes systemd's stop timeout.
const DRAIN_EXTENSION: Duration = Duration::from_secs(10);

/// A timestamp other threads can read: nanoseconds since `base`.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    ns: AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat {
            base: Instant::now(),
            ns: AtomicU64::new(0),
        }
    }

    pub fn beat(&self) {
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.ns.store(ns, Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.ns.load(Ordering::Relaxed))
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

/// Why the supervisor asked the worker to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    MemoryLimit { rss: u64, limit: u64 },
}

/// Handle of the supervision thread; dropping it does not stop the thread,
/// [`Supervisor::stop`] does.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    reason: Arc<std::sync::Mutex<Option<StopReason>>>,
}

/// What the supervision thread watches.
pub struct Watched {
    pub runtime: Arc<Heartbeat>,
    pub batcher: BatcherHandle,
    pub stats: Arc<Stats>,
    /// Cancelled by SIGTERM — or by the supervisor itself at the memory limit.
    pub shutdown: CancellationToken,
}

impl Supervisor {
    /// Starts the runtime heartbeat (on the current runtime) and the thread.
    pub fn spawn(cfg: SupervisionConfig, watched: Watched) -> std::io::Result<Supervisor> {
        let runtime = Arc::clone(&watched.runtime);
        // Beats for the life of the runtime, drain included.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RUNTIME_BEAT);
            loop {
                runtime.beat();
                tick.tick().await;
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let reason = Arc::new(std::sync::Mutex::new(None));
        let thread = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn({
                let (stop, reason) = (Arc::clone(&stop), Arc::clone(&reason));
                move || Loop::new(cfg, watched, reason).run(&stop)
            })?;
        Ok(Supervisor {
            stop,
            thread: Some(thread),
            reason,
        })
    }

    /// Why the supervisor stopped the worker, if it did.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// State of the supervision thread between wake-ups.
struct Loop {
    cfg: SupervisionConfig,
    w: Watched,
    reason: Arc<std::sync::Mutex<Option<StopReason>>>,
    stall_limit: Duration,
    stalled: bool,
    last_accepted: u64,
    last_progress: (u64, i64),
}

impl Loop {
    fn new(
        cfg: SupervisionConfig,
        w: Watched,
        reason: Arc<std::sync::Mutex<Option<StopReason>>>,
    ) -> Loop {
        // systemd kills at WatchdogSec without a ping: judge at half of it so one
        // late tick does not cost a restart, yet a real stall does.
        let stall_limit = cfg.watchdog.map_or(DEFAULT_STALL_LIMIT, |w| w / 2);
        Loop {
            cfg,
            w,
            reason,
            stall_limit,
            stalled: false,
            last_accepted: 0,
            last_progress: (0, 0),
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        let period = self.cfg.watchdog.map_or(self.cfg.check_interval, |w| {
            (w / 4).min(self.cfg.check_interval)
        });
        let mut status_due = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.ping_if_alive();
            if Instant::now() >= status_due {
                self.check_memory();
                self.report_status();
                status_due = Instant::now() + self.cfg.check_interval;
            }
            // Parked, not slept: `Supervisor::stop` unparks it so exit is not delayed.
            std::thread::park_timeout(period);
        }
    }

    /// `WATCHDOG=1` only while the runtime and the flush loop both tick.
    fn ping_if_alive(&mut self) {
        let runtime_age = self.w.runtime.last().elapsed();
        // A closed batcher has finished its work and stopped ticking on purpose.
        let flusher_age = if self.w.batcher.is_closed() {
            Duration::ZERO
        } else {
            self.w.batcher.heartbeat().elapsed()
        };
        let alive = runtime_age < self.stall_limit && flusher_age < self.stall_limit;
        if alive {
            if self.stalled {
                tracing::info!("runtime and flush loop tick again; watchdog pings resume");
                self.stalled = false;
            }
            if self.cfg.watchdog.is_some() {
                notify::watchdog();
            }
        } else if !self.stalled {
            self.stalled = true;
            tracing::error!(
                runtime_stalled_ms = runtime_age.as_millis() as u64,
                flusher_stalled_ms = flusher_age.as_millis() as u64,
                "worker stalled: withholding WATCHDOG=1 so systemd restarts it"
            );
        }
    }

    fn check_memory(&mut self) {
        let (Some(limit), Some(rss)) = (self.cfg.memory_limit, rss_bytes()) else {
            return;
        };
        if rss <= limit || self.w.shutdown.is_cancelled() {
            return;
        }
        tracing::warn!(
            rss_bytes = rss,
            limit_bytes = limit,
            "resident memory above WORKER_MEMORY_LIMIT: draining and exiting for a fresh worker"
        );
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(StopReason::MemoryLimit { rss, limit });
        notify::status(&format!("restarting: RSS {} MiB over the limit", rss >> 20));
        self.w.shutdown.cancel();
    }

    fn report_status(&mut self) {
        let s = self.w.stats.snapshot();
        let secs = self.cfg.check_interval.as_secs_f64().max(0.001);
        let rate = (s.records_accepted.saturating_sub(self.last_accepted)) as f64 / secs;
        self.last_accepted = s.records_accepted;
        let sink = match self.w.batcher.health().down {
            None => "ClickHouse ok".to_string(),
            Some(down) => format!("ClickHouse down: {}", down.reason),
        };
        let rss = rss_bytes().unwrap_or(0) >> 20;
        if self.w.shutdown.is_cancelled() {
            let progress = (s.requests, s.queue_rows);
            if progress != self.last_progress || s.queue_rows == 0 {
                notify::extend_timeout(DRAIN_EXTENSION);
            }
            self.last_progress = progress;
            notify::status(&format!(
                "draining: {} rows waiting, {sink}, {rss} MiB RSS",
                s.queue_rows
            ));
        } else {
            notify::status(&format!(
                "serving: {rate:.0} records/s, {} rows queued, {sink}, {rss} MiB RSS",
                s.queue_rows
            ));
        }
    }
}
