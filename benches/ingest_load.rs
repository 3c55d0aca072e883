//! Load generator for a running zero-logs worker: a benchmark, not a timed test.
//!
//! `scripts/bench` is the entry point: it builds the release worker, starts a private
//! ClickHouse and the worker on free loopback ports, then runs
//! `cargo bench --bench ingest_load -- --url http://127.0.0.1:PORT --worker-pid PID ...`.
//! Without `--url` (for example under a plain `cargo bench`) this prints its usage and
//! exits 0: it never starts anything itself.
//!
//! What it does: pre-generates a pool of varied JSON (or NDJSON) batches of ~220-byte
//! records, then posts them over N concurrent HTTP/1.1 keep-alive connections until the
//! duration or request count is reached, and reports requests and records per second,
//! the latency of accepted (202) requests, failures by status and by error, and, from
//! `/proc/<worker-pid>`, the worker's CPU time per record and its peak RSS. With
//! `--clickhouse-url` and `--clickhouse-table` it also checks that every acknowledged
//! record is in ClickHouse. Only loopback targets are accepted.
//!
//! `--protocol otlp-http|otlp-grpc` sends the same records as OTLP
//! `ExportLogsServiceRequest`s instead (protobuf to `/v1/logs`, or the gRPC
//! `LogsService/Export`): see the [`otlp`] module.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[path = "ingest_load/otlp.rs"]
mod otlp;
#[path = "ingest_load/records.rs"]
mod records;

const USAGE: &str = "\
ingest_load: HTTP/gRPC load generator for a running zero-logs worker (loopback only)

usage: cargo bench --bench ingest_load -- --url http://127.0.0.1:PORT [options]
       (scripts/bench starts ClickHouse and a release worker and runs this for you)

  --url URL               worker base URL (path defaults to /api/v1/logs, with
                          otlp-http to /v1/logs; otlp-grpc ignores it); required
  --protocol json|otlp-http|otlp-grpc
                          json: zero-logs' JSON API over HTTP/1.1 (202 = ok);
                          otlp-http: the same records as OTLP protobuf,
                          POST /v1/logs over HTTP/1.1 (200 = ok); otlp-grpc: as
                          OTLP/gRPC LogsService/Export over h2c, one HTTP/2
                          connection per --connections (OK = ok). A partial_success
                          with rejected records counts as failed [json]
  --connections N         concurrent keep-alive HTTP/1.1 connections (otlp-grpc:
                          HTTP/2 connections), one request in flight each [64]
  --duration SECS         measured run time [20; a safety cap of 600 with --requests]
  --requests N            stop after N measured requests instead of after --duration
  --rate R                offered load: R requests/s in total, open loop: latency
                          counts from each request's scheduled start, so a stall
                          shows up in p99 [unpaced: as fast as the answers come]
  --pacing shared|per-connection
                          with --rate, who sends the request due at a given time:
                          shared = the next free connection (a client's connection
                          pool: a request waits only when all connections are
                          busy); per-connection = each connection sends every
                          connections/R s, one request in flight, so one slow
                          answer delays that connection's next ones even while
                          others are idle [shared]
  --warmup SECS           load sent before measuring starts (not counted) [0]
  --batch N               records per request [100]
  --pool N                distinct pre-generated request bodies [64]
  --format json|ndjson    body format of --protocol json: JSON array or NDJSON [json]
  --gzip                  send bodies gzip-compressed (Content-Encoding: gzip; json
                          and otlp-http)
  --timeout SECS          per-request timeout [30]
  --threads N             generator runtime threads [1]
  --worker-pid PID[,PID]  worker process(es) to measure via /proc: CPU time summed
                          over all, peak RSS of the largest
  --clickhouse-pid PID    ClickHouse server process: report its CPU time too
  --clickhouse-url URL    ClickHouse HTTP URL: check acknowledged records arrived
  --clickhouse-table DB.T table to count rows in (with --clickhouse-url)
  --latency-log PATH      write one line per accepted measured request: its
                          scheduled start (ms into the measured interval) and its
                          latency (us), to find when in a run the slow ones were
  --seed N                RNG seed for the generated records [42]
  --allow-failures        exit 0 even if some requests failed
  --backpressure-ok       overload runs: the worker's documented backpressure
                          (HTTP 429 and 503, gRPC ResourceExhausted and
                          Unavailable) is expected, reported apart and not a
                          failure; any other refusal or error still is (exit 3)
  --json                  print the report as one JSON object
  -h, --help              this text

exit status: 0 ok; 1 no request accepted or acknowledged records missing in
ClickHouse; 2 bad arguments; 3 some requests failed (unless --allow-failures;
with --backpressure-ok, failed otherwise than by backpressure)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match Args::parse(&args) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ingest_load: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) =
        Target::parse(&args.url, "/api/v1/logs").and_then(|_| match &args.clickhouse_url {
            Some(url) => Target::parse(url, "/").map(drop),
            None => Ok(()),
        })
    {
        eprintln!("ingest_load: {e:#}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ingest_load: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

// === arguments ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
}

/// `--protocol`: what the records are sent as, and over which wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// zero-logs' JSON API (`--format`), HTTP/1.1.
    Json,
    /// OTLP/HTTP: `ExportLogsServiceRequest` protobuf to `/v1/logs`, HTTP/1.1.
    OtlpHttp,
    /// OTLP/gRPC: `LogsService/Export` over h2c.
    OtlpGrpc,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::OtlpHttp => "otlp-http",
            Protocol::OtlpGrpc => "otlp-grpc",
        }
    }

    /// Path of `--url` when it gives none.
    fn default_path(self) -> &'static str {
        match self {
            Protocol::Json | Protocol::OtlpGrpc => "/api/v1/logs",
            Protocol::OtlpHttp => otlp::HTTP_PATH,
        }
    }

    /// The answer that counts as accepted, as the report names it.
    fn success(self) -> &'static str {
        match self {
            Protocol::Json => "202",
            Protocol::OtlpHttp => "200",
            Protocol::OtlpGrpc => "OK",
        }
    }
}

