//! [`Endpoints`]: one [`Sink`] over several ClickHouse endpoints (`CLICKHOUSE_URL`
//! with commas), so that one server going away costs neither requests nor rows.
//!
//! # Policy: least in flight, ties in turn
//!
//! Each INSERT goes to the healthy endpoint with the fewest INSERTs running; among
//! equals the one after the endpoint picked last wins, so an idle or evenly
//! loaded set is served round-robin while a slow server (its INSERTs pile up) gets
//! fewer. Plain round-robin would keep feeding a server that answers slowly.
//!
//! # Health and backoff
//!
//! A transient failure ([`SinkError::Unavailable`]) takes the endpoint out at once
//! (`EVENT=clickhouse_endpoint_down` in the journal, with the redacted URL and the
//! reason) and the same INSERT is tried on the next healthy endpoint within the same
//! call. A probe task per endpoint then pings it under capped exponential backoff with
//! jitter ([`Backoff`], 200 ms doubling to 5 s); the first answer puts it back
//! (`EVENT=clickhouse_endpoint_up`, with how long it was down). An endpoint that was
//! down at start-up is connected by its probe once it answers (version detection,
//! table creation when enabled, table check), so a worker starts with any one
//! endpoint reachable. A permanent refusal ([`SinkError::Rejected`]) is about the rows
//! and is returned as it is, without taking the endpoint out.
//!
//! The whole sink is down (batcher health, `/health`) only when every endpoint is:
//! the batcher asks [`Sink::serves_elsewhere`] after a failed attempt. While none is
//! up, an INSERT is tried on each connected endpoint in turn and the batcher's ping
//! pings each, so its retries and pings reach the servers as they do with a single
//! one (and a single URL behaves as before endpoints existed).
//!
//! # Delivery guarantee
//!
//! A failed INSERT is sent again to another endpoint only where that cannot defeat
//! deduplication:
//! - servers before 22.2 get no deduplication token; a retry on the same server could
//!   store an INSERT that did commit twice just as well as one on another server, so
//!   moving on costs nothing (at-least-once either way);
//! - an INSERT with a token that failed on a server that honours tokens (≥ 22.2) is
//!   *pinned* to that server: its retries go there only (and fail at once while it is
//!   down, the batcher backing off), because the token only deduplicates against what
//!   that server stored. After [`PIN_LIMIT`] of the endpoint being down, the pin is
//!   dropped with a warning and the INSERT moves on: a committed-but-unanswered
//!   attempt may then be stored twice; waiting for ever would hold the spool's frames
//!   for as long as the server is gone.
//!
//! Without `CLICKHOUSE_CLUSTER` every endpoint is an independent server with its own
//! table (created on each when tables are created: `IF NOT EXISTS` makes that safe),
//! and the rows are spread over them: queries must read all of them (or a
//! `Distributed` table over them).

mod board;
mod pin;
mod probe;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::board::{prometheus, EndpointBoard, EndpointStats};
use self::board::{unix_ms, EndpointStatus};
use super::retry::Backoff;
use super::{ClickHouseSink, Sink, SinkError};
use crate::codec::EncodedBatch;
use crate::config::ClickHouseConfig;

/// How long an INSERT stays pinned to a down endpoint that deduplicates by token
/// before it may move on (see the module documentation).
pub const PIN_LIMIT: Duration = Duration::from_secs(60);

/// What the set needs of one endpoint's sink beyond [`Sink`].
pub trait EndpointSink: Sink {
    /// The server's `version()`, for `/stats`.
    fn version(&self) -> String;
    /// Whether the server deduplicates INSERTs by token (≥ 22.2).
    fn sends_dedup_token(&self) -> bool;
}

impl EndpointSink for ClickHouseSink {
    fn version(&self) -> String {
        self.server_version().to_string()
    }

    fn sends_dedup_token(&self) -> bool {
        ClickHouseSink::sends_dedup_token(self)
    }
}

/// Connects one endpoint (start-up checks included); called again by its probe
/// until it succeeds.
pub type Connect<S> = Box<dyn Fn() -> BoxFuture<'static, Result<Arc<S>, SinkError>> + Send + Sync>;

/// One endpoint to start with: its URL without credentials and how to connect it.
pub struct EndpointSpec<S> {
    pub url: String,
    pub connect: Connect<S>,
}

/// The ClickHouse endpoints of a worker.
pub type ClickHouseEndpoints = Endpoints<ClickHouseSink>;

