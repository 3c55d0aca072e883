//! Admission: whether the worker takes one more request, answered in one place.
//!
//! The ingest asks before it reads a body and again once it is validated, and nothing
//! here ever waits:
//!
//! 1. On arrival, before the body is read (HTTP: from `Content-Length`; gRPC: tonic has
//!    read the message already):
//!    - [`Admission::check_room`]: is the backlog behind the acknowledgement point
//!      already too full for a batch of about this size? A cheap look, so that a full
//!      spool or queue refuses a request before its body costs a read and a validation.
//!    - [`Admission::admit`]: a share of the in-flight byte budget
//!      (`MAX_INFLIGHT_BYTES`), owned here as a semaphore. The [`AdmissionPermit`] holds
//!      that share for the request's life (reading the body, validation, hand-over, the
//!      wait for the acknowledgement). A body of unknown length (chunked) starts with a
//!      share of one byte and [grows](AdmissionPermit::grow_to) with what arrives.
//! 2. [`AdmissionPermit::admit_batch`] once the body is validated, with the encoded
//!    batch: room in the backlog, exactly — the spool's cap (`SPOOL_MAX_BYTES`) with
//!    `ACK_MODE=spool`, the batcher's queued rows (`BATCH_MAX_QUEUE_ROWS`) with
//!    `ACK_MODE=clickhouse`.
//!
//! The spool and the batcher own those two counts and keep their own reserving checks
//! in `Spool::append` and `BatcherHandle::try_submit` (two requests can pass here
//! together); a refusal reads the same from either place. A [`Refusal`] becomes a
//! 429 with `Retry-After` (or, for a closed or down stage, the 503 the stage would
//! have answered) in [`crate::ingest::reject`].

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::codec::EncodedBatch;
use crate::sink::{BatcherHandle, SubmitError};
use crate::spool::{Spool, SpoolError};

/// What is between an admitted request and its acknowledgement.
pub enum Backlog {
    /// `ACK_MODE=spool`: bytes on disk, capped by the spool.
    Spool(Spool),
    /// `ACK_MODE=clickhouse`: rows queued in the batcher.
    Queue(BatcherHandle),
}

/// The in-flight byte budget and the backlog it guards.
pub struct Admission {
    inflight: Semaphore,
    max_inflight_bytes: usize,
    backlog: Backlog,
}

/// A request's share of the in-flight byte budget, returned when dropped.
pub struct AdmissionPermit<'a> {
    admission: &'a Admission,
    bytes: SemaphorePermit<'a>,
}

/// Why a request is not taken now; every variant means "retry later".
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// `MAX_INFLIGHT_BYTES` of request bodies are being worked on.
    #[error("worker is busy ({max_inflight_bytes} bytes of requests in progress, MAX_INFLIGHT_BYTES); retry later")]
    InflightBytes { max_inflight_bytes: usize },
    /// The spool would not take the batch (`Full`, or closed).
    #[error(transparent)]
    Spool(SpoolError),
    /// The batcher would not take the batch (`Full`, or closed, or ClickHouse down).
    #[error(transparent)]
    Queue(SubmitError),
}

impl Admission {
    pub fn new(max_inflight_bytes: usize, backlog: Backlog) -> Admission {
        Admission {
            inflight: Semaphore::new(max_inflight_bytes),
            max_inflight_bytes,
            backlog,
        }
    }

    /// Takes `body_bytes` of the in-flight budget (at least 1, at most all of it, so
    /// that one large request can still run alone).
    pub fn admit(&self, body_bytes: usize) -> Result<AdmissionPermit<'_>, Refusal> {
        let bytes = self.take(self.share(body_bytes).max(1))?;
        Ok(AdmissionPermit {
            admission: self,
            bytes,
        })
    }

    /// Whether the backlog looks too full for a batch of about `batch_bytes` encoded
    /// bytes, answered as the exact check would (the same refusals, counted alike).
    /// Cheap (a few atomic loads, no batch needed): asked before a body is read, so
    /// that a full spool or queue does not pay for reading and validating requests it
    /// then refuses. With `ACK_MODE=clickhouse` the queue counts rows, unknown before
    /// validation: the look is whether it has room for one more row.
    pub fn check_room(&self, batch_bytes: usize) -> Result<(), Refusal> {
        match &self.backlog {
            Backlog::Spool(spool) => spool.check_room_for(batch_bytes).map_err(Refusal::Spool),
            Backlog::Queue(batcher) => batcher.check_room(1).map_err(Refusal::Queue),
        }
    }

    /// The permits a request of `bytes` holds: at most the whole budget.
    fn share(&self, bytes: usize) -> usize {
        bytes.min(self.max_inflight_bytes)
    }

    fn take(&self, permits: usize) -> Result<SemaphorePermit<'_>, Refusal> {
        let permits = u32::try_from(permits).unwrap_or(u32::MAX);
        self.inflight
            .try_acquire_many(permits)
            .map_err(|_| Refusal::InflightBytes {
                max_inflight_bytes: self.max_inflight_bytes,
            })
    }
}

