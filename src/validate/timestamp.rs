//! Event time: RFC 3339 text and Unix epoch numbers, to nanoseconds since the epoch.
//!
//! Hand-written (days-from-civil arithmetic) rather than chrono: the accepted grammar
//! is small, this runs once per record on the hot path, and a rejection must name the
//! exact part of the text that is wrong.
//!
//! Every successful result lies in `0 <= ns < MAX_NS`: ClickHouse `DateTime` is UInt32
//! seconds (it overflows on 2106-02-07), and a round year keeps the rule easy to state.

use std::fmt;

use super::Shown;
use crate::record::civil_from_days;

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// 2106-01-01T00:00:00Z in seconds; the first instant that is not accepted.
const MAX_SECS: i64 = 4_291_747_200;
/// [`MAX_SECS`] in nanoseconds.
pub(super) const MAX_NS: i64 = MAX_SECS * NANOS_PER_SEC;

const RANGE: &str = "1970-01-01T00:00:00Z <= t < 2106-01-01T00:00:00Z";
const UNIT_RULE: &str = "the magnitude picks the unit: below 1e11 seconds, below 1e14 \
                         milliseconds, below 1e17 microseconds, otherwise nanoseconds";
const FORMS: &str = "expected RFC 3339 text (e.g. \"2024-05-01T12:00:00.123Z\") or epoch \
                     seconds/milliseconds/microseconds/nanoseconds as digits";
const LAYOUT: &str = "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)";

/// The unit an epoch number is read in, chosen by its magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    fn of(magnitude: f64) -> Unit {
        if magnitude < 1e11 {
            Unit::Seconds
        } else if magnitude < 1e14 {
            Unit::Millis
        } else if magnitude < 1e17 {
            Unit::Micros
        } else {
            Unit::Nanos
        }
    }

    fn nanos(self) -> u64 {
        match self {
            Unit::Seconds => 1_000_000_000,
            Unit::Millis => 1_000_000,
            Unit::Micros => 1_000,
            Unit::Nanos => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Millis => "milliseconds",
            Unit::Micros => "microseconds",
            Unit::Nanos => "nanoseconds",
        }
    }
}

/// A JSON integer (or digit string) since the epoch, unit by magnitude.
pub(super) fn from_epoch_u64(value: u64) -> Result<i64, String> {
    epoch_parts(value, 0, 0, &value)
}

/// serde_json hands out `i64` only for negative integers, which are all before 1970.
pub(super) fn from_epoch_i64(value: i64) -> Result<i64, String> {
    match u64::try_from(value) {
        Ok(v) => from_epoch_u64(v),
        Err(_) => Err(format!(
            "epoch timestamp {value} is negative (before 1970); accepted range is {RANGE}"
        )),
    }
}

/// A JSON float since the epoch, unit by magnitude.
///
/// An `f64` carries ~16 significant digits, which at today's epoch seconds is a
/// resolution of about 0.24 µs; the result is rounded to the microsecond so that
/// `1714564800.123456` becomes `…800_123_456_000` ns, not `…800_123_456_001`.
/// Clients needing nanoseconds send an integer or a string.
pub(super) fn from_epoch_f64(value: f64) -> Result<i64, String> {
    // NaN cannot come from JSON; `is_sign_negative` would wrongly reject -0.0.
    if value < 0.0 || value.is_nan() {
        return Err(format!(
            "epoch timestamp {value} is negative (before 1970); accepted range is {RANGE}"
        ));
    }
    let unit = Unit::of(value);
    let micros = match unit {
        Unit::Seconds => value * 1e6,
        Unit::Millis => value * 1e3,
        Unit::Micros => value,
        Unit::Nanos => value / 1e3,
    }
    .round();
    if micros >= (MAX_NS / 1_000) as f64 {
        // Beyond ~1e22 ns there is no useful date to show; say which side it fell.
        let when = if micros < 1e22 {
            format_ns(micros as i128 * 1_000)
        } else {
            "far in the future".to_owned()
        };
        return Err(out_of_range(&value, unit, &when));
    }
    // Cannot truncate: `micros` is below MAX_NS / 1000 and non-negative.
    Ok(micros as i64 * 1_000)
}