/// A [`Sink`] spreading INSERTs over several endpoints; see the module documentation.
pub struct Endpoints<S> {
    slots: Vec<Slot<S>>,
    board: Arc<EndpointBoard>,
    /// Where the next search for the least loaded endpoint starts: after the last pick.
    next: AtomicUsize,
    /// Token → the endpoint an INSERT with that token must be retried on.
    pins: Mutex<HashMap<String, Pinned>>,
    timing: Timing,
}

/// The set's clock: probe backoff and how long a pin holds.
#[derive(Debug, Clone)]
pub struct Timing {
    pub probe: Backoff,
    pub pin_limit: Duration,
}

impl Default for Timing {
    /// Probes from 200 ms doubling to 5 s: quick to notice a restarted server, gentle
    /// on one that stays away; pins for [`PIN_LIMIT`].
    fn default() -> Timing {
        Timing {
            probe: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            pin_limit: PIN_LIMIT,
        }
    }
}

struct Slot<S> {
    /// `None` until the endpoint was connected (down at start-up).
    sink: RwLock<Option<Arc<S>>>,
    connect: Connect<S>,
    status: Arc<EndpointStatus>,
    /// Wakes the endpoint's probe when it goes down.
    went_down: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Pinned {
    endpoint: usize,
    since: Instant,
}

impl<S> std::fmt::Debug for Endpoints<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("endpoints", &self.board.snapshot())
            .finish_non_exhaustive()
    }
}

