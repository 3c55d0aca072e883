//! The cluster size as `zero-logs-generator` computes it from the env files
//! ([`crate::config::env_file`]), and the ctl's own `zero-logs.env.d/50-scale.env`.
//!
//! The cluster size follows the
//! generator's rules too (`0`/`auto` = CPUs, clamped to
//! `CLUSTER_MIN_WORKERS…CLUSTER_MAX_WORKERS`, invalid values fall back with a
//! warning), so the ctl and the units agree on N.
//!
//! `scale` is strict where the generator is tolerant: a requested N outside
//! the bounds is refused with a [`ScaleError`] naming the variable and where it
//! is set, instead of being clamped.

use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::config::env_file::{env_file_paths, EnvFiles, Origin, CONF_DIR, ENV_DIR, ENV_FILE};
use crate::config::Lookup;

/// The file `scale` owns; never the operator's conffile.
pub const SCALE_FILE: &str = "50-scale.env";
/// The generator's upper limit of instances.
pub const MAX_WORKERS: u32 = 1024;

/// A bound that applies, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub value: u32,
    pub origin: Option<Origin>,
}

/// N as the generator computes it, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSize {
    /// Instances the target wants.
    pub workers: u32,
    /// `CLUSTER_WORKERS` as written (`None`: unset, the CPU default).
    pub configured: Option<String>,
    pub origin: Option<Origin>,
    pub min: Option<Bound>,
    pub max: Option<Bound>,
    /// Invalid values replaced by defaults, clamping done.
    pub warnings: Vec<String>,
}

impl ClusterSize {
    /// The generator's computation of N from `env` (`cpus` for `0`/`auto`).
    pub fn from_env(env: &EnvFiles, cpus: u32) -> ClusterSize {
        let mut warnings = Vec::new();
        let mut bound = |name: &str| -> Option<Bound> {
            let raw = env.get(name).filter(|v| !v.is_empty())?;
            match parse_uint(&raw) {
                Some(0) => None,
                Some(value) => Some(Bound {
                    value,
                    origin: env.origin(name).cloned(),
                }),
                None => {
                    warnings.push(format!(
                        "{}: {name}={raw} is not valid (a whole number; 0 = no bound); ignored",
                        where_set(env.origin(name))
                    ));
                    None
                }
            }
        };
        let mut min = bound("CLUSTER_MIN_WORKERS");
        let mut max = bound("CLUSTER_MAX_WORKERS");
        if let (Some(lo), Some(hi)) = (&min, &max) {
            if lo.value > hi.value {
                warnings.push(format!(
                    "CLUSTER_MIN_WORKERS={} is above CLUSTER_MAX_WORKERS={}; ignoring both",
                    lo.value, hi.value
                ));
                min = None;
                max = None;
            }
        }
        let configured = env.get("CLUSTER_WORKERS").filter(|v| !v.is_empty());
        let origin = configured
            .as_ref()
            .and_then(|_| env.origin("CLUSTER_WORKERS").cloned());
        let mut workers = match configured.as_deref().map(|v| parse_workers(v, cpus)) {
            None => cpus,
            Some(Some(n)) => n,
            Some(None) => {
                warnings.push(format!(
                    "{}: CLUSTER_WORKERS={} is not valid (a whole number; 0 or auto = one per CPU); using {cpus}",
                    where_set(origin.as_ref()),
                    configured.as_deref().unwrap_or_default()
                ));
                cpus
            }
        };
        if let Some(lo) = &min {
            if workers < lo.value {
                warnings.push(format!(
                    "{workers} workers is below CLUSTER_MIN_WORKERS={}; using {}",
                    lo.value, lo.value
                ));
                workers = lo.value;
            }
        }
        if let Some(hi) = &max {
            if workers > hi.value {
                warnings.push(format!(
                    "{workers} workers is above CLUSTER_MAX_WORKERS={}; using {}",
                    hi.value, hi.value
                ));
                workers = hi.value;
            }
        }
        if workers > MAX_WORKERS {
            warnings.push(format!(
                "{workers} workers is more than {MAX_WORKERS}; using {MAX_WORKERS}"
            ));
            workers = MAX_WORKERS;
        }
        ClusterSize {
            workers,
            configured,
            origin,
            min,
            max,
            warnings,
        }
    }

    /// "CLUSTER_WORKERS=4 from /etc/…/50-scale.env:3" or "default: one per CPU".
    pub fn source(&self) -> String {
        match (&self.configured, &self.origin) {
            (Some(v), Some(o)) => format!("CLUSTER_WORKERS={v} from {o}"),
            (Some(v), None) => format!("CLUSTER_WORKERS={v}"),
            _ => "CLUSTER_WORKERS unset: one per CPU".to_string(),
        }
    }
}

fn where_set(origin: Option<&Origin>) -> String {
    origin.map_or_else(|| "env file".to_string(), Origin::to_string)
}

/// The generator's `uint`: digits only, at most 15 of them.
fn parse_uint(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 15 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().ok()?.min(u64::from(u32::MAX)) as u32)
}