/// Exact nanoseconds since the epoch (gRPC `time_unix_nano`): no magnitude rule.
pub(super) fn from_unix_nanos(value: u64) -> Result<i64, String> {
    // Seconds, milliseconds and microseconds of any date since 1970 all read as
    // nanoseconds in January 1970, where no real gRPC client's events are: refuse
    // them rather than store them silently wrong.
    const BEFORE_1971_NS: u64 = 365 * SECS_PER_DAY as u64 * NANOS_PER_SEC as u64;
    if value < BEFORE_1971_NS {
        let unit = if value < 100_000_000_000 {
            "seconds"
        } else if value < 100_000_000_000_000 {
            "milliseconds"
        } else {
            "microseconds"
        };
        return Err(format!(
            "time_unix_nano {value} would be {}: it looks like {unit}; time_unix_nano is \
             nanoseconds since the epoch (or send `timestamp`, whose unit is read from its \
             magnitude)",
            format_ns(i128::from(value))
        ));
    }
    match i64::try_from(value) {
        Ok(ns) if ns < MAX_NS => Ok(ns),
        _ => Err(format!(
            "time_unix_nano {value} is {}, outside the accepted range {RANGE}",
            format_ns(i128::from(value))
        )),
    }
}

/// Text: RFC 3339, or an epoch number as `digits[.digits]` (unit by magnitude of the
/// integer part; the fraction is in that unit, truncated to whole nanoseconds).
pub(super) fn from_text(text: &str) -> Result<i64, String> {
    let bytes = text.as_bytes();
    // RFC 3339 always has '-' at index 4; epoch text never has '-'.
    if bytes.len() > 4 && bytes[4] == b'-' {
        return parse_rfc3339(text);
    }
    if !bytes.is_empty() && bytes.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        return parse_epoch_text(text);
    }
    Err(format!("invalid timestamp {}: {FORMS}", Shown(text)))
}

fn parse_epoch_text(text: &str) -> Result<i64, String> {
    let (int_digits, frac_digits) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let bad = |why: &str| Err(format!("invalid epoch timestamp {}: {why}", Shown(text)));
    if int_digits.is_empty() {
        return bad("digits are required before the '.'");
    }
    let frac_digits = match frac_digits {
        Some("") => return bad("digits are required after the '.'"),
        Some(f) if f.contains('.') => return bad("more than one '.'"),
        Some(f) => f,
        None => "",
    };
    // Leading zeros do not change the value; without them, 20+ digits overflow u64.
    let significant = int_digits.trim_start_matches('0');
    let int = if significant.is_empty() {
        0
    } else {
        match significant.parse::<u64>() {
            Ok(int) => int,
            Err(_) => {
                return Err(format!(
                    "epoch timestamp {} is far in the future; accepted range is {RANGE}",
                    Shown(text)
                ))
            }
        }
    };
    // Digits past the ninth are below a nanosecond in every unit: truncate them.
    let kept = &frac_digits[..frac_digits.len().min(9)];
    let frac = kept
        .bytes()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    epoch_parts(int, frac, kept.len() as u32, &Shown(text))
}

/// `int + frac / 10^frac_digits` units since the epoch, unit chosen by `int`.
fn epoch_parts(
    int: u64,
    frac: u64,
    frac_digits: u32,
    shown: &dyn fmt::Display,
) -> Result<i64, String> {
    let unit = Unit::of(int as f64);
    let unit_ns = u128::from(unit.nanos());
    let ns = u128::from(int) * unit_ns + u128::from(frac) * unit_ns / 10u128.pow(frac_digits);
    match i64::try_from(ns) {
        Ok(ns) if ns < MAX_NS => Ok(ns),
        _ => Err(out_of_range(shown, unit, &format_ns(ns as i128))),
    }
}

fn out_of_range(shown: &dyn fmt::Display, unit: Unit, when: &str) -> String {
    format!(
        "epoch timestamp {shown} read as {} ({UNIT_RULE}) is {when}, outside the accepted \
         range {RANGE}",
        unit.name()
    )
}

/// `Err` with the message of [`invalid_rfc3339`]: `rejected!(text, "why {}", x)`.
macro_rules! rejected {
    ($text:expr, $($why:tt)+) => {
        Err(invalid_rfc3339($text, format_args!($($why)+)))
    };
}

/// A rejection by [`parse_rfc3339`]: `why`, the text and the layout. Cold and
/// out of line, so that the accepting path stays short.
#[cold]
#[inline(never)]
fn invalid_rfc3339(text: &str, why: fmt::Arguments<'_>) -> String {
    format!(
        "invalid RFC 3339 timestamp {}: {why}; format: {LAYOUT}",
        Shown(text)
    )
}

