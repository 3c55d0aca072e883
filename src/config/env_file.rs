//! The env files, `/etc/zero-logs/zero-logs.env` then
//! `/etc/zero-logs/zero-logs.env.d/*.env` in name order (a later value wins), read
//! as systemd's `EnvironmentFile=` and `zero-logs-generator` read them: blank
//! lines, `#`/`;` comments, `export NAME=…`, spaces around `=`, one pair of single
//! or double quotes, CRLF, no final newline; other lines are skipped with a
//! warning. Values are never evaluated. [`EnvFiles`] is a [`Lookup`] that knows
//! the file and line of every value; [`Layered`] puts the process environment in
//! front of it, as a program started by hand sees both.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::Lookup;

/// The package's configuration directory.
pub const CONF_DIR: &str = "/etc/zero-logs";
pub const ENV_FILE: &str = "zero-logs.env";
pub const ENV_DIR: &str = "zero-logs.env.d";

/// Where a value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Every `NAME=VALUE` of the env files, the last one winning.
#[derive(Debug, Clone, Default)]
pub struct EnvFiles {
    values: HashMap<String, (String, Origin)>,
    /// Lines skipped, unreadable files: printed, never fatal (like the generator).
    pub warnings: Vec<String>,
}

impl Lookup for EnvFiles {
    fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).map(|(v, _)| v.clone())
    }

    fn origin(&self, name: &str) -> Option<String> {
        EnvFiles::origin(self, name).map(ToString::to_string)
    }
}

impl EnvFiles {
    /// Reads `dir/zero-logs.env` and `dir/zero-logs.env.d/*.env`; missing
    /// files are fine.
    pub fn load(dir: &Path) -> EnvFiles {
        let mut env = EnvFiles::default();
        for file in env_file_paths(dir) {
            match std::fs::read(&file) {
                Ok(bytes) => env.parse(&String::from_utf8_lossy(&bytes), &file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => env
                    .warnings
                    .push(format!("{}: cannot read: {e}", file.display())),
            }
        }
        env
    }

    /// Adds the pairs in `text` (from `file`), overriding earlier ones.
    pub fn parse(&mut self, text: &str, file: &Path) {
        for (index, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line).trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let line = match line.strip_prefix("export") {
                Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim(),
                _ => line,
            };
            let Some((key, value)) = line.split_once('=') else {
                self.warnings.push(format!(
                    "{}:{}: ignoring a line that is not NAME=VALUE",
                    file.display(),
                    index + 1
                ));
                continue;
            };
            let origin = Origin {
                file: file.to_path_buf(),
                line: index + 1,
            };
            self.values.insert(
                key.trim().to_string(),
                (unquote(value.trim()).to_string(), origin),
            );
        }
    }

    /// Where `name` got its value.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.values.get(name).map(|(_, o)| o)
    }
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// The files in the order systemd and the generator read them.
pub fn env_file_paths(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![dir.join(ENV_FILE)];
    let mut extra: Vec<PathBuf> = std::fs::read_dir(dir.join(ENV_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            // The shell glob `*.env` skips dot files (our temp files among them).
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".env") && !n.starts_with('.'))
        })
        .collect();
    extra.sort();
    files.extend(extra);
    files
}

impl EnvFiles {
    /// These files behind the process environment, as a program started by hand (or
    /// by systemd with `EnvironmentFile=`) sees them.
    pub fn behind_process_env(&self) -> Layered<'_> {
        Layered {
            first: &super::ProcessEnv,
            then: self,
        }
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

    fn origin(&self, name: &str) -> Option<String> {
        match self.first.get(name) {
            Some(_) => self.first.origin(name),
            None => self.then.origin(name),
        }
    }
}
