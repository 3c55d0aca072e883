//! The request side of a worker: one router for every listener.
//!
//! HTTP/1.1, h2c and gRPC arrive on the same sockets; [`router`] sends gRPC
//! (by path and content type, via tonic's routes) to [`grpc`] and everything
//! else to [`http`]. Both end in [`Ingest::accept`]: admission of the body's
//! bytes (for HTTP before the body is read, [`Ingest::receive`]), validation on the
//! CPU pool (or inline), admission of the batch (both answered by
//! [`crate::admission`]), then the acknowledgement point of
//! [`AckPoint`]: an append to the durable spool (`ACK_MODE=spool`) or a
//! submission to the batcher and the wait for its INSERT (`ACK_MODE=clickhouse`).
//! This module never writes to disk or ClickHouse itself.

pub mod body;
mod dialects;
pub mod grpc;
pub mod http;
pub mod otlp;
mod pool;
pub mod reject;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::admission::{Admission, AdmissionPermit, Backlog};
use crate::auth::{Auth, Caller};
use crate::codec::EncodedBatch;
use crate::config::{IngestConfig, RecordLimits};
use crate::sink::BatcherHandle;
use crate::spool::Spool;
use crate::stats::Stats;
use crate::validate::otlp::OtlpOptions;
use reject::{RejectKind, Rejection};

/// Where validation runs.
enum Validator {
    Inline,
    Pool(pool::Pool),
}

/// Bodies up to this size (uncompressed) are validated on the runtime thread even
/// with the pool on: ~100 µs of work, under the time a task should run between
/// awaits, and it saves two thread hand-offs per request (measured: worker CPU at
/// 5 490 req/s of 21.8 KiB bodies 1.37 → 1.21 µs/record).
pub const INLINE_MAX_BYTES: usize = 32 << 10;

/// How much CPU a request's decoding may take, which decides where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A plain body of at most [`INLINE_MAX_BYTES`]: decoded where it was received.
    Light,
    /// Larger, or compressed (decompression can reach `MAX_BODY_BYTES`): on the
    /// validation pool, so a runtime thread never stalls on it.
    Heavy,
}

impl Work {
    pub fn of(bytes: usize, compressed: bool) -> Work {
        if compressed || bytes > INLINE_MAX_BYTES {
            Work::Heavy
        } else {
            Work::Light
        }
    }
}

/// Where a request's rows are handed over; a `202` means this step succeeded.
pub enum AckPoint {
    /// Appended and `fdatasync`ed in the spool (the feeder delivers it later).
    Spool(Spool),
    /// Committed by ClickHouse.
    ClickHouse(BatcherHandle),
}

/// Shared state of the ingest path.
pub struct Ingest {
    pub limits: RecordLimits,
    /// How OTLP records map to rows (`OTLP_DEFAULT_SERVICE`).
    pub otlp: Arc<OtlpOptions>,
    pub max_body_bytes: usize,
    validator: Validator,
    admission: Admission,
    ack: AckPoint,
    pub stats: Arc<Stats>,
}

/// The validation pool could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the validation pool of {threads} threads: {source}")]
pub struct PoolError {
    threads: usize,
    #[source]
    source: std::io::Error,
}

impl Ingest {
    pub fn new(cfg: &IngestConfig, ack: AckPoint, stats: Arc<Stats>) -> Result<Ingest, PoolError> {
        let validator = if cfg.pool_validation {
            // The threads live as long as the worker; idle ones sleep in the kernel,
            // so the "min" threads cost nothing at rest.
            let pool =
                pool::Pool::new(cfg.pool_max_threads, "validate").map_err(|source| PoolError {
                    threads: cfg.pool_max_threads,
                    source,
                })?;
            Validator::Pool(pool)
        } else {
            Validator::Inline
        };
        let backlog = match &ack {
            AckPoint::Spool(spool) => Backlog::Spool(spool.clone()),
            AckPoint::ClickHouse(batcher) => Backlog::Queue(batcher.clone()),
        };
        Ok(Ingest {
            limits: cfg.limits.clone(),
            otlp: Arc::new(cfg.otlp.clone()),
            max_body_bytes: cfg.max_body_bytes,
            validator,
            admission: Admission::new(cfg.max_inflight_bytes, backlog),
            ack,
            stats,
        })
    }

