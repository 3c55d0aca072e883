//! [`LatencyHistogram`]: a lock-free count of recent durations, read as quantiles by
//! `/stats` and `/metrics` (request time, the spool's commit and `fdatasync` time).
//!
//! Buckets are log-linear: each power of two of microseconds is split into four, so a
//! reported quantile (the upper bound of its bucket) is at most 25 % above the true
//! value, from 1 µs to over two hours, in 128 counters. Plain power-of-two buckets
//! were too coarse to tell a 9 ms p99 from a 15 ms one.
//!
//! # Window
//!
//! Quantiles cover the last 30 to 60 seconds, not the process's life: an operator
//! looking at p99 wants the tail now, not one diluted by hours of calm or inflated
//! by a start-up replay. Two sets of counters take turns, each for 30 s ([`WINDOW`]);
//! a reading sums the current set and the previous one. A set is cleared by the
//! first recording of its new turn; a recording racing with that clearing may be
//! lost, which a statistic can afford (it never waits on a lock).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Sub-buckets per power of two (a power of two itself).
const SUB: u64 = 4;
const SUB_BITS: u32 = SUB.trailing_zeros();
/// Octaves `2^2 ..= 2^32` µs after the exact buckets 0..4 µs.
const BUCKETS: usize = (SUB + 31 * SUB) as usize;
/// One turn of a set of counters; quantiles cover one to two of them.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Counts of recent durations; see the module docs.
#[derive(Debug)]
pub struct LatencyHistogram {
    start: Instant,
    slots: [Slot; 2],
}

/// The counters of one turn: `turn` is the index of the 30 s interval since `start`
/// they count (`u64::MAX`: never used).
#[derive(Debug)]
struct Slot {
    turn: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            turn: AtomicU64::new(u64::MAX),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            start: Instant::now(),
            slots: Default::default(),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        self.record_at(Instant::now(), elapsed);
    }

    /// For each quantile in `qs` (0..1, ascending), the upper bound (µs, exclusive) of
    /// the bucket holding it among the durations of the last 30–60 s, all from one
    /// reading of the counters; 0 when nothing was recorded in that time.
    pub fn quantiles_us<const N: usize>(&self, qs: [f64; N]) -> [u64; N] {
        self.quantiles_at(Instant::now(), qs)
    }

    fn turn(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start);
        (since.as_nanos() / WINDOW.as_nanos()) as u64
    }

    fn record_at(&self, now: Instant, elapsed: Duration) {
        let turn = self.turn(now);
        let slot = &self.slots[(turn % 2) as usize];
        let seen = slot.turn.load(Relaxed);
        if seen != turn
            && slot
                .turn
                .compare_exchange(seen, turn, Relaxed, Relaxed)
                .is_ok()
        {
            for bucket in &slot.buckets {
                bucket.store(0, Relaxed);
            }
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        slot.buckets[bucket_of(us)].fetch_add(1, Relaxed);
    }

    fn quantiles_at<const N: usize>(&self, now: Instant, qs: [f64; N]) -> [u64; N] {
        let turn = self.turn(now);
        let mut counts = [0u64; BUCKETS];
        for slot in &self.slots {
            let seen = slot.turn.load(Relaxed);
            if seen == turn || seen.checked_add(1) == Some(turn) {
                for (count, bucket) in counts.iter_mut().zip(&slot.buckets) {
                    *count += bucket.load(Relaxed);
                }
            }
        }
        let total: u64 = counts.iter().sum();
        qs.map(|q| {
            if total == 0 {
                return 0;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            counts
                .iter()
                .position(|n| {
                    seen += n;
                    seen >= rank
                })
                .map_or(upper_bound(BUCKETS - 1), upper_bound)
        })
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros(); // >= SUB_BITS
    let sub = (us >> (octave - SUB_BITS)) & (SUB - 1);
    let i = SUB + u64::from(octave - SUB_BITS) * SUB + sub;
    (i as usize).min(BUCKETS - 1)
}

fn upper_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i + 1;
    }
    let octave = (i - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (i - SUB) % SUB;
    (SUB + sub + 1) << (octave - u64::from(SUB_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lies_below_its_buckets_bound_and_within_a_quarter() {
        for us in (0..5000).chain([65_535, 65_536, 1 << 31, (1 << 32) - 1]) {
            let bound = upper_bound(bucket_of(us));
            assert!(us < bound, "{us} µs in a bucket bounded by {bound}");
            assert!(bound <= us + us / 4 + 1, "{us} µs reported as {bound}");
        }
    }

    #[test]
    fn buckets_are_ordered_and_huge_values_clamp_to_the_last() {
        let bounds: Vec<u64> = (0..BUCKETS).map(upper_bound).collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_come_from_the_recorded_distribution() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantiles_us([0.99]), [0]);
        for _ in 0..98 {
            h.record(Duration::from_micros(1_000));
        }
        h.record(Duration::from_millis(9));
        h.record(Duration::from_millis(40));
        // 1000 µs is in [896, 1024); 9 ms in [8192, 10240); 40 ms in [32768, 40960).
        assert_eq!(h.quantiles_us([0.50, 0.99, 1.0]), [1_024, 10_240, 40_960]);
    }

    #[test]
    fn quantiles_forget_what_is_older_than_two_windows() {
        let h = LatencyHistogram::default();
        let t0 = h.start;
        let at = |windows: u32, secs: u64| t0 + WINDOW * windows + Duration::from_secs(secs);
        for _ in 0..10 {
            h.record_at(at(0, 1), Duration::from_millis(40));
        }
        assert_eq!(h.quantiles_at(at(0, 2), [0.5]), [40_960]);
        // The next window adds to the previous one.
        for _ in 0..30 {
            h.record_at(at(1, 1), Duration::from_micros(1_000));
        }
        assert_eq!(h.quantiles_at(at(1, 2), [0.5, 1.0]), [1_024, 40_960]);
        // Two windows on, the first is gone; its set is reused and cleared.
        assert_eq!(h.quantiles_at(at(2, 0), [1.0]), [1_024]);
        h.record_at(at(2, 1), Duration::from_millis(9));
        assert_eq!(h.quantiles_at(at(2, 2), [1.0]), [10_240]);
        assert_eq!(h.quantiles_at(at(2, 2), [0.5]), [1_024]);
        // Nothing recorded for two whole windows: nothing to report.
        assert_eq!(h.quantiles_at(at(4, 0), [0.5, 0.99]), [0, 0]);
    }
}
