//! The native gRPC API: `zerologs.v1.LogService/Ingest`.
//!
//! Same semantics as the HTTP API: the batch is validated whole; bad records
//! give `INVALID_ARGUMENT` with a serialised `zerologs.v1.RecordErrors` in the
//! status details; a full worker gives `RESOURCE_EXHAUSTED`, an unreachable
//! ClickHouse or a stopping worker `UNAVAILABLE`, each with a `retry-after`
//! metadata entry (seconds).
//!
//! Admission comes after tonic has read and decoded the message (here and for
//! OTLP/gRPC): unlike an HTTP body it is not admitted before it is read. What bounds
//! it meanwhile is tonic's `max_decoding_message_size` (`MAX_BODY_BYTES`, also after
//! decompression) per message, times the streams in progress; the look at the
//! backlog's room still comes before validation, so a full spool costs no validation.

use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tonic::{Request, Response, Status};

use super::reject::{RejectKind, Rejection};
use super::{now_ns, Ingest, Work};
use crate::auth::{services, Caller};
use crate::codec::EncodedBatch;
use crate::proto::log_service_server::{LogService, LogServiceServer};
use crate::proto::{IngestRequest, IngestResponse, LogRecord, RecordErrors};
use crate::record::Batch;
use crate::validate::{check_record, RawRecord, RecordError};

/// The tonic service over the shared ingest path.
pub struct LogServiceImpl {
    ingest: Arc<Ingest>,
}

pub fn service(ingest: Arc<Ingest>) -> LogServiceServer<LogServiceImpl> {
    let max = ingest.max_body_bytes;
    LogServiceServer::new(LogServiceImpl { ingest })
        .max_decoding_message_size(max)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
}

#[tonic::async_trait]
impl LogService for LogServiceImpl {
    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        // tonic has read and decoded the message by now: the clock starts here.
        let started = Instant::now();
        let caller = request.extensions().get::<Caller>().cloned();
        let logs = request.into_inner().logs;
        let cost = logs.iter().map(LogRecord::encoded_len).sum::<usize>();
        let key = caller.clone();
        let result = self
            .ingest
            .accept(caller.as_ref(), cost, Work::of(cost, false), move |limits| {
                if logs.is_empty() {
                    return Err(Rejection::new(
                        RejectKind::Invalid,
                        "empty batch: send at least one record",
                    ));
                }
                if logs.len() > limits.max_records {
                    return Err(Rejection::new(
                        RejectKind::TooLarge,
                        format!(
                            "batch of {} records exceeds the limit of {} (MAX_BATCH_RECORDS); split it",
                            logs.len(),
                            limits.max_records
                        ),
                    ));
                }
                let batch = validate_all(&logs, limits)?;
                if let Some(key) = &key {
                    services::check_batch(key, &batch)?;
                }
                Ok(EncodedBatch::encode(&batch))
            })
            .await;
        self.ingest.record_outcome(&result, cost, started);
        if let Some(caller) = &caller {
            caller.finish_batch(&result, cost);
        }
        match result {
            Ok(accepted) => Ok(Response::new(IngestResponse {
                accepted: accepted as u64,
            })),
            Err(rejection) => Err(to_status(&rejection)),
        }
    }
}

/// A native gRPC record as the validator reads it (fields borrowed).
pub fn raw_record(log: &LogRecord) -> RawRecord<'_> {
    RawRecord {
        time_unix_nano: log.time_unix_nano,
        timestamp: &log.timestamp,
        level: &log.level,
        service: &log.service,
        message: &log.message,
        trace_id: &log.trace_id,
        span_id: &log.span_id,
        attributes: log
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    }
}

fn validate_all(
    logs: &[LogRecord],
    limits: &crate::config::RecordLimits,
) -> Result<Batch, Rejection> {
    const MAX_ERRORS: usize = 100;
    let now = now_ns();
    let mut records = Vec::with_capacity(logs.len());
    let mut errors: Vec<RecordError> = Vec::new();
    for (index, log) in logs.iter().enumerate() {
        let raw = raw_record(log);
        match check_record(index, &raw, limits, now) {
            Ok(record) if errors.is_empty() => records.push(record),
            Ok(_) => {}
            Err(err) if errors.len() < MAX_ERRORS => errors.push(err),
            Err(_) => {}
        }
    }
    if errors.is_empty() {
        return Ok(Batch::new(records));
    }
    let mut rejection = Rejection::new(
        RejectKind::Invalid,
        format!(
            "{} invalid record(s); the batch was rejected whole, nothing of it was written",
            errors.len()
        ),
    );
    rejection.details = errors;
    Err(rejection)
}

/// Renders a rejection as a gRPC status with details and `retry-after`.
pub fn to_status(rejection: &Rejection) -> Status {
    let details = RecordErrors {
        errors: rejection
            .details
            .iter()
            .map(|e| crate::proto::RecordError {
                index: e.index as u64,
                field: e.field.clone(),
                reason: e.reason.clone(),
            })
            .collect(),
    };
    let mut status = Status::with_details(
        rejection.grpc_code(),
        rejection.message.clone(),
        details.encode_to_vec().into(),
    );
    if let Some(after) = rejection.retry_after {
        if let Ok(value) = after.as_secs().max(1).to_string().parse() {
            status.metadata_mut().insert("retry-after", value);
        }
    }
    status
}
