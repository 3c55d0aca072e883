//! The daemon's settings: one typed [`DaemonConfig`], built once at start from
//! the same env files the workers read (process environment first, as systemd's
//! `EnvironmentFile=` puts them there; then the files themselves, so a daemon
//! started by hand sees the same values).
//!
//! Every value is parsed here, at the edge, and every error names the variable
//! ([`DaemonConfigError`]). [`validate_env`] is `zero-logs-ctl validate`: the
//! worker's loader ([`crate::config::Config::load`]), this loader and the
//! cluster bounds run over the env files, each problem reported by name.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, Lookup, ServeFlags};
use crate::ctl::env_files::{ClusterSize, EnvFiles};

/// Where the management API listens by default (not 9000: ClickHouse's native port).
pub const DEFAULT_API_PORT: u16 = 9100;
/// The token file's default path.
pub const DEFAULT_TOKEN_FILE: &str = "/etc/zero-logs/api-token";
/// The worker's `WORKER_MEMORY_LIMIT` default (1 GiB), mirrored for the daemon's own limit.
const DEFAULT_WORKER_MEMORY_LIMIT: u64 = 1 << 30;

/// Every variable the daemon reads, with its default as written in the env file.
pub const VARIABLES: &[(&str, &str)] = &[
    ("CLUSTER_API_HOST", "127.0.0.1"),
    ("CLUSTER_API_PORT", "9100"),
    ("CLUSTER_API_TOKEN_FILE", DEFAULT_TOKEN_FILE),
    ("HEALTH_CHECK_INTERVAL", "5000"),
    ("HEALTH_REPORT_INTERVAL", "60000"),
    ("LOG_CLUSTER_STATS", "false"),
    ("CTL_MEMORY_LIMIT", ""),
    ("AUTOSCALE", "false"),
    ("AUTOSCALE_WINDOW", "60000"),
    ("AUTOSCALE_UP_RPS", "2000"),
    ("AUTOSCALE_DOWN_RPS", "200"),
    ("AUTOSCALE_COOLDOWN", "120000"),
];

/// A setting the daemon cannot use. Exit status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct DaemonConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

/// Autoscaling thresholds (see [`super::autoscale`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscaleConfig {
    pub enabled: bool,
    /// Load must stay beyond a threshold this long before a step.
    pub window: Duration,
    /// Requests/s per running worker above which one worker is added.
    pub up_rps: f64,
    /// Requests/s per running worker below which one worker is removed.
    pub down_rps: f64,
    /// Pause after any scaling before the next decision.
    pub cooldown: Duration,
}

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub api_host: IpAddr,
    pub api_port: u16,
    pub token_file: PathBuf,
    /// How often every instance is asked for `/health` (and memory checked).
    pub health_check_interval: Duration,
    /// How often the stats line is logged (when `log_cluster_stats`).
    pub health_report_interval: Duration,
    pub log_cluster_stats: bool,
    /// Memory (cgroup `MemoryCurrent`, else the worker's RSS) above which the
    /// daemon restarts an instance; `None`: off. See docs/CTL.md.
    pub memory_limit: Option<u64>,
    pub autoscale: AutoscaleConfig,
}

