//! INSERT deduplication tokens (`insert_deduplication_token`, ClickHouse ≥ 22.2).
//!
//! With a token, ClickHouse identifies an inserted block by the token alone, not by its
//! content: an INSERT whose token it has seen within the table's deduplication window
//! is acknowledged and dropped. So a token must name exactly one set of rows, for ever;
//! reusing it for other rows (even a superset) would silently lose rows.
//!
//! Spool frames are immutable and their sequence numbers never repeat within a spool
//! incarnation (`<instance>-<epoch>`, the epoch being random per spool directory), so a
//! contiguous, ascending run of frames of one spool names its rows exactly. That is the
//! only case that gets a token:
//!
//! - every submission of the INSERT has an [`Origin`], all from the same spool, with
//!   sequence numbers `first, first + 1, …, last` in INSERT order
//!   → `"<spool>-<first>-<last>-<append time of last, Unix ms>"`;
//! - anything else (a submission without origin, two spools, a gap, a different order)
//!   → no token: the INSERT is not deduplicated, as on servers without tokens.
//!
//! The append time guards the one way sequence numbers could repeat within an epoch:
//! a spool directory rolled back (VM snapshot or backup restored) re-uses the numbers
//! appended after the snapshot for new frames. Those frames are appended later, and the
//! last frame of a range is its newest, so a range holding any such frame gets a token
//! the server has not seen; a range of frames from before the snapshot is the same rows.
//!
//! A retry of the same INSERT keeps its token (that is what lets a timed-out INSERT
//! that did commit be dropped by the server); a merged INSERT refused for good is
//! retried per submission, each with the token of its own frame.
//!
//! # Replays
//!
//! A replay after a crash must repeat the tokens of the INSERTs that may have committed
//! just before it, or their rows are stored twice. So before an INSERT with a token is
//! sent, its [`FrameRange`] goes to the [`RangeLog`] (the spool's `inflight.log`), and
//! the frames of a range come back at replay marked with it. The batcher sends such
//! frames as one INSERT again under the range's token, [`FrameRange::token`], even when
//! some of them are gone (acknowledged, or lost to quarantine): a token then names a
//! subset of its first rows, and every later use of it names a subset of that (frames
//! only ever leave a range), so a server that drops it holds those rows already. If
//! the replay cannot gather every frame of a range into one INSERT, the frames go
//! without a token (at-least-once); sending them in two INSERTs under one token could
//! lose the second.

use std::sync::Arc;

/// The query setting that carries the token.
pub const TOKEN_SETTING: &str = "insert_deduplication_token";

/// Where a submitted batch comes from: one durable spool frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The spool incarnation, `<instance>-<epoch as 16 hex digits>`: unique across
    /// instances and hosts writing the same table, and across spool directory resets.
    pub spool: Arc<str>,
    /// The frame's sequence number in that spool.
    pub seq: u64,
    /// When the frame was appended (Unix ms, from its header: the same at replay).
    pub appended_unix_ms: u64,
}

impl Origin {
    /// The token of an INSERT holding this frame alone.
    pub fn token(&self) -> String {
        range_token(self, self)
    }
}

/// The token of an INSERT made of submissions with these origins, in INSERT order, or
/// `None` when they are not one contiguous ascending run of one spool's frames.
pub fn token<'a>(origins: impl IntoIterator<Item = Option<&'a Origin>>) -> Option<String> {
    let mut origins = origins.into_iter().peekable();
    let spool = Arc::clone(&(*origins.peek()?)?.spool);
    range(origins).map(|r| r.token(&spool))
}

/// The token of an INSERT made of these origins, as a range to record; `None` as for
/// [`token`].
pub fn range<'a>(origins: impl IntoIterator<Item = Option<&'a Origin>>) -> Option<FrameRange> {
    let mut origins = origins.into_iter();
    let first = origins.next()??;
    let mut last = first;
    for origin in origins {
        let origin = origin?;
        let same_spool = Arc::ptr_eq(&origin.spool, &first.spool) || origin.spool == first.spool;
        if !same_spool || Some(origin.seq) != last.seq.checked_add(1) {
            return None;
        }
        last = origin;
    }
    Some(FrameRange {
        first: first.seq,
        last: last.seq,
        last_appended_unix_ms: last.appended_unix_ms,
    })
}

