//! Helpers of `tests/api_keys.rs`: a key file, a worker with it, requests of every
//! dialect with or without a key.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value;
use tonic::transport::Channel;
use zero_logs::proto::log_service_client::LogServiceClient;
use zero_logs::proto::IngestRequest;
use zero_logs::testing::ClickHouseServer;

use crate::common::*;

pub const WEB: &str = "web-secret-5f0c2a9e7d41b3";
pub const CHECKOUT: &str = "checkout-secret-a81d6e2f9c";
pub const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

/// A key file in its own directory, mode 0600 (the test runs as its owner).
pub struct KeyFile {
    pub dir: tempfile::TempDir,
}

impl KeyFile {
    pub fn new(text: &str) -> KeyFile {
        let file = KeyFile {
            dir: tempfile::tempdir().unwrap(),
        };
        file.replace(text);
        file
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// Writes a new version as an editor does: a new file renamed over the old.
    pub fn replace(&self, text: &str) {
        let tmp = self.dir.path().join("keys.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

pub fn native_body(service: &str, n: usize) -> String {
    let one = format!(
        r#"{{"service":"{service}","message":"m {}"}}"#,
        "x".repeat(40)
    );
    format!("[{}]", vec![one; n].join(","))
}

pub fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

/// One resource per `(service, records)`.
pub fn otlp(resources: &[(&str, usize)]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: resources
            .iter()
            .map(|(service, n)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(string(service)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: (0..*n)
                        .map(|i| LogRecord {
                            severity_number: 9,
                            body: Some(string(&format!("otlp {service} {i}"))),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

pub fn native_grpc(service: &str, n: usize) -> IngestRequest {
    IngestRequest {
        logs: (0..n)
            .map(|i| zero_logs::proto::LogRecord {
                service: service.into(),
                message: format!("grpc {i}"),
                ..Default::default()
            })
            .collect(),
    }
}

/// `message` as a tonic request with `authorization` metadata when `secret` is set.
pub fn with_key<T>(message: T, secret: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(secret) = secret {
        request
            .metadata_mut()
            .insert("authorization", bearer(secret).parse().unwrap());
    }
    request
}

pub struct Setup {
    pub worker: Worker,
    pub http: HttpClient,
    pub ch: ClickHouseServer,
    pub db: String,
    pub keys: KeyFile,
}

impl Setup {
    pub async fn start(keys: &str, env: &[(&str, &str)]) -> Setup {
        let ch = ClickHouseServer::start().expect("start ClickHouse");
        let db = ch.fresh_database();
        let keys = KeyFile::new(keys);
        let path = keys.path().to_str().unwrap().to_owned();
        let mut env = env.to_vec();
        env.push(("INGEST_KEYS_FILE", &path));
        let worker = Worker::start(&ch, &db, &env).await;
        Setup {
            worker,
            http: client(),
            ch,
            db,
            keys,
        }
    }

    pub async fn post(
        &self,
        path: &str,
        secret: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let auth = secret.map(bearer);
        let mut all = headers.to_vec();
        if let Some(auth) = &auth {
            all.push(("authorization", auth));
        }
        let url = format!("{}{path}", self.worker.base);
        post(&self.http, &url, &all, body).await.unwrap()
    }

    pub async fn native(&self, secret: Option<&str>, service: &str, n: usize) -> Reply {
        self.post("/api/v1/logs", secret, &[], native_body(service, n))
            .await
    }

    pub async fn get(&self, path: &str, secret: Option<&str>) -> Reply {
        let mut req = http::Request::get(format!("{}{path}", self.worker.base));
        if let Some(secret) = secret {
            req = req.header("authorization", bearer(secret));
        }
        let resp = self
            .http
            .request(req.body(http_body_util::Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, headers, body)
    }

    pub async fn stats(&self, secret: &str) -> Value {
        let (status, _, body) = self.get("/stats", Some(secret)).await;
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    pub async fn key_stats(&self, secret: &str, name: &str) -> Value {
        let stats = self.stats(secret).await;
        stats["auth"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap_or_else(|| panic!("no key {name} in {stats}"))
            .clone()
    }

    pub async fn grpc(&self) -> LogServiceClient<Channel> {
        LogServiceClient::connect(self.worker.base.clone())
            .await
            .unwrap()
    }

    pub async fn otlp_grpc(&self) -> LogsServiceClient<Channel> {
        LogsServiceClient::connect(self.worker.base.clone())
            .await
            .unwrap()
    }

    pub fn rows_of(&self, service: &str) -> u64 {
        let sql = format!(
            "SELECT count() FROM {}.logs WHERE service = '{service}'",
            self.db
        );
        self.ch.query(&sql).unwrap().trim().parse().unwrap()
    }

    pub async fn wait_rows_of(&self, service: &str, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.rows_of(service);
            if seen >= n || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.1.get(name).map_or("", |v| v.to_str().unwrap())
}

pub const TWO_KEYS: &str = "# test keys\n\
    web       web-secret-5f0c2a9e7d41b3\n\
    checkout  checkout-secret-a81d6e2f9c  services=checkout,cart\n";