impl AdmissionPermit<'_> {
    /// Holds a share for `body_bytes` (at most the whole budget), taking what is
    /// missing; for a body whose size is learnt as it arrives. Refused like
    /// [`Admission::admit`] when the budget has not that much left; the share held so
    /// far stays held until the permit is dropped.
    pub fn grow_to(&mut self, body_bytes: usize) -> Result<(), Refusal> {
        let held = self.bytes.num_permits();
        let wanted = self.admission.share(body_bytes);
        if wanted > held {
            let more = self.admission.take(wanted - held)?;
            self.bytes.merge(more);
        }
        Ok(())
    }

    /// Bytes of the in-flight budget this request holds.
    pub fn held(&self) -> usize {
        self.bytes.num_permits()
    }

    /// Whether the backlog has room for the validated `batch` now. Reserves nothing:
    /// the spool or batcher checks again when the batch is handed over.
    pub fn admit_batch(&self, batch: &EncodedBatch) -> Result<(), Refusal> {
        match &self.admission.backlog {
            Backlog::Spool(spool) => spool.check_room(batch).map_err(Refusal::Spool),
            Backlog::Queue(batcher) => batcher.check_room(batch.len()).map_err(Refusal::Queue),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::RecordLimits;
    use crate::ingest::now_ns;
    use crate::ingest::reject::{RejectKind, Rejection};
    use crate::spool::SpoolConfig;
    use crate::validate::{self, Format};

    fn batch(rows: usize) -> EncodedBatch {
        let body = format!(
            "[{}]",
            [r#"{"service":"svc","message":"m"}"#]
                .repeat(rows)
                .join(",")
        );
        let limits = RecordLimits::default();
        let batch = validate::decode(body.as_bytes(), Format::Json, &limits, now_ns()).unwrap();
        EncodedBatch::encode(&batch)
    }

    async fn spool(root: &std::path::Path, max_bytes: u64) -> Spool {
        let cfg = SpoolConfig {
            max_bytes,
            segment_bytes: max_bytes / 4,
            ..SpoolConfig::new(root, "1")
        };
        Spool::open(cfg).await.unwrap().0
    }

    #[tokio::test]
    async fn inflight_bytes_are_held_while_the_permit_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = spool(tmp.path(), 1 << 20).await;
        let admission = Admission::new(100, Backlog::Spool(spool.clone()));
        let first = admission.admit(60).unwrap();
        let refused = Rejection::from(admission.admit(60).err().unwrap());
        assert_eq!(refused.kind, RejectKind::Busy);
        assert_eq!(
            refused.message,
            "worker is busy (100 bytes of requests in progress, MAX_INFLIGHT_BYTES); retry later"
        );
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        drop(first);
        // A body over the whole budget still runs, alone.
        let alone = admission.admit(1_000).unwrap();
        assert!(admission.admit(1).is_err());
        drop(alone);
        assert!(admission.admit(100).is_ok());
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn a_growing_share_takes_what_arrives_until_the_budget_is_spent() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = spool(tmp.path(), 1 << 20).await;
        let admission = Admission::new(100, Backlog::Spool(spool.clone()));
        let mut growing = admission.admit(0).unwrap();
        assert_eq!(growing.held(), 1);
        growing.grow_to(40).unwrap();
        assert_eq!(growing.held(), 40);
        growing.grow_to(30).unwrap();
        assert_eq!(growing.held(), 40, "a share never shrinks while held");
        let other = admission.admit(50).unwrap();
        let refused = Rejection::from(growing.grow_to(60).unwrap_err());
        assert_eq!(refused.kind, RejectKind::Busy);
        assert_eq!(growing.held(), 40, "a refused growth keeps what was held");
        drop(other);
        // Beyond the whole budget it holds all of it, like a large admit.
        growing.grow_to(1_000).unwrap();
        assert_eq!(growing.held(), 100);
        assert!(admission.admit(1).is_err());
        drop(growing);
        assert!(admission.admit(100).is_ok());
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn the_look_before_reading_refuses_as_the_exact_check_does() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = spool(tmp.path(), 8192).await;
        let admission = Admission::new(1 << 20, Backlog::Spool(spool.clone()));
        let estimate = batch(2).byte_len();
        let mut appended = 0;
        let refusal = loop {
            match admission.check_room(estimate) {
                Ok(()) => {
                    drop(spool.append(batch(2)));
                    appended += 1;
                }
                Err(refusal) => break refusal,
            }
        };
        assert!(appended > 0, "an empty spool has room");
        let permit = admission.admit(100).unwrap();
        let exact = Rejection::from(permit.admit_batch(&batch(2)).unwrap_err());
        let early = Rejection::from(refusal);
        assert_eq!(early.kind, RejectKind::Busy);
        assert_eq!(early.message, exact.message);
        assert_eq!(early.retry_after, exact.retry_after);

        spool.close_appends();
        let closed = Rejection::from(admission.check_room(estimate).unwrap_err());
        assert_eq!(closed.kind, RejectKind::Unavailable);
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_spool_is_refused_as_its_append_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = spool(tmp.path(), 8192).await;
        let admission = Admission::new(1 << 20, Backlog::Spool(spool.clone()));
        let permit = admission.admit(100).unwrap();
        let refusal = loop {
            match permit.admit_batch(&batch(2)) {
                // The append completes even though its Ack is dropped.
                Ok(()) => drop(spool.append(batch(2))),
                Err(refusal) => break refusal,
            }
        };
        let ours = Rejection::from(refusal);
        let theirs = Rejection::from(spool.append(batch(2)).await.unwrap_err());
        assert_eq!(ours.kind, RejectKind::Busy);
        assert_eq!(ours.message, theirs.message);
        assert!(
            ours.message.starts_with("the spool is full"),
            "{}",
            ours.message
        );
        assert_eq!(spool.stats().full_refusals, 2, "each refusal counted once");

        spool.close_appends();
        let closed = Rejection::from(permit.admit_batch(&batch(2)).unwrap_err());
        assert_eq!(closed.kind, RejectKind::Unavailable);
        spool.shutdown().await;
    }
}
