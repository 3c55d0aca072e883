//! The load generator's OTLP side (`--protocol otlp-http|otlp-grpc`): request bodies
//! and the OTLP/gRPC sender. (OTLP/HTTP goes through the same HTTP/1.1 sender as the
//! JSON load; only its content type, path and answers differ.)
//!
//! **Same records as the JSON load.** A batch from the same seed becomes one
//! `ExportLogsServiceRequest`. The JSON load draws a service per record and OTLP
//! carries the service on the resource, so the request has one `ResourceLogs` per
//! service in the batch (its `service.name`; a batch of 100 has nearly always all 12),
//! each with one `ScopeLogs` whose records keep their order. The scope is left out:
//! its name and version would become `otel.scope.*` attributes the JSON rows do not
//! have. Per record: `time_unix_nano` (and `observed_time_unix_nano`, the pool's
//! generation time, as an SDK sets it), `severity_number` with the JSON level as
//! `severity_text`, a string body, 16/8-byte trace/span ids with the sampled flag,
//! and the attributes (`status` an `int_value`, the others strings), in the JSON
//! body's order. The worker stores the same rows for either protocol (checked once
//! by diffing the tables of the three loads from one seed, timestamps aside).
//!
//! **Encoded once.** Bodies are encoded when the pool is generated, like the JSON
//! bodies. The gRPC sender hands those bytes to tonic through a codec that copies
//! them into the frame ([`BodyEncoder`]) instead of encoding a message per request,
//! so the generator's own protobuf encoding does not load the cores the worker is
//! measured on.
//!
//! **Answers.** Accepted is HTTP 200 / gRPC OK without rejected records. A
//! `partial_success` with `rejected_log_records > 0` counts as a failed request
//! whose other records were acknowledged (they count for the rows-lost check).

use std::net::SocketAddr;

use bytes::{BufMut as _, Bytes};
use http::uri::PathAndQuery;
use http::StatusCode;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::{error_kind, Outcome};

/// OTLP/HTTP's path for logs.
pub const HTTP_PATH: &str = "/v1/logs";
/// OTLP/HTTP's binary encoding.
pub const HTTP_CONTENT_TYPE: &str = "application/x-protobuf";
/// The OTLP/gRPC method, as an HTTP/2 path.
pub const GRPC_METHOD: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// [`Tally::by_status`](super::Tally) key of answers that rejected some records.
const PARTIAL: &str = "partial_success";

/// An `ExportLogsServiceResponse` to a request of `records` records.
fn verdict(response: &ExportLogsServiceResponse, records: u64) -> Outcome {
    match &response.partial_success {
        Some(partial) if partial.rejected_log_records > 0 => {
            let rejected = u64::try_from(partial.rejected_log_records).unwrap_or(0);
            Outcome::Refused {
                status: PARTIAL.to_owned(),
                sample: format!(
                    "{} of {records} records rejected: {}",
                    partial.rejected_log_records, partial.error_message
                ),
                acknowledged: records.saturating_sub(rejected),
            }
        }
        // No rejections (an error_message alone is a warning, per the spec).
        _ => Outcome::Accepted(records),
    }
}

/// An OTLP/HTTP answer to a request of `records` records: 200 with an
/// `ExportLogsServiceResponse`, or a refusal with a `google.rpc.Status`.
pub fn http_outcome(status: StatusCode, body: &[u8], records: u64) -> Outcome {
    if status == StatusCode::OK {
        return match ExportLogsServiceResponse::decode(body) {
            Ok(response) => verdict(&response, records),
            Err(e) => Outcome::Error(format!("undecodable ExportLogsServiceResponse: {e}")),
        };
    }
    let sample = match tonic_types::Status::decode(body) {
        Ok(rpc) => format!("google.rpc.Status code {}: {}", rpc.code, rpc.message),
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    };
    Outcome::Refused {
        status: status.as_u16().to_string(),
        sample,
        acknowledged: 0,
    }
}

/// One OTLP/gRPC connection: a tonic channel (one HTTP/2 connection, h2c), opened on
/// first use and again after [`GrpcSender::reset`]; one request in flight at a time,
/// like a connection of the HTTP/1.1 loads.
pub struct GrpcSender {
    endpoint: Endpoint,
    client: Option<Grpc<Channel>>,
}

impl GrpcSender {
    /// `addr`: the checked loopback address of `--url`.
    pub fn new(addr: SocketAddr) -> GrpcSender {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .expect("http://<socket address> is a valid URI")
            .tcp_nodelay(true);
        GrpcSender {
            endpoint,
            client: None,
        }
    }

    /// Drops the channel: the next request opens a new connection.
    pub fn reset(&mut self) {
        self.client = None;
    }

    /// Sends one pre-encoded `ExportLogsServiceRequest` of `records` records.
    pub async fn export(&mut self, body: Bytes, records: u64) -> Outcome {
        let client = match &mut self.client {
            Some(client) => client,
            None => match self.endpoint.connect().await {
                Ok(channel) => self.client.insert(Grpc::new(channel)),
                Err(e) => return Outcome::Error(format!("connect: {}", error_kind(&e))),
            },
        };
        if let Err(e) = client.ready().await {
            return Outcome::Error(format!("connection: {}", error_kind(&e)));
        }
        let path = PathAndQuery::from_static(GRPC_METHOD);
        match client
            .unary(tonic::Request::new(body), path, PreEncoded)
            .await
        {
            Ok(response) => verdict(response.get_ref(), records),
            // A status the client made up from a failed exchange carries its cause;
            // one the worker sent (grpc-status) does not.
            Err(status) => match std::error::Error::source(&status) {
                Some(cause) => {
                    Outcome::Error(format!("grpc {:?}: {}", status.code(), error_kind(cause)))
                }
                None => Outcome::Refused {
                    status: format!("grpc {:?}", status.code()),
                    sample: status.message().to_owned(),
                    acknowledged: 0,
                },
            },
        }
    }
}

/// tonic codec of [`GrpcSender`]: requests are bodies encoded beforehand, responses
/// `ExportLogsServiceResponse`s.
#[derive(Debug, Clone, Copy)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ExportLogsServiceResponse;
    type Encoder = BodyEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> BodyEncoder {
        BodyEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

/// Copies an encoded message into the gRPC frame as it is.
#[derive(Debug)]
struct BodyEncoder;

impl Encoder for BodyEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, body: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&body);
        Ok(())
    }
}

#[derive(Debug)]
struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportLogsServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportLogsServiceResponse>, tonic::Status> {
        ExportLogsServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))
    }
}
