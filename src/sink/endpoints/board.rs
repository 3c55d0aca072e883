//! [`EndpointBoard`]: what each ClickHouse endpoint is doing, for `/stats`, `/metrics`
//! and the journal. The [`Endpoints`](super::Endpoints) sink writes it; the admin
//! state reads it. Not generic over the sink, so the admin side needs no type
//! parameter.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::stats::registry;

/// Every endpoint's status, in `CLICKHOUSE_URL` order. Empty for a worker built
/// without endpoints (tests of other parts).
#[derive(Debug, Default)]
pub struct EndpointBoard {
    pub(super) endpoints: Vec<Arc<EndpointStatus>>,
}

/// One endpoint's state and counters.
#[derive(Debug)]
pub struct EndpointStatus {
    /// Redacted (no credentials).
    pub(super) url: String,
    /// Read on every pick without the lock; changed only under `state`'s lock.
    pub(super) up: AtomicBool,
    pub(super) state: Mutex<State>,
    pub(super) inserts: AtomicU64,
    pub(super) insert_failures: AtomicU64,
    pub(super) rows_inserted: AtomicU64,
    pub(super) inflight: AtomicU64,
}

#[derive(Debug)]
pub(super) struct State {
    /// Empty until the endpoint was reached once.
    pub(super) version: String,
    pub(super) since_unix_ms: u64,
    /// Why it is down (the last failure while down).
    pub(super) reason: Option<String>,
}

/// One endpoint in `/stats` (`clickhouse_endpoints`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointStats {
    /// The URL without credentials.
    pub url: String,
    /// `version()` of the server; empty until it was reached once.
    pub version: String,
    /// `up` or `down`.
    pub state: String,
    /// Unix ms of the last change of `state` (start-up for the first).
    pub since_unix_ms: u64,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// INSERT statements committed through this endpoint.
    pub inserts: u64,
    /// INSERT attempts that failed on this endpoint.
    pub insert_failures: u64,
    /// Rows committed through this endpoint.
    pub rows_inserted: u64,
    /// INSERTs running on it now.
    pub inflight: u64,
}

impl EndpointStatus {
    pub(super) fn new(url: String, up: bool, version: String, reason: Option<String>) -> Self {
        EndpointStatus {
            url,
            up: AtomicBool::new(up),
            state: Mutex::new(State {
                version,
                since_unix_ms: unix_ms(),
                reason,
            }),
            inserts: AtomicU64::new(0),
            insert_failures: AtomicU64::new(0),
            rows_inserted: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> EndpointStats {
        let state = self.lock();
        EndpointStats {
            url: self.url.clone(),
            version: state.version.clone(),
            state: if self.is_up() { "up" } else { "down" }.to_string(),
            since_unix_ms: state.since_unix_ms,
            reason: state.reason.clone(),
            inserts: self.inserts.load(Relaxed),
            insert_failures: self.insert_failures.load(Relaxed),
            rows_inserted: self.rows_inserted.load(Relaxed),
            inflight: self.inflight.load(Relaxed),
        }
    }
}

impl EndpointBoard {
    /// Every endpoint, in `CLICKHOUSE_URL` order.
    pub fn snapshot(&self) -> Vec<EndpointStats> {
        self.endpoints.iter().map(|e| e.stats()).collect()
    }
}

/// The `/metrics` families of the endpoints: one sample per endpoint, labelled with
/// `worker_id` and `endpoint` (the redacted URL). Written by hand rather than through
/// the registry's declarations: those read one value per report, these one per
/// endpoint.
pub fn prometheus(out: &mut String, worker_id: &str, endpoints: &[EndpointStats]) {
    if endpoints.is_empty() {
        return;
    }
    type Read = fn(&EndpointStats) -> u64;
    let families: [(&str, &str, &str, Read); 5] = [
        (
            "zero_logs_clickhouse_endpoint_up",
            "gauge",
            "1 while the ClickHouse endpoint takes INSERTs, 0 while it is down.",
            |e| u64::from(e.state == "up"),
        ),
        (
            "zero_logs_clickhouse_endpoint_inserts_total",
            "counter",
            "INSERT statements committed through the ClickHouse endpoint.",
            |e| e.inserts,
        ),
        (
            "zero_logs_clickhouse_endpoint_insert_failures_total",
            "counter",
            "INSERT attempts that failed on the ClickHouse endpoint.",
            |e| e.insert_failures,
        ),
        (
            "zero_logs_clickhouse_endpoint_rows_inserted_total",
            "counter",
            "Rows committed through the ClickHouse endpoint.",
            |e| e.rows_inserted,
        ),
        (
            "zero_logs_clickhouse_endpoint_inflight_inserts",
            "gauge",
            "INSERTs running on the ClickHouse endpoint.",
            |e| e.inflight,
        ),
    ];
    for (name, kind, help, read) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for endpoint in endpoints {
            let labels = registry::labels(&[("worker_id", worker_id), ("endpoint", &endpoint.url)]);
            let _ = writeln!(out, "{name}{{{labels}}} {}", read(endpoint));
        }
    }
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