impl ClickHouseEndpoints {
    /// Connects every endpoint of `cfg.url` at once and starts with those that answer;
    /// the others are connected by their probes later. Tables are created on each
    /// endpoint when `cfg.create_table` (independent servers); with
    /// `CLICKHOUSE_CLUSTER` only by the first endpoint, whose `ON CLUSTER` DDL creates
    /// them on every host (the others only check that the table is there).
    ///
    /// Errors: the first endpoint's error when none answers (for a single URL exactly
    /// what [`ClickHouseSink::connect`] says), or the refusal of any endpoint that
    /// answered but refused (credentials, table): configuration to fix, not an outage.
    pub async fn connect_all(
        cfg: &ClickHouseConfig,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Arc<ClickHouseEndpoints>, SinkError> {
        let specs = cfg
            .urls()
            .into_iter()
            .enumerate()
            .map(|(index, url)| {
                let cfg = cfg.clone();
                let url = url.to_string();
                let run_ddl = cfg.cluster.is_none() || index == 0;
                EndpointSpec {
                    url: super::clickhouse::redact_url(&url),
                    connect: Box::new(move || {
                        let (cfg, url) = (cfg.clone(), url.clone());
                        Box::pin(async move {
                            ClickHouseSink::connect_endpoint(&cfg, &url, run_ddl)
                                .await
                                .map(Arc::new)
                        })
                    }),
                }
            })
            .collect();
        Endpoints::start(specs, Timing::default(), tracker, stop).await
    }

    /// A connected endpoint that is up, for the statements of the dead-letter table;
    /// else any connected one (its error then says what is wrong).
    pub fn healthy(&self) -> Option<Arc<ClickHouseSink>> {
        let connected = || self.slots.iter().filter_map(Slot::sink);
        let up = self.slots.iter().filter(|s| s.status.is_up());
        up.filter_map(Slot::sink)
            .next()
            .or_else(|| connected().next())
    }

    /// Every connected endpoint's sink, in `CLICKHOUSE_URL` order.
    pub fn connected(&self) -> Vec<Arc<ClickHouseSink>> {
        self.slots.iter().filter_map(Slot::sink).collect()
    }
}

impl<S: EndpointSink> Endpoints<S> {
    /// Connects every endpoint concurrently, fails like the first one when none
    /// answers or when one refuses (see [`connect_all`](Endpoints::connect_all)), and
    /// spawns one probe per endpoint on `tracker`, stopped by `stop`.
    pub async fn start(
        specs: Vec<EndpointSpec<S>>,
        timing: Timing,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Arc<Endpoints<S>>, SinkError> {
        let results = join_all(specs.iter().map(|spec| (spec.connect)())).await;
        if let Some(refusal) = results.iter().find_map(|r| match r {
            Err(e @ SinkError::Rejected { .. }) => Some(e.clone()),
            _ => None,
        }) {
            return Err(refusal);
        }
        if results.iter().all(Result::is_err) {
            let first = results.into_iter().find_map(Result::err);
            return Err(first.unwrap_or(SinkError::Unavailable {
                reason: "CLICKHOUSE_URL names no endpoint".into(),
            }));
        }
        let slots: Vec<Slot<S>> = specs
            .into_iter()
            .zip(results)
            .map(|(spec, result)| Slot::new(spec, result))
            .collect();
        let board = Arc::new(EndpointBoard {
            endpoints: slots.iter().map(|s| Arc::clone(&s.status)).collect(),
        });
        let endpoints = Arc::new(Endpoints {
            slots,
            board,
            next: AtomicUsize::new(0),
            pins: Mutex::new(HashMap::new()),
            timing,
        });
        for i in 0..endpoints.slots.len() {
            tracker.spawn(Arc::clone(&endpoints).probe(i, stop.clone()));
        }
        Ok(endpoints)
    }

    /// The status board, for `/stats` and `/metrics`.
    pub fn board(&self) -> Arc<EndpointBoard> {
        Arc::clone(&self.board)
    }

    /// The version of the first connected endpoint (`/stats`' `clickhouse_version`).
    pub fn first_version(&self) -> String {
        self.slots
            .iter()
            .find_map(Slot::sink)
            .map(|s| s.version())
            .unwrap_or_default()
    }

    /// Whether some connected endpoint that honours tokens may be written to.
    pub fn sends_dedup_token(&self) -> bool {
        self.slots
            .iter()
            .filter_map(Slot::sink)
            .any(|s| s.sends_dedup_token())
    }

    async fn insert_spread(
        &self,
        batches: &[EncodedBatch],
        token: Option<&str>,
    ) -> Result<(), SinkError> {
        if let Some(i) = token.and_then(|t| self.pinned(t)) {
            let result = self.attempt(i, batches, token).await;
            if !matches!(result, Err(SinkError::Unavailable { .. })) {
                self.unpin(token);
            }
            return result;
        }
        let mut tried = vec![false; self.slots.len()];
        while let Some(i) = self.pick(&tried) {
            tried[i] = true;
            if let Some(result) = self.try_on(i, batches, token).await {
                return result;
            }
        }
        if !tried.contains(&true) {
            // None was up: the batcher's retries are then also the probes, paced by its
            // backoff, as with a single server.
            for i in 0..self.slots.len() {
                if let Some(result) = self.try_on(i, batches, token).await {
                    return result;
                }
            }
        }
        Err(self.all_down())
    }

    /// One attempt on endpoint `i`: `None` when it failed transiently and the INSERT
    /// may move on to another endpoint; else the INSERT's outcome (pinning it to `i`
    /// when its token needs that server).
    async fn try_on(
        &self,
        i: usize,
        batches: &[EncodedBatch],
        token: Option<&str>,
    ) -> Option<Result<(), SinkError>> {
        // Not connected yet (down since start-up): its probe connects it.
        self.slots[i].sink()?;
        match self.attempt(i, batches, token).await {
            Err(SinkError::Unavailable { reason }) => {
                let token = token.filter(|_| self.slots[i].dedups())?;
                self.pin(token, i);
                Some(Err(SinkError::Unavailable {
                    reason: format!(
                        "{reason}; retried on the same endpoint only, where its \
                         deduplication token applies"
                    ),
                }))
            }
            other => Some(other),
        }
    }

    /// The healthy endpoint not yet `tried` with the fewest INSERTs in flight, the
    /// search starting after the endpoint picked last (so that ties take turns even
    /// when some endpoints are out).
    fn pick(&self, tried: &[bool]) -> Option<usize> {
        let n = self.slots.len();
        let start = self.next.load(Relaxed) % n;
        let mut best: Option<(usize, u64)> = None;
        for i in (start..n).chain(0..start) {
            let slot = &self.slots[i];
            if tried[i] || !slot.status.is_up() {
                continue;
            }
            let load = slot.status.inflight.load(Relaxed);
            if best.is_none_or(|(_, least)| load < least) {
                best = Some((i, load));
            }
        }
        let (chosen, _) = best?;
        // Racy between concurrent picks on purpose: at worst two take the same turn.
        self.next.store(chosen + 1, Relaxed);
        Some(chosen)
    }

    /// One INSERT on endpoint `i`, counted, its health updated.
    async fn attempt(
        &self,
        i: usize,
        batches: &[EncodedBatch],
        token: Option<&str>,
    ) -> Result<(), SinkError> {
        let slot = &self.slots[i];
        let status = &slot.status;
        let Some(sink) = slot.sink() else {
            return Err(SinkError::Unavailable {
                reason: format!("ClickHouse at {} is not connected yet", status.url),
            });
        };
        status.inflight.fetch_add(1, Relaxed);
        let _inflight = Inflight(status);
        let was_up = status.is_up();
        let result = sink.insert(batches, token).await;
        match &result {
            Ok(()) => {
                let rows: usize = batches.iter().map(EncodedBatch::len).sum();
                status.inserts.fetch_add(1, Relaxed);
                status.rows_inserted.fetch_add(rows as u64, Relaxed);
                // Only an attempt begun while the endpoint was down proves it back: one
                // begun before another INSERT failed there may have finished just before
                // the server went away, and would make the state flap.
                if !was_up {
                    self.mark_up(i, &sink.version());
                }
            }
            Err(SinkError::Unavailable { reason }) => {
                status.insert_failures.fetch_add(1, Relaxed);
                self.mark_down(i, reason);
            }
            Err(SinkError::Rejected { .. }) => {
                status.insert_failures.fetch_add(1, Relaxed);
            }
            Err(SinkError::Closed) => {}
        }
        result
    }

    fn up_count(&self) -> usize {
        self.slots.iter().filter(|s| s.status.is_up()).count()
    }

    fn mark_down(&self, i: usize, reason: &str) {
        let slot = &self.slots[i];
        let status = &slot.status;
        {
            let mut state = status.lock();
            state.reason = Some(reason.to_string());
            if !status.is_up() {
                return;
            }
            status.up.store(false, Relaxed);
            state.since_unix_ms = unix_ms();
        }
        tracing::warn!(
            event = "clickhouse_endpoint_down",
            endpoint = %status.url,
            reason = %reason,
            endpoints_up = self.up_count(),
            endpoints = self.slots.len(),
            "ClickHouse endpoint {} is down; INSERTs go to the others while it is probed",
            status.url
        );
        slot.went_down.notify_one();
    }

    fn mark_up(&self, i: usize, version: &str) {
        let status = &self.slots[i].status;
        let down_ms = {
            let mut state = status.lock();
            state.version = version.to_string();
            if status.is_up() {
                return;
            }
            status.up.store(true, Relaxed);
            state.reason = None;
            let now = unix_ms();
            let down_ms = now.saturating_sub(state.since_unix_ms);
            state.since_unix_ms = now;
            down_ms
        };
        tracing::info!(
            event = "clickhouse_endpoint_up",
            endpoint = %status.url,
            version = %version,
            down_ms,
            endpoints_up = self.up_count(),
            endpoints = self.slots.len(),
            "ClickHouse endpoint {} is back after {down_ms} ms",
            status.url
        );
    }

    /// Why the whole set is down: every endpoint's reason.
    fn all_down(&self) -> SinkError {
        let reasons: Vec<String> = self
            .slots
            .iter()
            .map(|s| {
                let reason = s.status.lock().reason.clone();
                format!("{}: {}", s.status.url, reason.as_deref().unwrap_or("down"))
            })
            .collect();
        let reason = match reasons.as_slice() {
            [one] => one.clone(),
            _ => format!(
                "all {} ClickHouse endpoints are down ({})",
                reasons.len(),
                reasons.join("; ")
            ),
        };
        SinkError::Unavailable { reason }
    }
}

impl<S: EndpointSink> Slot<S> {
    fn new(spec: EndpointSpec<S>, connected: Result<Arc<S>, SinkError>) -> Slot<S> {
        let (sink, status) = match connected {
            Ok(sink) => {
                let status = EndpointStatus::new(spec.url, true, sink.version(), None);
                (Some(sink), status)
            }
            Err(error) => {
                tracing::warn!(
                    event = "clickhouse_endpoint_down",
                    endpoint = %spec.url,
                    reason = %error,
                    "ClickHouse endpoint {} is down at start-up; it is connected once it \
                     answers",
                    spec.url
                );
                let status = EndpointStatus::new(spec.url, false, String::new(), None);
                status.lock().reason = Some(error.to_string());
                (None, status)
            }
        };
        Slot {
            sink: RwLock::new(sink),
            connect: spec.connect,
            status: Arc::new(status),
            went_down: Notify::new(),
        }
    }

    fn sink(&self) -> Option<Arc<S>> {
        self.sink
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn dedups(&self) -> bool {
        self.sink().is_some_and(|s| s.sends_dedup_token())
    }
}

/// Counts an INSERT in flight on an endpoint until dropped (even when cancelled).
struct Inflight<'a>(&'a EndpointStatus);

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

impl<S: EndpointSink> Sink for Endpoints<S> {
    fn insert(
        &self,
        batches: &[EncodedBatch],
        token: Option<&str>,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.insert_spread(batches, token)
    }

    /// Up while any endpoint is; else pings the connected ones.
    fn ping(&self) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.ping_all()
    }

    fn serves_elsewhere(&self) -> bool {
        self.up_count() > 0
    }
}
