//! The `/stats` body ([`WorkerStats`]), the metrics read from it beyond the
//! pipeline's counters, and the whole `/metrics` page ([`prometheus_text`]).

use serde::Serialize;

use super::registry::{self, metrics, Metric};
use super::{StatsSnapshot, PIPELINE_METRICS};
use crate::spool::SpoolStats;

/// `GET /stats` body. Field names are part of the API (the control tool reads them).
#[derive(Debug, Serialize)]
pub struct WorkerStats {
    pub pid: u32,
    pub worker_id: String,
    pub uptime_seconds: f64,
    pub healthy: bool,
    pub health_reason: Option<String>,
    pub clickhouse_version: String,
    /// Every ClickHouse endpoint (`CLICKHOUSE_URL` order): state, version, counters.
    pub clickhouse_endpoints: Vec<crate::sink::endpoints::EndpointStats>,
    pub rss_bytes: u64,
    /// `spool` or `clickhouse`.
    pub ack_mode: &'static str,
    /// The CPU slice the kernel gives the worker's threads, in µs (the thread that
    /// answers is asked; all inherit the main thread's): 100 by default
    /// (`WORKER_CPU_SLICE_US`), 0 where the kernel keeps none (before Linux 6.12).
    pub cpu_slice_us: u64,
    /// Set when healthy but not at full strength (ClickHouse down while spooling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_reason: Option<String>,
    #[serde(flatten)]
    pub counters: StatsSnapshot,
    /// Present with `ACK_MODE=spool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolStats>,
    /// Present when API keys are on: failures, reloads and per-key counters by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::auth::AuthStats>,
}

/// Metrics of the process and its health, read from [`WorkerStats`].
pub const WORKER_METRICS: &[Metric<WorkerStats>] = metrics![
    rss_bytes: Gauge "zero_logs_resident_memory_bytes"
        "Resident set size of the worker.";
    uptime_seconds: Gauge "zero_logs_uptime_seconds"
        "Seconds since the worker started.";
    healthy: Gauge "zero_logs_healthy"
        "1 when the worker can accept and its sink works.";
    pid: Gauge "zero_logs_process_id"
        "PID of the worker.";
];

/// Metrics of the spool (`ACK_MODE=spool` only), read from [`SpoolStats`]; under
/// the `spool` object in `/stats`.
pub const SPOOL_METRICS: &[Metric<SpoolStats>] = metrics![
    bytes: Gauge "zero_logs_spool_bytes"
        "Bytes of spool segments on disk.";
    max_bytes: Gauge "zero_logs_spool_max_bytes"
        "Spool cap (SPOOL_MAX_BYTES).";
    segments: Gauge "zero_logs_spool_segments"
        "Spool segment files.";
    unacked_frames: Gauge "zero_logs_spool_unacked_frames"
        "Spooled batches not yet committed to ClickHouse.";
    oldest_unacked_age_ms: Gauge(Millis) "zero_logs_spool_oldest_unacked_age_seconds"
        "Age of the oldest spooled batch not yet committed.";
    appended_records: Counter "zero_logs_spool_appended_records_total"
        "Records acknowledged into the spool.";
    fsyncs: Counter "zero_logs_spool_fsyncs_total"
        "Group commits that reached the disk.";
    replayed_frames: Counter "zero_logs_spool_replayed_frames_total"
        "Batches replayed from an earlier run.";
    quarantined_frames: Counter "zero_logs_spool_quarantined_frames_total"
        "Corrupt spool frames moved to quarantine.";
    quarantined_bytes: Counter "zero_logs_spool_quarantined_bytes_total"
        "Corrupt spool bytes moved to quarantine.";
    rejected_frames: Counter "zero_logs_spool_rejected_frames_total"
        "Batches ClickHouse refused for good, kept in quarantine.";
    full_refusals: Counter "zero_logs_spool_full_refusals_total"
        "Requests refused because the spool was at its cap.";
    no_space_errors: Counter "zero_logs_spool_no_space_errors_total"
        "Requests refused because the spool's filesystem was full.";
    adopted_frames: Counter "zero_logs_spool_adopted_frames_total"
        "Batches adopted from stopped instances' spools.";
    [commit_p50_us, commit_p99_us]: Summary "zero_logs_spool_commit_seconds"
        "Append-to-durable time, last 30-60 s (bucket upper bounds).";
    [fsync_p50_us, fsync_p99_us]: Summary "zero_logs_spool_fsync_seconds"
        "One group's fdatasync, last 30-60 s (bucket upper bounds).";
];

