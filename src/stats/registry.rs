//! The shape of a metric declaration ([`Metric`]) and the one generic renderer of
//! the Prometheus text format ([`render`]).
//!
//! In-house rather than the `prometheus-client` crate: its encoder writes
//! OpenMetrics (a closing `# EOF`, `# TYPE` without the `_total` of a counter's
//! samples, a `.` appended to every help text, its own content type) and has no
//! summary type, while our names and line shapes (`name{worker_id="1"} 17`,
//! `name{worker_id="1",quantile="0.99"} 0.0123`, `text/plain; version=0.0.4`) are
//! read by dashboards and tests. It would also keep a second copy of every counter
//! in its own atomics; here a metric is only a way to read a snapshot.

use std::fmt::Write;

/// `Content-Type` of [`render`]'s output: the Prometheus text format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The quantiles of every summary: what latency histograms are asked for, and the
/// samples' `quantile` label (`0.5`, `0.99`).
pub const QUANTILES: [f64; 2] = [0.5, 0.99];

/// One metric: read from a report `S` (a snapshot, or the `/stats` body).
pub struct Metric<S> {
    /// `zero_logs_<noun>_<unit>[_total]`; dashboards use it, never rename.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind<S>,
    /// One more label of this metric's sample (`("reason", "constraint")`). Metrics
    /// sharing a name are one family, declared next to each other with one label
    /// value each: the family's `# HELP`/`# TYPE` are written once, from the first.
    pub label: Option<(&'static str, &'static str)>,
}

/// Prometheus type, with where its value(s) come from.
pub enum Kind<S> {
    /// Only grows (until the process restarts).
    Counter(Field<S>),
    Gauge(Field<S>),
    /// One sample per [`QUANTILES`] entry, from the field at the same index.
    Summary([Field<S>; 2]),
}

/// A value of the report, under the key `/stats` shows it with.
pub struct Field<S> {
    /// The `/stats` JSON key; also the Rust field name (the reports rename nothing).
    pub key: &'static str,
    /// The value as `/stats` shows it (a `bool` as 0 or 1).
    pub get: fn(&S) -> f64,
    /// What the `/stats` value counts in; Prometheus gets base units.
    pub unit: Unit,
}

/// Unit of a `/stats` value. Prometheus wants seconds; `/stats` keeps the integer
/// milliseconds and microseconds its readers already parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Already what the metric's name says (bytes, rows, seconds, …).
    Base,
    Millis,
    Micros,
}

impl Unit {
    fn to_base(self, value: f64) -> f64 {
        match self {
            Unit::Base => value,
            Unit::Millis => value / 1e3,
            Unit::Micros => value / 1e6,
        }
    }
}

impl<S> Field<S> {
    /// The value as Prometheus shows it.
    pub fn read(&self, source: &S) -> f64 {
        self.unit.to_base((self.get)(source))
    }
}

impl<S> Kind<S> {
    /// The `# TYPE` word.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Counter(_) => "counter",
            Kind::Gauge(_) => "gauge",
            Kind::Summary(_) => "summary",
        }
    }

    /// The fields read, for checks against `/stats`.
    pub fn fields(&self) -> &[Field<S>] {
        match self {
            Kind::Counter(f) | Kind::Gauge(f) => std::slice::from_ref(f),
            Kind::Summary(fs) => fs,
        }
    }
}

/// A report value as a sample: the text format has only floats (a `u64` above 2^53
/// rounds, as it would in Prometheus).
pub trait SampleValue {
    fn sample(self) -> f64;
}

impl SampleValue for u64 {
    fn sample(self) -> f64 {
        self as f64
    }
}

impl SampleValue for i64 {
    fn sample(self) -> f64 {
        self as f64
    }
}

impl SampleValue for u32 {
    fn sample(self) -> f64 {
        f64::from(self)
    }
}

impl SampleValue for f64 {
    fn sample(self) -> f64 {
        self
    }
}

