//! Reading one setting of the table: its flag, else its environment variable,
//! else its default, parsed by the setting's own parser. Every failure becomes a
//! [`ConfigError`] naming the flag or variable; every value read is noted with
//! where it came from, for `zero-logs config` and `zero-logs-ctl config`.

use std::cell::RefCell;
use std::fmt;

use super::flags::ServeFlags;
use super::settings::{Meta, Setting};
use super::{ConfigError, Lookup};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A flag of `zero-logs serve`, e.g. `--batch-max-rows`.
    Flag(String),
    /// The process environment.
    Env,
    /// A line of an env file, e.g. `/etc/zero-logs/zero-logs.env:12`.
    EnvFile(String),
    /// The table's written default.
    Default,
    /// A default computed at start, e.g. `CPU cores`.
    Computed(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Env => f.write_str("environment"),
            Origin::EnvFile(at) => write!(f, "env file {at}"),
            Origin::Default => f.write_str("default"),
            Origin::Computed(how) => write!(f, "default: {}", how.replace('`', "")),
        }
    }
}

/// One setting as it was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub var: &'static str,
    /// The text used (the default's text for a default); `********` for a set secret.
    pub value: String,
    pub origin: Origin,
}

/// One raw value and where it came from.
struct Raw {
    /// The flag or variable to blame when it is wrong.
    name: String,
    value: String,
    origin: Origin,
}

/// Reads settings from flags (the worker's) and an environment.
pub struct Reader<'a> {
    flags: Option<&'a ServeFlags>,
    pub(crate) env: &'a dyn Lookup,
    resolved: RefCell<Vec<Resolved>>,
}

impl<'a> Reader<'a> {
    /// For `zero-logs serve`: flag > environment > default.
    pub fn new(flags: &'a ServeFlags, env: &'a dyn Lookup) -> Reader<'a> {
        Reader {
            flags: Some(flags),
            env,
            resolved: RefCell::new(Vec::new()),
        }
    }

    /// For a program without flags (the ctl daemon): environment > default.
    pub fn env_only(env: &'a dyn Lookup) -> Reader<'a> {
        Reader {
            flags: None,
            env,
            resolved: RefCell::new(Vec::new()),
        }
    }

    /// The setting's value; its default when unset. The default must be written in the
    /// table (use [`Reader::get_or`] for a computed one).
    pub fn get<T>(&self, setting: &Setting<T>) -> Result<T, ConfigError> {
        match self.read(setting)? {
            Some(value) => Ok(value),
            None => Ok(setting.default_value().unwrap_or_else(|| {
                panic!("{} has a computed default: use get_or", setting.meta.var)
            })),
        }
    }

    /// The setting's value; `computed()` when unset.
    pub fn get_or<T: Show>(
        &self,
        setting: &Setting<T>,
        computed: impl FnOnce() -> T,
    ) -> Result<T, ConfigError> {
        if let Some(value) = self.read(setting)? {
            return Ok(value);
        }
        let value = computed();
        let meta = &setting.meta;
        let shown = if meta.secret {
            String::new()
        } else {
            value.show()
        };
        self.replace_note(meta, shown, Origin::Computed(meta.default_text));
        Ok(value)
    }

    /// Every setting read so far, in the order read.
    pub fn into_resolved(self) -> Vec<Resolved> {
        self.resolved.into_inner()
    }

    /// `None` when unset (after noting the default).
    fn read<T>(&self, setting: &Setting<T>) -> Result<Option<T>, ConfigError> {
        let meta = &setting.meta;
        let Some(raw) = self.raw(meta) else {
            self.note(meta, meta.default_shown().to_string(), Origin::Default);
            return Ok(None);
        };
        let value = if meta.secret {
            raw.value.as_str()
        } else {
            raw.value.trim()
        };
        let parsed = (setting.parse)(value).map_err(|reason| ConfigError {
            source_name: raw.name.clone(),
            value: raw.value.clone(),
            reason,
        })?;
        let shown = shown(meta, raw.value);
        self.note(meta, shown, raw.origin);
        Ok(Some(parsed))
    }

    /// What `meta` would resolve to, without parsing it: for the settings a loader does
    /// not read (`RUST_LOG`, the generator's), which `config` prints all the same.
    pub fn describe(&self, meta: &'static Meta) -> Resolved {
        match self.raw(meta) {
            Some(raw) => Resolved {
                var: meta.var,
                value: shown(meta, raw.value),
                origin: raw.origin,
            },
            None => Resolved {
                var: meta.var,
                value: meta.default_shown().to_string(),
                origin: Origin::Default,
            },
        }
    }

    fn raw(&self, meta: &Meta) -> Option<Raw> {
        if let Some(value) = self.flags.and_then(|f| f.get(meta.var)) {
            let name = format!("--{}", meta.flag_name().unwrap_or_default());
            return Some(Raw {
                name: name.clone(),
                value: value.to_string(),
                origin: Origin::Flag(name),
            });
        }
        let value = self.env.get(meta.var).filter(|v| !v.trim().is_empty())?;
        let origin = self
            .env
            .origin(meta.var)
            .map_or(Origin::Env, Origin::EnvFile);
        Some(Raw {
            name: meta.var.to_string(),
            value,
            origin,
        })
    }

    fn replace_note(&self, meta: &Meta, value: String, origin: Origin) {
        let mut resolved = self.resolved.borrow_mut();
        if let Some(entry) = resolved.iter_mut().find(|r| r.var == meta.var) {
            entry.value = value;
            entry.origin = origin;
        }
    }

    fn note(&self, meta: &Meta, value: String, origin: Origin) {
        let mut resolved = self.resolved.borrow_mut();
        // A setting read twice (e.g. WORKER_MEMORY_LIMIT by two loaders) is listed once.
        if resolved.iter().all(|r| r.var != meta.var) {
            resolved.push(Resolved {
                var: meta.var,
                value,
                origin,
            });
        }
    }
}

/// A set value as printed: a secret is masked.
fn shown(meta: &Meta, value: String) -> String {
    if meta.secret {
        "********".to_string()
    } else {
        value
    }
}

/// A computed default as `zero-logs config` prints it.
pub trait Show {
    fn show(&self) -> String;
}

impl Show for usize {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for u64 {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for String {
    fn show(&self) -> String {
        self.clone()
    }
}

impl Show for std::path::PathBuf {
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl<T: Show> Show for Option<T> {
    fn show(&self) -> String {
        self.as_ref().map(Show::show).unwrap_or_default()
    }
}
