//! zero-logs: a log-ingestion worker for systemd hosts.
//!
//! # Layout
//!
//! - [`config`]: the settings table (every setting declared once: variable, flag,
//!   default, parser, doc), the one typed `Config` built from flags, environment and
//!   env files, and what is rendered from the table (env file, README tables).
//! - [`listen`]: systemd's inherited sockets, or bound addresses.
//! - [`serve`]: accept loops, HTTP/1.1 + h2c per connection, balancing across
//!   instances, connection max age, graceful close.
//! - [`tls`]: TLS on the ingest listeners (rustls): which listeners, the handshake
//!   in each connection's task, certificate reload on file change or SIGHUP.
//! - [`ingest`]: one router for HTTP/1.1, h2c and gRPC (gRPC told apart by content
//!   type; JSON 404/405 for the rest): the native API and OTLP logs over both wires;
//!   body caps, decompression, the wait for the acknowledgement (spool or INSERT),
//!   refusals mapped to both wires.
//! - [`proto`]: the native gRPC API (`proto/zerologs/v1/logs.proto`), generated.
//! - [`admission`]: the one place the ingest asks whether a request may enter —
//!   in-flight bytes, spool cap, queued rows.
//! - [`auth`]: API keys in front of the router (`Authorization: Bearer`, gRPC
//!   `authorization`), each key's services, rates and spool share; the key file and
//!   its reloads; docs/SECURITY.md.
//! - [`validate`]: pure decoding and validation of request bodies; OTLP
//!   `LogRecord`s mapped to rows record by record (`validate::otlp`).
//! - [`record`]: `Record`, `Level`, `Batch` — the validated row type — and
//!   `format_rfc3339`, its timestamps as text.
//! - [`codec`]: `EncodedBatch`, the compact form a batch keeps from validation to the
//!   INSERT (spool frames, batcher queue, sink rows).
//! - [`sink`]: batching and the ClickHouse inserter (DDL by server version).
//! - [`spool`]: durable per-instance spool (the acknowledgement point with
//!   `ACK_MODE=spool`): group-committed appends, replay, quarantine of corrupt
//!   frames, adoption of orphaned spools.
//! - [`feeder`]: spool → batcher delivery, acks back into the spool, adoption rounds.
//! - [`admin`]: `/health`, `/stats`, `/metrics`, also on a per-instance unix socket.
//! - [`stats`]: live counters, the `/stats` body and the metric registry (every metric
//!   declared once) that `/metrics` is rendered from.
//! - [`latency`]: `LatencyHistogram`, quantiles of recent durations (requests, spool
//!   commits) for `/stats` and `/metrics`.
//! - [`notify`]: `sd_notify` messages to systemd.
//! - [`telemetry`]: journald or stderr logging.
//! - [`sched`]: the short CPU slice the worker's threads run with (wake-up latency).
//! - [`watchdog`]: `WATCHDOG=1` from runtime and flusher heartbeats, `STATUS=`,
//!   graceful restart above `WORKER_MEMORY_LIMIT`.
//! - [`worker`]: `zero-logs serve` and `zero-logs config`; builds it all from
//!   `Config` (`Worker::build`), serves, drains on SIGTERM (`Worker::drain`).
//! - [`ctl`]: `zero-logs-ctl` — status, stats, health, scale, rolling restart via
//!   systemd's D-Bus API, and the management daemon (HTTP API, health watchdog).
//! - `test_hooks` (feature `test-hooks`, never in packages): fault injection for the
//!   system tests (stalled flusher, memory growth, unanswered `/health`).
//! - `testing` (feature `test-support`): test fixtures — a private ClickHouse server
//!   per test, `MemorySink`.
// `deny`, not `forbid`: `sched` holds the one audited exception (two syscalls).
#![deny(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod auth;
pub mod codec;
pub mod config;
pub mod ctl;
pub mod feeder;
// Entry points of the fuzz targets and their regression tests (docs/FUZZING.md).
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod latency;
pub mod listen;
pub mod notify;
pub mod proto;
pub mod record;
pub mod sched;
pub mod serve;
pub mod sink;
pub mod spool;
pub mod stats;
pub mod telemetry;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod tls;
pub mod validate;
pub mod watchdog;
pub mod worker;

#[cfg(feature = "test-support")]
pub mod testing;