/// Parses `YYYY-MM-DD(T|t| )HH:MM:SS[.1-9 digits](Z|z|+HH:MM|-HH:MM)`.
///
/// A leap second (`:60`) is accepted and lands on the next second, as POSIX time
/// has no slot for it. A missing offset is rejected: guessing a zone would
/// silently shift events by hours.
///
/// The text is read left to right, so a rejection names the first part that is
/// malformed; the fields are range-checked only once the whole text is read.
/// Nothing is allocated unless the text is rejected.
pub(super) fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let date = read_date(text)?;
    let time = read_time(text)?;
    // The seconds end at byte 19; from there on, parts have no fixed place.
    let (frac_ns, at) = read_fraction(text, 19)?;
    let (offset_secs, at) = read_offset(text, at)?;
    if at != text.len() {
        return rejected!(
            text,
            "unexpected text {} after the UTC offset",
            Shown(&text[at..])
        );
    }
    check_date(text, date)?;
    check_time(text, time)?;
    rfc3339_to_ns(text, date, time, frac_ns, offset_secs)
}

/// `YYYY-MM-DD` as written; [`check_date`] says whether that day exists.
#[derive(Clone, Copy)]
struct Date {
    year: u32,
    month: u32,
    day: u32,
}

/// `HH:MM:SS` as written; [`check_time`] range-checks it.
#[derive(Clone, Copy)]
struct TimeOfDay {
    hour: u32,
    minute: u32,
    second: u32,
}

/// The `len` ASCII digits at `at` as a number; `None` if one is missing or not a digit.
#[inline]
fn digits_at(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let mut value = 0;
    for &d in b.get(at..at + len)? {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(d - b'0');
    }
    Some(value)
}

/// Whether there is a byte at `at` and it is one of `want`.
#[inline]
fn byte_in(b: &[u8], at: usize, want: &[u8]) -> bool {
    b.get(at).is_some_and(|c| want.contains(c))
}

/// `YYYY-MM-DD`, bytes 0 to 9.
#[inline]
fn read_date(text: &str) -> Result<Date, String> {
    let b = text.as_bytes();
    let Some(year) = digits_at(b, 0, 4) else {
        return rejected!(text, "the year must be 4 digits");
    };
    if !byte_in(b, 4, b"-") {
        return rejected!(text, "expected '-' after the year");
    }
    let Some(month) = digits_at(b, 5, 2) else {
        return rejected!(text, "the month must be 2 digits");
    };
    if !byte_in(b, 7, b"-") {
        return rejected!(text, "expected '-' after the month");
    }
    let Some(day) = digits_at(b, 8, 2) else {
        return rejected!(text, "the day must be 2 digits");
    };
    Ok(Date { year, month, day })
}

/// The date/time separator and `HH:MM:SS`, bytes 10 to 18.
#[inline]
fn read_time(text: &str) -> Result<TimeOfDay, String> {
    let b = text.as_bytes();
    if b.len() == 10 {
        return rejected!(
            text,
            "a date alone is not a timestamp; add a time and UTC offset"
        );
    }
    if !byte_in(b, 10, b"Tt ") {
        return rejected!(
            text,
            "expected 'T' (or 't' or a space) between date and time"
        );
    }
    let Some(hour) = digits_at(b, 11, 2) else {
        return rejected!(text, "the hour must be 2 digits");
    };
    if !byte_in(b, 13, b":") {
        return rejected!(text, "expected ':' after the hour");
    }
    let Some(minute) = digits_at(b, 14, 2) else {
        return rejected!(text, "the minute must be 2 digits");
    };
    if !byte_in(b, 16, b":") {
        return rejected!(text, "expected ':' after the minute (seconds are required)");
    }
    let Some(second) = digits_at(b, 17, 2) else {
        return rejected!(text, "the second must be 2 digits");
    };
    Ok(TimeOfDay {
        hour,
        minute,
        second,
    })
}

/// An optional `.` and 1 to 9 digits at `at`: the fraction in nanoseconds (0 when
/// there is none) and where the text goes on.
#[inline]
fn read_fraction(text: &str, at: usize) -> Result<(u32, usize), String> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'.') {
        return Ok((0, at));
    }
    let start = at + 1;
    let mut end = start;
    while b.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    let digits = end - start;
    if digits == 0 {
        return rejected!(text, "'.' must be followed by 1 to 9 fractional digits");
    }
    if digits > 9 {
        return rejected!(
            text,
            "{digits} fractional digits; at most 9 (nanoseconds) are accepted"
        );
    }
    // At most 9 digits, so the value fits u32 and the scale is exact.
    let frac_ns = digits_at(b, start, digits).unwrap_or(0) * 10u32.pow(9 - digits as u32);
    Ok((frac_ns, end))
}

