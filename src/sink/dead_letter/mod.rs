//! Dead letters (`ACK_MODE=spool`): the rows of a spool frame that ClickHouse refuses
//! for good are isolated and kept apart, so that the frame's good rows still land.
//!
//! # What happens to a refused frame
//!
//! The batcher hands back a frame refused on its own ([`SinkError::Rejected`]); the
//! feeder asks a [`Salvage`] what to do with it before it acknowledges anything:
//!
//! 1. A refusal about the statement or the table, not the rows (unknown table or
//!    column, schema drift, missing rights: [`Refusal::is_row_level`] is false), would
//!    refuse every row alike: the frame goes to the spool's quarantine whole, as before.
//! 2. Otherwise the frame's rows are bisected: each half is INSERTed directly through
//!    the sink, a refused half is split again, down to single rows. Every sub-INSERT
//!    carries a deduplication token derived from the frame's (`<frame token>-r<start>-<end>`),
//!    so the same bisection replayed after a crash is dropped by a server that honours
//!    tokens (≥ 22.2); on older servers such a replay is at-least-once, as the spool is.
//! 3. Each row refused alone becomes a [`DeadLetter`]: time, source table, frame id,
//!    [`Reason`] (a small fixed set, from ClickHouse's error code), the code, the
//!    exception text (trimmed) and the record as the JSON a client sends
//!    ([`record_json`]). A frame's letters are written in one INSERT into
//!    `<table>_rejected` ([`table`]), token `<frame token>-dead`.
//! 4. When that table refuses them for good (dropped, no rights, altered), they are
//!    appended to `quarantine/dead-letter.jsonl` in the spool directory ([`file`]) and
//!    `fsync`ed. Only then is the frame acknowledged: no acknowledged row is lost.
//!
//! # Bounds and failures
//!
//! - An N-row frame costs at most 2·⌈log₂ N⌉ sub-INSERTs per bad row; bisection stops
//!   after [`MAX_ISOLATED_ROWS`] bad rows' worth of INSERTs, and the rows not decided by
//!   then (a frame of mostly bad rows) go to the quarantine as one frame — the rows
//!   already placed are not in it, so re-ingesting it duplicates nothing.
//! - Transient failures (ClickHouse down, timeouts) during bisection or while writing
//!   the letters are retried with the batcher's backoff for as long as it takes, like
//!   every spooled row; at a stop the frame is left unacknowledged and replays.
//! - If the file cannot be written either, the dead rows go to the quarantine (and if
//!   that fails, the frame stays in the spool and replays).
//!
//! `ACK_MODE=clickhouse` does not use this: there the client still holds its rows and
//! gets `500` with the reason, nothing of the request written (all or nothing, as the
//! `202` promises); a partial write would need a per-row answer the API does not have.
//!
//! Counted in [`Stats`](crate::stats::Stats) by reason
//! (`zero_logs_rows_dead_lettered_total{reason=…}`), plus the rows that went to the file.

mod file;
mod record_json;
mod salvage;
pub mod table;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

pub use self::file::DeadLetterFile;
pub use self::record_json::record_json;
pub use self::salvage::Salvager;
pub use self::table::ClickHouseDeadLetters;
use super::retry::exception_code;
use super::{Origin, SinkError};
use crate::codec::EncodedBatch;

/// Bad rows of one frame that are always isolated; see the module documentation.
pub const MAX_ISOLATED_ROWS: usize = 16;

/// The exception text kept per dead letter, in bytes (ClickHouse's can be long: the
/// statement, a stack of causes).
const MAX_ERROR_BYTES: usize = 1000;

