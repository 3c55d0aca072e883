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

use crate::config::settings::{self, Program};
use crate::config::{
    docs, settings as S, Config, ConfigError, Lookup, Reader, Resolved, ServeFlags,
};
use crate::ctl::env_files::{ClusterSize, EnvFiles};

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
        DaemonConfig::load_explained(env).map(|(cfg, _)| cfg)
    }

    /// [`DaemonConfig::load`], plus every setting's value and where it came from
    /// (`zero-logs-ctl config`).
    pub fn load_explained(
        env: &dyn Lookup,
    ) -> Result<(DaemonConfig, Vec<Resolved>), DaemonConfigError> {
        let r = Reader::env_only(env);
        let worker_limit = r.get(&S::WORKER_MEMORY_LIMIT)?;
        // 15 % above the worker's own limit: see docs/CTL.md, "Memory".
        let memory_limit = r.get_or(&S::CTL_MEMORY_LIMIT, || {
            worker_limit + worker_limit * 15 / 100
        })?;
        let autoscale = AutoscaleConfig {
            enabled: r.get(&S::AUTOSCALE)?,
            window: r.get(&S::AUTOSCALE_WINDOW)?,
            up_rps: r.get(&S::AUTOSCALE_UP_RPS)?,
            down_rps: r.get(&S::AUTOSCALE_DOWN_RPS)?,
            cooldown: r.get(&S::AUTOSCALE_COOLDOWN)?,
        };
        if autoscale.down_rps >= autoscale.up_rps {
            return Err(DaemonConfigError {
                var: S::AUTOSCALE_DOWN_RPS.meta.var,
                value: autoscale.down_rps.to_string(),
                reason: format!(
                    "must be below AUTOSCALE_UP_RPS={} (or the cluster would flap)",
                    autoscale.up_rps
                ),
            });
        }
        let cfg = DaemonConfig {
            api_host: r.get(&S::CLUSTER_API_HOST)?,
            api_port: r.get(&S::CLUSTER_API_PORT)?,
            token_file: r.get(&S::CLUSTER_API_TOKEN_FILE)?,
            health_check_interval: r.get(&S::HEALTH_CHECK_INTERVAL)?,
            health_report_interval: r.get(&S::HEALTH_REPORT_INTERVAL)?,
            log_cluster_stats: r.get(&S::LOG_CLUSTER_STATS)?,
            memory_limit: (memory_limit > 0).then_some(memory_limit),
            autoscale,
        };
        Ok((cfg, r.into_resolved()))
    }

    /// How long one `/health` may take before it counts as a miss: half the
    /// interval, at most 2 s.
    pub fn health_timeout(&self) -> Duration {
        (self.health_check_interval / 2).min(Duration::from_secs(2))
    }
}

impl From<ConfigError> for DaemonConfigError {
    fn from(e: ConfigError) -> DaemonConfigError {
        DaemonConfigError {
            var: settings::find(&e.source_name).map_or("", |m| m.var),
            value: e.value,
            reason: e.reason,
        }
    }
}

/// `zero-logs-ctl config`: the daemon's and the generator's settings as the process
/// environment and the env files under `dir` give them, each with where it came from.
pub fn explain_env(dir: &Path) -> Result<String, DaemonConfigError> {
    let files = EnvFiles::load(dir);
    let env = files.behind_process_env();
    let (_, resolved) = DaemonConfig::load_explained(&env)?;
    Ok(format!(
        "# zero-logs-ctl daemon\n{}\n# zero-logs-generator (the units)\n{}",
        docs::explain(Program::Daemon, &resolved, &env),
        docs::explain(Program::Generator, &resolved, &env)
    ))
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
        assert_eq!(c.token_file, PathBuf::from("/etc/zero-logs/api-token"));
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
        for meta in settings::ALL
            .iter()
            .filter(|m| m.read_by.contains(&Program::Daemon))
        {
            let line = format!("#{}={}", meta.var, meta.default);
            assert!(
                file.lines().any(|l| l == line),
                "systemd/zero-logs.env lacks the line {line:?}"
            );
        }
    }

    #[test]
    fn explain_names_where_each_value_came_from() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("zero-logs.env"),
            "# comment\nHEALTH_CHECK_INTERVAL=2000\nCLUSTER_WORKERS=3\n",
        )
        .unwrap();
        let text = explain_env(dir.path()).unwrap();
        let line = |var: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{var}=")))
                .unwrap_or_else(|| panic!("no {var} in {text}"))
                .to_string()
        };
        let at = format!("env file {}:2", dir.path().join("zero-logs.env").display());
        assert!(line("HEALTH_CHECK_INTERVAL").contains(&at), "{text}");
        assert!(line("HEALTH_CHECK_INTERVAL").starts_with("HEALTH_CHECK_INTERVAL=2000 "));
        assert!(line("CLUSTER_WORKERS").contains(":3"), "{text}");
        assert!(line("AUTOSCALE_WINDOW").ends_with("# default"), "{text}");
        std::fs::write(dir.path().join("zero-logs.env"), "AUTOSCALE_WINDOW=5\n").unwrap();
        let err = explain_env(dir.path()).unwrap_err();
        assert_eq!(err.var, "AUTOSCALE_WINDOW");
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