/// `CLUSTER_WORKERS`: `auto` or `0` = `cpus`, else a whole number.
fn parse_workers(text: &str, cpus: u32) -> Option<u32> {
    if text.eq_ignore_ascii_case("auto") {
        return Some(cpus);
    }
    match parse_uint(text)? {
        0 => Some(cpus),
        n => Some(n),
    }
}

/// Why `scale N` refuses N. Exit status 2, like an invalid setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScaleError {
    #[error("invalid worker count {0:?}: expected a whole number of at least 1, or 0/auto for one per CPU")]
    Invalid(String),
    #[error("{n} workers is above the {MAX_WORKERS} instances zero-logs-generator starts")]
    TooMany { n: u32 },
    #[error("{n} workers is below CLUSTER_MIN_WORKERS={} ({})", bound.value, where_set(bound.origin.as_ref()))]
    BelowMin { n: u32, bound: Bound },
    #[error("{n} workers is above CLUSTER_MAX_WORKERS={} ({})", bound.value, where_set(bound.origin.as_ref()))]
    AboveMax { n: u32, bound: Bound },
    #[error(
        "CLUSTER_WORKERS is also set in {origin}, which is read after {SCALE_FILE} and would win; \
         remove it there first"
    )]
    Overridden { origin: Origin },
}

/// A checked `scale` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleRequest {
    /// What goes into `CLUSTER_WORKERS=` (`auto` or the number).
    pub value: String,
    /// The instances that will run.
    pub workers: u32,
}

/// Checks `requested` against the bounds in `env` and against a later env.d
/// file that would override [`SCALE_FILE`].
pub fn check_scale(requested: &str, env: &EnvFiles, cpus: u32) -> Result<ScaleRequest, ScaleError> {
    let requested = requested.trim();
    let workers =
        parse_workers(requested, cpus).ok_or_else(|| ScaleError::Invalid(requested.into()))?;
    let auto = requested.eq_ignore_ascii_case("auto") || parse_uint(requested) == Some(0);
    let value = if auto {
        "auto".to_string()
    } else {
        workers.to_string()
    };
    if workers > MAX_WORKERS {
        return Err(ScaleError::TooMany { n: workers });
    }
    let size = ClusterSize::from_env(env, cpus);
    if let Some(bound) = size.min.filter(|b| workers < b.value) {
        return Err(ScaleError::BelowMin { n: workers, bound });
    }
    if let Some(bound) = size.max.filter(|b| workers > b.value) {
        return Err(ScaleError::AboveMax { n: workers, bound });
    }
    if let Some(origin) = env.origin("CLUSTER_WORKERS") {
        let later = origin.file.parent().and_then(Path::file_name) == Some(ENV_DIR.as_ref())
            && origin
                .file
                .file_name()
                .is_some_and(|n| n > std::ffi::OsStr::new(SCALE_FILE));
        if later {
            return Err(ScaleError::Overridden {
                origin: origin.clone(),
            });
        }
    }
    Ok(ScaleRequest { value, workers })
}

/// Where `scale` keeps N: `<dir>/zero-logs.env.d/50-scale.env`.
pub fn scale_file(dir: &Path) -> PathBuf {
    dir.join(ENV_DIR).join(SCALE_FILE)
}

/// The content `scale` writes.
pub fn scale_file_content(value: &str) -> String {
    format!(
        "# Written by `zero-logs-ctl scale`. Read after zero-logs.env, so it wins over\n\
         # CLUSTER_WORKERS there; delete this file and run `systemctl daemon-reload`\n\
         # to go back to zero-logs.env's value.\n\
         CLUSTER_WORKERS={value}\n"
    )
}

