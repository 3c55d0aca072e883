//! The value parsers of the settings table ([`super::settings`]): each takes a
//! trimmed, non-empty value and says, when it fails, what is accepted; the
//! reader ([`super::reader`]) turns that into a [`super::ConfigError`] naming the
//! flag or variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) fn count(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .map_err(|_| "expected a whole number, e.g. 64".to_string())
}

pub(crate) fn positive(text: &str) -> Result<usize, String> {
    match count(text)? {
        0 => Err("expected a whole number of at least 1".into()),
        n => Ok(n),
    }
}

pub(crate) fn days(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|&days| days <= 36_500)
        .ok_or_else(|| "expected whole days from 0 (keep for ever) to 36500, e.g. 30".to_string())
}

pub(crate) fn millis(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| "expected milliseconds as a whole number, e.g. 5000".to_string())
}

/// A CPU slice in µs: 0 (keep the kernel's default) or within what the kernel accepts.
pub(crate) fn cpu_slice(text: &str) -> Result<Option<Duration>, String> {
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

pub(crate) fn identifier(text: &str) -> Result<String, String> {
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

pub(crate) fn worker_id(text: &str) -> Result<String, String> {
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

/// One URL of ClickHouse's HTTP interface or several separated by commas (blanks
/// around each are ignored), kept as given; [`ClickHouseConfig::urls`] splits it.
/// An empty element or a URL given twice is an error naming it.
///
/// [`ClickHouseConfig::urls`]: crate::config::ClickHouseConfig::urls
pub(crate) fn url_list(text: &str) -> Result<String, String> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, url) in text.split(',').map(str::trim).enumerate() {
        if url.is_empty() {
            return Err(format!(
                "element {} of the list is empty; separate URLs with single commas, e.g. \
                 http://ch1:8123,http://ch2:8123",
                i + 1
            ));
        }
        check_url(url).map_err(|e| format!("{url}: {e}"))?;
        if seen.contains(&url) {
            return Err(format!("{url} is listed twice; list each endpoint once"));
        }
        seen.push(url);
    }
    Ok(text.to_string())
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL of ClickHouse's HTTP interface, e.g. http://127.0.0.1:8123")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("the URL has no host, e.g. http://127.0.0.1:8123".into());
    }
    Ok(())
}

/// Any text, as given.
pub(crate) fn text(text: &str) -> Result<String, String> {
    Ok(text.to_string())
}

/// A path; the setting's absence is its `None`.
pub(crate) fn optional_path(text: &str) -> Result<Option<PathBuf>, String> {
    Ok(Some(PathBuf::from(text)))
}

pub(crate) fn absolute_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err("expected an absolute path".into());
    }
    Ok(path)
}

/// `IP:PORT[,IP:PORT…]`.
pub(crate) fn bind_addrs(text: &str) -> Result<Vec<SocketAddr>, String> {
    text.split(',')
        .map(str::trim)
        .map(|one| {
            one.parse::<SocketAddr>().map_err(|_| {
                format!("expected IP:PORT, e.g. 127.0.0.1:3000 or [::1]:3000 (not {one:?})")
            })
        })
        .collect()
}

pub(crate) fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("expected a TCP port 1..65535".into()),
    }
}

/// Requests per second per worker.
pub(crate) fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err("expected requests per second per worker, e.g. 2000".into()),
    }
}

pub(crate) fn millis_at_least(text: &str, min_ms: u64) -> Result<Duration, String> {
    let d = millis(text)?;
    if d < Duration::from_millis(min_ms) {
        return Err(format!("expected milliseconds of at least {min_ms}"));
    }
    Ok(d)
}
