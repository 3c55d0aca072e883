//! OTLP logs over both wires: OTLP/HTTP `POST /v1/logs` (protobuf or OTLP/JSON,
//! optionally gzip/zstd) and OTLP/gRPC `opentelemetry.proto.collector.logs.v1.
//! LogsService/Export`, on the same listeners as the native API.
//!
//! Both go through [`Ingest::accept_with`] and [`otlp_encoded`]: records that fail
//! validation are refused one by one and reported in `partial_success`, the rest is
//! acknowledged at the usual point (durable in the spool). Refusals follow the OTLP
//! specification's retry rules: over HTTP 429 and 503 (with `Retry-After`) are the
//! retryable ones and every other status is final; the body is a `google.rpc.Status`
//! in the request's encoding. Over gRPC a full or stopping worker answers
//! `UNAVAILABLE` with a `RetryInfo` detail, which the SDKs retry (they drop a
//! `RESOURCE_EXHAUSTED` that carries no `RetryInfo`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;
use tonic_types::{ErrorDetails, StatusExt};

use super::reject::{RejectKind, Rejection};
use super::{body, now_ns, Ingest, Work};
use crate::auth::{services, Caller};
use crate::codec::EncodedBatch;
use crate::config::RecordLimits;
use crate::stats::Stats;
use crate::validate::otlp::{otlp_encoded, with_protobuf, LogsView, OtlpOptions, Rejected};

pub const OTLP_LOGS_PATH: &str = "/v1/logs";

/// How an OTLP/HTTP body (and its answer) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Protobuf,
    Json,
}

impl Wire {
    fn of(headers: &HeaderMap) -> Result<Wire, Rejection> {
        let text = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = text.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/x-protobuf")
            || mime.eq_ignore_ascii_case("application/protobuf")
        {
            Ok(Wire::Protobuf)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Ok(Wire::Json)
        } else {
            Err(Rejection::new(
                RejectKind::UnsupportedMedia,
                format!(
                    "OTLP/HTTP takes Content-Type application/x-protobuf or application/json, \
                     got {text:?}"
                ),
            ))
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Wire::Protobuf => "application/x-protobuf",
            Wire::Json => "application/json",
        })
    }

    /// Decodes `body` and hands the request to `map`: protobuf read in place, its text
    /// borrowed from the body ([`with_protobuf`]); OTLP/JSON through serde.
    fn decode_map<T>(
        self,
        body: &[u8],
        map: impl FnOnce(LogsView<'_>) -> T,
    ) -> Result<T, Rejection> {
        let malformed = |what: &str, err: &dyn std::fmt::Display| {
            Rejection::new(
                RejectKind::Invalid,
                format!("malformed {what} ExportLogsServiceRequest: {err}"),
            )
        };
        match self {
            Wire::Protobuf => with_protobuf(body, map).map_err(|e| malformed("protobuf", &e)),
            Wire::Json => {
                let request: ExportLogsServiceRequest =
                    serde_json::from_slice(body).map_err(|e| malformed("OTLP/JSON", &e))?;
                Ok(map(LogsView::from_request(&request)))
            }
        }
    }
}

pub fn http_routes(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route(OTLP_LOGS_PATH, post(post_logs))
        .with_state(ingest)
}

async fn post_logs(
    State(ingest): State<Arc<Ingest>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let caller = caller.map(|Extension(c)| c);
    let mut body_bytes = 0;
    let wire = Wire::of(&headers);
    let result = match wire {
        Ok(wire) => {
            handle(
                &ingest,
                caller.as_ref(),
                &headers,
                wire,
                body,
                &mut body_bytes,
            )
            .await
        }
        Err(ref rejection) => Err(rejection.clone()),
    };
    count(&ingest, caller.as_ref(), &result, body_bytes, started);
    let wire = wire.unwrap_or(Wire::Json);
    match result {
        Ok((_, rejected)) => {
            let answer = response(&rejected);
            let bytes = match wire {
                Wire::Protobuf => answer.encode_to_vec(),
                // Unset is absent in the proto3 JSON mapping: `{}`, not the
                // `{"partialSuccess":null}` the generated serde code writes.
                Wire::Json if answer.partial_success.is_none() => b"{}".to_vec(),
                Wire::Json => serde_json::to_vec(&answer).unwrap_or_default(),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, wire.content_type())],
                bytes,
            )
                .into_response()
        }
        Err(rejection) => error_response(wire, &rejection),
    }
}

async fn handle(
    ingest: &Ingest,
    caller: Option<&Caller>,
    headers: &HeaderMap,
    wire: Wire,
    body: Body,
    body_bytes: &mut usize,
) -> Result<(usize, Rejected), Rejection> {
    let encoding = body::encoding(headers)?;
    let max = ingest.max_body_bytes;
    let (admitted, raw) = ingest.receive(headers, body, encoding).await?;
    *body_bytes = raw.len();
    let work = Work::of(raw.len(), encoding != body::Encoding::Identity);
    let options = ingest.otlp.clone();
    let key = caller.cloned();
    ingest
        .accept_admitted(admitted, caller, work, move |limits| {
            let plain = body::decompress(raw, encoding, max)?;
            wire.decode_map(&plain, |request| {
                map(request, limits, &options, key.as_ref())
            })?
        })
        .await
}

