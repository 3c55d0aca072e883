//! [`Salvager`]: bisects a refused frame through the sink, writes the rows refused
//! alone as dead letters (table, else file), and says what is left for the quarantine.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::{
    record_json, DeadLetter, DeadLetterFile, DeadLetterTable, Reason, Refusal, Refused, Salvage,
    Salvaged, MAX_ISOLATED_ROWS,
};
use crate::codec::EncodedBatch;
use crate::record::{Batch, Record};
use crate::sink::retry::Backoff;
use crate::sink::{Sink, SinkError};
use crate::stats::Stats;

/// Places the rows of refused frames: `sink` for the good ones, `table` then `file`
/// for the bad ones. One per worker, shared by the feeder.
pub struct Salvager<S, T> {
    sink: Arc<S>,
    table: Arc<T>,
    file: DeadLetterFile,
    stats: Arc<Stats>,
    /// `database.table` the rows were meant for, written into every letter.
    source_table: String,
}

/// How one attempt to place rows ended, after transient failures were retried.
enum Attempt {
    Done,
    Refused(Refusal),
    Stopped,
}

/// Where a frame's letters ended up.
enum Kept {
    Table,
    File,
    /// Neither took them: the reason, for the quarantine.
    Nowhere(String),
    Stopped,
}

/// The outcome of the bisection of one frame.
#[derive(Default)]
struct Split {
    /// Rows refused alone, with the refusal, in frame order once sorted.
    dead: Vec<(usize, Refusal)>,
    /// Row ranges left undecided (statement-level refusal, or the budget spent).
    undecided: Vec<Range<usize>>,
    inserts: usize,
}

impl<S: Sink, T: DeadLetterTable> Salvager<S, T> {
    pub fn new(
        sink: Arc<S>,
        table: Arc<T>,
        file: DeadLetterFile,
        stats: Arc<Stats>,
        source_table: impl Into<String>,
    ) -> Salvager<S, T> {
        Salvager {
            sink,
            table,
            file,
            stats,
            source_table: source_table.into(),
        }
    }

    /// See [`Salvage::salvage`] and the module documentation of the steps.
    pub async fn salvage_frame(&self, refused: Refused<'_>, stop: &CancellationToken) -> Salvaged {
        let first = Refusal::parse(refused.reason);
        let whole = || Salvaged::Unplaced {
            batch: refused.batch.clone(),
            reason: refused.reason.to_string(),
        };
        if !first.is_row_level() || refused.batch.is_empty() {
            return whole();
        }
        let Ok(Batch { records: rows, .. }) = refused.batch.decode() else {
            return whole();
        };
        let token = refused.origin.token();
        let Some(mut split) = self.bisect(&rows, first, &token, stop).await else {
            return Salvaged::Stopped;
        };
        split.dead.sort_by_key(|(index, _)| *index);
        let letters = match self.letters(refused, &split.dead) {
            Ok(letters) => letters,
            Err(reason) => {
                split
                    .undecided
                    .extend(split.dead.iter().map(|(i, _)| *i..*i + 1));
                return self.finish(refused, &rows, split, None, reason);
            }
        };
        match self.keep(&letters, &token, stop).await {
            Kept::Stopped => Salvaged::Stopped,
            Kept::Nowhere(reason) => {
                split
                    .undecided
                    .extend(split.dead.iter().map(|(i, _)| *i..*i + 1));
                self.finish(refused, &rows, split, None, reason)
            }
            kept => {
                self.count(&letters, matches!(kept, Kept::File));
                let place = if matches!(kept, Kept::File) {
                    "file"
                } else {
                    "table"
                };
                self.finish(refused, &rows, split, Some(place), String::new())
            }
        }
    }

    /// Splits `rows` (refused together with `first`) until every row is inserted or
    /// refused alone, within the INSERT budget. `None`: stopped.
    async fn bisect(
        &self,
        rows: &[Record],
        first: Refusal,
        token: &str,
        stop: &CancellationToken,
    ) -> Option<Split> {
        let mut split = Split::default();
        let budget = insert_budget(rows.len());
        let mut refused = vec![(0..rows.len(), first)];
        while let Some((range, refusal)) = refused.pop() {
            if range.len() == 1 {
                split.dead.push((range.start, refusal));
                continue;
            }
            if !refusal.is_row_level() || split.inserts + 2 > budget {
                split.undecided.push(range);
                continue;
            }
            let mid = range.start + range.len() / 2;
            for half in [range.start..mid, mid..range.end] {
                split.inserts += 1;
                let part_token = format!("{token}-r{}-{}", half.start, half.end);
                match self.insert(&rows[half.clone()], &part_token, stop).await {
                    Attempt::Done => {}
                    Attempt::Refused(refusal) => refused.push((half, refusal)),
                    Attempt::Stopped => return None,
                }
            }
        }
        Some(split)
    }

    /// One sub-INSERT into the table, transient failures retried; counted like the
    /// batcher's INSERTs.
    async fn insert(&self, rows: &[Record], token: &str, stop: &CancellationToken) -> Attempt {
        let batch = EncodedBatch::encode(&Batch::new(rows.to_vec()));
        let one = std::slice::from_ref(&batch);
        match self
            .retrying(stop, || self.sink.insert(one, Some(token)))
            .await
        {
            Some(Ok(())) => {
                Stats::add(&self.stats.inserts, 1);
                Stats::add(&self.stats.rows_inserted, rows.len() as u64);
                Attempt::Done
            }
            Some(Err(reason)) => Attempt::Refused(Refusal::parse(&reason)),
            None => Attempt::Stopped,
        }
    }

