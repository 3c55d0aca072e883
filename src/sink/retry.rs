//! Retry policy for ClickHouse: which failures are worth retrying, and how long to wait.
//!
//! # Classification
//!
//! Modelled on vector's `ClickhouseRetryLogic` (retry 5xx, except `Code: 117` incorrect
//! data and `Code: 53` type mismatch), extended because ClickHouse answers almost every
//! exception with HTTP 500 (18.16 sends no `X-ClickHouse-Exception-Code` header), so the
//! exception code in the body is what tells a poison batch from a sick server.
//!
//! **Permanent** — the same rows sent again fail again; retrying would only block the
//! pipeline behind a poison batch:
//! - the data cannot be parsed or converted: 6 `CANNOT_PARSE_TEXT`, 26
//!   `CANNOT_PARSE_QUOTED_STRING`, 27 `CANNOT_PARSE_INPUT_ASSERTION_FAILED`, 38/41
//!   `CANNOT_PARSE_DATE(TIME)`, 53 `TYPE_MISMATCH`, 69 `ARGUMENT_OUT_OF_BOUND`, 70
//!   `CANNOT_CONVERT_TYPE`, 72 `CANNOT_PARSE_NUMBER`, 117 `INCORRECT_DATA`, 128/131
//!   `TOO_LARGE_ARRAY/STRING_SIZE`, 190 `SIZES_OF_ARRAYS_DOESNT_MATCH`, 321
//!   `VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE`, 349 `CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN`,
//!   407 `DECIMAL_OVERFLOW`, 469 `VIOLATED_CONSTRAINT`, 395
//!   `FUNCTION_THROW_IF_VALUE_IS_NON_ZERO` (a `throwIf` in a column's default
//!   expression: the check a table can make before `CHECK` constraints, e.g. on 18.16;
//!   the same rows fail it again);
//! - the RowBinary stream does not match the table (schema drift since start-up):
//!   32 `ATTEMPT_TO_READ_AFTER_EOF`, 33 `CANNOT_READ_ALL_DATA`;
//! - the statement does not fit the table: 8 `THERE_IS_NO_COLUMN`, 10
//!   `NOT_FOUND_COLUMN_IN_BLOCK`, 16 `NO_SUCH_COLUMN_IN_TABLE`, 20
//!   `NUMBER_OF_COLUMNS_DOESNT_MATCH`, 44 `ILLEGAL_COLUMN`, 47 `UNKNOWN_IDENTIFIER`, 50
//!   `UNKNOWN_TYPE`, 60 `UNKNOWN_TABLE`, 62 `SYNTAX_ERROR`, 73 `UNKNOWN_FORMAT`, 81
//!   `UNKNOWN_DATABASE`, 115 `UNKNOWN_SETTING`;
//! - the configured user may not write: 164 `READONLY`, 192 `UNKNOWN_USER`, 193
//!   `WRONG_PASSWORD`, 194 `REQUIRED_PASSWORD`, 195 `IP_ADDRESS_NOT_ALLOWED`, 291
//!   `DATABASE_ACCESS_DENIED`, 497 `ACCESS_DENIED`, 516 `AUTHENTICATION_FAILED`.
//!   Retrying cannot fix configuration, and a ping would still succeed, so treating
//!   these as an outage would flap instead of telling the operator.
//!
//! **Transient** — everything else: network errors and timeouts, HTTP 5xx without a
//! known permanent code, and server-side pressure such as 159 `TIMEOUT_EXCEEDED`, 202
//! `TOO_MANY_SIMULTANEOUS_QUERIES`, 241 `MEMORY_LIMIT_EXCEEDED`, 242
//! `TABLE_IS_READ_ONLY`, 243 `NOT_ENOUGH_SPACE`, 252 `TOO_MANY_PARTS`, 319
//! `UNKNOWN_STATUS_OF_INSERT`. Unknown codes are transient on purpose: a wrong
//! "transient" costs one retry budget and a 503, a wrong "permanent" fails good rows.
//!
//! # Backoff
//!
//! Capped exponential with "equal jitter": attempt *n* waits a uniformly random time in
//! `[d/2, d]` where `d = min(cap, base · 2ⁿ)`, so concurrent retries spread out while
//! the wait still grows. The batcher additionally bounds every wait by the remaining
//! retry budget.

use std::time::Duration;

use rand::Rng;

/// Whether a failed attempt may succeed if repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Transient,
    Permanent,
}

/// ClickHouse exception codes that mean "these rows / this statement will never be
/// accepted as they are" (see the module documentation for the names).
const PERMANENT_CODES: &[u32] = &[
    6, 8, 10, 16, 20, 26, 27, 32, 33, 38, 41, 44, 47, 50, 53, 60, 62, 69, 70, 72, 73, 81, 115, 117,
    128, 131, 164, 190, 192, 193, 194, 195, 291, 321, 349, 395, 407, 469, 497, 516,
];

/// Classifies a ClickHouse exception code.
pub fn classify_code(code: u32) -> Class {
    if PERMANENT_CODES.contains(&code) {
        Class::Permanent
    } else {
        Class::Transient
    }
}