/// `--pacing`: how the `--rate` schedule is spread over the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pacing {
    /// One schedule for all: slot k is due at `start + k / rate` and goes to whichever
    /// connection claims it next.
    Shared,
    /// Each connection keeps its own schedule, `connections / rate` apart.
    PerConnection,
}

#[derive(Debug)]
struct Args {
    url: String,
    connections: usize,
    duration: Duration,
    requests: Option<u64>,
    rate: Option<f64>,
    pacing: Pacing,
    warmup: Duration,
    batch: usize,
    pool: usize,
    protocol: Protocol,
    format: Format,
    gzip: bool,
    timeout: Duration,
    threads: usize,
    /// One pid, or several separated by commas (workers sharing one socket).
    worker_pid: Option<String>,
    clickhouse_pid: Option<u32>,
    clickhouse_url: Option<String>,
    clickhouse_table: Option<String>,
    seed: u64,
    latency_log: Option<String>,
    allow_failures: bool,
    backpressure_ok: bool,
    json: bool,
}

impl Args {
    /// `Ok(None)`: print usage and exit 0 (no `--url`, or `--help`).
    fn parse(raw: &[String]) -> anyhow::Result<Option<Args>> {
        let mut url = None;
        let mut connections = 64usize;
        let mut duration = None;
        let mut requests = None;
        let mut rate = None;
        let mut pacing = Pacing::Shared;
        let mut warmup = 0.0f64;
        let mut batch = 100usize;
        let mut pool = 64usize;
        let mut protocol = Protocol::Json;
        let mut format = Format::Json;
        let mut gzip = false;
        let mut timeout = 30.0f64;
        let mut threads = 1usize;
        let mut worker_pid = None;
        let mut clickhouse_pid = None;
        let mut clickhouse_url = None;
        let mut clickhouse_table = None;
        let mut seed = 42u64;
        let mut latency_log = None;
        let mut allow_failures = false;
        let mut backpressure_ok = false;
        let mut json = false;
        let mut problems = Vec::new();

        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| -> anyhow::Result<String> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| anyhow!("{name} needs a value")),
                }
            };
            let result: anyhow::Result<()> = (|| {
                match flag {
                    "-h" | "--help" => return Err(anyhow!("help")),
                    // Passed by `cargo bench` to every bench binary.
                    "--bench" => {}
                    "--url" => url = Some(value(flag)?),
                    "--connections" | "-c" => connections = num(flag, &value(flag)?)?,
                    "--duration" | "-d" => duration = Some(secs(flag, &value(flag)?)?),
                    "--requests" | "-n" => requests = Some(num(flag, &value(flag)?)?),
                    "--warmup" => warmup = secs(flag, &value(flag)?)?,
                    "--rate" => rate = Some(secs(flag, &value(flag)?)?),
                    "--pacing" => {
                        pacing = match value(flag)?.as_str() {
                            "shared" => Pacing::Shared,
                            "per-connection" => Pacing::PerConnection,
                            other => {
                                bail!("--pacing: expected shared or per-connection, got {other:?}")
                            }
                        }
                    }
                    "--batch" => batch = num(flag, &value(flag)?)?,
                    "--pool" => pool = num(flag, &value(flag)?)?,
                    "--protocol" => {
                        protocol = match value(flag)?.as_str() {
                            "json" => Protocol::Json,
                            "otlp-http" => Protocol::OtlpHttp,
                            "otlp-grpc" => Protocol::OtlpGrpc,
                            other => bail!(
                                "--protocol: expected json, otlp-http or otlp-grpc, got {other:?}"
                            ),
                        }
                    }
                    "--format" => {
                        format = match value(flag)?.as_str() {
                            "json" => Format::Json,
                            "ndjson" => Format::Ndjson,
                            other => bail!("--format: expected json or ndjson, got {other:?}"),
                        }
                    }
                    "--gzip" => gzip = true,
                    "--timeout" => timeout = secs(flag, &value(flag)?)?,
                    "--threads" => threads = num(flag, &value(flag)?)?,
                    "--worker-pid" => {
                        let v = value(flag)?;
                        for pid in v.split(',') {
                            num::<u32>(flag, pid)?;
                        }
                        worker_pid = Some(v)
                    }
                    "--clickhouse-pid" => clickhouse_pid = Some(num(flag, &value(flag)?)?),
                    "--clickhouse-url" => clickhouse_url = Some(value(flag)?),
                    "--clickhouse-table" => clickhouse_table = Some(value(flag)?),
                    "--latency-log" => latency_log = Some(value(flag)?),
                    "--seed" => seed = num(flag, &value(flag)?)?,
                    "--allow-failures" => allow_failures = true,
                    "--backpressure-ok" => backpressure_ok = true,
                    "--json" => json = true,
                    other => bail!("unknown argument {other:?}"),
                }
                Ok(())
            })();
            match result {
                Err(e) if e.to_string() == "help" => return Ok(None),
                Err(e) => problems.push(e.to_string()),
                Ok(()) => {}
            }
        }

        // No target: a plain `cargo bench` run. Start nothing.
        let Some(url) = url else { return Ok(None) };
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        for (name, v) in [
            ("--connections", connections),
            ("--batch", batch),
            ("--pool", pool),
            ("--threads", threads),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if rate.is_some_and(|r| r <= 0.0) {
            bail!("--rate must be positive");
        }
        if requests == Some(0) {
            bail!("--requests must be at least 1");
        }
        if timeout <= 0.0 {
            bail!("--timeout must be positive");
        }
        if clickhouse_url.is_some() != clickhouse_table.is_some() {
            bail!("--clickhouse-url and --clickhouse-table go together");
        }
        if protocol != Protocol::Json && format != Format::Json {
            bail!("--format is for --protocol json; OTLP bodies are protobuf");
        }
        if protocol == Protocol::OtlpGrpc && gzip {
            // tonic would compress every message in the generator, on the cores the
            // worker is measured on; the bodies of the other protocols are compressed
            // once, in the pool.
            bail!("--gzip is not supported with --protocol otlp-grpc");
        }
        let duration = match (duration, requests) {
            (Some(d), _) if d <= 0.0 => bail!("--duration must be positive"),
            (Some(d), _) => d,
            (None, Some(_)) => 600.0,
            (None, None) => 20.0,
        };
        Ok(Some(Args {
            url,
            connections,
            duration: Duration::from_secs_f64(duration),
            requests,
            rate,
            pacing,
            warmup: Duration::from_secs_f64(warmup),
            batch,
            pool,
            protocol,
            format,
            gzip,
            timeout: Duration::from_secs_f64(timeout),
            threads,
            worker_pid,
            clickhouse_pid,
            clickhouse_url,
            clickhouse_table,
            seed,
            latency_log,
            allow_failures,
            backpressure_ok,
            json,
        }))
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<T> {
    v.parse()
        .map_err(|_| anyhow!("{flag}: expected a whole number, got {v:?}"))
}

fn secs(flag: &str, v: &str) -> anyhow::Result<f64> {
    match v.trim_end_matches('s').parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => bail!("{flag}: expected seconds, got {v:?}"),
    }
}

