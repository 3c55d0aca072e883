//! The TLS tests' certificates, made with rcgen (CAs, server and client
//! certificates), and their client: rustls speaking HTTP/1.1, HTTP/2 and gRPC over
//! connections it makes itself, so a test sees each connection's certificate.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use zero_logs::testing::TestClickHouse;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

// === certificates ===

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate as the peer presents it: compare to tell certificates apart.
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `localhost` and 127.0.0.1 with serial `serial`.
    pub fn server(&self, serial: u64) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate named `name`.
    pub fn client(&self, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Writes `text` to `path` the way an operator's tooling should: a temporary file
/// renamed over the old one, so the worker never reads half a file.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// === client ===

/// How a client connects: whom it trusts, what it presents, which ALPN it offers.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// Trusts `cas`, offers `alpn` (e.g. `h2`), presents `identity` if given.
    pub fn new(cas: &[&Ca], identity: Option<&Issued>, alpn: &[&[u8]]) -> TlsClient {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca.der()).unwrap();
        }
        #[allow(deprecated)] // The ring provider, as the server uses (src/tls/load.rs).
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let chain = vec![id.der.clone()];
                let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsClient {
            config: Arc::new(config),
        }
    }

    /// A TLS connection to `addr` as `localhost`.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(Duration::from_secs(15), connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
    }

    /// One HTTP connection over TLS (HTTP/2 when ALPN chose `h2`).
    pub async fn http(&self, addr: SocketAddr) -> Result<HttpConn, String> {
        let tls = self.connect(addr).await.map_err(|e| e.to_string())?;
        let (_, session) = tls.get_ref();
        let peer_cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("no server certificate")?;
        let h2 = session.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let sender = if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(HttpConn { sender, peer_cert })
    }

    /// A gRPC channel whose every connection is one of ours (ALPN must offer `h2`).
    pub async fn channel(&self, addr: SocketAddr) -> tonic::transport::Channel {
        let client = self.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let client = client.clone();
            async move { client.connect(addr).await.map(TokioIo::new) }
        });
        tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(connector)
            .await
            .expect("gRPC channel over TLS")
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One client connection: requests go one after the other over it.
pub struct HttpConn {
    sender: Sender,
    /// The certificate the server presented on this connection.
    pub peer_cert: CertificateDer<'static>,
}

/// (status, HTTP version, body).
pub type Answer = (u16, http::Version, Bytes);

impl HttpConn {
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<Answer, String> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("host", "localhost")
            .header("content-type", content_type)
            .body(Full::new(body.into()))
            .unwrap();
        let sent = async {
            match &mut self.sender {
                Sender::H1(s) => {
                    s.ready().await?;
                    s.send_request(req).await
                }
                Sender::H2(s) => {
                    s.ready().await?;
                    s.send_request(req).await
                }
            }
        };
        let resp = tokio::time::timeout(Duration::from_secs(30), sent)
            .await
            .map_err(|_| "request timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let version = resp.version();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, version, body))
    }

    pub async fn post_json(&mut self, body: String) -> Result<Answer, String> {
        self.request("POST", "/api/v1/logs", "application/json", body)
            .await
    }
}

/// `n` valid records of `service`, as a JSON array.
pub fn records(service: &str, n: usize) -> String {
    let one = |i: usize| {
        format!(
            r#"{{"timestamp":"2024-05-01T12:00:00.{i:09}Z","level":"info","service":"{service}","message":"tls {i}"}}"#
        )
    };
    format!("[{}]", (0..n).map(one).collect::<Vec<_>>().join(","))
}

/// Rows of `service` in `database.logs`.
pub fn rows_of(ch: &impl TestClickHouse, database: &str, service: &str) -> u64 {
    ch.query(&format!(
        "SELECT count() FROM {database}.logs WHERE service = '{service}'"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// Waits until `service` has `expected` rows (or `within` passed); the count then.
pub async fn wait_rows_of(
    ch: &impl TestClickHouse,
    database: &str,
    service: &str,
    expected: u64,
) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = rows_of(ch, database, service);
        if n >= expected || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plaintext HTTP request on `addr`: what came back before the server closed the
/// connection (`None` if it was still open after 5 s).
pub fn plaintext_request(addr: std::net::SocketAddr) -> Option<String> {
    let body = records("plaintext", 1);
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "POST /api/v1/logs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).to_string()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset is closed too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).to_string())
            }
            Err(_) => return None,
        }
    }
}

/// Whether one request on a fresh connection from `client` is served (202).
pub async fn served(
    client: &TlsClient,
    addr: std::net::SocketAddr,
    service: &str,
) -> Result<(), String> {
    let mut conn = client.http(addr).await?;
    match conn.post_json(records(service, 1)).await? {
        (202, _, _) => Ok(()),
        (status, _, body) => Err(format!("{status}: {body:?}")),
    }
}

/// The error a client gets when the server refuses its handshake after the client's
/// side completed: the server's alert, read on the first read.
pub async fn refusal(client: &TlsClient, addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = match client.connect(addr).await {
        Ok(tls) => tls,
        Err(err) => return err.to_string(),
    };
    let _ = tls
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    match tls.read(&mut buf).await {
        Ok(n) => format!("read {n} bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(err) => err.to_string(),
    }
}

/// The certificate a fresh connection is shown.
pub async fn presented(client: &TlsClient, addr: std::net::SocketAddr) -> CertificateDer<'static> {
    client.http(addr).await.expect("fresh connection").peer_cert
}

/// Waits until fresh connections are shown `want` (at most `within`).
pub async fn wait_presented(
    client: &TlsClient,
    addr: std::net::SocketAddr,
    want: &Issued,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if presented(client, addr).await == want.der {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub fn otlp_request(service: &str, n: usize) -> ExportLogsServiceRequest {
    let string = |s: String| AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(string(service.into())),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| opentelemetry_proto::tonic::logs::v1::LogRecord {
                        time_unix_nano: 1_714_564_800_000_000_000 + i as u64,
                        severity_number: 9,
                        body: Some(string(format!("otlp {i}"))),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// What a [`load`] saw (the certificate swap test).
#[derive(Default)]
pub struct Load {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub errors: Mutex<Vec<String>>,
    /// Certificates presented to the load's connections, in order, without repeats.
    pub certs: Mutex<Vec<CertificateDer<'static>>>,
}

/// Posts 2 records per request until `stop`, a new connection every 5 requests.
pub async fn load(
    client: TlsClient,
    addr: std::net::SocketAddr,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
) {
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && sent < 20_000 {
        let mut conn = match client.http(addr).await {
            Ok(conn) => conn,
            Err(err) => {
                load.failed.fetch_add(1, Ordering::Relaxed);
                load.errors.lock().unwrap().push(format!("connect: {err}"));
                continue;
            }
        };
        {
            let mut certs = load.certs.lock().unwrap();
            if certs.last() != Some(&conn.peer_cert) {
                certs.push(conn.peer_cert.clone());
            }
        }
        for _ in 0..5 {
            sent += 1;
            match conn.post_json(records("swap", 2)).await {
                Ok((202, _, _)) => load.ok.fetch_add(1, Ordering::Relaxed),
                other => {
                    load.errors.lock().unwrap().push(format!("{other:?}"));
                    load.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }
}