/// The `/metrics` page: every registry metric of this report, labelled with the
/// worker's id.
pub fn prometheus_text(s: &WorkerStats) -> String {
    let labels = registry::labels(&[("worker_id", &s.worker_id)]);
    let mut out = String::with_capacity(4096);
    registry::render(&mut out, &labels, PIPELINE_METRICS, &s.counters);
    registry::render(&mut out, &labels, WORKER_METRICS, s);
    if let Some(spool) = &s.spool {
        registry::render(&mut out, &labels, SPOOL_METRICS, spool);
    }
    if let Some(auth) = &s.auth {
        crate::auth::prometheus(&mut out, &s.worker_id, auth);
    }
    crate::sink::endpoints::prometheus(&mut out, &s.worker_id, &s.clickhouse_endpoints);
    out
}

#[cfg(test)]
impl WorkerStats {
    /// A report with a different value in every numeric field, so a metric reading
    /// the wrong one shows.
    pub fn example() -> WorkerStats {
        // Counters 11, 12, … in declaration order (rows_inserted is 16).
        let counters = StatsSnapshot {
            queue_rows: -20,
            last_flush_unix_ms: 1_700_000_000_123,
            request_p50_us: 1234,
            request_p99_us: 98765,
            ..StatsSnapshot::numbered()
        };
        let spool = SpoolStats {
            bytes: 101,
            max_bytes: 102,
            segments: 103,
            last_seq: 104,
            acked_through: 105,
            unacked_frames: 106,
            oldest_unacked_age_ms: 107_500,
            replay_pending: true,
            appended_frames: 108,
            appended_records: 109,
            appended_bytes: 110,
            fsyncs: 111,
            group_commits: 112,
            replayed_frames: 113,
            quarantined_frames: 114,
            quarantined_bytes: 115,
            torn_tails_truncated: 116,
            full_refusals: 117,
            no_space_errors: 118,
            io_errors: 119,
            segments_deleted: 120,
            rejected_frames: 121,
            adopted_spools: 122,
            adopted_frames: 123,
            commit_p50_us: 124,
            commit_p99_us: 125,
            fsync_p50_us: 126,
            fsync_p99_us: 127,
        };
        WorkerStats {
            pid: 4242,
            worker_id: "7".into(),
            uptime_seconds: 12.5,
            healthy: true,
            health_reason: None,
            clickhouse_version: "24.8".into(),
            clickhouse_endpoints: Vec::new(),
            rss_bytes: 1 << 25,
            ack_mode: "spool",
            cpu_slice_us: 100,
            degraded_reason: None,
            counters,
            spool: Some(spool),
            auth: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::Value;

    use super::*;

    /// Checks that each field a metric reads is shown in `json` under its key, with
    /// the same value: `/metrics` and `/stats` cannot disagree.
    fn assert_shown_in<S>(metrics: &[Metric<S>], source: &S, json: &Value) {
        for m in metrics {
            for f in m.kind.fields() {
                let shown = json
                    .get(f.key)
                    .unwrap_or_else(|| panic!("{}: /stats has no key {:?}: {json}", m.name, f.key));
                let shown = shown.as_f64().or(shown.as_bool().map(f64::from));
                assert_eq!(shown, Some((f.get)(source)), "{} reads {:?}", m.name, f.key);
            }
        }
    }

    #[test]
    fn every_metric_reads_a_value_stats_shows() {
        let report = WorkerStats::example();
        let json = serde_json::to_value(&report).unwrap();
        assert_shown_in(PIPELINE_METRICS, &report.counters, &json);
        assert_shown_in(WORKER_METRICS, &report, &json);
        assert_shown_in(
            SPOOL_METRICS,
            report.spool.as_ref().unwrap(),
            &json["spool"],
        );
    }

    /// Name and `# TYPE` of every metric family of the page (labelled metrics sharing
    /// a name, declared next to each other, are one family).
    fn families() -> Vec<(&'static str, &'static str)> {
        fn of<S>(metrics: &[Metric<S>]) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
            metrics.iter().map(|m| (m.name, m.kind.type_name()))
        }
        let mut all: Vec<_> = of(PIPELINE_METRICS)
            .chain(of(WORKER_METRICS))
            .chain(of(SPOOL_METRICS))
            .collect();
        all.dedup();
        all
    }

    #[test]
    fn a_shared_name_is_one_labelled_family() {
        for metrics in [PIPELINE_METRICS] {
            for pair in metrics.windows(2) {
                if pair[0].name == pair[1].name {
                    let (a, b) = (pair[0].label, pair[1].label);
                    assert!(a.is_some() && b.is_some() && a != b, "{}", pair[0].name);
                    assert_eq!(pair[0].help, pair[1].help, "{}", pair[0].name);
                }
            }
        }
        let page = prometheus_text(&WorkerStats::example());
        let family = "zero_logs_rows_dead_lettered_total";
        assert_eq!(page.matches(&format!("# TYPE {family} counter")).count(), 1);
        for reason in ["type_mismatch", "constraint", "too_large", "other"] {
            let sample = format!("{family}{{worker_id=\"7\",reason=\"{reason}\"}} ");
            assert!(page.contains(&sample), "{sample} in {page}");
        }
    }

    fn names() -> Vec<&'static str> {
        families().into_iter().map(|(name, _)| name).collect()
    }

