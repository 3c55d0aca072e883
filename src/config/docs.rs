//! Text rendered from the settings table ([`super::settings`]): the shipped env
//! file, the settings tables of the README and docs/CTL.md, the env-only part of
//! `zero-logs serve --help`, and the effective configuration that `zero-logs
//! config` and `zero-logs-ctl config` print. A test compares the files in the
//! repository with these renderings (`UPDATE_DOCS=1 cargo test --lib config::docs`
//! rewrites them).

use std::fmt::Write;

use super::settings::{Meta, Program, Section, ALL};
use super::{Lookup, Reader, Resolved};

const ENV_FILE_HEADER: &str = "\
# /etc/zero-logs/zero-logs.env: settings of the zero-logs workers (and of
# zero-logs-generator, which turns the cluster settings into systemd units).
#
# Every line below is commented out and shows the built-in default; uncomment
# and change what you need. Format: NAME=value, one per line; # starts a
# comment line (not allowed after a value); quotes around a value are optional;
# an empty value means the default.
# Durations are milliseconds; sizes are bytes with optional K/M/G suffixes
# (powers of 1024: 512K, 10MB, 1GiB).
#
# After a change:
#   zero-logs-ctl validate                   names every invalid setting
#   systemctl daemon-reload                  cluster settings (generator)
#   systemctl restart zero-logs.target       every worker reads the file anew
# Files in /etc/zero-logs/zero-logs.env.d/*.env are read after this one and win
# (zero-logs-ctl keeps its state there, e.g. `scale N`).
# `zero-logs config` prints what a worker would use and where each value came from.
#
# Generated from the settings table (src/config/settings.rs); do not edit the
# copy in the source tree by hand.
";

/// Width of the env file's comment lines.
const WIDTH: usize = 80;

/// `systemd/zero-logs.env`: every setting, commented out, with its doc and default.
pub fn env_file() -> String {
    let mut out = String::from(ENV_FILE_HEADER);
    for section in Section::ALL {
        let title = format!("# --- {} ", section.title());
        let dashes = "-".repeat(WIDTH.saturating_sub(title.chars().count()).max(3));
        let _ = write!(out, "\n{title}{dashes}\n");
        push_comment(&mut out, section.intro());
        for meta in ALL.iter().filter(|m| m.section == section) {
            push_comment(&mut out, &meta.plain_doc());
            let _ = writeln!(out, "#{}={}", meta.var, meta.default);
        }
    }
    out
}

/// Appends `text` as `# ` lines of at most [`WIDTH`] characters.
fn push_comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > 1 {
        out.push_str(&line);
        out.push('\n');
    }
}

fn read_by(program: Program) -> impl Iterator<Item = &'static Meta> {
    ALL.iter().filter(move |m| m.read_by.contains(&program))
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The README's table of the worker's settings.
pub fn readme_table() -> String {
    markdown_table(Program::Worker, true)
}

/// docs/CTL.md's table of the management daemon's settings.
pub fn daemon_table() -> String {
    markdown_table(Program::Daemon, false)
}

/// A Markdown table of the settings `program` reads, with a flag column or not.
fn markdown_table(program: Program, with_flag: bool) -> String {
    let mut out = String::from(if with_flag {
        "| Variable | Flag | Default | Meaning |\n|---|---|---|---|\n"
    } else {
        "| Variable | Default | Meaning |\n|---|---|---|\n"
    });
    for meta in read_by(program) {
        let flag = match meta.flag_name() {
            _ if !with_flag => String::new(),
            Some(f) => format!(" `--{f}` |"),
            None => " (env only) |".to_string(),
        };
        let _ = writeln!(
            out,
            "| `{}` |{flag} {} | {} |",
            meta.var,
            cell(meta.default_shown()),
            cell(&meta.markdown_doc())
        );
    }
    out
}

/// The env-only part of `zero-logs serve --help`.
pub fn serve_after_help() -> String {
    let mut out = String::from("Environment only:\n");
    for meta in read_by(Program::Worker).filter(|m| m.flag_name().is_none()) {
        let _ = writeln!(
            out,
            "  {}  {} [default: {}]",
            meta.var,
            meta.plain_doc(),
            meta.default_shown()
        );
    }
    out.push_str(
        "\nExit status: 0 after a clean stop, 1 on a runtime failure (e.g. ClickHouse unreachable\n\
         at start), 2 for an invalid setting.\n\
         `zero-logs config` prints the effective settings and where each came from.",
    );
    out
}