impl DaemonConfig {
    /// Parses every variable from `env`.
    pub fn load(env: &dyn Lookup) -> Result<DaemonConfig, DaemonConfigError> {
        let get = |var: &'static str| env.get(var).filter(|v| !v.trim().is_empty());
        let parse = |var: &'static str, default: &str| -> (String, &'static str) {
            (
                get(var).map_or_else(|| default.to_string(), |v| v.trim().to_string()),
                var,
            )
        };
        let (host, var) = parse("CLUSTER_API_HOST", "127.0.0.1");
        let api_host = host.parse::<IpAddr>().map_err(|_| DaemonConfigError {
            var,
            value: host.clone(),
            reason: "expected an IP address, e.g. 127.0.0.1 or ::1".into(),
        })?;
        let (port, var) = parse("CLUSTER_API_PORT", "9100");
        let api_port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(DaemonConfigError {
                    var,
                    value: port,
                    reason: "expected a TCP port 1..65535".into(),
                })
            }
        };
        let token_file = PathBuf::from(parse("CLUSTER_API_TOKEN_FILE", DEFAULT_TOKEN_FILE).0);
        if !token_file.is_absolute() {
            return Err(DaemonConfigError {
                var: "CLUSTER_API_TOKEN_FILE",
                value: token_file.display().to_string(),
                reason: "expected an absolute path".into(),
            });
        }
        let health_check_interval = at_least(millis(parse("HEALTH_CHECK_INTERVAL", "5000"))?, 100)?;
        let health_report_interval =
            at_least(millis(parse("HEALTH_REPORT_INTERVAL", "60000"))?, 100)?;
        let log_cluster_stats = boolean(parse("LOG_CLUSTER_STATS", "false"))?;
        let worker_limit = match get("WORKER_MEMORY_LIMIT") {
            None => DEFAULT_WORKER_MEMORY_LIMIT,
            Some(v) => bytes((v.trim().to_string(), "WORKER_MEMORY_LIMIT"))?,
        };
        let memory_limit = match get("CTL_MEMORY_LIMIT") {
            // 15 % above the worker's own limit: see docs/CTL.md, "Memory".
            None => worker_limit + worker_limit * 15 / 100,
            Some(v) => bytes((v.trim().to_string(), "CTL_MEMORY_LIMIT"))?,
        };
        let autoscale = AutoscaleConfig {
            enabled: boolean(parse("AUTOSCALE", "false"))?,
            window: at_least(millis(parse("AUTOSCALE_WINDOW", "60000"))?, 1000)?,
            up_rps: rate(parse("AUTOSCALE_UP_RPS", "2000"))?,
            down_rps: rate(parse("AUTOSCALE_DOWN_RPS", "200"))?,
            cooldown: millis(parse("AUTOSCALE_COOLDOWN", "120000"))?.0,
        };
        if autoscale.down_rps >= autoscale.up_rps {
            return Err(DaemonConfigError {
                var: "AUTOSCALE_DOWN_RPS",
                value: autoscale.down_rps.to_string(),
                reason: format!(
                    "must be below AUTOSCALE_UP_RPS={} (or the cluster would flap)",
                    autoscale.up_rps
                ),
            });
        }
        Ok(DaemonConfig {
            api_host,
            api_port,
            token_file,
            health_check_interval,
            health_report_interval,
            log_cluster_stats,
            memory_limit: (memory_limit > 0).then_some(memory_limit),
            autoscale,
        })
    }

    /// How long one `/health` may take before it counts as a miss: half the
    /// interval, at most 2 s.
    pub fn health_timeout(&self) -> Duration {
        (self.health_check_interval / 2).min(Duration::from_secs(2))
    }
}

type Raw = (String, &'static str);

fn millis((value, var): Raw) -> Result<(Duration, Raw), DaemonConfigError> {
    match crate::config::parse_millis(&value) {
        Ok(d) => Ok((d, (value, var))),
        Err(reason) => Err(DaemonConfigError { var, value, reason }),
    }
}

fn at_least(
    (d, (value, var)): (Duration, Raw),
    min_ms: u64,
) -> Result<Duration, DaemonConfigError> {
    if d < Duration::from_millis(min_ms) {
        return Err(DaemonConfigError {
            var,
            value,
            reason: format!("expected at least {min_ms} ms"),
        });
    }
    Ok(d)
}

fn boolean((value, var): Raw) -> Result<bool, DaemonConfigError> {
    crate::config::parse_bool(&value).map_err(|reason| DaemonConfigError { var, value, reason })
}

fn bytes((value, var): Raw) -> Result<u64, DaemonConfigError> {
    crate::config::bytes(&value)
        .map(|b| b as u64)
        .map_err(|reason| DaemonConfigError { var, value, reason })
}

fn rate((value, var): Raw) -> Result<f64, DaemonConfigError> {
    match value.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(DaemonConfigError {
            var,
            value,
            reason: "expected requests per second per worker, e.g. 2000".into(),
        }),
    }
}

/// The process environment first, then the env files.
pub struct Layered<'a> {
    pub first: &'a dyn Lookup,
    pub then: &'a dyn Lookup,
}

impl Lookup for Layered<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.first.get(name).or_else(|| self.then.get(name))
    }
}

/// `zero-logs-ctl validate`: every problem of the env files under `dir`, each
/// naming its variable (and file, where it is known); empty when all is well.
/// Warnings of the tolerant parsers (skipped lines, values the generator
/// replaces) count as problems: the operator asked for a check.
pub fn validate_env(dir: &Path, cpus: u32) -> (Vec<String>, Vec<String>) {
    let env = EnvFiles::load(dir);
    let mut errors = Vec::new();
    let mut warnings = env.warnings.clone();
    if let Err(e) = Config::load(&ServeFlags::default(), &env) {
        errors.push(with_origin(&env, &e.source_name, e.to_string()));
    }
    if let Err(e) = DaemonConfig::load(&env) {
        errors.push(with_origin(&env, e.var, e.to_string()));
    }
    let size = ClusterSize::from_env(&env, cpus);
    warnings.extend(size.warnings);
    (errors, warnings)
}