/// Refuses a request over `MAX_BATCH_RECORDS` whole (like the native API), else maps
/// it; the records of services `key` may not write are refused one by one.
fn map(
    mut request: LogsView<'_>,
    limits: &RecordLimits,
    options: &OtlpOptions,
    key: Option<&Caller>,
) -> Result<(EncodedBatch, Rejected), Rejection> {
    let records = request.record_count();
    if records > limits.max_records {
        return Err(Rejection::new(
            RejectKind::TooLarge,
            format!(
                "request of {records} log records exceeds the limit of {} (MAX_BATCH_RECORDS); \
                 export smaller batches (the SDKs' OTEL_BLRP_MAX_EXPORT_BATCH_SIZE)",
                limits.max_records
            ),
        ));
    }
    let forbidden = key.map(|key| services::restrict(key, &mut request, &options.default_service));
    let (batch, mut rejected) = otlp_encoded(&request, limits, options, now_ns());
    if let Some(forbidden) = forbidden {
        forbidden.merge_into(&mut rejected);
    }
    Ok((batch, rejected))
}

/// Counts the request; records refused one by one count as rejected records.
fn count(
    ingest: &Ingest,
    caller: Option<&Caller>,
    result: &Result<(usize, Rejected), Rejection>,
    body_bytes: usize,
    started: Instant,
) {
    let outcome = result.as_ref().map(|(rows, _)| *rows).map_err(Clone::clone);
    ingest.record_outcome(&outcome, body_bytes, started);
    match (caller, result) {
        (Some(c), Ok((rows, rejected))) => c.finish(*rows, rejected.count, 0, body_bytes),
        (Some(c), Err(_)) => c.finish_batch(&outcome, body_bytes),
        (None, _) => {}
    }
    Stats::add(&ingest.stats.otlp_requests, 1);
    if let Ok((_, rejected)) = result {
        Stats::add(&ingest.stats.records_rejected, rejected.count as u64);
    }
}

fn response(rejected: &Rejected) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: (rejected.count > 0).then(|| ExportLogsPartialSuccess {
            rejected_log_records: rejected.count as i64,
            error_message: rejected.message(),
        }),
    }
}

/// The refusal as OTLP/HTTP wants it: the status, `Retry-After` when retryable, and
/// a `google.rpc.Status` body in the request's encoding.
fn error_response(wire: Wire, rejection: &Rejection) -> Response {
    let code = rejection.grpc_code() as i32;
    let bytes = match wire {
        Wire::Protobuf => tonic_types::Status {
            code,
            message: rejection.message.clone(),
            details: Vec::new(),
        }
        .encode_to_vec(),
        Wire::Json => serde_json::to_vec(&serde_json::json!({
            "code": code,
            "message": rejection.message,
            "details": [],
        }))
        .unwrap_or_default(),
    };
    let mut response = (
        rejection.http_status(),
        [(header::CONTENT_TYPE, wire.content_type())],
        bytes,
    )
        .into_response();
    rejection.add_retry_after(&mut response);
    response
}

/// [`error_response`] for a request refused before its handler (`crate::auth`).
pub fn http_refusal(headers: &HeaderMap, rejection: &Rejection) -> Response {
    error_response(Wire::of(headers).unwrap_or(Wire::Json), rejection)
}

/// OTLP/gRPC `LogsService`.
pub struct OtlpLogs {
    ingest: Arc<Ingest>,
}

pub fn grpc_service(ingest: Arc<Ingest>) -> LogsServiceServer<OtlpLogs> {
    let max = ingest.max_body_bytes;
    LogsServiceServer::new(OtlpLogs { ingest })
        .max_decoding_message_size(max)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
}

#[tonic::async_trait]
impl LogsService for OtlpLogs {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        // tonic has read and decoded the message by now: the clock starts here.
        let started = Instant::now();
        let caller = request.extensions().get::<Caller>().cloned();
        let request = request.into_inner();
        let cost = request.encoded_len();
        let options = self.ingest.otlp.clone();
        let key = caller.clone();
        let result = self
            .ingest
            .accept_with(
                caller.as_ref(),
                cost,
                Work::of(cost, false),
                move |limits| {
                    let view = LogsView::from_request(&request);
                    map(view, limits, &options, key.as_ref())
                },
            )
            .await;
        count(&self.ingest, caller.as_ref(), &result, cost, started);
        match result {
            Ok((_, rejected)) => Ok(tonic::Response::new(response(&rejected))),
            Err(rejection) => Err(grpc_status(&rejection)),
        }
    }
}

/// A retryable refusal is `UNAVAILABLE` with `RetryInfo`; the rest as the native API.
pub fn grpc_status(rejection: &Rejection) -> tonic::Status {
    match rejection.kind {
        RejectKind::Busy | RejectKind::Unavailable => tonic::Status::with_error_details(
            tonic::Code::Unavailable,
            rejection.message.clone(),
            ErrorDetails::with_retry_info(rejection.retry_after),
        ),
        _ => tonic::Status::new(rejection.grpc_code(), rejection.message.clone()),
    }
}