/// `Z`, `z`, `+HH:MM` or `-HH:MM` at `at`: the offset from UTC in seconds (east is
/// positive) and where the text goes on.
#[inline]
fn read_offset(text: &str, at: usize) -> Result<(i64, usize), String> {
    let b = text.as_bytes();
    let sign = match b.get(at) {
        None => {
            return rejected!(
                text,
                "missing UTC offset; append 'Z' for UTC or '+HH:MM' / '-HH:MM'"
            )
        }
        Some(b'Z' | b'z') => return Ok((0, at + 1)),
        Some(&sign @ (b'+' | b'-')) => sign,
        Some(_) => {
            let found: String = text[at..].chars().take(1).collect();
            return rejected!(
                text,
                "unexpected {} after the seconds (a fraction, 'Z' or a UTC offset must follow)",
                Shown(&found)
            );
        }
    };
    let (Some(oh), true, Some(om)) = (
        digits_at(b, at + 1, 2),
        byte_in(b, at + 3, b":"),
        digits_at(b, at + 4, 2),
    ) else {
        return rejected!(text, "the UTC offset must be +HH:MM or -HH:MM");
    };
    if oh > 23 || om > 59 {
        return rejected!(
            text,
            "UTC offset {}{oh:02}:{om:02} is out of range (at most 23:59)",
            sign as char
        );
    }
    let secs = i64::from(oh * 3600 + om * 60);
    Ok((if sign == b'+' { secs } else { -secs }, at + 6))
}

/// Whether the month is 01-12 and the day exists in it.
#[inline]
fn check_date(text: &str, date: Date) -> Result<(), String> {
    let Date { year, month, day } = date;
    if !(1..=12).contains(&month) {
        return rejected!(text, "month {month:02} is out of range (01-12)");
    }
    let last_day = days_in_month(i64::from(year), month);
    if day < 1 || day > last_day {
        return rejected!(
            text,
            "day {day:02} does not exist in {year:04}-{month:02} (01-{last_day})"
        );
    }
    Ok(())
}

/// Whether the time is 00:00:00-23:59:60 (a leap second is allowed).
#[inline]
fn check_time(text: &str, time: TimeOfDay) -> Result<(), String> {
    let TimeOfDay {
        hour,
        minute,
        second,
    } = time;
    if hour > 23 {
        return rejected!(text, "hour {hour:02} is out of range (00-23)");
    }
    if minute > 59 {
        return rejected!(text, "minute {minute:02} is out of range (00-59)");
    }
    if second > 60 {
        return rejected!(text, "second {second:02} is out of range (00-60)");
    }
    Ok(())
}

