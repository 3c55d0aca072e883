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
//!   → `"<spool>-<first>-<last>"`;
//! - anything else (a submission without origin, two spools, a gap, a different order)
//!   → no token: the INSERT is not deduplicated, as on servers without tokens.
//!
//! A retry of the same INSERT keeps its token (that is what lets a timed-out INSERT
//! that did commit be dropped by the server); a merged INSERT refused for good is
//! retried per submission, each with the token of its own frame.

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
}

impl Origin {
    /// The token of an INSERT holding this frame alone.
    pub fn token(&self) -> String {
        range_token(&self.spool, self.seq, self.seq)
    }
}

/// The token of an INSERT made of submissions with these origins, in INSERT order, or
/// `None` when they are not one contiguous ascending run of one spool's frames.
pub fn token<'a>(origins: impl IntoIterator<Item = Option<&'a Origin>>) -> Option<String> {
    let mut origins = origins.into_iter();
    let first = origins.next()??;
    let mut last = first.seq;
    for origin in origins {
        let origin = origin?;
        let same_spool = Arc::ptr_eq(&origin.spool, &first.spool) || origin.spool == first.spool;
        if !same_spool || Some(origin.seq) != last.checked_add(1) {
            return None;
        }
        last = origin.seq;
    }
    Some(range_token(&first.spool, first.seq, last))
}

/// The one place the token's text is formed, so that a single frame gets the same
/// token whichever way it is computed.
fn range_token(spool: &str, first: u64, last: u64) -> String {
    format!("{spool}-{first}-{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(spool: &str, seq: u64) -> Origin {
        Origin {
            spool: spool.into(),
            seq,
        }
    }

    #[test]
    fn contiguous_frames_of_one_spool_get_their_range() {
        let spool: Arc<str> = "2-00000000000000ab".into();
        let run: Vec<Origin> = (7..=9)
            .map(|seq| Origin {
                spool: Arc::clone(&spool),
                seq,
            })
            .collect();
        assert_eq!(
            token(run.iter().map(Some)).as_deref(),
            Some("2-00000000000000ab-7-9")
        );
        // Equal names in different allocations are the same spool.
        let copies = [at("s", 1), at("s", 2)];
        assert_eq!(token(copies.iter().map(Some)).as_deref(), Some("s-1-2"));
        assert_eq!(token([Some(&at("s", 4))]).as_deref(), Some("s-4-4"));
        assert_eq!(at("s", 4).token(), "s-4-4");
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
