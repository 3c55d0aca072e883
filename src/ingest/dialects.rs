//! One listener, three dialects: an HTTP/2 request whose content type is
//! `application/grpc*` goes to the gRPC services (native API and OTLP/gRPC, by
//! path); everything else goes to the HTTP router, where an unknown path is a JSON
//! `404` and a known path with the wrong method a JSON `405`. Never a `200` for a
//! request that stored nothing: an OTLP/HTTP exporter pointed at a wrong path must
//! see its failure, which tonic's fallback (`200` with `grpc-status: 12`) hid. gRPC
//! runs over HTTP/2 only, so an HTTP/1.x request claiming `application/grpc` is no
//! gRPC client's: it gets the HTTP answers too (at `/v1/logs` a `415`), not the
//! `200` the gRPC router gives a path it does not know.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::Service;

/// Splits requests between the gRPC and the HTTP router by content type.
#[derive(Clone)]
pub struct Dialects {
    grpc: Router,
    http: Router,
}

impl Dialects {
    /// `http` gets the JSON `404`/`405` answers here.
    pub fn new(grpc: Router, http: Router) -> Dialects {
        let http = http.fallback(not_found);
        Dialects { grpc, http }
    }

    /// As the one router every listener serves.
    pub fn into_router(self) -> Router {
        Router::new().fallback_service(self)
    }
}

fn is_grpc(request: &Request) -> bool {
    request.version() == Version::HTTP_2
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"))
}

impl Service<Request> for Dialects {
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if is_grpc(&request) {
            return Box::pin(self.grpc.call(request));
        }
        // Outside the router: axum adds `Allow` to its 405 only on the way out.
        let answer = self.http.call(request);
        Box::pin(async move { Ok(method_not_allowed_as_json(answer.await?)) })
    }
}

fn json_error(status: StatusCode, message: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default(),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {} {}; logs go to POST /api/v1/logs (JSON/NDJSON), POST /v1/logs \
             (OTLP/HTTP) or gRPC (zerologs.v1.LogService, OTLP LogsService); also GET \
             /health, /stats, /metrics",
            request.method(),
            request.uri().path()
        ),
    )
}

/// axum answers a wrong method with an empty `405` and its `Allow` header; keep the
/// header, say it in JSON.
fn method_not_allowed_as_json(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut json = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here; use {allow}"),
    );
    if let Ok(value) = HeaderValue::from_str(&allow) {
        json.headers_mut().insert(header::ALLOW, value);
    }
    json
}

/// A body-less HTTP/1.1 request for the tests.
#[cfg(test)]
fn request(method: &str, path: &str, content_type: Option<&str>) -> Request {
    request_over(Version::HTTP_11, method, path, content_type)
}

#[cfg(test)]
fn request_over(version: Version, method: &str, path: &str, content_type: Option<&str>) -> Request {
    use axum::body::Body;
    let mut builder = axum::http::Request::builder()
        .version(version)
        .method(method)
        .uri(path);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder.body(Body::empty()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    fn router() -> Router {
        let grpc = Router::new().route("/pkg.Svc/Call", post(|| async { "grpc" }));
        let http = Router::new()
            .route("/v1/logs", post(|| async { "http" }))
            .route("/health", get(|| async { "ok" }));
        Dialects::new(grpc, http).into_router()
    }

    async fn answer(req: Request) -> (StatusCode, String, Option<String>) {
        let resp = router().oneshot(req).await.unwrap();
        let status = resp.status();
        let allow = resp
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned(), allow)
    }

    #[tokio::test]
    async fn grpc_goes_by_content_type_and_the_rest_gets_json_errors() {
        let grpc = request_over(
            Version::HTTP_2,
            "POST",
            "/pkg.Svc/Call",
            Some("application/grpc"),
        );
        let (s, b, _) = answer(grpc).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, "grpc"));
        // gRPC is HTTP/2: over HTTP/1.1 the gRPC content type is an HTTP request like
        // any other, never the gRPC router's 200 for a path it does not know.
        let (s, b, _) = answer(request("POST", "/pkg.Svc/Call", Some("application/grpc"))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        let (s, b, _) = answer(request("POST", "/v1/logs", Some("application/grpc"))).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, "http"));
        // The same path without a gRPC content type is not gRPC.
        let (s, b, _) = answer(request("POST", "/pkg.Svc/Call", Some("application/json"))).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(
            b.contains("\"error\"") && b.contains("/pkg.Svc/Call"),
            "{b}"
        );
        let (s, b, _) = answer(request("POST", "/v1/logs", Some("application/json"))).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, "http"));
        let (s, b, allow) = answer(request("GET", "/v1/logs", None)).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert!(b.contains("\"error\"") && b.contains("POST"), "{b}");
        assert_eq!(allow.as_deref(), Some("POST"));
        let (s, _, _) = answer(request("POST", "/unknown", None)).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}