    #[test]
    fn metric_names_are_unique_and_well_formed() {
        let names = names();
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for (name, kind) in families() {
            assert!(name.starts_with("zero_logs_"), "{name}");
            let snake = name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(snake, "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{kind} {name}");
        }
    }

    /// Dashboards, alerts and the docs (README, SPOOL.md) use these names: a rename
    /// breaks them, so it has to fail here first.
    #[test]
    fn metric_names_dashboards_use_still_exist() {
        let names = names();
        for name in [
            "zero_logs_requests_total",
            "zero_logs_requests_failed_total",
            "zero_logs_records_accepted_total",
            "zero_logs_records_rejected_total",
            "zero_logs_received_bytes_total",
            "zero_logs_rows_inserted_total",
            "zero_logs_rows_failed_total",
            "zero_logs_inserts_total",
            "zero_logs_insert_failures_total",
            "zero_logs_rows_dead_lettered_total",
            "zero_logs_rows_dead_letter_file_total",
            "zero_logs_queue_rows",
            "zero_logs_last_flush_timestamp_seconds",
            "zero_logs_resident_memory_bytes",
            "zero_logs_uptime_seconds",
            "zero_logs_healthy",
            "zero_logs_process_id",
            "zero_logs_request_seconds",
            "zero_logs_spool_bytes",
            "zero_logs_spool_max_bytes",
            "zero_logs_spool_segments",
            "zero_logs_spool_unacked_frames",
            "zero_logs_spool_oldest_unacked_age_seconds",
            "zero_logs_spool_appended_records_total",
            "zero_logs_spool_fsyncs_total",
            "zero_logs_spool_replayed_frames_total",
            "zero_logs_spool_quarantined_frames_total",
            "zero_logs_spool_quarantined_bytes_total",
            "zero_logs_spool_rejected_frames_total",
            "zero_logs_spool_full_refusals_total",
            "zero_logs_spool_no_space_errors_total",
            "zero_logs_spool_adopted_frames_total",
            "zero_logs_spool_commit_seconds",
            "zero_logs_spool_fsync_seconds",
        ] {
            assert!(names.contains(&name), "{name} is gone");
        }
    }

    #[test]
    fn the_page_has_every_family_once_and_spool_ones_only_with_a_spool() {
        let mut report = WorkerStats::example();
        let page = prometheus_text(&report);
        assert!(page.contains("zero_logs_rows_inserted_total{worker_id=\"7\"} 16\n"));
        assert!(page
            .contains("zero_logs_last_flush_timestamp_seconds{worker_id=\"7\"} 1700000000.123\n"));
        assert!(page
            .contains("zero_logs_request_seconds{worker_id=\"7\",quantile=\"0.99\"} 0.098765\n"));
        assert!(
            page.contains("zero_logs_spool_oldest_unacked_age_seconds{worker_id=\"7\"} 107.5\n")
        );
        assert_eq!(page.matches("# TYPE ").count(), names().len(), "{page}");
        report.spool = None;
        let page = prometheus_text(&report);
        assert!(!page.contains("zero_logs_spool_"), "{page}");
        assert!(
            page.contains("zero_logs_healthy{worker_id=\"7\"} 1\n"),
            "{page}"
        );
    }
}
