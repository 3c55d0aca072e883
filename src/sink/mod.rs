//! The sink: from validated [`Batch`](crate::record::Batch)es to rows committed in ClickHouse.
//!
//! # Parts (vector's ClickHouse sink split, one reason to change each)
//!
//! - [`batcher`]: the acknowledgement seam. Queues submitted batches (bounded by rows),
//!   cuts them into INSERTs by rows / bytes / age, keeps up to `max_inflight_inserts`
//!   in flight, retries transient failures within the retry budget, tracks sink health
//!   and resolves one [`Receipt`] per submitted batch.
//! - [`clickhouse`]: [`ClickHouseSink`], one INSERT attempt (RowBinary + LZ4 through the
//!   official `clickhouse` crate), `ping`, and start-up (version detection, DDL, table check).
//! - [`rowbinary`]: the INSERT body, RowBinary written straight from the encoded records
//!   for each row layout, and the INSERT statement naming its columns.
//! - [`schema`]: which DDL and which row layout fit a server version or an existing table.
//!   The table schemas are documented there.
//! - [`retry`]: transient vs permanent classification of ClickHouse errors, and the
//!   capped exponential backoff with jitter.
//! - [`endpoints`]: [`Endpoints`], one sink over several ClickHouse endpoints
//!   (`CLICKHOUSE_URL` with commas): least-in-flight spread, per-endpoint health with
//!   backoff probes, the whole sink down only when every endpoint is.
//! - [`dedup`]: the `insert_deduplication_token` of an INSERT made of spool frames.
//! - [`dead_letter`]: what becomes of the rows of a spool frame ClickHouse refused for
//!   good (bisection, `<table>_rejected`, the fallback file).
//!
//! The [`Sink`] trait is the one seam between the batcher and the database, so the
//! batcher's timing rules can be tested with a fake sink and paused time; production
//! uses [`ClickHouseSink`].
//!
//! # Errors on the wire
//!
//! [`SinkError`] and [`SubmitError`] are what the ingest layer maps to responses:
//! `Unavailable` → 503 (the client retries later), `Rejected` → 500 with the reason,
//! `Closed` → 503, `Full` → 429.

use std::future::Future;

use tokio::time::Instant;

pub mod batcher;
pub mod clickhouse;
pub mod dead_letter;
pub mod dedup;
pub mod endpoints;
pub mod retry;
pub mod rowbinary;
pub mod schema;

pub use self::batcher::{Batcher, BatcherHandle, Receipt, SubmitError};
pub use self::clickhouse::ClickHouseSink;
pub use self::dedup::Origin;
pub use self::endpoints::{ClickHouseEndpoints, Endpoints};
pub use self::schema::{Layout, ServerVersion};

/// Why rows did not reach ClickHouse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Transient: ClickHouse is down, unreachable, overloaded or timed out. Nothing is
    /// wrong with the rows; the client should retry later (HTTP 503).
    #[error("ClickHouse unavailable: {reason}")]
    Unavailable { reason: String },
    /// Permanent: ClickHouse refused these rows (bad data, schema mismatch, missing
    /// table, permissions). Retrying the same rows cannot succeed (HTTP 500).
    #[error("ClickHouse rejected the rows: {reason}")]
    Rejected { reason: String },
    /// The batcher is shutting down and no longer takes or finishes work (HTTP 503).
    #[error("the ClickHouse sink is shutting down")]
    Closed,
}

/// The database side of the batcher: one attempt per call, no retries inside.
///
/// Implemented by [`ClickHouseSink`]; tests use fakes. The futures must be `Send`
/// because inserts run on their own tasks.
pub trait Sink: Send + Sync + 'static {
    /// Writes all rows of `batches` in one INSERT, or none of them. `token` names
    /// exactly these rows (see [`dedup`]); a sink whose server deduplicates by token
    /// sends it, so that a repeated INSERT with the same token is dropped by the server.
    fn insert(
        &self,
        batches: &[crate::codec::EncodedBatch],
        token: Option<&str>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Cheap reachability check used while the sink is marked down.
    fn ping(&self) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// After a failed attempt: whether the sink still takes INSERTs through another
    /// route (a set of [`endpoints`] with one down), so that the failure is no outage
    /// of the whole sink. A single server has no other route.
    fn serves_elsewhere(&self) -> bool {
        false
    }
}

/// A snapshot of the sink's health, for `/health`, the watchdog and admission.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SinkHealth {
    /// `None` while healthy; set when an insert failed transiently, cleared when a
    /// background ping or an insert succeeds again.
    pub down: Option<SinkDown>,
    /// Monotonic time of the last successful INSERT (`None`: none yet).
    pub last_flush: Option<Instant>,
    /// Wall-clock time of the last successful INSERT, Unix milliseconds.
    pub last_flush_unix_ms: Option<u64>,
}

impl SinkHealth {
    pub fn is_healthy(&self) -> bool {
        self.down.is_none()
    }
}

/// Why and since when the sink is considered down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkDown {
    pub reason: String,
    pub since: Instant,
    pub since_unix_ms: u64,
}
