//! zero-logs: a log-ingestion worker for systemd hosts.
//!
//! # Layout
//!
//! - [`config`]: the one typed `Config`, from flags and environment.
//! - [`listen`]: systemd's inherited sockets, or bound addresses.
//! - [`serve`]: accept loops, HTTP/1.1 + h2c per connection, balancing across
//!   instances, connection max age, graceful close.
//! - [`ingest`]: one router for HTTP/1.1, h2c and gRPC; body caps, decompression,
//!   admission, refusals mapped to both wires.
//! - [`validate`]: pure decoding and validation of request bodies.
//! - [`record`]: `Record`, `Level`, `Batch` — the validated row type.
//! - [`codec`]: `EncodedBatch`, the compact form a batch keeps from validation to the
//!   INSERT (spool frames, batcher queue, sink rows).
//! - [`sink`]: batching and the ClickHouse inserter (DDL by server version).
//! - [`spool`]: durable per-instance spool (the acknowledgement point with
//!   `ACK_MODE=spool`): group-committed appends, replay, quarantine of corrupt
//!   frames, adoption of orphaned spools.
//! - [`feeder`]: spool → batcher delivery, acks back into the spool, adoption rounds.
//! - [`admin`]: `/health`, `/stats`, `/metrics`, also on a per-instance unix socket.
//! - [`stats`]: live counters.
//! - [`notify`]: `sd_notify` messages to systemd.
//! - [`telemetry`]: journald or stderr logging.
//! - [`sched`]: the short CPU slice the worker's threads run with (wake-up latency).
//! - [`watchdog`]: `WATCHDOG=1` from runtime and flusher heartbeats, `STATUS=`,
//!   graceful restart above `WORKER_MEMORY_LIMIT`.
//! - [`worker`]: builds it all from `Config`, serves, drains on SIGTERM.
//! - [`ctl`]: `zero-logs-ctl` — status, stats, health, scale, rolling restart via systemd's D-Bus API.
// `deny`, not `forbid`: `sched` holds the one audited exception (two syscalls).
#![deny(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod codec;
pub mod config;
pub mod ctl;
pub mod feeder;
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
pub mod validate;
pub mod watchdog;
pub mod worker;

#[cfg(feature = "test-support")]
pub mod testing;
