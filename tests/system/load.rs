//! A bounded loopback load generator: N concurrent HTTP clients posting small JSON
//! batches to `<base>/api/v1/logs`, counting acknowledged records and failed
//! requests (anything but `202`, and connection errors or timeouts).
//!
//! The worker does not say which instance answered; the per-instance spread comes
//! from each instance's `/stats` ([`SystemdContainer::spread`](super::SystemdContainer::spread)).
//! Every record carries `service = spec.service`, so ClickHouse rows of one run can
//! be counted (`SELECT count() FROM db.logs WHERE service = '…'`) and compared with
//! [`LoadReport::acknowledged_records`].
//!
//! Bounds: at most [`MAX_DURATION`] and `max_requests_per_client` per client; each
//! request times out after `request_timeout`. Must run inside a tokio runtime; use a
//! multi-thread runtime when the test also runs blocking container commands meanwhile.
//!
//! With `fresh_connections` every request opens a new TCP connection (and sends
//! `Connection: close`), so the load spreads over the instances' `accept`s; loopback
//! TIME_WAIT reuse (`net.ipv4.tcp_tw_reuse=2`, the default) keeps the client ports
//! from running out at a few thousand connections per second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Longest run allowed.
pub const MAX_DURATION: Duration = Duration::from_secs(300);
/// Most clients allowed.
pub const MAX_CLIENTS: usize = 256;
/// Width of one [`LoadReport::timeline`] bucket.
pub const TIMELINE_BUCKET: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub clients: usize,
    pub records_per_request: usize,
    /// Upper bound of the run (stop earlier with [`RunningLoad::stop`]).
    pub duration: Duration,
    pub max_requests_per_client: u64,
    /// `service` of every record.
    pub service: String,
    /// A new TCP connection per request instead of keep-alive.
    pub fresh_connections: bool,
    pub request_timeout: Duration,
    /// Pause between two requests of one client.
    pub pause: Duration,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            clients: 4,
            records_per_request: 10,
            duration: Duration::from_secs(5),
            max_requests_per_client: 100_000,
            service: "system-load".into(),
            fresh_connections: false,
            request_timeout: Duration::from_secs(30),
            pause: Duration::ZERO,
        }
    }
}

