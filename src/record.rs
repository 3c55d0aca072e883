//! The validated row type shared by every stage after validation.
//!
//! A [`Record`] is what ClickHouse stores: validation produces it, the sink
//! encodes it. It depends on no other module so that both sides can share it.

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
    /// Flat attributes in the order the client sent them; values as text.
    pub attributes: Vec<(String, String)>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_aliases_are_case_insensitive() {
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("Err"), Some(Level::Error));
        assert_eq!(Level::parse("critical"), Some(Level::Fatal));
        assert_eq!(Level::parse("loud"), None);
        assert_eq!(Level::parse(""), None);
    }
}