/// Frames `first..=last` of one spool sent as one INSERT: what the token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRange {
    pub first: u64,
    pub last: u64,
    /// Append time of frame `last` (Unix ms).
    pub last_appended_unix_ms: u64,
}

impl FrameRange {
    /// The token of an INSERT of this range of `spool`.
    pub fn token(&self, spool: &str) -> String {
        format!(
            "{spool}-{}-{}-{}",
            self.first, self.last, self.last_appended_unix_ms
        )
    }
}

/// Where the batcher records the ranges it sends under a token, before sending them
/// (see "Replays" above). Implemented over the spool by the feeder.
pub trait RangeLog: Send + Sync + 'static {
    /// The INSERT of `range` is about to be sent (first attempt).
    fn sending(&self, range: FrameRange);
    /// The INSERT of `range` was refused for good; its frames go one by one.
    fn splitting(&self, range: FrameRange);
}

/// The one place the token's text is formed, so that a single frame gets the same
/// token whichever way it is computed.
fn range_token(first: &Origin, last: &Origin) -> String {
    FrameRange {
        first: first.seq,
        last: last.seq,
        last_appended_unix_ms: last.appended_unix_ms,
    }
    .token(&first.spool)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `seq` of `spool`, appended at `1000 + seq` ms (saturating).
    fn at(spool: &str, seq: u64) -> Origin {
        Origin {
            spool: spool.into(),
            seq,
            appended_unix_ms: seq.saturating_add(1000),
        }
    }

    #[test]
    fn contiguous_frames_of_one_spool_get_their_range() {
        let spool: Arc<str> = "2-00000000000000ab".into();
        let run: Vec<Origin> = (7..=9)
            .map(|seq| Origin {
                spool: Arc::clone(&spool),
                seq,
                appended_unix_ms: 1_700_000_000_000 + seq,
            })
            .collect();
        assert_eq!(
            token(run.iter().map(Some)).as_deref(),
            Some("2-00000000000000ab-7-9-1700000000009")
        );
        // Equal names in different allocations are the same spool.
        let copies = [at("s", 1), at("s", 2)];
        assert_eq!(
            token(copies.iter().map(Some)).as_deref(),
            Some("s-1-2-1002")
        );
        assert_eq!(token([Some(&at("s", 4))]).as_deref(), Some("s-4-4-1004"));
        assert_eq!(at("s", 4).token(), "s-4-4-1004");
    }

    #[test]
    fn frames_re_numbered_after_a_rollback_get_other_tokens() {
        // Before the rollback: frames 5..=7. After it, 6 and 7 are new frames under the
        // same numbers, appended later.
        let before = [at("s", 5), at("s", 6), at("s", 7)];
        let mut after = before.clone();
        after[1].appended_unix_ms += 60_000;
        after[2].appended_unix_ms += 60_000;
        let old = token(before.iter().map(Some)).unwrap();
        assert_ne!(token(after.iter().map(Some)).unwrap(), old);
        assert_ne!(after[2].token(), before[2].token());
        // Frames from before the snapshot are the same rows: same token.
        assert_eq!(after[0].token(), before[0].token());
    }

    #[test]
    fn anything_but_one_contiguous_run_gets_no_token() {
        let none: [Option<&Origin>; 0] = [];
        assert_eq!(token(none), None, "empty");
        let (a1, a2, a3, b2) = (at("a", 1), at("a", 2), at("a", 3), at("b", 2));
        assert_eq!(token([Some(&a1), Some(&a3)]), None, "gap");
        assert_eq!(token([Some(&a2), Some(&a1)]), None, "descending");
        assert_eq!(token([Some(&a1), Some(&a1)]), None, "repeated");
        assert_eq!(token([Some(&a1), Some(&b2)]), None, "two spools");
        assert_eq!(token([Some(&a1), None]), None, "no origin");
        assert_eq!(token([None, Some(&a2)]), None, "no origin first");
        assert_eq!(token([None]), None, "alone without origin");
        let top = at("a", u64::MAX);
        assert_eq!(token([Some(&top), Some(&a1)]), None, "no wrap-around");
    }
}
