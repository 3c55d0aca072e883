//! Who may send: API keys (`Authorization: Bearer`), the services each key may
//! write, and each key's limits. Owns the key file's current version, the per-key
//! state (counters, token buckets, spool share) and the start-up rule that a
//! non-loopback listener needs keys.
//!
//! - [`keys`]: the file format, its permission rule, the constant-time lookup;
//! - [`limits`]: token buckets and the spool share;
//! - [`reload`]: re-reading the file on change and on SIGHUP;
//! - [`services`]: the service restriction, on native batches and OTLP requests;
//! - [`guard`]: the middleware in front of the whole router (HTTP and gRPC share
//!   the `authorization` header), and the refusals in each dialect's form.
//!
//! The check costs one SHA-256 of the token and one pass over the stored digests
//! per request; records are only looked at for a key restricted to some services.
//! docs/SECURITY.md is the threat model this implements.

pub mod guard;
pub mod keys;
pub mod limits;
pub mod reload;
pub mod services;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use serde::Serialize;

use crate::spool::Spool;
use keys::{KeyDef, KeyFileError, KeySet};
use limits::{Buckets, KeyLimits, Limited, SpoolShare};

/// `INGEST_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Keys when the key file exists; without it, open on loopback and a start-up
    /// error on any other address.
    Auto,
    /// The key file must exist and be valid.
    Keys,
    /// No authentication anywhere (a warning when a listener is not loopback).
    None,
}

impl AuthMode {
    pub fn parse(text: &str) -> Result<AuthMode, String> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(AuthMode::Auto),
            "keys" => Ok(AuthMode::Keys),
            "none" => Ok(AuthMode::None),
            _ => Err("expected auto, keys or none".into()),
        }
    }
}

/// The auth settings (section "authentication" of the env file).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub keys_file: PathBuf,
    /// Limits of keys whose line sets none.
    pub defaults: KeyLimits,
}

/// Why a worker does not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("listening on {addrs} (not loopback) without API keys: anyone who reaches the port could write; add keys in {path} (docs/SECURITY.md) or set INGEST_AUTH=none to accept unauthenticated senders")]
    OpenToNetwork { addrs: String, path: PathBuf },
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
}

/// What the start-up rule decided.
#[derive(Debug)]
pub enum Decision {
    Open,
    Keys(Vec<KeyDef>),
}

/// The start-up rule for listeners on `addrs` (see [`AuthMode`]).
pub fn decide(cfg: &AuthConfig, addrs: &[SocketAddr]) -> Result<Decision, AuthError> {
    let exposed: Vec<String> = addrs
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(ToString::to_string)
        .collect();
    match cfg.mode {
        AuthMode::None => {
            if !exposed.is_empty() {
                tracing::warn!(
                    addrs = %exposed.join(","),
                    "INGEST_AUTH=none on a non-loopback address: anyone who reaches the port can write logs"
                );
            }
            Ok(Decision::Open)
        }
        AuthMode::Keys => Ok(Decision::Keys(keys::load(&cfg.keys_file, &cfg.defaults)?)),
        AuthMode::Auto if cfg.keys_file.exists() => {
            Ok(Decision::Keys(keys::load(&cfg.keys_file, &cfg.defaults)?))
        }
        AuthMode::Auto if exposed.is_empty() => Ok(Decision::Open),
        AuthMode::Auto => Err(AuthError::OpenToNetwork {
            addrs: exposed.join(","),
            path: cfg.keys_file.clone(),
        }),
    }
}

/// Counters of one key (they survive reloads that keep its name).
#[derive(Debug, Default)]
pub struct KeyCounters {
    pub requests: AtomicU64,
    pub records_accepted: AtomicU64,
    pub records_rejected: AtomicU64,
    pub records_forbidden: AtomicU64,
    pub requests_limited: AtomicU64,
}

/// What one key has done and holds, kept across reloads by name.
#[derive(Debug)]
pub struct KeyState {
    pub name: String,
    pub counters: KeyCounters,
    buckets: Mutex<Buckets>,
    spool: Mutex<SpoolShare>,
}

/// One key of the current file: its definition and its state.
#[derive(Debug)]
pub struct Key {
    pub def: KeyDef,
    pub state: Arc<KeyState>,
}

/// The authenticated sender of a request (a request extension set by [`guard`]).
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Key>);

impl Caller {
    pub fn name(&self) -> &str {
        &self.0.def.name
    }

    /// Whether records of `service` may be written.
    pub fn allows(&self, service: &str) -> bool {
        self.0.def.allows(service)
    }

    /// Whether the key is restricted to some services (else no record is looked at).
    pub fn is_restricted(&self) -> bool {
        self.0.def.services.is_some()
    }

