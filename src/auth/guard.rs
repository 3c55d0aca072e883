//! The middleware in front of every public route: finds the request's key, applies
//! its limits, and refuses in the form the request's dialect expects.
//!
//! HTTP and gRPC carry the token the same way (an HTTP/2 `authorization` header is
//! gRPC's `authorization` metadata), so one check serves the native HTTP API,
//! OTLP/HTTP, the native gRPC API, OTLP/gRPC and `/stats`/`/metrics`; only
//! `GET /health` stays open (load balancers probe it). It runs before the body is
//! read: an unauthenticated or over-limit sender costs no decompression, decoding or
//! spool.
//!
//! Refusals: a missing or unknown key is HTTP 401 with `WWW-Authenticate: Bearer`
//! (JSON `{"error"}`, or OTLP/HTTP's `google.rpc.Status`) or gRPC `UNAUTHENTICATED`
//! (trailers-only); a key over its rates or spool share is 429 with `Retry-After`,
//! native gRPC `RESOURCE_EXHAUSTED` with `retry-after`, OTLP/gRPC `UNAVAILABLE` with
//! `RetryInfo` (what the SDKs retry, as for a full worker).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Auth, Caller, Refused};
use crate::ingest::reject::{RejectKind, Rejection};
use crate::ingest::{grpc, otlp};

/// How a request wants to be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Http,
    OtlpHttp,
    NativeGrpc,
    OtlpGrpc,
}

/// Path prefix of OTLP/gRPC's logs service.
const OTLP_GRPC_PREFIX: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/";

impl Dialect {
    /// As the router tells them apart (gRPC: HTTP/2 with an `application/grpc*`
    /// content type).
    pub fn of(version: Version, path: &str, headers: &HeaderMap) -> Dialect {
        let grpc = version == Version::HTTP_2
            && headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/grpc"));
        match (grpc, path.starts_with(OTLP_GRPC_PREFIX)) {
            (true, true) => Dialect::OtlpGrpc,
            (true, false) => Dialect::NativeGrpc,
            _ if path == otlp::OTLP_LOGS_PATH => Dialect::OtlpHttp,
            _ => Dialect::Http,
        }
    }
}

/// Why no key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No `Authorization: Bearer …`.
    Missing,
    /// A token that is no key.
    Unknown,
}

/// The bearer token of `headers`, if any (scheme case-insensitive, RFC 6750).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The axum middleware (`from_fn_with_state`) over the whole public router.
pub async fn guard(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    if !auth.enabled() || request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let dialect = Dialect::of(request.version(), request.uri().path(), request.headers());
    let keys = auth.keys();
    let key = match bearer(request.headers()) {
        None => Err(Failure::Missing),
        Some(token) => keys.lookup(token).cloned().ok_or(Failure::Unknown),
    };
    let key = match key {
        Ok(key) => key,
        Err(failure) => {
            let counter = match failure {
                Failure::Missing => &auth.failures_missing,
                Failure::Unknown => &auth.failures_unknown,
            };
            let refused = counter.fetch_add(1, Relaxed) + 1;
            if let Some(unlogged) = auth.refusal_lines.take() {
                tracing::info!(
                    auth = ?failure,
                    path = request.uri().path(),
                    refused_so_far = refused,
                    not_logged = unlogged,
                    "request refused: no valid API key (at most one such line per second)"
                );
            }
            return unauthenticated(dialect, request.headers(), failure);
        }
    };
    // Reading /stats or /metrics is not ingesting: no limits.
    if request.method() != Method::GET {
        if let Err(refused) = auth.admit(&key) {
            key.state.counters.requests_limited.fetch_add(1, Relaxed);
            let rejection = limited(&key.def.name, &refused);
            if let Some(unlogged) = auth.limit_lines.take() {
                tracing::info!(
                    key = %key.def.name,
                    error = %rejection.message,
                    not_logged = unlogged,
                    "request refused: key over its limit (at most one such line per second)"
                );
            }
            return refuse(dialect, request.headers(), &rejection);
        }
    }
    request.extensions_mut().insert(Caller(key));
    next.run(request).await
}

/// At most one journal line per second for a kind of refusal.
#[derive(Debug, Default)]
pub struct LineBudget {
    /// The second (since the Unix epoch) of the last line written.
    last: AtomicU64,
    /// Refusals not logged since that line.
    skipped: AtomicU64,
}

impl LineBudget {
    /// `Some(refusals not logged since the last line)` when a line may be written now.
    pub fn take(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last.load(Relaxed);
        if last != now
            && self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.skipped.swap(0, Relaxed))
        } else {
            self.skipped.fetch_add(1, Relaxed);
            None
        }
    }
}