impl SampleValue for bool {
    fn sample(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
}

/// `field!(name)` / `field!(name, Millis)`: the report's field `name`, shown in
/// `/stats` as `name` — one identifier for both, so they cannot drift apart.
macro_rules! field {
    ($key:ident) => {
        $crate::stats::registry::field!($key, Base)
    };
    ($key:ident, $unit:ident) => {
        $crate::stats::registry::Field {
            key: stringify!($key),
            get: |s| $crate::stats::registry::SampleValue::sample(s.$key),
            unit: $crate::stats::registry::Unit::$unit,
        }
    };
}
pub(crate) use field;

/// A table of [`Metric`]s, one entry a declaration:
/// `field: Counter|Gauge[(Millis|Micros)] ["name" = "value"] "name" "help";` (the
/// bracketed extra label is optional, see [`Metric::label`]) or, for a latency
/// summary read in µs, `[p50_field, p99_field]: Summary "name" "help";`.
macro_rules! metrics {
    ($($fields:tt: $kind:ident $(($unit:ident))? $([$lname:literal = $lvalue:literal])?
        $name:literal $help:literal;)+) => {
        &[$($crate::stats::registry::Metric {
            name: $name,
            help: $help,
            kind: $crate::stats::registry::metrics!(@kind $fields $kind $($unit)?),
            label: $crate::stats::registry::metrics!(@label $($lname $lvalue)?),
        },)+]
    };
    (@label) => { None };
    (@label $lname:literal $lvalue:literal) => { Some(($lname, $lvalue)) };
    (@kind [$p50:ident, $p99:ident] Summary) => {
        $crate::stats::registry::Kind::Summary([
            $crate::stats::registry::field!($p50, Micros),
            $crate::stats::registry::field!($p99, Micros),
        ])
    };
    (@kind $field:ident $kind:ident $($unit:ident)?) => {
        $crate::stats::registry::Kind::$kind($crate::stats::registry::field!($field $(, $unit)?))
    };
}
pub(crate) use metrics;

/// Constant labels of every sample (`worker_id="7"`), values escaped.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let value = value
            .replace('\\', r"\\")
            .replace('"', r#"\""#)
            .replace('\n', r"\n");
        let _ = write!(out, "{sep}{name}=\"{value}\"");
    }
    out
}

/// Appends `metrics`, read from `source`, in the Prometheus text format; `labels`
/// (from [`labels`]) go on every sample. (Writing to a `String` cannot fail.)
pub fn render<S>(out: &mut String, labels: &str, metrics: &[Metric<S>], source: &S) {
    let mut family = "";
    for m in metrics {
        let name = m.name;
        if name != family {
            let _ = writeln!(out, "# HELP {name} {}", m.help);
            let _ = writeln!(out, "# TYPE {name} {}", m.kind.type_name());
            family = name;
        }
        match &m.kind {
            Kind::Counter(f) | Kind::Gauge(f) => {
                let _ = match m.label {
                    Some((label, value)) => {
                        let extra = self::labels(&[(label, value)]);
                        writeln!(out, "{name}{{{labels},{extra}}} {}", f.read(source))
                    }
                    None => writeln!(out, "{name}{{{labels}}} {}", f.read(source)),
                };
            }
            Kind::Summary(fields) => {
                for (q, f) in QUANTILES.iter().zip(fields) {
                    let value = f.read(source);
                    let _ = writeln!(out, "{name}{{{labels},quantile=\"{q}\"}} {value}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Report {
        rows: u64,
        bad_a: u64,
        bad_b: u64,
        queue: i64,
        age_ms: u64,
        p50_us: u64,
        p99_us: u64,
    }

    const METRICS: &[Metric<Report>] = metrics![
        rows: Counter "t_rows_total" "Rows.";
        bad_a: Counter ["why" = "a"] "t_bad_total" "Bad rows.";
        bad_b: Counter ["why" = "b"] "t_bad_total" "Bad rows.";
        queue: Gauge "t_queue_rows" "Queue.";
        age_ms: Gauge(Millis) "t_age_seconds" "Age.";
        [p50_us, p99_us]: Summary "t_seconds" "Time.";
    ];

    #[test]
    fn renders_the_prometheus_text_shapes() {
        let report = Report {
            rows: 17,
            bad_a: 3,
            bad_b: 4,
            queue: -2,
            age_ms: 1500,
            p50_us: 1234,
            p99_us: 98765,
        };
        let mut out = String::new();
        render(&mut out, &labels(&[("worker_id", "1")]), METRICS, &report);
        assert_eq!(
            out,
            "# HELP t_rows_total Rows.\n# TYPE t_rows_total counter\n\
             t_rows_total{worker_id=\"1\"} 17\n\
             # HELP t_bad_total Bad rows.\n# TYPE t_bad_total counter\n\
             t_bad_total{worker_id=\"1\",why=\"a\"} 3\n\
             t_bad_total{worker_id=\"1\",why=\"b\"} 4\n\
             # HELP t_queue_rows Queue.\n# TYPE t_queue_rows gauge\n\
             t_queue_rows{worker_id=\"1\"} -2\n\
             # HELP t_age_seconds Age.\n# TYPE t_age_seconds gauge\n\
             t_age_seconds{worker_id=\"1\"} 1.5\n\
             # HELP t_seconds Time.\n# TYPE t_seconds summary\n\
             t_seconds{worker_id=\"1\",quantile=\"0.5\"} 0.001234\n\
             t_seconds{worker_id=\"1\",quantile=\"0.99\"} 0.098765\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("a", "x\"y\\z\n"), ("b", "2")]),
            r#"a="x\"y\\z\n",b="2""#
        );
    }
}