// === target ===

/// A loopback HTTP endpoint.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    /// `Host` header value.
    authority: String,
    uri: Uri,
}

impl Target {
    fn parse(url: &str, default_path: &str) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("{url}: only plain http:// URLs are supported");
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow!("{url}: no host"))?
            .clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {host}"))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            bail!("{host} resolves to no address");
        };
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!("refusing non-loopback target {url} ({}): load is only ever sent to this machine's loopback", bad.ip());
        }
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") | Some("/") => default_path.to_string(),
            Some(p) => p.to_string(),
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path)
            .build()?;
        Ok(Target {
            addr,
            authority: authority.to_string(),
            uri,
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

use records::{record, Rec};

struct Pool {
    bodies: Vec<Bytes>,
    /// Average serialized record size (uncompressed, without separators).
    record_bytes: f64,
    /// Average body size on the wire.
    body_bytes: f64,
    /// OTLP: average `ResourceLogs` (distinct services) per request.
    resources: f64,
}

/// Generates and encodes the bodies once, before the run: sending then costs the
/// generator no encoding.
fn generate_pool(args: &Args) -> anyhow::Result<Pool> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mut bodies = Vec::with_capacity(args.pool);
    let mut record_total = 0usize;
    let mut wire_total = 0usize;
    let mut resources = 0usize;
    for _ in 0..args.pool {
        let records: Vec<Rec> = (0..args.batch).map(|_| record(&mut rng, now_ns)).collect();
        let body = match args.protocol {
            Protocol::Json => {
                let records: Vec<String> = records.iter().map(|r| r.json().to_string()).collect();
                record_total += records.iter().map(String::len).sum::<usize>();
                match args.format {
                    Format::Json => format!("[{}]", records.join(",")),
                    Format::Ndjson => records.join("\n") + "\n",
                }
                .into_bytes()
            }
            Protocol::OtlpHttp | Protocol::OtlpGrpc => {
                let encoded = records::request_body(&records, now_ns);
                record_total += encoded.record_bytes;
                resources += encoded.resources;
                encoded.body
            }
        };
        let body = if args.gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&body)?;
            enc.finish()?
        } else {
            body
        };
        wire_total += body.len();
        bodies.push(Bytes::from(body));
    }
    Ok(Pool {
        bodies,
        record_bytes: record_total as f64 / (args.pool * args.batch) as f64,
        body_bytes: wire_total as f64 / args.pool as f64,
        resources: resources as f64 / args.pool as f64,
    })
}

// === load ===

/// Shared, read-only plan of the run.
struct Plan {
    target: Target,
    protocol: Protocol,
    bodies: Vec<Bytes>,
    content_type: &'static str,
    gzip: bool,
    timeout: Duration,
    batch: u64,
    /// Requests started before this are warm-up: sent, not reported.
    measure_from: Instant,
    /// No request starts at or after this.
    deadline: Instant,
    /// `--requests`: measured requests still to claim.
    limit: Option<u64>,
    claimed: AtomicU64,
    /// When requests are due (`--rate`, `--pacing`).
    schedule: Schedule,
    /// `Schedule::Shared`: the next slot of the common schedule to claim.
    next_slot: AtomicU64,
    /// When the first (warm-up) request is scheduled.
    start: Instant,
    connections: usize,
}

