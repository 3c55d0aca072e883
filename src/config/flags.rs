//! The flags of `zero-logs serve`, made from the settings table: one per worker
//! setting that has a flag, each overriding the environment variable named in its
//! help (flag > environment > default, see [`super`]). Values stay text here; the
//! loader parses them with the setting's parser, so a bad flag and a bad variable
//! get the same message.

use std::collections::BTreeMap;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use super::settings::{self, Flag, Meta};

/// The flags given to `zero-logs serve`, by variable name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServeFlags {
    values: BTreeMap<&'static str, String>,
}

impl ServeFlags {
    /// The flag of setting `var`, if given (a repeated flag's values joined with `,`).
    pub fn get(&self, var: &str) -> Option<&str> {
        self.values.get(var).map(String::as_str)
    }

    /// Sets the flag of setting `var`, as if given on the command line (for tests and
    /// embedders). Panics if the setting has no flag: that is a programming error.
    pub fn with(mut self, var: &str, value: &str) -> ServeFlags {
        let meta = settings::find(var)
            .filter(|m| m.flag_name().is_some())
            .unwrap_or_else(|| panic!("{var} has no flag"));
        self.values.insert(meta.var, value.to_string());
        self
    }
}

/// The `--help` line of a setting: its doc, variable and default.
fn help(meta: &Meta) -> String {
    format!(
        "{}\n[env: {}] [default: {}]",
        meta.plain_doc(),
        meta.var,
        meta.default_shown().replace('`', "")
    )
}

fn arg(meta: &'static Meta, long: String) -> Arg {
    let action = match meta.flag {
        Flag::Named(_) => ArgAction::Append,
        Flag::Derived | Flag::EnvOnly => ArgAction::Set,
    };
    Arg::new(meta.var)
        .long(long)
        .value_name(meta.value_name)
        .action(action)
        .help(help(meta))
        .help_heading(meta.section.title())
}

impl Args for ServeFlags {
    fn augment_args(cmd: Command) -> Command {
        settings::ALL
            .iter()
            .fold(cmd, |cmd, meta| match meta.flag_name() {
                Some(long) => cmd.arg(arg(meta, long)),
                None => cmd,
            })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ServeFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = ServeFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for meta in settings::ALL.iter().filter(|m| m.flag_name().is_some()) {
            if let Some(values) = matches.get_many::<String>(meta.var) {
                let joined = values.map(String::as_str).collect::<Vec<_>>().join(",");
                self.values.insert(meta.var, joined);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        flags: ServeFlags,
    }

    #[test]
    fn every_flag_of_the_table_parses_and_repeated_ones_join() {
        let cli = Cli::try_parse_from([
            "x",
            "--batch-max-rows",
            "5",
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "[::1]:2",
        ])
        .unwrap();
        assert_eq!(cli.flags.get("BATCH_MAX_ROWS"), Some("5"));
        assert_eq!(cli.flags.get("LISTEN_ADDRS"), Some("127.0.0.1:1,[::1]:2"));
        assert_eq!(cli.flags.get("BATCH_MAX_AGE"), None);
        assert!(Cli::try_parse_from(["x", "--clickhouse-password", "p"]).is_err());
        assert!(Cli::try_parse_from(["x", "--health-check-interval", "5"]).is_err());
    }
}