    /// The services the key may write, for messages.
    pub fn services(&self) -> String {
        self.0.def.services.as_deref().unwrap_or_default().join(",")
    }

    /// A frame of `bytes` was spooled as `seq` for this key.
    pub fn spooled(&self, seq: u64, bytes: u64) {
        lock(&self.0.state.spool).appended(seq, bytes);
    }

    /// Counts a finished request and charges its records and bytes to the buckets.
    pub fn finish(&self, accepted: usize, rejected: usize, forbidden: usize, body_bytes: usize) {
        let c = &self.0.state.counters;
        c.requests.fetch_add(1, Relaxed);
        c.records_accepted.fetch_add(accepted as u64, Relaxed);
        c.records_rejected.fetch_add(rejected as u64, Relaxed);
        c.records_forbidden.fetch_add(forbidden as u64, Relaxed);
        let records = (accepted + rejected) as u64;
        lock(&self.0.state.buckets).charge(records, body_bytes as u64, Instant::now());
    }
}

impl Caller {
    /// [`Caller::finish`] for a request of the native APIs (all or nothing).
    pub fn finish_batch(
        &self,
        result: &Result<usize, crate::ingest::reject::Rejection>,
        body_bytes: usize,
    ) {
        use crate::ingest::reject::RejectKind;
        match result {
            Ok(n) => self.finish(*n, 0, 0, body_bytes),
            Err(r) if r.is_client_error() => {
                let n = r.details.len().max(1);
                let forbidden = if r.kind == RejectKind::Forbidden {
                    n
                } else {
                    0
                };
                self.finish(0, n, forbidden, body_bytes);
            }
            Err(_) => self.finish(0, 0, 0, body_bytes),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a key's request is not taken now.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    Rate(Limited),
    SpoolShare {
        unsent: u64,
        allowed: u64,
        percent: u8,
    },
}

/// The worker's authentication: off, or the current keys.
pub struct Auth {
    enabled: bool,
    cfg: AuthConfig,
    current: RwLock<Arc<KeySet<Key>>>,
    /// `ACK_MODE=spool`: the spool whose cap the keys share.
    spool: Option<Spool>,
    pub failures_missing: AtomicU64,
    pub failures_unknown: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Journal lines of refused requests: a flood of bad tokens or one key far over
    /// its rate would otherwise write a line per request (the counters keep them all).
    pub refusal_lines: guard::LineBudget,
    pub limit_lines: guard::LineBudget,
}

impl Auth {
    pub fn new(cfg: AuthConfig, decision: Decision, spool: Option<Spool>) -> Auth {
        let (enabled, defs) = match decision {
            Decision::Open => (false, Vec::new()),
            Decision::Keys(defs) => (true, defs),
        };
        let auth = Auth {
            enabled,
            cfg,
            current: RwLock::new(Arc::new(KeySet::new(Vec::new(), Vec::new()))),
            spool,
            failures_missing: AtomicU64::new(0),
            failures_unknown: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            refusal_lines: guard::LineBudget::default(),
            limit_lines: guard::LineBudget::default(),
        };
        auth.install(defs);
        auth
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// The keys now in force.
    pub fn keys(&self) -> Arc<KeySet<Key>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the keys with `defs`, keeping the state of keys whose name stays.
    pub fn install(&self, defs: Vec<KeyDef>) {
        let now = Instant::now();
        let old = self.keys();
        let mut by_name: HashMap<&str, &Arc<KeyState>> = old
            .keys()
            .iter()
            .map(|k| (k.def.name.as_str(), &k.state))
            .collect();
        let mut digests = Vec::with_capacity(defs.len());
        let mut keys = Vec::with_capacity(defs.len());
        for def in defs {
            let state = match by_name.remove(def.name.as_str()) {
                Some(state) => {
                    lock(&state.buckets).configure(&def.limits, now);
                    Arc::clone(state)
                }
                None => Arc::new(KeyState {
                    name: def.name.clone(),
                    counters: KeyCounters::default(),
                    buckets: Mutex::new(Buckets::new(&def.limits, now)),
                    spool: Mutex::new(SpoolShare::default()),
                }),
            };
            digests.push(def.digest);
            keys.push(Arc::new(Key { def, state }));
        }
        let set = Arc::new(KeySet::new(digests, keys));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = set;
    }

    /// Whether `key` may start a request now: its buckets, then its spool share.
    pub fn admit(&self, key: &Key) -> Result<(), Refused> {
        lock(&key.state.buckets)
            .check(Instant::now())
            .map_err(Refused::Rate)?;
        let Some(spool) = &self.spool else {
            return Ok(());
        };
        let percent = key.def.limits.spool_share_percent;
        if percent >= 100 {
            return Ok(());
        }
        let allowed = spool.max_bytes() / 100 * u64::from(percent);
        let mut share = lock(&key.state.spool);
        // The spool's watermark (a lock it shares with the writer) is asked only near the
        // share, or to prune a list half full so it keeps following the confirmations.
        if share.bytes() < allowed && share.tracked_frames() < limits::MAX_FRAMES_TRACKED / 2 {
            return Ok(());
        }
        let unsent = share.unsent(spool.acked_through());
        if unsent >= allowed {
            return Err(Refused::SpoolShare {
                unsent,
                allowed,
                percent,
            });
        }
        Ok(())
    }

    /// The `auth` object of `/stats`.
    pub fn report(&self) -> AuthStats {
        let keys = self.keys();
        AuthStats {
            enabled: self.enabled,
            keys_loaded: keys.len(),
            failures_missing: self.failures_missing.load(Relaxed),
            failures_unknown: self.failures_unknown.load(Relaxed),
            reloads: self.reloads.load(Relaxed),
            reload_failures: self.reload_failures.load(Relaxed),
            keys: keys
                .keys()
                .iter()
                .map(|k| {
                    let c = &k.state.counters;
                    KeyStats {
                        name: k.def.name.clone(),
                        requests: c.requests.load(Relaxed),
                        records_accepted: c.records_accepted.load(Relaxed),
                        records_rejected: c.records_rejected.load(Relaxed),
                        records_forbidden: c.records_forbidden.load(Relaxed),
                        requests_limited: c.requests_limited.load(Relaxed),
                    }
                })
                .collect(),
        }
    }
}

/// `/stats` → `auth`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuthStats {
    pub enabled: bool,
    pub keys_loaded: usize,
    /// Requests without a bearer token (401).
    pub failures_missing: u64,
    /// Requests with a token that is no key (401).
    pub failures_unknown: u64,
    /// Key file versions installed after the first.
    pub reloads: u64,
    /// Changed key files refused (the old keys stayed).
    pub reload_failures: u64,
    pub keys: Vec<KeyStats>,
}

/// `/stats` → `auth.keys[]`: one key, by name (never its secret).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyStats {
    pub name: String,
    pub requests: u64,
    pub records_accepted: u64,
    /// Records refused for their content (validation) with this key.
    pub records_rejected: u64,
    /// Of those, records of a service the key may not write.
    pub records_forbidden: u64,
    /// Requests refused by the key's rates or spool share (429).
    pub requests_limited: u64,
}

/// The `/metrics` lines of [`AuthStats`], each with `worker_id` (and `key`) labels.
pub fn prometheus(out: &mut String, worker_id: &str, s: &AuthStats) {
    use crate::stats::registry::labels;
    use std::fmt::Write;
    let worker = labels(&[("worker_id", worker_id)]);
    let _ = writeln!(
        out,
        "# HELP zero_logs_auth_failures_total Requests refused 401: no bearer token (missing) or no such key (unknown).\n\
         # TYPE zero_logs_auth_failures_total counter\n\
         zero_logs_auth_failures_total{{{worker},reason=\"missing\"}} {}\n\
         zero_logs_auth_failures_total{{{worker},reason=\"unknown\"}} {}",
        s.failures_missing, s.failures_unknown
    );
    let _ = writeln!(
        out,
        "# HELP zero_logs_auth_keys Keys loaded from INGEST_KEYS_FILE.\n\
         # TYPE zero_logs_auth_keys gauge\nzero_logs_auth_keys{{{worker}}} {}",
        s.keys_loaded
    );
    type Family = (&'static str, &'static str, fn(&KeyStats) -> u64);
    let families: [Family; 5] = [
        (
            "zero_logs_key_requests_total",
            "Ingest requests by API key.",
            |k| k.requests,
        ),
        (
            "zero_logs_key_records_accepted_total",
            "Records acknowledged, by API key.",
            |k| k.records_accepted,
        ),
        (
            "zero_logs_key_records_rejected_total",
            "Records refused for their content, by API key.",
            |k| k.records_rejected,
        ),
        (
            "zero_logs_key_records_forbidden_total",
            "Records of a service the key may not write.",
            |k| k.records_forbidden,
        ),
        (
            "zero_logs_key_requests_limited_total",
            "Requests refused 429 by the key's rates or spool share.",
            |k| k.requests_limited,
        ),
    ];
    for (name, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for k in &s.keys {
            let l = labels(&[("worker_id", worker_id), ("key", &k.name)]);
            let _ = writeln!(out, "{name}{{{l}}} {}", get(k));
        }
    }
}

#[cfg(test)]
mod tests;