fn unauthenticated(dialect: Dialect, headers: &HeaderMap, failure: Failure) -> Response {
    let message = match failure {
        Failure::Missing => {
            "authentication required: send the API key as `Authorization: Bearer <key>` \
             (gRPC: `authorization` metadata; OpenTelemetry SDKs: \
             OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>)"
        }
        Failure::Unknown => "the bearer token is not a valid API key",
    };
    let mut response = refuse(
        dialect,
        headers,
        &Rejection::new(RejectKind::Unauthenticated, message),
    );
    if !matches!(dialect, Dialect::NativeGrpc | Dialect::OtlpGrpc) {
        let challenge = match failure {
            Failure::Missing => "Bearer realm=\"zero-logs\"",
            Failure::Unknown => "Bearer realm=\"zero-logs\", error=\"invalid_token\"",
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

/// The 429 of a key over its limit, with the wait until it is under again.
fn limited(name: &str, refused: &Refused) -> Rejection {
    let (message, wait) = match refused {
        Refused::Rate(limit) => {
            let (what, per_sec) = match limit {
                super::limits::Limited::Records { per_sec, .. } => ("records", per_sec),
                super::limits::Limited::Bytes { per_sec, .. } => ("bytes", per_sec),
            };
            (
                format!("API key {name:?} is over its limit of {per_sec} {what}/s; retry later"),
                limit.wait(),
            )
        }
        Refused::SpoolShare {
            unsent,
            allowed,
            percent,
        } => (
            format!(
                "API key {name:?} has {unsent} bytes waiting in the spool, its share is \
                 {percent}% of the cap ({allowed} bytes); retry once they reach ClickHouse"
            ),
            Duration::from_secs(5),
        ),
    };
    let mut rejection = Rejection::new(RejectKind::Busy, message);
    // Whole seconds, rounded up (Retry-After has no fractions).
    rejection.retry_after = Some(Duration::from_secs(
        wait.as_secs_f64().ceil().max(1.0) as u64
    ));
    rejection
}

/// `rejection` in the form of `dialect`.
pub fn refuse(dialect: Dialect, headers: &HeaderMap, rejection: &Rejection) -> Response {
    match dialect {
        Dialect::Http => rejection.clone().into_response(),
        Dialect::OtlpHttp => otlp::http_refusal(headers, rejection),
        Dialect::NativeGrpc => grpc_response(grpc::to_status(rejection)),
        Dialect::OtlpGrpc => grpc_response(otlp::grpc_status(rejection)),
    }
}

/// A trailers-only gRPC answer (HTTP 200, the status in the headers).
fn grpc_response(status: tonic::Status) -> Response {
    let mut response = status.into_http::<axum::body::Body>();
    *response.status_mut() = StatusCode::OK;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_tokens() {
        let h = headers(&[("authorization", "Bearer abc.def")]);
        assert_eq!(bearer(&h), Some(&b"abc.def"[..]));
        let h = headers(&[("authorization", "bearer   abc ")]);
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer")])), None);
        assert_eq!(bearer(&headers(&[])), None);
    }

    #[test]
    fn dialects() {
        let grpc = headers(&[("content-type", "application/grpc+proto")]);
        let json = headers(&[("content-type", "application/json")]);
        let v2 = Version::HTTP_2;
        assert_eq!(
            Dialect::of(
                v2,
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                &grpc
            ),
            Dialect::OtlpGrpc
        );
        assert_eq!(
            Dialect::of(v2, "/zerologs.v1.LogService/Ingest", &grpc),
            Dialect::NativeGrpc
        );
        assert_eq!(
            Dialect::of(Version::HTTP_11, "/v1/logs", &grpc),
            Dialect::OtlpHttp
        );
        assert_eq!(Dialect::of(v2, "/v1/logs", &json), Dialect::OtlpHttp);
        assert_eq!(Dialect::of(v2, "/api/v1/logs", &json), Dialect::Http);
    }

    #[test]
    fn refusals_in_each_dialect() {
        let h = HeaderMap::new();
        let r = unauthenticated(Dialect::Http, &h, Failure::Missing);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let r = unauthenticated(Dialect::OtlpGrpc, &h, Failure::Unknown);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "16");
        let limit = super::super::limits::Limited::Records {
            per_sec: 10,
            wait: Duration::from_millis(1200),
        };
        let rejection = limited("web", &Refused::Rate(limit));
        assert_eq!(rejection.retry_after, Some(Duration::from_secs(2)));
        assert!(
            rejection.message.contains("\"web\"") && rejection.message.contains("10 records/s")
        );
        let r = refuse(Dialect::Http, &h, &rejection);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = refuse(Dialect::NativeGrpc, &h, &rejection);
        assert_eq!(r.headers()["grpc-status"], "8", "RESOURCE_EXHAUSTED");
        assert_eq!(r.headers()["retry-after"], "2");
        let r = refuse(Dialect::OtlpGrpc, &h, &rejection);
        assert_eq!(
            r.headers()["grpc-status"],
            "14",
            "UNAVAILABLE with RetryInfo"
        );
        assert!(r.headers().contains_key("grpc-status-details-bin"));
    }
}
