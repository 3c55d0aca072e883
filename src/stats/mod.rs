//! What one worker reports about itself: the live counters every stage updates
//! ([`Stats`]), the `/stats` body ([`WorkerStats`]), the process's own figures
//! ([`rss_bytes`]) and the metric registry `/metrics` is rendered from.
//!
//! Plain atomics: the hot path only ever adds; readers take a [`StatsSnapshot`].
//!
//! # Every metric is declared once
//!
//! A declaration names the Prometheus metric, its help text, its type and the
//! report field it reads; that field's name is also its `/stats` JSON key. Every
//! sample carries the label `worker_id` (summaries add `quantile`). To add one:
//!
//! - a pipeline counter or gauge: one line in the `worker_stats!` invocation below
//!   (it becomes a [`Stats`] atomic, a [`StatsSnapshot`] field, a `/stats` key and a
//!   metric), then add to it where it happens (`Stats::add(&stats.x, n)`);
//! - a latency: one line under `latencies` (a [`LatencyHistogram`], its p50/p99
//!   `/stats` keys in µs and a summary in seconds), then `record` into it;
//! - a figure computed when asked (process, health, spool): its field in
//!   [`WorkerStats`] or [`SpoolStats`](crate::spool::SpoolStats) and one entry in
//!   [`report::WORKER_METRICS`] or [`report::SPOOL_METRICS`].
//!
//! Names follow `zero_logs_<noun>_<unit>_total` for counters; existing names and
//! `/stats` keys are an interface (dashboards, `zero-logs-ctl`): never rename.

pub mod registry;
pub mod report;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::latency::LatencyHistogram;
pub use registry::PROMETHEUS_CONTENT_TYPE;
use registry::{metrics, Metric, QUANTILES};
pub use report::{prometheus_text, WorkerStats};

