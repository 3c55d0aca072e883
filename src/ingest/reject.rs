//! Every way a request can be refused, mapped once to both wires.
//!
//! HTTP and gRPC share one port and one pipeline, so a [`Rejection`] carries
//! the HTTP status, the gRPC code, the `Retry-After` hint and per-record
//! details, and each protocol renders it from here.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::admission::Refusal;
use crate::sink::{SinkError, SubmitError};
use crate::spool::SpoolError;
use crate::validate::{DecodeError, RecordError};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// Bad records or a malformed body: do not retry (400 / INVALID_ARGUMENT).
    Invalid,
    /// Body over the size limit, also after decompression (413 / RESOURCE_EXHAUSTED).
    TooLarge,
    /// Content type or encoding not understood (415 / INVALID_ARGUMENT).
    UnsupportedMedia,
    /// The worker is full; retry after the hint (429 / RESOURCE_EXHAUSTED).
    Busy,
    /// ClickHouse is unreachable or the worker is stopping (503 / UNAVAILABLE).
    Unavailable,
    /// ClickHouse refused the rows permanently (500 / INTERNAL); logged and counted.
    Failed,
    /// The body did not arrive in time (408 / DEADLINE_EXCEEDED; see
    /// `body::BODY_READ_TIMEOUT`).
    TimedOut,
    /// No valid API key (401 / UNAUTHENTICATED; see `crate::auth`).
    Unauthenticated,
    /// Records of a service the API key may not write (403 / PERMISSION_DENIED).
    Forbidden,
}

/// A refused request: what to tell the client.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub kind: RejectKind,
    pub message: String,
    pub details: Vec<RecordError>,
    pub retry_after: Option<Duration>,
}

/// JSON body of every HTTP error.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    details: &'a [RecordError],
}

impl Rejection {
    pub fn new(kind: RejectKind, message: impl Into<String>) -> Rejection {
        let retry_after = match kind {
            RejectKind::Busy => Some(Duration::from_secs(1)),
            RejectKind::Unavailable => Some(Duration::from_secs(5)),
            _ => None,
        };
        Rejection {
            kind,
            message: message.into(),
            details: Vec::new(),
            retry_after,
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self.kind {
            RejectKind::Invalid => StatusCode::BAD_REQUEST,
            RejectKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectKind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RejectKind::Busy => StatusCode::TOO_MANY_REQUESTS,
            RejectKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RejectKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            RejectKind::TimedOut => StatusCode::REQUEST_TIMEOUT,
            RejectKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            RejectKind::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self.kind {
            RejectKind::Invalid | RejectKind::UnsupportedMedia => tonic::Code::InvalidArgument,
            RejectKind::TooLarge | RejectKind::Busy => tonic::Code::ResourceExhausted,
            RejectKind::Unavailable => tonic::Code::Unavailable,
            RejectKind::Failed => tonic::Code::Internal,
            RejectKind::TimedOut => tonic::Code::DeadlineExceeded,
            RejectKind::Unauthenticated => tonic::Code::Unauthenticated,
            RejectKind::Forbidden => tonic::Code::PermissionDenied,
        }
    }

    /// Adds `Retry-After` (whole seconds, at least 1) to an HTTP answer when the refusal
    /// is worth retrying.
    pub fn add_retry_after(&self, response: &mut Response) {
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
    }

    /// Whether the records were rejected for their content (counted as rejected records).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self.kind,
            RejectKind::Invalid
                | RejectKind::TooLarge
                | RejectKind::UnsupportedMedia
                | RejectKind::Forbidden
        )
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: &self.message,
            details: &self.details,
        })
        .unwrap_or_default();
        let mut response = (
            self.http_status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        self.add_retry_after(&mut response);
        response
    }
}

impl From<DecodeError> for Rejection {
    fn from(err: DecodeError) -> Rejection {
        let mut rejection = Rejection::new(RejectKind::Invalid, err.to_string());
        match err {
            DecodeError::Malformed {
                index: Some(index),
                reason,
            } => {
                rejection.details = vec![RecordError {
                    index,
                    field: String::new(),
                    reason,
                }];
            }
            DecodeError::TooManyRecords { .. } => rejection.kind = RejectKind::TooLarge,
            DecodeError::Invalid(errors) => {
                rejection.message = format!(
                    "{} invalid record(s); the batch was rejected whole, nothing of it was written",
                    errors.len()
                );
                rejection.details = errors;
            }
            _ => {}
        }
        rejection
    }
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Rejection {
        match refusal {
            Refusal::InflightBytes { .. } => Rejection::new(RejectKind::Busy, refusal.to_string()),
            Refusal::Spool(err) => err.into(),
            Refusal::Queue(err) => err.into(),
        }
    }
}

impl From<SubmitError> for Rejection {
    fn from(err: SubmitError) -> Rejection {
        match err {
            SubmitError::Full { queued_rows } => Rejection::new(
                RejectKind::Busy,
                format!("worker is full ({queued_rows} rows waiting for ClickHouse); retry later"),
            ),
            SubmitError::Unavailable { reason } => Rejection::new(
                RejectKind::Unavailable,
                format!("ClickHouse is unavailable ({reason}); retry later"),
            ),
            SubmitError::Closed => shutting_down(),
        }
    }
}

impl From<SinkError> for Rejection {
    fn from(err: SinkError) -> Rejection {
        match err {
            SinkError::Unavailable { reason } => Rejection::new(
                RejectKind::Unavailable,
                format!("ClickHouse is unavailable ({reason}); nothing of this batch was written, retry later"),
            ),
            SinkError::Rejected { reason } => Rejection::new(
                RejectKind::Failed,
                format!("ClickHouse refused the rows: {reason}"),
            ),
            SinkError::Closed => shutting_down(),
        }
    }
}

impl From<SpoolError> for Rejection {
    fn from(err: SpoolError) -> Rejection {
        match err {
            SpoolError::Full { .. } | SpoolError::NoSpace { .. } => Rejection::new(
                RejectKind::Busy,
                format!("{err}; nothing of this batch was kept, retry later"),
            ),
            SpoolError::TooLarge { .. } => Rejection::new(RejectKind::TooLarge, err.to_string()),
            SpoolError::Closed => shutting_down(),
            // Locked/Corrupt cannot come from an append; Io is a disk failure.
            SpoolError::Io { .. } | SpoolError::Locked { .. } | SpoolError::Corrupt { .. } => {
                Rejection::new(
                    RejectKind::Unavailable,
                    format!(
                        "cannot write the spool ({err}); nothing of this batch was kept, retry"
                    ),
                )
            }
        }
    }
}

pub fn shutting_down() -> Rejection {
    Rejection::new(
        RejectKind::Unavailable,
        "worker is shutting down; retry (another instance will answer)",
    )
}