/// When a connection's requests are due.
#[derive(Debug, Clone, Copy)]
enum Schedule {
    /// As fast as the answers come.
    Unpaced,
    /// Slot k of one schedule is due at `start + k * every` and goes to whichever
    /// connection claims it next.
    Shared { every: Duration },
    /// Each connection sends one request per `every`, the connections staggered.
    PerConnection { every: Duration },
}

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    /// Records the worker acknowledged (JSON: from `{"accepted":N}`; OTLP: the
    /// request's records less `partial_success.rejected_log_records`).
    accepted: u64,
    bytes: u64,
    /// Latency of accepted requests (202; OTLP: 200 / OK), microseconds.
    latencies_us: Vec<u32>,
    /// Their scheduled starts, ms after `Plan::measure_from` (same order).
    started_ms: Vec<u32>,
    /// `--rate`: how late each measured request left against its schedule, µs (the
    /// generator waiting for a core or a connection; included in the latency).
    lags_us: Vec<u32>,
    /// Refusals by answer: the HTTP status ("503"), the gRPC code ("grpc
    /// Unavailable") or "partial_success".
    by_status: BTreeMap<String, u64>,
    by_error: BTreeMap<String, u64>,
    /// One example response (body or message) per failing status.
    samples: BTreeMap<String, String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.accepted += other.accepted;
        self.bytes += other.bytes;
        self.latencies_us.extend(other.latencies_us);
        self.started_ms.extend(other.started_ms);
        self.lags_us.extend(other.lags_us);
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.by_error {
            *self.by_error.entry(k).or_default() += v;
        }
        for (k, v) in other.samples {
            self.samples.entry(k).or_insert(v);
        }
    }

    fn failed(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.by_error.values().sum::<u64>()
    }

    /// Refusals that are the worker's documented backpressure ("retry later"):
    /// `--backpressure-ok` expects them under overload.
    fn backpressure(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(status, _)| BACKPRESSURE.contains(&status.as_str()))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The answers the README documents as "busy, retry later": 429 (in-flight
/// bytes, spool or queue full, per-key limits) and 503 (a stage closed or down), and
/// their gRPC codes. Keys of [`Tally::by_status`].
const BACKPRESSURE: [&str; 4] = ["429", "503", "grpc ResourceExhausted", "grpc Unavailable"];

#[derive(serde::Deserialize)]
struct Accepted {
    accepted: u64,
}

/// What became of one request.
enum Outcome {
    /// Accepted: this many records acknowledged.
    Accepted(u64),
    /// Answered with a refusal, or accepted only in part (OTLP `partial_success`).
    Refused {
        /// Key of [`Tally::by_status`].
        status: String,
        /// The answer's body or message, for the report.
        sample: String,
        /// Records acknowledged all the same (the accepted part of a partial success).
        acknowledged: u64,
    },
    /// No answer (connect, send, timeout): the connection is dropped.
    Error(String),
}

/// A connection of the load: hyper's HTTP/1.1 sender or a gRPC channel, (re)opened
/// on first use after [`Conn::reset`].
enum Conn {
    Http(Option<SendRequest<Full<Bytes>>>),
    /// Boxed: a tonic `Endpoint` is large; one per connection, made once.
    Grpc(Box<otlp::GrpcSender>),
}

impl Conn {
    fn new(plan: &Plan) -> Conn {
        match plan.protocol {
            Protocol::Json | Protocol::OtlpHttp => Conn::Http(None),
            Protocol::OtlpGrpc => Conn::Grpc(Box::new(otlp::GrpcSender::new(plan.target.addr))),
        }
    }

    fn reset(&mut self) {
        match self {
            Conn::Http(sender) => *sender = None,
            Conn::Grpc(grpc) => grpc.reset(),
        }
    }

    /// Sends `body` and judges the answer as the protocol says.
    async fn exchange(&mut self, plan: &Plan, body: Bytes) -> Outcome {
        match self {
            Conn::Grpc(grpc) => grpc.export(body, plan.batch).await,
            Conn::Http(sender) => match send(plan, sender, body).await {
                Err(kind) => Outcome::Error(kind),
                Ok((status, body)) => match plan.protocol {
                    Protocol::OtlpHttp => otlp::http_outcome(status, &body, plan.batch),
                    _ if status == StatusCode::ACCEPTED => Outcome::Accepted(
                        serde_json::from_slice::<Accepted>(&body)
                            .map(|a| a.accepted)
                            .unwrap_or(plan.batch),
                    ),
                    _ => Outcome::Refused {
                        status: status.as_u16().to_string(),
                        sample: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                        acknowledged: 0,
                    },
                },
            },
        }
    }
}

/// One connection's loop: one request in flight at a time, reconnect after errors.
async fn drive_connection(plan: Arc<Plan>, index: usize) -> (Tally, Tally) {
    let mut warm = Tally::default();
    let mut measured = Tally::default();
    let mut conn = Conn::new(&plan);
    let mut next_body = index;
    // Per-connection schedules start staggered over one interval.
    let mut own_next = match plan.schedule {
        Schedule::PerConnection { every } => {
            plan.start + every.mul_f64(index as f64 / plan.connections as f64)
        }
        _ => plan.start,
    };
    loop {
        let start = match plan.schedule {
            Schedule::Unpaced => Instant::now(),
            Schedule::Shared { every } => {
                let slot = plan.next_slot.fetch_add(1, Ordering::Relaxed);
                let at = plan.start + every.mul_f64(slot as f64);
                tokio::time::sleep_until(at).await;
                at
            }
            Schedule::PerConnection { every } => {
                let at = own_next;
                own_next += every;
                tokio::time::sleep_until(at).await;
                at
            }
        };
        if start >= plan.deadline {
            break;
        }
        let is_measured = start >= plan.measure_from;
        if is_measured {
            if let Some(limit) = plan.limit {
                if plan.claimed.fetch_add(1, Ordering::Relaxed) >= limit {
                    break;
                }
            }
        }
        let tally = if is_measured {
            &mut measured
        } else {
            &mut warm
        };
        if is_measured && !matches!(plan.schedule, Schedule::Unpaced) {
            let lag = start.elapsed().as_micros();
            tally.lags_us.push(u32::try_from(lag).unwrap_or(u32::MAX));
        }
        let body = plan.bodies[next_body % plan.bodies.len()].clone();
        next_body = next_body.wrapping_add(plan.bodies.len() / 2 + 1);
        let body_len = body.len() as u64;
        tally.sent += 1;

        let outcome = match tokio::time::timeout(plan.timeout, conn.exchange(&plan, body)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Error("timeout".into()),
        };
        match outcome {
            Outcome::Accepted(records) => {
                let elapsed = start.elapsed();
                tally.bytes += body_len;
                tally.ok += 1;
                tally.accepted += records;
                tally
                    .latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                let since = start.saturating_duration_since(plan.measure_from);
                tally
                    .started_ms
                    .push(u32::try_from(since.as_millis()).unwrap_or(u32::MAX));
            }
            Outcome::Refused {
                status,
                sample,
                acknowledged,
            } => {
                tally.bytes += body_len;
                tally.accepted += acknowledged;
                *tally.by_status.entry(status.clone()).or_default() += 1;
                tally.samples.entry(status).or_insert(sample);
            }
            Outcome::Error(kind) => {
                conn.reset();
                *tally.by_error.entry(kind).or_default() += 1;
                // Do not spin while the worker is away (restarting, refusing).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (warm, measured)
}

/// Sends one request on this task's HTTP/1.1 connection, (re)connecting as needed;
/// the answer's status and body, or the kind of error. A request that never left (the
/// server had closed the idle keep-alive connection) is retried once on a new
/// connection rather than counted as failed.
async fn send(
    plan: &Plan,
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let mut retried = false;
    loop {
        let s = match sender {
            Some(s) if !s.is_closed() => s,
            _ => match plan.target.connect().await {
                Ok(s) => sender.insert(s),
                Err(e) => return Err(format!("connect: {}", error_kind(&*e))),
            },
        };
        if let Err(e) = s.ready().await {
            *sender = None;
            if !retried {
                retried = true;
                continue;
            }
            return Err(format!("connection: {}", error_kind(&e)));
        }
        let mut req = Request::post(plan.target.uri.clone())
            .header(HOST, plan.target.authority.as_str())
            .header(CONTENT_TYPE, plan.content_type);
        if plan.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let req = match req.body(Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => return Err(format!("request: {e}")),
        };
        let resp = match s.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => {
                *sender = None;
                if e.take_message().is_some() && !retried {
                    retried = true;
                    continue;
                }
                return Err(format!("send: {}", error_kind(&e.into_error())));
            }
        };
        let status = resp.status();
        return match resp.into_body().collect().await {
            Ok(b) => Ok((status, b.to_bytes())),
            Err(e) => {
                *sender = None;
                Err(format!("response body: {}", error_kind(&e)))
            }
        };
    }
}

/// A short, countable description of an error (no addresses or counters in it).
fn error_kind(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return format!("{:?}", io.kind());
        }
        cur = err.source();
    }
    if let Some(h) = e.downcast_ref::<hyper::Error>() {
        if h.is_incomplete_message() {
            return "connection closed before the response".into();
        }
        if h.is_canceled() {
            return "canceled".into();
        }
        if h.is_closed() {
            return "connection closed".into();
        }
        if h.is_parse() {
            return "bad response".into();
        }
    }
    e.to_string()
}

// === /proc measurements ===

#[derive(Debug, Clone, Copy)]
struct CpuTicks(u64);

fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of every thread of `pid` (`self` for this process), live and exited.
fn cpu_ticks(pid: &str) -> anyhow::Result<CpuTicks> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("no field {n} in /proc/{pid}/stat"))
    };
    Ok(CpuTicks(field(14)? + field(15)?))
}