impl LoadSpec {
    /// `clients` sending 10-record requests of `service` for up to 120 s (the test
    /// stops it), each on a fresh connection: spreads over every instance's accept,
    /// and never reuses a connection a stopping worker is closing.
    pub fn fresh(service: &str, clients: usize) -> LoadSpec {
        LoadSpec {
            clients,
            duration: Duration::from_secs(120),
            service: service.to_string(),
            fresh_connections: true,
            ..LoadSpec::default()
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub requests: u64,
    pub acknowledged_requests: u64,
    pub acknowledged_records: u64,
    /// Requests not answered `202` (other statuses and errors).
    pub failed_requests: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Transport failures by kind (`connect`, `timeout`, `closed`, `other`).
    pub errors: BTreeMap<String, u64>,
    /// Up to 10 examples of failures (`+<ms since the load started, when the
    /// request was sent> <what>`), for messages.
    pub samples: Vec<String>,
    pub elapsed: Duration,
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub latency_max: Duration,
    /// Acknowledged requests per [`TIMELINE_BUCKET`] since the start, by when
    /// their answer came: shows pauses (restarts, stalls) in the throughput.
    pub timeline: Vec<u64>,
}

impl LoadReport {
    pub fn summary(&self) -> String {
        format!(
            "{} requests in {:.1} s ({:.0}/s): {} acknowledged ({} records), {} failed; \
             statuses {:?}, errors {:?}; latency p50 {:?} p99 {:?} max {:?}{}",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.acknowledged_requests,
            self.acknowledged_records,
            self.failed_requests,
            self.statuses,
            self.errors,
            self.latency_p50,
            self.latency_p99,
            self.latency_max,
            if self.samples.is_empty() {
                String::new()
            } else {
                format!("; e.g. {:?}", self.samples)
            }
        )
    }

    /// The timeline as `+0.0s:12 +0.5s:30 …`.
    pub fn timeline(&self) -> String {
        self.timeline
            .iter()
            .enumerate()
            .map(|(i, n)| format!("+{:.1}s:{n}", (TIMELINE_BUCKET * i as u32).as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn assert_no_failures(&self) {
        assert_eq!(self.failed_requests, 0, "{}", self.summary());
        assert!(self.requests > 0, "no request was made: {}", self.summary());
    }
}

#[derive(Default)]
struct Tally {
    requests: u64,
    acknowledged: u64,
    records: u64,
    failed: u64,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    samples: Vec<String>,
    latencies_us: Vec<u32>,
    timeline: Vec<u64>,
}

/// A load in progress.
pub struct RunningLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    started: Instant,
}

/// Starts `spec.clients` clients against `base_url` (`http://127.0.0.1:PORT`).
pub fn start(base_url: &str, spec: LoadSpec) -> RunningLoad {
    assert!(
        (1..=MAX_CLIENTS).contains(&spec.clients),
        "clients must be 1..={MAX_CLIENTS}"
    );
    assert!(
        spec.duration <= MAX_DURATION,
        "a load runs at most {MAX_DURATION:?}"
    );
    assert!(spec.records_per_request > 0);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + spec.duration;
    let url = format!("{}/api/v1/logs", base_url.trim_end_matches('/'));
    let tasks = (0..spec.clients)
        .map(|client| {
            let spec = spec.clone();
            let stop = Arc::clone(&stop);
            let url = url.clone();
            tokio::spawn(
                async move { client_loop(client, url, spec, stop, started, deadline).await },
            )
        })
        .collect();
    RunningLoad {
        stop,
        tasks,
        started,
    }
}

/// Starts a load and waits for its bounds.
pub async fn run(base_url: &str, spec: LoadSpec) -> LoadReport {
    start(base_url, spec).wait().await
}

impl RunningLoad {
    /// When the clients started (failure samples count from here).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Asks every client to stop after its current request; returns the report.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.wait().await
    }

    /// Waits until the duration or request bound ends the run.
    pub async fn wait(self) -> LoadReport {
        let mut report = LoadReport::default();
        let mut latencies = Vec::new();
        for task in self.tasks {
            let t = task.await.expect("load client task panicked");
            report.requests += t.requests;
            report.acknowledged_requests += t.acknowledged;
            report.acknowledged_records += t.records;
            report.failed_requests += t.failed;
            for (k, v) in t.statuses {
                *report.statuses.entry(k).or_default() += v;
            }
            for (k, v) in t.errors {
                *report.errors.entry(k).or_default() += v;
            }
            for s in t.samples {
                if report.samples.len() < 10 {
                    report.samples.push(s);
                }
            }
            latencies.extend(t.latencies_us);
            if report.timeline.len() < t.timeline.len() {
                report.timeline.resize(t.timeline.len(), 0);
            }
            for (i, n) in t.timeline.into_iter().enumerate() {
                report.timeline[i] += n;
            }
        }
        report.elapsed = self.started.elapsed();
        latencies.sort_unstable();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(Duration::ZERO, |us| Duration::from_micros(u64::from(*us)))
        };
        report.latency_p50 = pick(0.50);
        report.latency_p99 = pick(0.99);
        report.latency_max = latencies
            .last()
            .map_or(Duration::ZERO, |us| Duration::from_micros(u64::from(*us)));
        report
    }
}

fn body(service: &str, client: usize, request: u64, records: usize) -> Bytes {
    let records: Vec<serde_json::Value> = (0..records)
        .map(|i| {
            serde_json::json!({
                "level": "info",
                "service": service,
                "message": format!("load c{client} r{request} i{i}"),
                "attributes": {"client": client, "request": request, "i": i},
            })
        })
        .collect();
    Bytes::from(serde_json::to_vec(&records).expect("json"))
}

async fn client_loop(
    client: usize,
    url: String,
    spec: LoadSpec,
    stop: Arc<AtomicBool>,
    started: Instant,
    deadline: Instant,
) -> Tally {
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(if spec.fresh_connections { 0 } else { 4 })
        .build_http();
    let mut tally = Tally::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed)
        && Instant::now() < deadline
        && n < spec.max_requests_per_client
    {
        let mut req = http::Request::post(&url).header("content-type", "application/json");
        if spec.fresh_connections {
            req = req.header("connection", "close");
        }
        let req = req
            .body(Full::new(body(
                &spec.service,
                client,
                n,
                spec.records_per_request,
            )))
            .expect("request");
        n += 1;
        tally.requests += 1;
        let sent = Instant::now();
        let outcome = tokio::time::timeout(spec.request_timeout, async {
            let resp = http.request(req).await.map_err(|e| {
                let kind = if e.is_connect() { "connect" } else { "other" };
                (kind, format!("{e:?}"))
            })?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ("closed", e.to_string()))?
                .to_bytes();
            Ok::<_, (&str, String)>((status, bytes))
        })
        .await
        .unwrap_or_else(|_| {
            Err((
                "timeout",
                format!("no answer within {:?}", spec.request_timeout),
            ))
        });
        tally
            .latencies_us
            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        match outcome {
            Ok((status, bytes)) => {
                *tally.statuses.entry(status).or_default() += 1;
                let accepted = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("accepted")?.as_u64());
                if status == 202 && accepted == Some(spec.records_per_request as u64) {
                    tally.acknowledged += 1;
                    tally.records += spec.records_per_request as u64;
                    let bucket =
                        (started.elapsed().as_millis() / TIMELINE_BUCKET.as_millis()) as usize;
                    if tally.timeline.len() <= bucket {
                        tally.timeline.resize(bucket + 1, 0);
                    }
                    tally.timeline[bucket] += 1;
                } else {
                    tally.failed += 1;
                    if tally.samples.len() < 3 {
                        tally.samples.push(format!(
                            "+{} ms HTTP {status}: {}",
                            sent.duration_since(started).as_millis(),
                            String::from_utf8_lossy(&bytes)
                                .chars()
                                .take(200)
                                .collect::<String>()
                        ));
                    }
                }
            }
            Err((kind, message)) => {
                tally.failed += 1;
                *tally.errors.entry(kind.to_string()).or_default() += 1;
                if tally.samples.len() < 3 {
                    tally.samples.push(format!(
                        "+{} ms {kind}: {}",
                        sent.duration_since(started).as_millis(),
                        message.chars().take(300).collect::<String>()
                    ));
                }
            }
        }
        if !spec.pause.is_zero() {
            tokio::time::sleep(spec.pause).await;
        }
    }
    tally
}