/// The effective settings of `program` in env-file syntax, each with where it came
/// from: those in `resolved` as the loader read them, the others (read outside the
/// loader, e.g. `RUST_LOG`) straight from `env`.
pub fn explain(program: Program, resolved: &[Resolved], env: &dyn Lookup) -> String {
    let mut out = String::new();
    for meta in read_by(program) {
        let entry = resolved
            .iter()
            .find(|r| r.var == meta.var)
            .cloned()
            .unwrap_or_else(|| unread(meta, env));
        let line = format!("{}={}", entry.var, entry.value);
        let _ = writeln!(out, "{line:<48} # {}", entry.origin);
    }
    out
}

fn unread(meta: &'static Meta, env: &dyn Lookup) -> Resolved {
    Reader::env_only(env).describe(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// `file` must hold `expected` between the lines `<!-- begin NAME -->` and
    /// `<!-- end NAME -->` (the whole file when `marker` is `None`); with
    /// `UPDATE_DOCS=1` it is rewritten instead.
    fn check(path: &str, marker: Option<&str>, expected: &str) {
        let file = repo_file(path);
        let text = std::fs::read_to_string(&file).unwrap();
        let (before, current, after) = match marker {
            None => ("", text.as_str(), ""),
            Some(name) => {
                let begin = format!("<!-- begin {name} -->\n");
                let end = format!("<!-- end {name} -->");
                let start = text.find(&begin).expect("begin marker") + begin.len();
                let stop = text.find(&end).expect("end marker");
                (&text[..start], &text[start..stop], &text[stop..])
            }
        };
        if current == expected {
            return;
        }
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&file, format!("{before}{expected}{after}")).unwrap();
            return;
        }
        let first = current
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(current.lines().count().min(expected.lines().count()));
        panic!(
            "{path} differs from the settings table at line {} of the generated part:\n  has:  {:?}\n  want: {:?}\n\
             Edit src/config/settings.rs, then run UPDATE_DOCS=1 cargo test --lib config::docs",
            first + 1,
            current.lines().nth(first),
            expected.lines().nth(first)
        );
    }

    #[test]
    fn shipped_env_file_is_the_table() {
        check("systemd/zero-logs.env", None, &env_file());
    }

    #[test]
    fn readme_table_is_the_table() {
        check("README.md", Some("settings"), &readme_table());
    }

    #[test]
    fn ctl_doc_table_is_the_table() {
        check("docs/CTL.md", Some("daemon-settings"), &daemon_table());
    }

    #[test]
    fn env_file_lines_fit_and_every_setting_is_there_with_its_default() {
        let text = env_file();
        for line in text.lines() {
            assert!(line.chars().count() <= 90, "too long: {line}");
        }
        for meta in ALL {
            let line = format!("#{}={}", meta.var, meta.default);
            assert!(text.lines().any(|l| l == line), "no {line}");
        }
    }

    /// The generator (POSIX sh) keeps its own defaults; they must be the table's.
    #[test]
    fn generator_defaults_are_the_tables() {
        use super::super::settings as S;
        let script = std::fs::read_to_string(repo_file("systemd/zero-logs-generator")).unwrap();
        let default_of = |name: &str| {
            script
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} not in the generator"))
                .to_string()
        };
        let ms = |d: std::time::Duration| d.as_millis().to_string();
        let cases = [
            (
                "DEFAULT_RESTART_DELAY_MS",
                ms(S::WORKER_RESTART_DELAY.written_default()),
            ),
            (
                "DEFAULT_SHUTDOWN_TIMEOUT_MS",
                ms(S::GRACEFUL_SHUTDOWN_TIMEOUT.written_default()),
            ),
            (
                "DEFAULT_WATCHDOG_MS",
                ms(S::WORKER_WATCHDOG_TIMEOUT.written_default()),
            ),
        ];
        for (name, want) in cases {
            assert_eq!(default_of(name), want, "{name}");
        }
        let memory = super::super::bytes(&default_of("DEFAULT_MEMORY_LIMIT")).unwrap() as u64;
        assert_eq!(memory, S::WORKER_MEMORY_LIMIT.written_default());
    }
}