/// Steal ticks of all CPUs (`/proc/stat`, line `cpu`, 8th value); `None` outside Linux
/// or when the kernel does not account steal.
fn steal_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    cpu.split_whitespace().nth(7)?.parse().ok()
}

/// [`cpu_ticks`] summed over a comma-separated list of worker pids.
fn workers_cpu_ticks(pids: &str) -> anyhow::Result<CpuTicks> {
    pids.split(',')
        .try_fold(0, |sum, pid| Ok(sum + cpu_ticks(pid)?.0))
        .map(CpuTicks)
}

/// [`status_kb`] of the largest of a comma-separated list of worker pids: the bound
/// is per worker.
fn workers_status_kb(pids: &str, key: &str) -> Option<u64> {
    pids.split(',').filter_map(|pid| status_kb(pid, key)).max()
}

/// A `kB` line of `/proc/<pid>/status`, in bytes.
fn status_kb(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    })
}

// === ClickHouse check ===

async fn clickhouse_count(url: &str, table: &str) -> anyhow::Result<u64> {
    let target = Target::parse(url, "/")?;
    let mut sender = target.connect().await?;
    let req = Request::post(target.uri.clone())
        .header(HOST, target.authority.as_str())
        .body(Full::new(Bytes::from(format!(
            "SELECT count() FROM {table}"
        ))))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        bail!("ClickHouse answered {status}: {}", text.trim());
    }
    text.trim()
        .parse()
        .with_context(|| format!("unexpected count {text:?}"))
}