/// Declares [`Stats`], [`StatsSnapshot`], [`Stats::snapshot`] and
/// [`PIPELINE_METRICS`] from one list, so a counter cannot be missing from one of
/// them. `counters`: `field: Atomic => snapshot type, Kind[(Unit)] ["label" = "value"]
/// "name" "help";` (the part after the comma as in [`registry::metrics!`]: counters
/// sharing a name with one label value each are one labelled family); `latencies`:
/// `histogram => [p50 key, p99 key], "name" "help";` (a summary).
macro_rules! worker_stats {
    (
        counters {$(
            $(#[$doc:meta])*
            $field:ident: $atomic:ident => $int:ty,
                $kind:ident $(($unit:ident))? $([$lname:literal = $lvalue:literal])?
                $name:literal $help:literal;
        )+}
        latencies {$(
            $(#[$ldoc:meta])*
            $histogram:ident => [$p50:ident, $p99:ident], $sname:literal $shelp:literal;
        )+}
    ) => {
        /// Counters updated by the pipeline. Cheap to clone behind an `Arc`.
        #[derive(Debug, Default)]
        pub struct Stats {
            $(#[doc = $help] $(#[$doc])* pub $field: $atomic,)+
            $(#[doc = $shelp] $(#[$ldoc])* pub $histogram: LatencyHistogram,)+
        }

        /// A consistent-enough copy for reporting, flattened into `/stats`.
        #[derive(Debug, Clone, Serialize, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $(#[doc = $help] pub $field: $int,)+
            $(
                /// p50 of the latency over the last 30–60 s, µs (a bucket's upper
                /// bound, at most 25 % above the true value).
                pub $p50: u64,
                /// p99, likewise.
                pub $p99: u64,
            )+
        }

        impl Stats {
            pub fn snapshot(&self) -> StatsSnapshot {
                $(let [$p50, $p99] = self.$histogram.quantiles_us(QUANTILES);)+
                StatsSnapshot {
                    $($field: self.$field.load(Relaxed),)+
                    $($p50, $p99,)+
                }
            }
        }

        #[cfg(test)]
        impl StatsSnapshot {
            /// A different value in every field (11, 12, … in declaration order), so a
            /// test reading the wrong field notices; new fields need no test edit.
            pub fn numbered() -> StatsSnapshot {
                let mut next = 10;
                let mut n = move || {
                    next += 1;
                    next
                };
                StatsSnapshot {
                    $($field: n() as $int,)+
                    $($p50: n() as u64, $p99: n() as u64,)+
                }
            }
        }

        /// The metrics of [`StatsSnapshot`], in declaration order.
        pub const PIPELINE_METRICS: &[Metric<StatsSnapshot>] = metrics![
            $($field: $kind $(($unit))? $([$lname = $lvalue])? $name $help;)+
            $([$p50, $p99]: Summary $sname $shelp;)+
        ];
    };
}

worker_stats! {
    counters {
        requests: AtomicU64 => u64, Counter "zero_logs_requests_total"
            "Ingest requests handled.";
        requests_failed: AtomicU64 => u64, Counter "zero_logs_requests_failed_total"
            "Ingest requests refused or failed.";
        records_accepted: AtomicU64 => u64, Counter "zero_logs_records_accepted_total"
            "Records acknowledged to clients.";
        records_rejected: AtomicU64 => u64, Counter "zero_logs_records_rejected_total"
            "Records that failed validation.";
        bytes_received: AtomicU64 => u64, Counter "zero_logs_received_bytes_total"
            "Request body bytes received (before decompression).";
        rows_inserted: AtomicU64 => u64, Counter "zero_logs_rows_inserted_total"
            "Rows committed to ClickHouse.";
        rows_failed: AtomicU64 => u64, Counter "zero_logs_rows_failed_total"
            "Rows ClickHouse refused permanently.";
        inserts: AtomicU64 => u64, Counter "zero_logs_inserts_total"
            "INSERT statements committed.";
        insert_failures: AtomicU64 => u64, Counter "zero_logs_insert_failures_total"
            "INSERT attempts that failed.";
        otlp_requests: AtomicU64 => u64, Counter "zero_logs_otlp_requests_total"
            "OTLP export requests handled (OTLP/HTTP and OTLP/gRPC; also in requests).";
        /// TLS connections that never got to a request: the client's handshake failed
        /// (wrong CA, no or bad client certificate, plaintext on the TLS port) or timed out.
        tls_handshake_failures: AtomicU64 => u64, Counter "zero_logs_tls_handshake_failures_total"
            "TLS handshakes that failed or timed out (no request was served).";
        tls_reloads: AtomicU64 => u64, Counter "zero_logs_tls_reloads_total"
            "TLS certificate reloads that took effect (files changed, or SIGHUP).";
        /// The old certificate stays in use; the journal says which file and why.
        tls_reload_failures: AtomicU64 => u64, Counter "zero_logs_tls_reload_failures_total"
            "TLS certificate reloads refused (bad new files); the old certificate is kept.";
        /// Dead letters (`ACK_MODE=spool`): rows ClickHouse refused for good, isolated
        /// from their frame and kept in `<table>_rejected` (or the fallback file), by
        /// reason (see `sink::dead_letter::Reason`).
        rows_dead_lettered_type_mismatch: AtomicU64 => u64,
            Counter ["reason" = "type_mismatch"] "zero_logs_rows_dead_lettered_total"
            "Rows ClickHouse refused for good, kept as dead letters, by reason.";
        rows_dead_lettered_constraint: AtomicU64 => u64,
            Counter ["reason" = "constraint"] "zero_logs_rows_dead_lettered_total"
            "Rows ClickHouse refused for good, kept as dead letters, by reason.";
        rows_dead_lettered_too_large: AtomicU64 => u64,
            Counter ["reason" = "too_large"] "zero_logs_rows_dead_lettered_total"
            "Rows ClickHouse refused for good, kept as dead letters, by reason.";
        rows_dead_lettered_other: AtomicU64 => u64,
            Counter ["reason" = "other"] "zero_logs_rows_dead_lettered_total"
            "Rows ClickHouse refused for good, kept as dead letters, by reason.";
        /// Of those, the rows the dead-letter table refused, appended to
        /// `quarantine/dead-letter.jsonl` in the spool directory instead.
        rows_dead_letter_file: AtomicU64 => u64, Counter "zero_logs_rows_dead_letter_file_total"
            "Dead-lettered rows written to the spool's dead-letter file (table unwritable).";
        /// Rows submitted to the batcher and not yet inserted or failed.
        queue_rows: AtomicI64 => i64, Gauge "zero_logs_queue_rows"
            "Rows waiting for ClickHouse.";
        /// Unix time in milliseconds (0: never).
        last_flush_unix_ms: AtomicU64 => u64,
            Gauge(Millis) "zero_logs_last_flush_timestamp_seconds"
            "Unix time of the last successful INSERT.";
    }
    latencies {
        /// Accepted requests, from the handler's start to the answer: body read (HTTP;
        /// a gRPC message is already decoded), validation, and the acknowledgement
        /// point (spool commit or INSERT).
        request_latency => [request_p50_us, request_p99_us], "zero_logs_request_seconds"
            "Accepted requests' handling time, last 30-60 s (bucket upper bounds).";
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
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
