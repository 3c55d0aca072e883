//! The validated row type shared by every stage after validation.
//!
//! A [`Record`] is what ClickHouse stores: validation produces it, the sink
//! encodes it. It depends on no other module so that both sides can share it.
//!
//! [`format_rfc3339`] is the text form of its timestamps, for whatever shows one (the
//! ctl's times, test and benchmark bodies); parsing them is validation's.

use std::fmt;

/// Severity, normalised from the many spellings clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    /// The canonical lower-case name stored in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// The OpenTelemetry `SeverityNumber` a level stands for: the first of its range
    /// (TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21).
    pub fn severity_number(self) -> u8 {
        match self {
            Level::Trace => 1,
            Level::Debug => 5,
            Level::Info => 9,
            Level::Warn => 13,
            Level::Error => 17,
            Level::Fatal => 21,
        }
    }

    /// The OpenTelemetry short name of [`severity_number`](Self::severity_number).
    pub fn severity_text(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }

    /// Parses a level case-insensitively, accepting common aliases
    /// (`warning`, `err`, `critical`, `panic`, `verbose`, `notice`, …).
    pub fn parse(text: &str) -> Option<Level> {
        const ALIASES: &[(&str, Level)] = &[
            ("trace", Level::Trace),
            ("verbose", Level::Trace),
            ("debug", Level::Debug),
            ("dbg", Level::Debug),
            ("info", Level::Info),
            ("information", Level::Info),
            ("informational", Level::Info),
            ("notice", Level::Info),
            ("warn", Level::Warn),
            ("warning", Level::Warn),
            ("error", Level::Error),
            ("err", Level::Error),
            ("fatal", Level::Fatal),
            ("critical", Level::Fatal),
            ("crit", Level::Fatal),
            ("alert", Level::Fatal),
            ("emerg", Level::Fatal),
            ("emergency", Level::Fatal),
            ("panic", Level::Fatal),
        ];
        ALIASES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, level)| *level)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Event time, nanoseconds since the Unix epoch (UTC).
    pub timestamp_ns: i64,
    pub level: Level,
    pub service: String,
    pub message: String,
    /// Lower-case hex (32 digits) or empty when absent.
    pub trace_id: String,
    /// Lower-case hex (16 digits) or empty when absent.
    pub span_id: String,
    /// Flat attributes in the order the client sent them; values as text. For an OTLP
    /// record: its own attributes, then its scope's, then its resource's (without
    /// `service.name`), split by the counts in [`OtelFields`].
    pub attributes: Vec<(String, String)>,
    /// What only OTLP carries; `None` for the native APIs.
    pub otel: Option<Box<OtelFields>>,
}

/// The OTLP fields the native row has no column for, kept for the OpenTelemetry table
/// layout (`CLICKHOUSE_SCHEMA=otel`). Boxed: most records have none, and an `Option` of
/// a box costs them one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtelFields {
    /// `severity_number` as sent (0 = unspecified).
    pub severity_number: u8,
    /// `severity_text` as sent (may be empty).
    pub severity_text: String,
    /// The low 8 bits of `flags` (W3C trace flags).
    pub trace_flags: u8,
    pub event_name: String,
    pub scope_name: String,
    pub scope_version: String,
    pub scope_schema_url: String,
    pub resource_schema_url: String,
    /// How many of [`Record::attributes`] are the record's own; the next
    /// [`scope_attributes`](Self::scope_attributes) are its scope's, the rest its
    /// resource's.
    pub own_attributes: usize,
    pub scope_attributes: usize,
}

impl OtelFields {
    /// Bytes of the strings, for sizing buffers.
    fn text_bytes(&self) -> usize {
        self.severity_text.len()
            + self.event_name.len()
            + self.scope_name.len()
            + self.scope_version.len()
            + self.scope_schema_url.len()
            + self.resource_schema_url.len()
    }
}

impl Record {
    /// Approximate encoded size (a little over it), to size the encoding buffer.
    pub fn approx_bytes(&self) -> usize {
        let attrs: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum();
        8 + 8
            + self.service.len()
            + self.message.len()
            + self.trace_id.len()
            + self.span_id.len()
            + attrs
            + 16
            + self.otel.as_ref().map_or(0, |o| o.text_bytes() + 16)
    }
}

/// A validated batch: all of a request's records, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub records: Vec<Record>,
}

impl Batch {
    pub fn new(records: Vec<Record>) -> Batch {
        Batch { records }
    }

    /// Sum of [`Record::approx_bytes`]: computed when asked (only encoding sizes its
    /// buffer with it; queues count the encoded bytes).
    pub fn approx_bytes(&self) -> usize {
        self.records.iter().map(Record::approx_bytes).sum()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

const NANOS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i128 = 86_400;

/// RFC 3339 in UTC with exactly `frac_digits` (0–9) fractional digits, truncated:
/// `format_rfc3339(0, 3)` is `1970-01-01T00:00:00.000Z`.
pub fn format_rfc3339(epoch_ns: i128, frac_digits: u32) -> String {
    let digits = frac_digits.min(9);
    let secs = epoch_ns.div_euclid(NANOS_PER_SEC);
    let frac = epoch_ns.rem_euclid(NANOS_PER_SEC) / 10i128.pow(9 - digits);
    let days = i64::try_from(secs.div_euclid(SECS_PER_DAY)).unwrap_or(0);
    let tod = secs.rem_euclid(SECS_PER_DAY);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (tod / 3600, tod / 60 % 60, tod % 60);
    if digits == 0 {
        return format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z");
    }
    let width = digits as usize;
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:0width$}Z")
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01
/// (Howard Hinnant's algorithm: years start in March so the leap day is last, and
/// 400-year eras repeat exactly). Validation's `days_from_civil` is the inverse.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_rfc3339_has_fixed_digits() {
        assert_eq!(format_rfc3339(0, 3), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(951_782_400_123_456_789, 3),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339(951_782_400_123_456_789, 0),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn level_aliases_are_case_insensitive() {
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("Err"), Some(Level::Error));
        assert_eq!(Level::parse("critical"), Some(Level::Fatal));
        assert_eq!(Level::parse("loud"), None);
        assert_eq!(Level::parse(""), None);
    }
}