fn with_origin(env: &EnvFiles, var: &str, message: String) -> String {
    match env.origin(var) {
        Some(origin) => format!("{origin}: {message}"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn defaults() {
        let c = DaemonConfig::load(&env(&[])).unwrap();
        assert_eq!(c.api_host.to_string(), "127.0.0.1");
        assert_eq!(c.api_port, 9100);
        assert_eq!(c.token_file, PathBuf::from(DEFAULT_TOKEN_FILE));
        assert_eq!(c.health_check_interval, Duration::from_secs(5));
        assert_eq!(c.health_timeout(), Duration::from_secs(2));
        assert!(!c.log_cluster_stats);
        assert_eq!(c.memory_limit, Some((1 << 30) + (1 << 30) * 15 / 100));
        assert!(!c.autoscale.enabled);
    }

    #[test]
    fn values_and_the_memory_limit_rules() {
        let c = DaemonConfig::load(&env(&[
            ("CLUSTER_API_HOST", "::1"),
            ("CLUSTER_API_PORT", "9200"),
            ("HEALTH_CHECK_INTERVAL", "1000"),
            ("LOG_CLUSTER_STATS", "yes"),
            ("WORKER_MEMORY_LIMIT", "100M"),
        ]))
        .unwrap();
        assert_eq!((c.api_host.to_string(), c.api_port), ("::1".into(), 9200));
        assert_eq!(c.health_timeout(), Duration::from_millis(500));
        assert!(c.log_cluster_stats);
        assert_eq!(c.memory_limit, Some(115 << 20));
        let off = DaemonConfig::load(&env(&[("WORKER_MEMORY_LIMIT", "0")])).unwrap();
        assert_eq!(off.memory_limit, None);
        let own = DaemonConfig::load(&env(&[
            ("WORKER_MEMORY_LIMIT", "0"),
            ("CTL_MEMORY_LIMIT", "300M"),
        ]))
        .unwrap();
        assert_eq!(own.memory_limit, Some(300 << 20));
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value, reason) in [
            ("CLUSTER_API_PORT", "0", "TCP port"),
            ("CLUSTER_API_PORT", "http", "TCP port"),
            ("CLUSTER_API_HOST", "localhost", "IP address"),
            ("CLUSTER_API_TOKEN_FILE", "token", "absolute"),
            ("HEALTH_CHECK_INTERVAL", "5s", "milliseconds"),
            ("HEALTH_CHECK_INTERVAL", "10", "at least 100"),
            ("LOG_CLUSTER_STATS", "maybe", "true or false"),
            ("CTL_MEMORY_LIMIT", "lots", "bytes"),
            ("AUTOSCALE_UP_RPS", "-1", "requests per second"),
            ("AUTOSCALE_DOWN_RPS", "5000", "below AUTOSCALE_UP_RPS"),
        ] {
            let err = DaemonConfig::load(&env(&[(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{err}");
            let text = err.to_string();
            assert!(text.contains(var) && text.contains(reason), "{text}");
        }
    }

    #[test]
    fn the_shipped_env_file_lists_every_daemon_variable() {
        let file = include_str!("../../../systemd/zero-logs.env");
        for (var, default) in VARIABLES {
            let line = format!("#{var}={default}");
            assert!(
                file.lines().any(|l| l == line),
                "systemd/zero-logs.env lacks the line {line:?}"
            );
        }
    }

    #[test]
    fn validate_names_file_line_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("zero-logs.env"),
            "BATCH_MAX_ROWS=100\nHEALTH_CHECK_INTERVAL=soon\nCLUSTER_WORKERS=two\n",
        )
        .unwrap();
        let (errors, warnings) = validate_env(dir.path(), 2);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("zero-logs.env:2") && errors[0].contains("HEALTH_CHECK_INTERVAL"),
            "{errors:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("CLUSTER_WORKERS=two")),
            "{warnings:?}"
        );
        std::fs::write(dir.path().join("zero-logs.env"), "BATCH_MAX_ROWS=lots\n").unwrap();
        let (errors, _) = validate_env(dir.path(), 2);
        assert!(errors[0].contains("BATCH_MAX_ROWS"), "{errors:?}");
        std::fs::write(dir.path().join("zero-logs.env"), "# nothing\n").unwrap();
        assert_eq!(validate_env(dir.path(), 2), (vec![], vec![]));
    }
}