/// Rows in the table once they stop changing (or reach `expected`), at most `wait`.
/// The table's row count once it reaches `expected`, or stops growing for `stall`,
/// or after `cap` in all. Waiting on while rows still arrive: after a closed-loop or
/// overload run the spool can hold a backlog that takes ClickHouse longer than
/// `stall` to take in, and those rows are late, not lost.
async fn settled_count(
    url: &str,
    table: &str,
    expected: u64,
    stall: Duration,
    cap: Duration,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut last = clickhouse_count(url, table).await?;
    let mut grew_at = started;
    while last < expected && grew_at.elapsed() < stall && started.elapsed() < cap {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = clickhouse_count(url, table).await?;
        if now > last {
            grew_at = Instant::now();
        }
        last = now;
    }
    if started.elapsed() >= Duration::from_secs(5) {
        eprintln!(
            "ingest_load: waited {:.0} s for ClickHouse to take in the acknowledged records ({last} of {expected})",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(last)
}

// === run and report ===

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = Target::parse(&args.url, args.protocol.default_path())?;
    let worker_pid = args.worker_pid.clone();
    if let Some(pid) = &worker_pid {
        workers_cpu_ticks(pid).with_context(|| format!("worker pid {pid} is not running"))?;
    }
    // Before any load: what the worker holds at rest (with the bench's start-up).
    let rss_before = worker_pid
        .as_deref()
        .and_then(|p| workers_status_kb(p, "VmRSS"));
    let pool = generate_pool(&args)?;
    let ticks_per_sec = clock_ticks_per_sec();

    eprintln!(
        "ingest_load: {} connections -> {} | {} records/request (~{:.0} B each, {} body ~{:.1} KiB{}) | {} s{}{}",
        args.connections,
        match args.protocol {
            Protocol::OtlpGrpc => format!("{} {}", target.addr, otlp::GRPC_METHOD),
            _ => target.uri.to_string(),
        },
        args.batch,
        pool.record_bytes,
        match (args.protocol, args.format) {
            (Protocol::Json, Format::Json) => "JSON array".to_string(),
            (Protocol::Json, Format::Ndjson) => "NDJSON".to_string(),
            (protocol, _) => format!(
                "{} protobuf ({:.1} ResourceLogs, one per service)",
                if protocol == Protocol::OtlpGrpc { "OTLP/gRPC" } else { "OTLP/HTTP" },
                pool.resources
            ),
        },
        pool.body_bytes / 1024.0,
        if args.gzip { " gzip" } else { "" },
        args.duration.as_secs_f64(),
        args.requests
            .map(|n| format!(" or {n} requests"))
            .unwrap_or_default(),
        if args.warmup.is_zero() {
            String::new()
        } else {
            format!(" after {} s warm-up", args.warmup.as_secs_f64())
        },
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let now = Instant::now();
        let measure_from = now + args.warmup;
        let plan = Arc::new(Plan {
            target,
            protocol: args.protocol,
            bodies: pool.bodies.clone(),
            content_type: match (args.protocol, args.format) {
                (Protocol::Json, Format::Json) => "application/json",
                (Protocol::Json, Format::Ndjson) => "application/x-ndjson",
                // Unused by gRPC, which sets its own.
                _ => otlp::HTTP_CONTENT_TYPE,
            },
            gzip: args.gzip,
            timeout: args.timeout,
            batch: args.batch as u64,
            measure_from,
            deadline: measure_from + args.duration,
            limit: args.requests,
            claimed: AtomicU64::new(0),
            schedule: match (args.rate, args.pacing) {
                (None, _) => Schedule::Unpaced,
                (Some(r), Pacing::Shared) => Schedule::Shared {
                    every: Duration::from_secs_f64(1.0 / r),
                },
                (Some(r), Pacing::PerConnection) => Schedule::PerConnection {
                    every: Duration::from_secs_f64(args.connections as f64 / r),
                },
            },
            next_slot: AtomicU64::new(0),
            start: Instant::now(),
            connections: args.connections,
        });
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| tokio::spawn(drive_connection(plan.clone(), i)))
            .collect();

        tokio::time::sleep_until(measure_from).await;
        let started = Instant::now();
        let worker_cpu0 = match &worker_pid {
            Some(pid) => Some(workers_cpu_ticks(pid)?),
            None => None,
        };
        let self_cpu0 = cpu_ticks("self")?;
        let steal0 = steal_ticks();
        let clickhouse_pid = args.clickhouse_pid.map(|p| p.to_string());
        let clickhouse_cpu0 = clickhouse_pid.as_deref().and_then(|p| cpu_ticks(p).ok());
        let clickhouse_table = args
            .clickhouse_url
            .as_deref()
            .zip(args.clickhouse_table.as_deref());
        let rows_now = || async move {
            let (url, table) = clickhouse_table?;
            clickhouse_count(url, table).await.ok()
        };
        let rows0 = rows_now().await;

        let mut warm = Tally::default();
        let mut measured = Tally::default();
        for t in tasks {
            let (w, m) = t.await?;
            warm.merge(w);
            measured.merge(m);
        }
        let elapsed = started.elapsed();
        let rows1 = rows_now().await;
        let worker_cpu = match (&worker_pid, worker_cpu0) {
            (Some(pid), Some(c0)) => Some(
                workers_cpu_ticks(pid)
                    .map(|c1| (c1.0.saturating_sub(c0.0)) as f64 / ticks_per_sec)
                    .with_context(|| format!("worker {pid} exited during the run"))?,
            ),
            _ => None,
        };
        let self_cpu = (cpu_ticks("self")?.0.saturating_sub(self_cpu0.0)) as f64 / ticks_per_sec;
        let steal = steal0
            .zip(steal_ticks())
            .map(|(s0, s1)| s1.saturating_sub(s0) as f64 / ticks_per_sec);
        let clickhouse_cpu = match (clickhouse_pid.as_deref(), clickhouse_cpu0) {
            (Some(pid), Some(c0)) => cpu_ticks(pid)
                .ok()
                .map(|c1| c1.0.saturating_sub(c0.0) as f64 / ticks_per_sec),
            _ => None,
        };

        if let Some(path) = &args.latency_log {
            write_latency_log(path, &measured)
                .with_context(|| format!("writing --latency-log {path}"))?;
        }
        let acknowledged = warm.accepted + measured.accepted;
        let clickhouse = match clickhouse_table {
            Some((url, table)) => Some(
                settled_count(
                    url,
                    table,
                    acknowledged,
                    Duration::from_secs(30),
                    Duration::from_secs(600),
                )
                .await
                .context("counting rows in ClickHouse")?,
            ),
            _ => None,
        };
        let mut report = Report::new(
            &args,
            &pool,
            warm,
            measured,
            elapsed,
            worker_pid.as_deref(),
            worker_cpu,
            self_cpu,
            clickhouse_cpu,
            clickhouse,
        );
        report.delivered_during = rows0.zip(rows1).map(|(r0, r1)| r1.saturating_sub(r0));
        report.host_steal_s = steal;
        report.worker_rss_before = rss_before;
        anyhow::Ok(report)
    })?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        report.print();
    }
    Ok(report.exit_code(args.allow_failures, args.backpressure_ok))
}

/// `--latency-log`: "start_ms latency_us" per accepted request, in start order.
fn write_latency_log(path: &str, measured: &Tally) -> std::io::Result<()> {
    let mut rows: Vec<(u32, u32)> = measured
        .started_ms
        .iter()
        .copied()
        .zip(measured.latencies_us.iter().copied())
        .collect();
    rows.sort_unstable();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "# start_ms latency_us")?;
    for (start, latency) in rows {
        writeln!(out, "{start} {latency}")?;
    }
    out.flush()
}

/// Width of the windows of [`Report::window_p99_ms`].
const WINDOW_MS: u32 = 10_000;

/// p99 per [`WINDOW_MS`] of scheduled start; empty for runs shorter than two windows.
fn window_p99_ms(measured: &Tally) -> Vec<Option<f64>> {
    let last = measured.started_ms.iter().copied().max().unwrap_or(0);
    let windows = (last / WINDOW_MS + 1) as usize;
    if windows < 2 {
        return Vec::new();
    }
    let mut by_window = vec![Vec::new(); windows];
    for (&start, &latency) in measured.started_ms.iter().zip(&measured.latencies_us) {
        by_window[(start / WINDOW_MS) as usize].push(latency);
    }
    by_window
        .into_iter()
        .map(|mut w| {
            w.sort_unstable();
            percentile_ms(&w, 99.0)
        })
        .collect()
}

/// Percentile `p` (0..100) of sorted µs values, in ms.
fn percentile_ms(sorted_us: &[u32], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    Some(f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0)
}