    /// Admits `cost` bytes (after a look at the backlog's room, [`Ingest::admit`]),
    /// validates with `decode` (where `work` says), admits the batch, submits it and
    /// waits for the acknowledgement. Returns the number of records accepted.
    /// `caller` (the request's API key) learns what it spooled.
    pub async fn accept<F>(
        &self,
        caller: Option<&Caller>,
        cost: usize,
        work: Work,
        decode: F,
    ) -> Result<usize, Rejection>
    where
        F: FnOnce(&RecordLimits) -> Result<EncodedBatch, Rejection> + Send + 'static,
    {
        let decode = move |limits: &RecordLimits| decode(limits).map(|batch| (batch, ()));
        self.accept_with(caller, cost, work, decode)
            .await
            .map(|(rows, ())| rows)
    }

    /// [`Ingest::accept`] for a decoder that also reports something of its own (OTLP's
    /// records refused one by one), returned beside the number of records accepted.
    pub async fn accept_with<F, T>(
        &self,
        caller: Option<&Caller>,
        cost: usize,
        work: Work,
        decode: F,
    ) -> Result<(usize, T), Rejection>
    where
        F: FnOnce(&RecordLimits) -> Result<(EncodedBatch, T), Rejection> + Send + 'static,
        T: Send + 'static,
    {
        let admitted = self.admit(cost, body::batch_estimate(cost, body::Encoding::Identity))?;
        self.accept_admitted(admitted, caller, work, decode).await
    }