/// Extracts the exception code from a ClickHouse error text: `Code: 60, e.displayText()…`
/// (18.x–20.x), `Code: 60. DB::Exception: …` (21+), possibly after a prefix such as
/// `bad response: `.
pub fn exception_code(message: &str) -> Option<u32> {
    let start = message.find("Code: ")? + "Code: ".len();
    let digits: &str = &message[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Classifies an error from the `clickhouse` crate.
pub fn classify(error: &clickhouse::error::Error) -> Class {
    use clickhouse::error::Error as E;
    match error {
        E::Network(_) | E::TimedOut => Class::Transient,
        E::BadResponse(text) => classify_response(text),
        // Our rows could not be serialized, or the statement is malformed: sending them
        // again gives the same result.
        E::InvalidParams(_)
        | E::Compression(_)
        | E::SequenceMustHaveLength
        | E::Custom(_)
        | E::InvalidUtf8Encoding(_)
        | E::SchemaMismatch(_)
        | E::Unsupported(_) => Class::Permanent,
        _ => Class::Transient,
    }
}

/// Classifies the text of a non-200 response: the ClickHouse exception code when there
/// is one; otherwise the HTTP status the crate substitutes for an empty body
/// (`"503 Service Unavailable"`) or a proxy's error page — 4xx other than 408/429 is a
/// request problem, anything else is treated as an outage.
pub fn classify_response(text: &str) -> Class {
    if let Some(code) = exception_code(text) {
        return classify_code(code);
    }
    let status: Option<u16> = text.get(..3).and_then(|s| s.parse().ok());
    match status {
        Some(408 | 429) => Class::Transient,
        Some(400..=499) => Class::Permanent,
        _ => Class::Transient,
    }
}

/// Capped exponential backoff with jitter; one per retried insert.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// First retry after ~`base`, doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The batcher's policy: 100 ms doubling to 5 s. Short enough to notice a restarted
    /// ClickHouse quickly (a recovery also wakes sleeping retries early), long enough not
    /// to hammer a struggling server from every worker.
    pub fn for_inserts() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The wait before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// [`next_delay`](Self::next_delay) with a given random source (tests seed it).
    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(ceiling_ns / 2..=ceiling_ns))
    }

    /// `min(cap, base · 2^attempt)` without overflowing.
    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn finds_codes_in_old_and_new_messages() {
        let old = "Code: 60, e.displayText() = DB::Exception: Table t1.nope doesn't exist., \
                   e.what() = DB::Exception";
        assert_eq!(exception_code(old), Some(60));
        let new = "Code: 117. DB::Exception: Incorrect data. (INCORRECT_DATA) (version 23.8.2.7)";
        assert_eq!(exception_code(new), Some(117));
        assert_eq!(
            exception_code("bad response: Code: 33, e.displayText()"),
            Some(33)
        );
        assert_eq!(exception_code("503 Service Unavailable"), None);
        assert_eq!(exception_code("Code: x"), None);
    }

    #[test]
    fn bad_data_and_schema_errors_are_permanent() {
        for code in [
            6, 16, 26, 27, 33, 41, 53, 60, 70, 72, 81, 117, 164, 395, 469, 516,
        ] {
            assert_eq!(classify_code(code), Class::Permanent, "code {code}");
        }
    }

    #[test]
    fn pressure_and_unknown_codes_are_transient() {
        for code in [
            159, 202, 209, 210, 241, 242, 243, 252, 319, 425, 999, 1000, 1002,
        ] {
            assert_eq!(classify_code(code), Class::Transient, "code {code}");
        }
    }

    #[test]
    fn responses_without_a_code_use_the_status() {
        assert_eq!(
            classify_response("503 Service Unavailable"),
            Class::Transient
        );
        assert_eq!(classify_response("502 Bad Gateway"), Class::Transient);
        assert_eq!(
            classify_response("500 Internal Server Error"),
            Class::Transient
        );
        assert_eq!(classify_response("429 Too Many Requests"), Class::Transient);
        assert_eq!(classify_response("408 Request Timeout"), Class::Transient);
        assert_eq!(classify_response("403 Forbidden"), Class::Permanent);
        assert_eq!(
            classify_response("<html>proxy error</html>"),
            Class::Transient
        );
        assert_eq!(
            classify_response("Code: 53, e.displayText() = DB::Exception: Type mismatch"),
            Class::Permanent
        );
        assert_eq!(
            classify_response("Code: 252. DB::Exception: Too many parts (300)."),
            Class::Transient
        );
    }

    #[test]
    fn crate_errors_are_classified() {
        use clickhouse::error::Error as E;
        assert_eq!(classify(&E::TimedOut), Class::Transient);
        assert_eq!(classify(&E::Network("refused".into())), Class::Transient);
        assert_eq!(
            classify(&E::BadResponse("Code: 117. DB::Exception: x".into())),
            Class::Permanent
        );
        assert_eq!(
            classify(&E::BadResponse(
                "Code: 241. DB::Exception: Memory limit".into()
            )),
            Class::Transient
        );
        assert_eq!(classify(&E::Custom("bad row".into())), Class::Permanent);
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        let mut backoff = Backoff::new(base, cap);
        let mut ceiling = base;
        for _ in 0..40 {
            let d = backoff.next_delay_with(&mut rng);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in [{ceiling:?}/2, {ceiling:?}]"
            );
            ceiling = (ceiling * 2).min(cap);
        }
        // After many attempts the ceiling is the cap, and the shift never overflows.
        let d = backoff.next_delay_with(&mut rng);
        assert!(d <= cap && d >= cap / 2);
    }

    #[test]
    fn backoff_jitter_differs_between_draws() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let draws: Vec<Duration> = (0..8)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)))
            .map(|mut b| b.next_delay_with(&mut rng))
            .collect();
        assert!(draws.windows(2).any(|w| w[0] != w[1]), "{draws:?}");
    }
}
