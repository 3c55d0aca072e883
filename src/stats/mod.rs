//! Live counters of one worker, shared by every stage and read by `/stats`,
//! `/metrics` and the systemd `STATUS=` line.
//!
//! Plain atomics: the hot path only ever adds; readers take a [`StatsSnapshot`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::latency::LatencyHistogram;

/// Counters updated by the pipeline. Cheap to clone behind an `Arc`.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub requests_failed: AtomicU64,
    pub records_accepted: AtomicU64,
    pub records_rejected: AtomicU64,
    pub bytes_received: AtomicU64,
    pub rows_inserted: AtomicU64,
    pub rows_failed: AtomicU64,
    pub inserts: AtomicU64,
    pub insert_failures: AtomicU64,
    /// Rows submitted to the batcher and not yet inserted or failed.
    pub queue_rows: AtomicI64,
    /// Unix time in milliseconds of the last successful insert (0: never).
    pub last_flush_unix_ms: AtomicU64,
    /// Accepted requests, from the handler's start to the answer: body read (HTTP; a
    /// gRPC message is already decoded), validation, and the acknowledgement point
    /// (spool commit or INSERT).
    pub request_latency: LatencyHistogram,
}

/// A consistent-enough copy for reporting.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub requests_failed: u64,
    pub records_accepted: u64,
    pub records_rejected: u64,
    pub bytes_received: u64,
    pub rows_inserted: u64,
    pub rows_failed: u64,
    pub inserts: u64,
    pub insert_failures: u64,
    pub queue_rows: i64,
    pub last_flush_unix_ms: u64,
    /// Quantiles of `Stats::request_latency` over the last 30–60 s (µs, bucket upper bounds,
    /// at most 25 % above the true value).
    pub request_p50_us: u64,
    pub request_p99_us: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let [request_p50_us, request_p99_us] = self.request_latency.quantiles_us([0.50, 0.99]);
        StatsSnapshot {
            requests: self.requests.load(Relaxed),
            requests_failed: self.requests_failed.load(Relaxed),
            records_accepted: self.records_accepted.load(Relaxed),
            records_rejected: self.records_rejected.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            rows_inserted: self.rows_inserted.load(Relaxed),
            rows_failed: self.rows_failed.load(Relaxed),
            inserts: self.inserts.load(Relaxed),
            insert_failures: self.insert_failures.load(Relaxed),
            queue_rows: self.queue_rows.load(Relaxed),
            last_flush_unix_ms: self.last_flush_unix_ms.load(Relaxed),
            request_p50_us,
            request_p99_us,
        }
    }
}

/// Resident set size of this process from `/proc/self/status` (`VmRSS`, kB): for
/// `/stats` and the watchdog's memory limit.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
