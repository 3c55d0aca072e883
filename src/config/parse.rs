//! Reading one setting (flag, else environment, else default) and the value parsers;
//! every failure becomes a [`ConfigError`] naming the flag or variable.

use std::time::Duration;

use super::{ConfigError, Lookup};

/// Reads one setting: flag, else environment, else none.
pub(super) struct Reader<'a> {
    pub(super) env: &'a dyn Lookup,
}

/// One raw value and the name to blame when it is wrong.
pub(super) struct Raw {
    pub(super) name: String,
    pub(super) value: String,
}

impl Reader<'_> {
    pub(super) fn raw(&self, flag: &Option<String>, flag_name: &str, var: &str) -> Option<Raw> {
        if let Some(value) = flag {
            return Some(Raw {
                name: format!("--{flag_name}"),
                value: value.clone(),
            });
        }
        self.env
            .get(var)
            .filter(|v| !v.trim().is_empty())
            .map(|value| Raw {
                name: var.to_string(),
                value,
            })
    }

    pub(super) fn parse<T>(
        &self,
        flag: &Option<String>,
        flag_name: &str,
        var: &str,
        default: T,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(flag, flag_name, var) {
            None => Ok(default),
            Some(raw) => parse(raw.value.trim()).map_err(|reason| ConfigError {
                source_name: raw.name,
                value: raw.value,
                reason,
            }),
        }
    }

    pub(super) fn string(
        &self,
        flag: &Option<String>,
        flag_name: &str,
        var: &str,
        default: &str,
    ) -> String {
        self.raw(flag, flag_name, var)
            .map(|r| r.value)
            .unwrap_or_else(|| default.to_string())
    }
}

pub(super) fn count(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .map_err(|_| "expected a whole number, e.g. 64".to_string())
}

pub(super) fn positive(text: &str) -> Result<usize, String> {
    match count(text)? {
        0 => Err("expected a whole number of at least 1".into()),
        n => Ok(n),
    }
}

pub(crate) fn millis(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| "expected milliseconds as a whole number, e.g. 5000".to_string())
}

/// A CPU slice in µs: 0 (keep the kernel's default) or within what the kernel accepts.
pub(super) fn cpu_slice(text: &str) -> Result<Option<Duration>, String> {
    let (min, max) = (crate::sched::MIN_SLICE, crate::sched::MAX_SLICE);
    let form = || {
        format!(
            "expected microseconds: 0 (the kernel's default) or {}..={}",
            min.as_micros(),
            max.as_micros()
        )
    };
    let us: u64 = text.parse().map_err(|_| form())?;
    let slice = Duration::from_micros(us);
    match us {
        0 => Ok(None),
        _ if slice < min || slice > max => Err(form()),
        _ => Ok(Some(slice)),
    }
}

pub(crate) fn boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Bytes as a whole number with an optional unit: `512`, `64K`, `10MB`, `1GiB`.
/// Decimal and binary prefixes both mean powers of 1024, as the old deployment did.
pub fn bytes(text: &str) -> Result<usize, String> {
    const FORM: &str = "expected bytes, e.g. 1048576, 512K, 10MB or 1GiB";
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits.parse().map_err(|_| FORM.to_string())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(FORM.into()),
    };
    n.checked_mul(1usize << shift)
        .ok_or_else(|| FORM.to_string())
}

pub(super) fn identifier(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !text.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(text.to_string())
    } else {
        Err("expected an identifier of letters, digits and _, not starting with a digit".into())
    }
}

pub(super) fn worker_id(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(text.to_string())
    } else {
        Err("expected a short name of letters, digits, - and _ (systemd's %i), e.g. 3".into())
    }
}

pub(super) fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL of ClickHouse's HTTP interface, e.g. http://127.0.0.1:8123")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("the URL has no host, e.g. http://127.0.0.1:8123".into());
    }
    Ok(())
}