    /// The letters of the rows refused alone.
    fn letters(
        &self,
        refused: Refused<'_>,
        dead: &[(usize, Refusal)],
    ) -> Result<Vec<DeadLetter>, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let mut letters = Vec::with_capacity(dead.len());
        let mut records = refused.batch.records().enumerate();
        for (index, refusal) in dead {
            let view = records
                .by_ref()
                .find(|(i, _)| i == index)
                .and_then(|(_, view)| view.ok())
                .ok_or_else(|| format!("row {index} of the frame does not decode"))?;
            letters.push(DeadLetter {
                time_unix_s: now,
                table: self.source_table.clone(),
                frame: refused.frame.to_string(),
                reason: refusal.reason(),
                code: refusal.code.unwrap_or(0),
                error: refusal.error.clone(),
                record: record_json(&view).map_err(|e| e.to_string())?,
            });
        }
        Ok(letters)
    }

    /// Writes the letters to the table, else to the file (fsync'd).
    async fn keep(&self, letters: &[DeadLetter], token: &str, stop: &CancellationToken) -> Kept {
        if letters.is_empty() {
            return Kept::Table;
        }
        let token = format!("{token}-dead");
        let refused = match self
            .retrying(stop, || self.table.write(letters, Some(&token)))
            .await
        {
            Some(Ok(())) => return Kept::Table,
            Some(Err(reason)) => reason,
            None => return Kept::Stopped,
        };
        tracing::warn!(
            rows = letters.len(),
            file = %self.file.path().display(),
            error = %refused,
            "the dead-letter table refused the rows; appending them to the dead-letter file"
        );
        match self.file.append(letters).await {
            Ok(()) => Kept::File,
            Err(error) => Kept::Nowhere(format!(
                "dead-letter table: {refused}; dead-letter file {}: {error}",
                self.file.path().display()
            )),
        }
    }

    /// Calls `attempt` until it succeeds (`Some(Ok)`), is refused for good
    /// (`Some(Err(reason))`) or `stop` is cancelled while it fails transiently (`None`).
    async fn retrying<F, Fut>(
        &self,
        stop: &CancellationToken,
        mut attempt: F,
    ) -> Option<Result<(), String>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), SinkError>>,
    {
        let mut backoff = Backoff::for_inserts();
        loop {
            let error = match attempt().await {
                Ok(()) => return Some(Ok(())),
                Err(SinkError::Rejected { reason }) => {
                    Stats::add(&self.stats.insert_failures, 1);
                    return Some(Err(reason));
                }
                Err(error) => error,
            };
            Stats::add(&self.stats.insert_failures, 1);
            if stop.is_cancelled() {
                return None;
            }
            tracing::debug!(error = %error, "dead-letter salvage: ClickHouse unavailable; retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    fn count(&self, letters: &[DeadLetter], to_file: bool) {
        for letter in letters {
            let counter = match letter.reason {
                Reason::TypeMismatch => &self.stats.rows_dead_lettered_type_mismatch,
                Reason::Constraint => &self.stats.rows_dead_lettered_constraint,
                Reason::TooLarge => &self.stats.rows_dead_lettered_too_large,
                Reason::Other => &self.stats.rows_dead_lettered_other,
            };
            Stats::add(counter, 1);
        }
        if to_file {
            Stats::add(&self.stats.rows_dead_letter_file, letters.len() as u64);
        }
    }

    /// Logs the frame's outcome and turns the undecided rows into the quarantine's part.
    fn finish(
        &self,
        refused: Refused<'_>,
        rows: &[Record],
        mut split: Split,
        kept_in: Option<&str>,
        unkept_reason: String,
    ) -> Salvaged {
        let dead_lettered = if kept_in.is_some() {
            split.dead.len()
        } else {
            0
        };
        split.undecided.sort_by_key(|range| range.start);
        let undecided: Vec<Record> = split
            .undecided
            .iter()
            .flat_map(|range| rows[range.clone()].iter().cloned())
            .collect();
        tracing::error!(
            frame = refused.frame,
            rows = rows.len(),
            dead_lettered,
            kept_in = kept_in.unwrap_or("-"),
            quarantined = undecided.len(),
            inserts = split.inserts,
            error = refused.reason,
            "ClickHouse refused rows of a spooled batch for good; the others were inserted"
        );
        if undecided.is_empty() {
            return Salvaged::Placed;
        }
        let reason = if unkept_reason.is_empty() {
            refused.reason.to_string()
        } else {
            unkept_reason
        };
        Salvaged::Unplaced {
            batch: EncodedBatch::encode(&Batch::new(undecided)),
            reason,
        }
    }
}

impl<S: Sink, T: DeadLetterTable> Salvage for Salvager<S, T> {
    fn salvage<'a>(
        &'a self,
        refused: Refused<'a>,
        stop: &'a CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Salvaged> + Send + 'a>> {
        Box::pin(self.salvage_frame(refused, stop))
    }
}

/// Sub-INSERTs allowed for an `rows`-row frame: [`MAX_ISOLATED_ROWS`] bad rows at
/// 2·⌈log₂ rows⌉ each.
pub(super) fn insert_budget(rows: usize) -> usize {
    let depth = rows.max(2).next_power_of_two().trailing_zeros() as usize;
    2 * depth * MAX_ISOLATED_ROWS
}