/// Why ClickHouse refused a row, as the metric label and the `reason` column say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The value does not fit the column: cannot be parsed or converted, out of range
    /// (6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 190, 321, 349, 407).
    TypeMismatch,
    /// A table constraint refused it: `CHECK` (469), or a `throwIf` in a column's
    /// default expression (395), the only kind of check 18.16 has.
    Constraint,
    /// A string or array larger than the server takes (128, 131).
    TooLarge,
    /// Any other permanent refusal of a single row (including one without a code).
    Other,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::TypeMismatch,
        Reason::Constraint,
        Reason::TooLarge,
        Reason::Other,
    ];

    pub fn of(code: Option<u32>) -> Reason {
        match code {
            Some(6 | 26 | 27 | 38 | 41 | 53 | 69 | 70 | 72 | 117 | 190 | 321 | 349 | 407) => {
                Reason::TypeMismatch
            }
            Some(395 | 469) => Reason::Constraint,
            Some(128 | 131) => Reason::TooLarge,
            _ => Reason::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TypeMismatch => "type_mismatch",
            Reason::Constraint => "constraint",
            Reason::TooLarge => "too_large",
            Reason::Other => "other",
        }
    }
}

/// ClickHouse codes that refuse the statement or the table, whatever the rows: bisection
/// would only refuse every row alone. (Schema: 8, 10, 16, 20, 44, 47, 50, 60, 62, 73,
/// 81, 115; a RowBinary stream the table does not match: 32, 33; the user: 164,
/// 192–195, 291, 497, 516.)
const STATEMENT_CODES: &[u32] = &[
    8, 10, 16, 20, 32, 33, 44, 47, 50, 60, 62, 73, 81, 115, 164, 192, 193, 194, 195, 291, 497, 516,
];

/// A permanent refusal as ClickHouse worded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The exception code, when the text has one.
    pub code: Option<u32>,
    /// The exception text from `Code: …` on (the whole text without a code), at most
    /// [`MAX_ERROR_BYTES`].
    pub error: String,
}

impl Refusal {
    /// From the text of a [`SinkError::Rejected`].
    pub fn parse(reason: &str) -> Refusal {
        let code = exception_code(reason);
        let from = reason.find("Code: ").unwrap_or(0);
        let mut error = reason[from..].trim().to_string();
        if error.len() > MAX_ERROR_BYTES {
            let mut cut = MAX_ERROR_BYTES;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
            error.push('…');
        }
        Refusal { code, error }
    }

    /// Whether the refusal can be about some rows only, so that splitting helps.
    pub fn is_row_level(&self) -> bool {
        !self
            .code
            .is_some_and(|code| STATEMENT_CODES.contains(&code))
    }

    pub fn reason(&self) -> Reason {
        Reason::of(self.code)
    }
}

/// One row kept apart, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// When it was dead-lettered, Unix seconds.
    pub time_unix_s: u32,
    /// The table that refused it, `database.table`.
    pub table: String,
    /// The spool frame it came from (`<instance>-<epoch>-<seq>`, as logged).
    pub frame: String,
    pub reason: Reason,
    /// ClickHouse's exception code, 0 when the refusal had none.
    pub code: u32,
    pub error: String,
    /// The record as JSON ([`record_json`]).
    pub record: String,
}

/// Where dead letters go first: `<table>_rejected` in production, a fake in unit tests.
pub trait DeadLetterTable: Send + Sync + 'static {
    /// Writes all `letters` in one INSERT, or none; `token` names exactly these letters.
    fn write(
        &self,
        letters: &[DeadLetter],
        token: Option<&str>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// A frame the sink refused for good, as the feeder hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    pub batch: &'a EncodedBatch,
    pub origin: &'a Origin,
    /// The frame id as logged.
    pub frame: &'a str,
    /// The text of the [`SinkError::Rejected`].
    pub reason: &'a str,
}

/// How a refused frame ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Salvaged {
    /// Every row is in the table or durably dead-lettered: acknowledge the frame.
    Placed,
    /// These rows (in frame order) found no place; the frame's other rows did. Keep
    /// them in the quarantine, then acknowledge.
    Unplaced { batch: EncodedBatch, reason: String },
    /// Stopped while ClickHouse did not answer: leave the frame unacknowledged (it
    /// replays; rows placed meanwhile are deduplicated where tokens work).
    Stopped,
}

/// What the feeder calls for a refused frame (object-safe, so the feeder does not
/// depend on the sink's type).
pub trait Salvage: Send + Sync {
    /// Places what it can of `refused`; gives up retrying once `stop` is cancelled.
    fn salvage<'a>(
        &'a self,
        refused: Refused<'a>,
        stop: &'a CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Salvaged> + Send + 'a>>;
}