/// Replaces `path` atomically with `content` (temp file in the same directory,
/// fsync, rename, fsync of the directory): a reader or a crash sees the old
/// file or the new one, never half of one.
pub fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no directory")
    })?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot file not ending in .env: neither systemd's glob nor the generator reads it.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> EnvFiles {
        let mut env = EnvFiles::default();
        env.parse(text, Path::new("/etc/zero-logs/zero-logs.env"));
        env
    }

    #[test]
    fn tolerant_parsing_like_the_generator() {
        let env = parsed(
            "# comment\r\n; also a comment\n\n  export CLUSTER_WORKERS = \"4\"\r\n\
             CLUSTER_MAX_WORKERS='8'\nnot a pair\nexported=1\nCLICKHOUSE_URL=http://h:8123/?a=b\nLAST=x",
        );
        assert_eq!(env.get("CLUSTER_WORKERS").as_deref(), Some("4"));
        assert_eq!(env.get("CLUSTER_MAX_WORKERS").as_deref(), Some("8"));
        assert_eq!(env.get("exported").as_deref(), Some("1"));
        assert_eq!(
            env.get("CLICKHOUSE_URL").as_deref(),
            Some("http://h:8123/?a=b")
        );
        assert_eq!(env.get("LAST").as_deref(), Some("x"));
        assert_eq!(env.origin("CLUSTER_WORKERS").unwrap().line, 4);
        assert_eq!(env.warnings.len(), 1, "{:?}", env.warnings);
        assert!(env.warnings[0].contains(":6:"), "{:?}", env.warnings);
    }

    #[test]
    fn later_files_win_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ENV_FILE), "CLUSTER_WORKERS=2\nA=main\n").unwrap();
        std::fs::create_dir(dir.path().join(ENV_DIR)).unwrap();
        std::fs::write(dir.path().join(ENV_DIR).join("90-b.env"), "A=b\n").unwrap();
        std::fs::write(dir.path().join(ENV_DIR).join("10-a.env"), "A=a\n").unwrap();
        std::fs::write(dir.path().join(ENV_DIR).join("x.conf"), "A=ignored\n").unwrap();
        std::fs::write(dir.path().join(ENV_DIR).join(".hidden.env"), "A=ignored\n").unwrap();
        let env = EnvFiles::load(dir.path());
        assert_eq!(env.get("A").as_deref(), Some("b"));
        assert_eq!(env.get("CLUSTER_WORKERS").as_deref(), Some("2"));
        assert!(EnvFiles::load(&dir.path().join("missing"))
            .get("A")
            .is_none());
    }

    #[test]
    fn cluster_size_follows_the_generator() {
        let size = |text: &str| ClusterSize::from_env(&parsed(text), 4);
        assert_eq!(size("").workers, 4);
        assert_eq!(size("CLUSTER_WORKERS=auto").workers, 4);
        assert_eq!(size("CLUSTER_WORKERS=0").workers, 4);
        assert_eq!(size("CLUSTER_WORKERS=3").workers, 3);
        let s = size("CLUSTER_WORKERS=lots");
        assert_eq!(s.workers, 4);
        assert!(s.warnings[0].contains("CLUSTER_WORKERS=lots"), "{s:?}");
        assert_eq!(size("CLUSTER_WORKERS=9\nCLUSTER_MAX_WORKERS=6").workers, 6);
        assert_eq!(size("CLUSTER_WORKERS=1\nCLUSTER_MIN_WORKERS=2").workers, 2);
        // min > max: both ignored.
        let s = size("CLUSTER_WORKERS=9\nCLUSTER_MIN_WORKERS=5\nCLUSTER_MAX_WORKERS=3");
        assert_eq!((s.workers, s.min.clone(), s.max.clone()), (9, None, None));
        assert_eq!(size("CLUSTER_WORKERS=5000").workers, MAX_WORKERS);
        assert_eq!(
            size("CLUSTER_WORKERS=3").source(),
            "CLUSTER_WORKERS=3 from /etc/zero-logs/zero-logs.env:1"
        );
        assert_eq!(size("").source(), "CLUSTER_WORKERS unset: one per CPU");
    }

    #[test]
    fn scale_requests_are_checked_against_the_bounds() {
        let env = parsed("CLUSTER_MIN_WORKERS=2\nCLUSTER_MAX_WORKERS=8\n");
        assert_eq!(
            check_scale("4", &env, 2),
            Ok(ScaleRequest {
                value: "4".into(),
                workers: 4
            })
        );
        assert_eq!(
            check_scale("auto", &env, 2),
            Ok(ScaleRequest {
                value: "auto".into(),
                workers: 2
            })
        );
        let err = check_scale("99", &env, 2).unwrap_err();
        assert!(matches!(err, ScaleError::AboveMax { n: 99, .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "99 workers is above CLUSTER_MAX_WORKERS=8 (/etc/zero-logs/zero-logs.env:2)"
        );
        assert!(matches!(
            check_scale("1", &env, 2),
            Err(ScaleError::BelowMin { n: 1, .. })
        ));
        for bad in ["-1", "two", "", "1.5", "0x4"] {
            assert_eq!(
                check_scale(bad, &env, 2),
                Err(ScaleError::Invalid(bad.into()))
            );
        }
        assert_eq!(
            check_scale("2000", &EnvFiles::default(), 2),
            Err(ScaleError::TooMany { n: 2000 })
        );
    }

    #[test]
    fn a_later_env_d_file_that_overrides_scale_is_refused() {
        let mut env = EnvFiles::default();
        env.parse(
            "CLUSTER_WORKERS=3\n",
            Path::new("/etc/zero-logs/zero-logs.env.d/90-mine.env"),
        );
        assert!(matches!(
            check_scale("4", &env, 2),
            Err(ScaleError::Overridden { .. })
        ));
        let mut env = EnvFiles::default();
        env.parse(
            "CLUSTER_WORKERS=3\n",
            Path::new("/etc/zero-logs/zero-logs.env.d/10-mine.env"),
        );
        assert!(check_scale("4", &env, 2).is_ok());
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = scale_file(dir.path());
        write_atomically(&path, scale_file_content("3").as_bytes()).unwrap();
        write_atomically(&path, scale_file_content("5").as_bytes()).unwrap();
        let env = EnvFiles::load(dir.path());
        assert_eq!(env.get("CLUSTER_WORKERS").as_deref(), Some("5"));
        assert!(env.warnings.is_empty(), "{:?}", env.warnings);
        let names: Vec<_> = std::fs::read_dir(dir.path().join(ENV_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [SCALE_FILE]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