struct Report {
    protocol: Protocol,
    connections: usize,
    /// `--rate`, requests/s offered.
    offered_rps: Option<f64>,
    pacing: Pacing,
    batch: usize,
    record_bytes: f64,
    elapsed: Duration,
    warm: Tally,
    measured: Tally,
    sorted_latencies_us: Vec<u32>,
    sorted_lags_us: Vec<u32>,
    /// p99 of the requests scheduled in each [`WINDOW_MS`] of the run, in ms: how the
    /// tail drifts in a long run (ClickHouse's merges and writeback grow with it).
    window_p99_ms: Vec<Option<f64>>,
    worker_pid: Option<String>,
    worker_cpu_s: Option<f64>,
    worker_peak_rss: Option<u64>,
    worker_rss: Option<u64>,
    /// VmRSS before the load began.
    worker_rss_before: Option<u64>,
    generator_cpu_s: f64,
    clickhouse_cpu_s: Option<f64>,
    clickhouse_rows: Option<u64>,
    /// Rows ClickHouse gained during the measured interval: what the whole pipeline
    /// sustains, which a closed loop can exceed while the spool absorbs the rest.
    delivered_during: Option<u64>,
    /// CPU time the hypervisor gave to others while this VM's CPUs wanted to run
    /// (`steal` in /proc/stat) during the measured interval: a run with a lot of it
    /// measured the host, not the worker.
    host_steal_s: Option<f64>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn new(
        args: &Args,
        pool: &Pool,
        warm: Tally,
        mut measured: Tally,
        elapsed: Duration,
        worker_pid: Option<&str>,
        worker_cpu_s: Option<f64>,
        generator_cpu_s: f64,
        clickhouse_cpu_s: Option<f64>,
        clickhouse_rows: Option<u64>,
    ) -> Report {
        let window_p99_ms = window_p99_ms(&measured);
        let mut sorted = std::mem::take(&mut measured.latencies_us);
        sorted.sort_unstable();
        let mut lags = std::mem::take(&mut measured.lags_us);
        lags.sort_unstable();
        Report {
            protocol: args.protocol,
            connections: args.connections,
            offered_rps: args.rate,
            pacing: args.pacing,
            batch: args.batch,
            record_bytes: pool.record_bytes,
            elapsed,
            warm,
            measured,
            sorted_latencies_us: sorted,
            sorted_lags_us: lags,
            window_p99_ms,
            worker_pid: worker_pid.map(str::to_string),
            worker_cpu_s,
            worker_peak_rss: worker_pid.and_then(|p| workers_status_kb(p, "VmHWM")),
            worker_rss: worker_pid.and_then(|p| workers_status_kb(p, "VmRSS")),
            worker_rss_before: None,
            generator_cpu_s,
            clickhouse_cpu_s,
            clickhouse_rows,
            delivered_during: None,
            host_steal_s: None,
        }
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile in milliseconds (nearest rank).
    fn percentile_ms(&self, p: f64) -> Option<f64> {
        percentile_ms(&self.sorted_latencies_us, p)
    }

    fn acknowledged(&self) -> u64 {
        self.warm.accepted + self.measured.accepted
    }

    fn lost(&self) -> Option<u64> {
        self.clickhouse_rows
            .map(|rows| self.acknowledged().saturating_sub(rows))
    }

    fn cpu_per_million(&self) -> Option<f64> {
        let cpu = self.worker_cpu_s?;
        (self.measured.accepted > 0).then(|| cpu / (self.measured.accepted as f64 / 1e6))
    }

    /// Failed requests that count against the run: all of them, or with
    /// `--backpressure-ok` those refused otherwise than by backpressure.
    fn failed_against(&self, backpressure_ok: bool) -> u64 {
        let failed = self.measured.failed() + self.warm.failed();
        if backpressure_ok {
            failed - self.measured.backpressure() - self.warm.backpressure()
        } else {
            failed
        }
    }

    fn exit_code(&self, allow_failures: bool, backpressure_ok: bool) -> ExitCode {
        if self.measured.ok == 0 || self.lost().unwrap_or(0) > 0 {
            ExitCode::from(1)
        } else if self.failed_against(backpressure_ok) > 0 && !allow_failures {
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        }
    }

    fn to_json(&self) -> Value {
        let m = &self.measured;
        let ms = |p| self.percentile_ms(p);
        json!({
            "protocol": self.protocol.name(),
            "connections": self.connections,
            "offered_requests_per_s": self.offered_rps,
            "batch_records": self.batch,
            "record_bytes_avg": round(self.record_bytes, 1),
            "elapsed_s": round(self.secs(), 3),
            "requests": {
                "sent": m.sent,
                "ok": m.ok,
                "failed": m.failed(),
                "backpressure": m.backpressure(),
                "failed_otherwise": m.failed() - m.backpressure(),
                "failed_by_status": m.by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "failed_by_error": m.by_error,
                "warmup_sent": self.warm.sent,
                "warmup_failed": self.warm.failed(),
                "warmup_backpressure": self.warm.backpressure(),
            },
            "requests_per_s": round(m.ok as f64 / self.secs(), 1),
            "records_per_s": round(m.accepted as f64 / self.secs(), 0),
            "records_accepted": m.accepted,
            "mib_per_s": round(m.bytes as f64 / self.secs() / (1024.0 * 1024.0), 2),
            "latency_ms": {
                "p50": ms(50.0).map(|v| round(v, 3)),
                "p90": ms(90.0).map(|v| round(v, 3)),
                "p99": ms(99.0).map(|v| round(v, 3)),
                "max": self.sorted_latencies_us.last().map(|v| round(f64::from(*v) / 1000.0, 3)),
            },
            "latency_p99_ms_by_10s": self.window_p99_ms.iter().map(|v| v.map(|v| round(v, 3))).collect::<Vec<_>>(),
            "send_lag_ms": (!self.sorted_lags_us.is_empty()).then(|| json!({
                "p50": percentile_ms(&self.sorted_lags_us, 50.0).map(|v| round(v, 3)),
                "p99": percentile_ms(&self.sorted_lags_us, 99.0).map(|v| round(v, 3)),
                "max": self.sorted_lags_us.last().map(|v| round(f64::from(*v) / 1000.0, 3)),
            })),
            "worker": self.worker_pid.as_ref().map(|pid| json!({
                "pid": pid.parse::<u64>().ok(),
                "pids": pid.split(',').filter_map(|p| p.parse::<u64>().ok()).collect::<Vec<_>>(),
                "cpu_s": self.worker_cpu_s.map(|v| round(v, 2)),
                "cores_busy": self.worker_cpu_s.map(|v| round(v / self.secs(), 2)),
                "cpu_s_per_million_records": self.cpu_per_million().map(|v| round(v, 2)),
                "cpu_us_per_record": self.cpu_per_million().map(|v| round(v, 3)),
                "peak_rss_bytes": self.worker_peak_rss,
                "rss_bytes": self.worker_rss,
                "rss_before_load_bytes": self.worker_rss_before,
            })),
            "generator_cpu_s": round(self.generator_cpu_s, 2),
            "clickhouse_cpu_s": self.clickhouse_cpu_s.map(|v| round(v, 2)),
            "host_steal_s": self.host_steal_s.map(|v| round(v, 2)),
            "clickhouse_delivered_records_per_s": self.delivered_during.map(|rows| round(rows as f64 / self.secs(), 0)),
            "clickhouse": self.clickhouse_rows.map(|rows| json!({
                "rows": rows,
                "acknowledged": self.acknowledged(),
                "lost": self.lost(),
                "extra": rows.saturating_sub(self.acknowledged()),
            })),
        })
    }

    fn print(&self) {
        let m = &self.measured;
        let secs = self.secs();
        let mib = 1024.0 * 1024.0;
        let over = match self.protocol {
            Protocol::Json => "",
            Protocol::OtlpHttp => " over OTLP/HTTP (protobuf)",
            Protocol::OtlpGrpc => " over OTLP/gRPC",
        };
        println!("zero-logs ingest load{over}: {} connections, {} records/request (~{:.0} B/record), {:.1} s measured", self.connections, self.batch, self.record_bytes, secs);
        if let Some(rate) = self.offered_rps {
            let pacing = match self.pacing {
                Pacing::Shared => "shared by the connections",
                Pacing::PerConnection => "paced per connection",
            };
            println!("  offered     {rate:.0} requests/s (open loop, {pacing})");
        }
        let success = self.protocol.success();
        println!(
            "  requests    sent {}  ok({success}) {}  failed {}{}",
            m.sent,
            m.ok,
            m.failed(),
            if self.warm.sent > 0 {
                format!(
                    "  (+{} warm-up, {} failed)",
                    self.warm.sent,
                    self.warm.failed()
                )
            } else {
                String::new()
            }
        );
        if !m.by_status.is_empty() {
            let parts: Vec<String> = m
                .by_status
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            println!(
                "  failed by status: {}   ({} of them backpressure: 429/503)",
                parts.join(", "),
                m.backpressure()
            );
            for (status, sample) in &m.samples {
                println!("    {status}: {}", sample.trim());
            }
        }
        if !m.by_error.is_empty() {
            let parts: Vec<String> = m
                .by_error
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            println!("  failed by error:  {}", parts.join(", "));
        }
        println!(
            "  throughput  {:.1} requests/s  {:.0} records/s  {:.2} MiB/s of bodies answered",
            m.ok as f64 / secs,
            m.accepted as f64 / secs,
            m.bytes as f64 / secs / mib
        );
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2} ms"));
        println!(
            "  latency     p50 {}  p90 {}  p99 {}  max {}   ({success} responses)",
            fmt(self.percentile_ms(50.0)),
            fmt(self.percentile_ms(90.0)),
            fmt(self.percentile_ms(99.0)),
            fmt(self
                .sorted_latencies_us
                .last()
                .map(|v| f64::from(*v) / 1000.0)),
        );
        if !self.window_p99_ms.is_empty() {
            let each: Vec<String> = self.window_p99_ms.iter().map(|v| fmt(*v)).collect();
            println!(
                "  p99 by 10 s {}   (the tail's drift over the run)",
                each.join("  ")
            );
        }
        if !self.sorted_lags_us.is_empty() {
            let lag = |p| fmt(percentile_ms(&self.sorted_lags_us, p));
            println!(
                "  send lag    p50 {}  p99 {}  max {}   (generator late against its schedule; in the latency)",
                lag(50.0),
                lag(99.0),
                fmt(self.sorted_lags_us.last().map(|v| f64::from(*v) / 1000.0)),
            );
        }
        if let Some(pid) = &self.worker_pid {
            if let Some(cpu) = self.worker_cpu_s {
                println!(
                    "  worker      pid {pid}: CPU {cpu:.2} s ({:.2} cores){}",
                    cpu / secs,
                    self.cpu_per_million()
                        .map(|c| format!(" = {c:.2} CPU-s per million records = {c:.3} us/record"))
                        .unwrap_or_default()
                );
            }
            let mib_of =
                |v: Option<u64>| v.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / mib));
            println!(
                "              peak RSS (VmHWM{}) {}  RSS now {}  before the load {}",
                if pid.contains(',') {
                    ", largest worker"
                } else {
                    ""
                },
                mib_of(self.worker_peak_rss),
                mib_of(self.worker_rss),
                mib_of(self.worker_rss_before),
            );
        }
        println!(
            "  generator   CPU {:.2} s ({:.2} cores)",
            self.generator_cpu_s,
            self.generator_cpu_s / secs
        );
        if let Some(cpu) = self.clickhouse_cpu_s {
            println!("  clickhouse  CPU {cpu:.2} s ({:.2} cores)", cpu / secs);
        }
        if let Some(steal) = self.host_steal_s {
            println!(
                "  host        steal {steal:.2} s (CPU the hypervisor gave to other guests while this one wanted it)"
            );
        }
        if let Some(rows) = self.delivered_during {
            let accepted = self.measured.accepted;
            println!(
                "  delivered   {:.0} records/s reached ClickHouse during the run; backlog {} by {} records{}",
                rows as f64 / secs,
                if accepted >= rows { "grew" } else { "shrank" },
                accepted.abs_diff(rows),
                if accepted > rows + rows / 20 {
                    " (more accepted than delivered: not sustainable for long)"
                } else {
                    ""
                }
            );
        }
        if let Some(rows) = self.clickhouse_rows {
            let ack = self.acknowledged();
            println!(
                "  clickhouse  {rows} rows for {ack} acknowledged records (incl. warm-up): {} lost, {} extra",
                ack.saturating_sub(rows),
                rows.saturating_sub(ack)
            );
        }
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}
