//! Autoscaling decisions (off by default, `AUTOSCALE=false`): pure logic, fed
//! one sample per health-check tick, so it is tested without a cluster.
//!
//! A sample is the cluster's ingest rate per running worker (requests/s,
//! from the deltas of each worker's `requests` counter between two ticks).
//! One worker is added when *every* sample of the last `AUTOSCALE_WINDOW` is
//! above `AUTOSCALE_UP_RPS`, and one removed when every one is below
//! `AUTOSCALE_DOWN_RPS`, within `CLUSTER_MIN_WORKERS..CLUSTER_MAX_WORKERS`
//! (unbounded sides: at least 1, at most the CPU count). After any change of
//! the worker count (ours, the API's, an operator's) the window starts afresh
//! and nothing happens for `AUTOSCALE_COOLDOWN`: the new count first has to
//! show its own load. One step at a time keeps a wrong decision cheap.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::config::AutoscaleConfig;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Scale to this many workers.
    ScaleTo(u32),
}

/// The decision state.
#[derive(Debug)]
pub struct Autoscaler {
    cfg: AutoscaleConfig,
    min: u32,
    max: u32,
    samples: VecDeque<(Instant, f64)>,
    workers: Option<u32>,
    quiet_until: Option<Instant>,
}

impl Autoscaler {
    /// `min`/`max`: the effective bounds (see the module docs).
    pub fn new(cfg: AutoscaleConfig, min: u32, max: u32) -> Autoscaler {
        Autoscaler {
            cfg,
            min: min.max(1),
            max: max.max(min.max(1)),
            samples: VecDeque::new(),
            workers: None,
            quiet_until: None,
        }
    }

    /// Updates the bounds (the env files may have changed).
    pub fn set_bounds(&mut self, min: u32, max: u32) {
        self.min = min.max(1);
        self.max = max.max(self.min);
    }

    /// Takes one sample: `rps_per_worker` with `workers` running, at `now`.
    pub fn observe(&mut self, now: Instant, workers: u32, rps_per_worker: f64) -> Option<Decision> {
        if self.workers != Some(workers) {
            // A new count (or the first sample): start over and let it settle.
            if self.workers.is_some() {
                self.quiet_until = Some(now + self.cfg.cooldown);
            }
            self.workers = Some(workers);
            self.samples.clear();
        }
        if self.quiet_until.is_some_and(|t| now < t) {
            return None;
        }
        self.samples.push_back((now, rps_per_worker));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.cfg.window)
        {
            self.samples.pop_front();
        }
        let covered = self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= self.cfg.window);
        if !self.cfg.enabled || !covered || workers == 0 {
            return None;
        }
        let decision = if workers < self.max
            && self.samples.iter().all(|(_, r)| *r > self.cfg.up_rps)
        {
            Some(Decision::ScaleTo(workers + 1))
        } else if workers > self.min && self.samples.iter().all(|(_, r)| *r < self.cfg.down_rps) {
            Some(Decision::ScaleTo(workers - 1))
        } else {
            None
        };
        if decision.is_some() {
            self.samples.clear();
            self.quiet_until = Some(now + self.cfg.cooldown);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> AutoscaleConfig {
        AutoscaleConfig {
            enabled: true,
            window: Duration::from_secs(10),
            up_rps: 1000.0,
            down_rps: 100.0,
            cooldown: Duration::from_secs(30),
        }
    }

    /// Feeds one sample per second at `rps` from `t0 + from` s; the decisions.
    fn feed(
        a: &mut Autoscaler,
        t0: Instant,
        from: u64,
        secs: u64,
        workers: u32,
        rps: f64,
    ) -> Vec<(u64, Decision)> {
        (from..from + secs)
            .filter_map(|s| {
                a.observe(t0 + Duration::from_secs(s), workers, rps)
                    .map(|d| (s, d))
            })
            .collect()
    }

    #[test]
    fn sustained_high_load_adds_one_worker_after_the_window() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(cfg(), 1, 4);
        assert_eq!(
            feed(&mut a, t0, 0, 15, 2, 1500.0),
            [(10, Decision::ScaleTo(3))]
        );
    }

    #[test]
    fn one_quiet_sample_in_the_window_prevents_scaling() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(cfg(), 1, 4);
        assert!(feed(&mut a, t0, 0, 5, 2, 1500.0).is_empty());
        assert!(feed(&mut a, t0, 5, 1, 2, 500.0).is_empty());
        // The dip leaves the window 10 s later; only then does it scale.
        assert_eq!(
            feed(&mut a, t0, 6, 12, 2, 1500.0),
            [(16, Decision::ScaleTo(3))]
        );
    }

    #[test]
    fn low_load_removes_a_worker_but_never_below_min() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(cfg(), 2, 4);
        assert_eq!(
            feed(&mut a, t0, 0, 11, 3, 10.0),
            [(10, Decision::ScaleTo(2))]
        );
        // At the minimum: nothing, however long.
        assert!(feed(&mut a, t0, 11, 120, 2, 0.0).is_empty());
    }

    #[test]
    fn never_above_max_and_nothing_when_disabled() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(cfg(), 1, 2);
        assert!(feed(&mut a, t0, 0, 60, 2, 5000.0).is_empty());
        let mut off = Autoscaler::new(
            AutoscaleConfig {
                enabled: false,
                ..cfg()
            },
            1,
            8,
        );
        assert!(feed(&mut off, t0, 0, 60, 2, 5000.0).is_empty());
    }

    #[test]
    fn a_change_of_count_waits_out_the_cooldown() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(cfg(), 1, 8);
        assert_eq!(
            feed(&mut a, t0, 0, 11, 2, 1500.0),
            [(10, Decision::ScaleTo(3))]
        );
        // Still overloaded at 3: the next step comes after cooldown (30 s) + window (10 s).
        assert_eq!(
            feed(&mut a, t0, 11, 60, 3, 1500.0),
            [(51, Decision::ScaleTo(4))]
        );
        // An operator scales by hand: the window restarts, after a cooldown.
        let mut b = Autoscaler::new(cfg(), 1, 8);
        assert!(feed(&mut b, t0, 0, 5, 2, 1500.0).is_empty());
        assert_eq!(
            feed(&mut b, t0, 5, 60, 5, 1500.0),
            [(45, Decision::ScaleTo(6))]
        );
    }

    #[test]
    fn between_the_thresholds_nothing_happens() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(cfg(), 1, 8);
        assert!(feed(&mut a, t0, 0, 120, 3, 500.0).is_empty());
    }
}