    /// The checks before a body is read ([`crate::admission`]): does the backlog look
    /// too full for a batch of about `batch_estimate` bytes; then `cost` bytes of the
    /// in-flight budget, held by the returned permit.
    pub fn admit(
        &self,
        cost: usize,
        batch_estimate: usize,
    ) -> Result<AdmissionPermit<'_>, Rejection> {
        // Room first: when both are short, "the spool is full" says more than "busy".
        self.admission.check_room(batch_estimate)?;
        Ok(self.admission.admit(cost)?)
    }

    /// Reads an HTTP request's body once it is admitted, and returns it with its share
    /// of the in-flight budget. With `Content-Length` the body is admitted at that
    /// length (compressed: [`body::admission_cost`]) before a byte of it is read; a
    /// refusal (429, 503) goes out at once and the body is [discarded](body::discard),
    /// never kept. Without (chunked), the backlog is looked at as for an empty body,
    /// and the share grows with the bytes as they arrive: the request is refused as
    /// soon as the budget cannot cover what it has sent, holding at most that.
    pub async fn receive(
        &self,
        headers: &HeaderMap,
        body: Body,
        encoding: body::Encoding,
    ) -> Result<(AdmissionPermit<'_>, Bytes), Rejection> {
        let max = self.max_body_bytes;
        let Some(declared) = body::declared_length(headers) else {
            let mut admitted = match self.admit(0, 0) {
                Ok(admitted) => admitted,
                Err(refused) => {
                    body::discard(headers, body);
                    return Err(refused);
                }
            };
            let grow = |received| {
                admitted
                    .grow_to(body::admission_cost(received, encoding, max))
                    .map_err(Rejection::from)
            };
            let raw = body::collect(headers, body, max, 0, grow).await?;
            return Ok((admitted, raw));
        };
        if declared > max as u64 {
            return Err(body::refuse_declared(body, declared, max).await);
        }
        let declared = declared as usize;
        let cost = body::admission_cost(declared, encoding, max);
        let admitted = match self.admit(cost, body::batch_estimate(declared, encoding)) {
            Ok(admitted) => admitted,
            Err(refused) => {
                body::discard(headers, body);
                return Err(refused);
            }
        };
        let raw = body::collect(headers, body, max, declared, |_| Ok(())).await?;
        Ok((admitted, raw))
    }

    /// [`Ingest::accept_with`] for a request admitted already ([`Ingest::admit`],
    /// [`Ingest::receive`]).
    pub async fn accept_admitted<F, T>(
        &self,
        admitted: AdmissionPermit<'_>,
        caller: Option<&Caller>,
        work: Work,
        decode: F,
    ) -> Result<(usize, T), Rejection>
    where
        F: FnOnce(&RecordLimits) -> Result<(EncodedBatch, T), Rejection> + Send + 'static,
        T: Send + 'static,
    {
        let (batch, extra) = self.validate(work, decode).await?;
        let rows = batch.len();
        if rows == 0 {
            return Ok((0, extra));
        }
        admitted.admit_batch(&batch)?;
        match &self.ack {
            AckPoint::Spool(spool) => {
                let bytes = batch.byte_len() as u64;
                let seq = spool.append(batch).await?;
                if let Some(caller) = caller {
                    caller.spooled(seq.0, bytes);
                }
            }
            AckPoint::ClickHouse(batcher) => batcher.try_submit(batch)?.await?,
        }
        Ok((rows, extra))
    }

    /// Runs `decode`, which validates a body into the compact encoding (see
    /// [`codec`](crate::codec)), inline or on the pool; decoders that build owned
    /// records drop them there, where they were made.
    async fn validate<F, T>(&self, work: Work, decode: F) -> Result<(EncodedBatch, T), Rejection>
    where
        F: FnOnce(&RecordLimits) -> Result<(EncodedBatch, T), Rejection> + Send + 'static,
        T: Send + 'static,
    {
        match (&self.validator, work) {
            (Validator::Inline, _) | (Validator::Pool(_), Work::Light) => decode(&self.limits),
            (Validator::Pool(pool), Work::Heavy) => {
                let (tx, rx) = oneshot::channel();
                let limits = self.limits.clone();
                pool.spawn(move || {
                    let _ = tx.send(decode(&limits));
                });
                rx.await.map_err(|_| {
                    Rejection::new(RejectKind::Failed, "validation task was lost; retry")
                })?
            }
        }
    }

    /// Counts the outcome of one request that began at `started`.
    pub fn record_outcome(
        &self,
        result: &Result<usize, Rejection>,
        body_bytes: usize,
        started: Instant,
    ) {
        Stats::add(&self.stats.requests, 1);
        Stats::add(&self.stats.bytes_received, body_bytes as u64);
        match result {
            Ok(n) => {
                Stats::add(&self.stats.records_accepted, *n as u64);
                self.stats.request_latency.record(started.elapsed());
            }
            Err(rejection) => {
                Stats::add(&self.stats.requests_failed, 1);
                // Records that failed validation; a body that never parsed counts as one.
                if rejection.is_client_error() {
                    let n = rejection.details.len().max(1);
                    Stats::add(&self.stats.records_rejected, n as u64);
                }
            }
        }
    }
}

/// Wall-clock now in epoch nanoseconds: the timestamp of records that carry none.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The one router every listener serves: the native HTTP and gRPC APIs, OTLP over
/// both, and the admin endpoints; gRPC is told apart by content type ([`dialects`]).
/// `auth`'s guard is in front of all of it ([`crate::auth::guard`]).
pub fn router(ingest: Arc<Ingest>, admin: axum::Router, auth: Arc<Auth>) -> axum::Router {
    let grpc = tonic::service::Routes::new(grpc::service(ingest.clone()))
        .add_service(otlp::grpc_service(ingest.clone()))
        .prepare()
        .into_axum_router();
    let http = http::routes(ingest.clone())
        .merge(otlp::http_routes(ingest))
        .merge(admin);
    let router = dialects::Dialects::new(grpc, http).into_router();
    if !auth.enabled() {
        // Decided at start for the worker's life: no layer, no cost per request.
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(
        auth,
        crate::auth::guard::guard,
    ))
}

#[cfg(test)]
mod tests {
    use super::{Work, INLINE_MAX_BYTES};

    #[test]
    fn only_small_plain_bodies_are_light_work() {
        assert_eq!(Work::of(0, false), Work::Light);
        assert_eq!(Work::of(INLINE_MAX_BYTES, false), Work::Light);
        assert_eq!(Work::of(INLINE_MAX_BYTES + 1, false), Work::Heavy);
        // A small gzip body may inflate to MAX_BODY_BYTES: never on the runtime.
        assert_eq!(Work::of(100, true), Work::Heavy);
    }
}