/// Nanoseconds since the epoch of a checked date and time, if within [`RANGE`].
#[inline]
fn rfc3339_to_ns(
    text: &str,
    date: Date,
    time: TimeOfDay,
    frac_ns: u32,
    offset_secs: i64,
) -> Result<i64, String> {
    let secs = days_from_civil(i64::from(date.year), date.month, date.day) * SECS_PER_DAY
        + i64::from(time.hour * 3600 + time.minute * 60 + time.second)
        - offset_secs;
    if !(0..MAX_SECS).contains(&secs) {
        return Err(format!(
            "timestamp {} is {}, outside the accepted range {RANGE}",
            Shown(text),
            format_ns(i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(frac_ns))
        ));
    }
    Ok(secs * NANOS_PER_SEC + i64::from(frac_ns))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm:
/// years start in March so the leap day is last, and 400-year eras repeat exactly);
/// the inverse of [`civil_from_days`].
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 in UTC, for error messages (values may be far outside the accepted range).
pub(super) fn format_ns(ns: i128) -> String {
    let secs = ns.div_euclid(i128::from(NANOS_PER_SEC));
    let frac = ns.rem_euclid(i128::from(NANOS_PER_SEC));
    let days = secs.div_euclid(i128::from(SECS_PER_DAY));
    let tod = secs.rem_euclid(i128::from(SECS_PER_DAY));
    let Ok(days) = i64::try_from(days) else {
        return "far outside any calendar".to_owned();
    };
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (tod / 3600, tod / 60 % 60, tod % 60);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_rfc3339_round_trips() {
        use crate::record::format_rfc3339;
        for ns in [
            0i64,
            1,
            1_714_564_800_123_456_789,
            4_102_444_799_999_999_999,
        ] {
            let text = format_rfc3339(i128::from(ns), 9);
            assert_eq!(parse_rfc3339(&text), Ok(ns), "{text}");
        }
    }

    const S: i64 = NANOS_PER_SEC;
    /// 2024-05-01T12:00:00Z
    const T0: i64 = 1_714_564_800;

    #[test]
    fn civil_round_trips_across_eras_and_leap_days() {
        for days in (-800_000..800_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(days_from_civil(2106, 1, 1) * SECS_PER_DAY, MAX_SECS);
    }

    #[test]
    fn rfc3339_accepts_every_documented_form() {
        let cases: &[(&str, i64)] = &[
            ("2024-05-01T12:00:00Z", T0 * S),
            ("2024-05-01t12:00:00z", T0 * S),
            ("2024-05-01 12:00:00Z", T0 * S),
            ("2024-05-01T12:00:00.1Z", T0 * S + 100_000_000),
            ("2024-05-01T12:00:00.123Z", T0 * S + 123_000_000),
            ("2024-05-01T12:00:00.123456Z", T0 * S + 123_456_000),
            ("2024-05-01T12:00:00.123456789Z", T0 * S + 123_456_789),
            ("2024-05-01T14:00:00.123456789+02:00", T0 * S + 123_456_789),
            ("2024-05-01T06:30:00-05:30", T0 * S),
            ("2024-05-01T12:00:00-00:00", T0 * S),
            ("2024-05-02T00:00:00+12:00", T0 * S),
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T01:00:00+01:00", 0),
            ("2024-02-29T00:00:00Z", 1_709_164_800 * S),
            ("2000-02-29T00:00:00Z", 951_782_400 * S),
            ("2016-12-31T23:59:60Z", 1_483_228_800 * S),
            ("2105-12-31T23:59:59.999999999Z", MAX_NS - 1),
        ];
        for &(text, want) in cases {
            assert_eq!(from_text(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rfc3339_rejects_with_a_precise_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "2023-02-29T00:00:00Z",
                "day 29 does not exist in 2023-02 (01-28)",
            ),
            (
                "2024-02-30T00:00:00Z",
                "day 30 does not exist in 2024-02 (01-29)",
            ),
            ("1900-02-29T00:00:00Z", "day 29 does not exist in 1900-02"),
            ("2024-04-31T00:00:00Z", "day 31 does not exist"),
            ("2024-05-00T00:00:00Z", "day 00 does not exist"),
            ("2024-13-01T00:00:00Z", "month 13 is out of range"),
            ("2024-00-01T00:00:00Z", "month 00 is out of range"),
            ("2024-05-01T24:00:00Z", "hour 24 is out of range (00-23)"),
            ("2024-05-01T12:60:00Z", "minute 60 is out of range"),
            ("2024-05-01T12:00:61Z", "second 61 is out of range"),
            ("2024-05-01T12:00:00", "missing UTC offset"),
            ("2024-05-01T12:00:00.Z", "'.' must be followed by 1 to 9"),
            (
                "2024-05-01T12:00:00.1234567891Z",
                "10 fractional digits; at most 9",
            ),
            ("2024-05-01T12:00:00+0200", "UTC offset must be +HH:MM"),
            (
                "2024-05-01T12:00:00+24:00",
                "UTC offset +24:00 is out of range",
            ),
            ("2024-05-01T12:00:00+02:60", "out of range"),
            (
                "2024-05-01T12:00:00ZZ",
                "unexpected text \"Z\" after the UTC offset",
            ),
            (
                "2024-05-01T12:00:00 Z",
                "unexpected \" \" after the seconds",
            ),
            ("2024-05-01", "a date alone is not a timestamp"),
            ("2024-05-01X12:00:00Z", "expected 'T'"),
            ("2024-5-01T12:00:00Z", "the month must be 2 digits"),
            ("2024-05-01T12:00Z", "expected ':' after the minute"),
            ("2024-05-01T1:00:00Z", "the hour must be 2 digits"),
            (
                "1969-12-31T23:59:59Z",
                "is 1969-12-31T23:59:59Z, outside the accepted range",
            ),
            (
                "1970-01-01T00:00:00+00:01",
                "is 1969-12-31T23:59:00Z, outside",
            ),
            ("2106-01-01T00:00:00Z", "outside the accepted range"),
            ("9999-12-31T23:59:59Z", "is 9999-12-31T23:59:59Z, outside"),
            ("yesterday", "expected RFC 3339 text"),
            ("", "expected RFC 3339 text"),
            ("-1714564800", "expected RFC 3339 text"),
            ("1.7e9", "expected RFC 3339 text"),
            ("2024-05-01T12:00:00Zé", "after the UTC offset"),
        ];
        for &(text, want) in cases {
            let err = from_text(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn epoch_unit_follows_magnitude() {
        let cases: &[(u64, i64)] = &[
            (0, 0),
            (T0 as u64, T0 * S),
            (4_291_747_199, 4_291_747_199 * S), // the last accepted second
            (T0 as u64 * 1_000 + 123, T0 * S + 123_000_000),
            (100_000_000_000, 100_000_000_000 * 1_000_000), // 1e11 is milliseconds
            (T0 as u64 * 1_000_000 + 123_456, T0 * S + 123_456_000),
            (T0 as u64 * S as u64 + 123_456_789, T0 * S + 123_456_789),
        ];
        for &(value, want) in cases {
            assert_eq!(from_epoch_u64(value), Ok(want), "{value}");
            assert_eq!(from_text(&value.to_string()), Ok(want), "\"{value}\"");
        }
        assert_eq!(from_epoch_i64(T0), Ok(T0 * S));
    }

    #[test]
    fn epoch_floats_and_fractional_text() {
        assert_eq!(
            from_epoch_f64(1_714_564_800.123456),
            Ok(T0 * S + 123_456_000)
        );
        assert_eq!(from_epoch_f64(1_714_564_800.5), Ok(T0 * S + 500_000_000));
        assert_eq!(
            from_epoch_f64(1_714_564_800_123.5),
            Ok(T0 * S + 123_500_000)
        );
        assert_eq!(from_epoch_f64(0.0), Ok(0));
        assert_eq!(from_epoch_f64(-0.0), Ok(0));
        assert_eq!(from_text("1714564800.123456789"), Ok(T0 * S + 123_456_789));
        assert_eq!(from_text("1714564800.1234567899"), Ok(T0 * S + 123_456_789));
        assert_eq!(from_text("1714564800123.5"), Ok(T0 * S + 123_500_000));
        assert_eq!(from_text("0001714564800"), Ok(T0 * S));
        assert_eq!(from_text("0"), Ok(0));
    }

    #[test]
    fn epoch_rejections_name_the_unit_and_date() {
        let err = from_epoch_u64(99_999_999_999).unwrap_err();
        assert!(err.contains("read as seconds"), "{err}");
        assert!(err.contains("5138-11-16T09:46:39Z"), "{err}");
        let err = from_epoch_u64(u64::MAX).unwrap_err();
        assert!(
            err.contains("read as nanoseconds") && err.contains("2554-07-21"),
            "{err}"
        );
        let err = from_epoch_i64(-1).unwrap_err();
        assert!(err.contains("negative (before 1970)"), "{err}");
        let err = from_epoch_f64(-0.5).unwrap_err();
        assert!(err.contains("negative"), "{err}");
        let err = from_epoch_f64(1e300).unwrap_err();
        assert!(err.contains("far in the future"), "{err}");
        let err = from_epoch_f64(5e10).unwrap_err();
        assert!(
            err.contains("read as seconds") && err.contains("3554-"),
            "{err}"
        );
        let err = from_text("123456789012345678901234").unwrap_err();
        assert!(err.contains("far in the future"), "{err}");
        for (text, want) in [
            (".5", "digits are required before"),
            ("5.", "digits are required after"),
            ("1.2.3", "more than one '.'"),
        ] {
            let err = from_text(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn unix_nanos_are_exact() {
        let t = 1_714_564_800_000_000_001;
        assert_eq!(from_unix_nanos(t), Ok(t as i64));
        let year_1971 = 31_536_000_000_000_000;
        assert_eq!(from_unix_nanos(year_1971), Ok(year_1971 as i64));
        assert!(from_unix_nanos(year_1971 - 1).is_err());
        assert_eq!(from_unix_nanos(MAX_NS as u64 - 1), Ok(MAX_NS - 1));
        let err = from_unix_nanos(MAX_NS as u64).unwrap_err();
        assert!(err.contains("2106-01-01T00:00:00Z, outside"), "{err}");
        assert!(from_unix_nanos(u64::MAX).is_err());
    }

    #[test]
    fn format_ns_renders_fractions() {
        assert_eq!(format_ns(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ns(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            format_ns(i128::from(T0 * S + 120_000_000)),
            "2024-05-01T12:00:00.12Z"
        );
    }
}
