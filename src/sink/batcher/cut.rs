//! Which queued submissions form the next INSERT, and under which token — the part of
//! the cutting rules that replays need (see [`dedup`](crate::sink::dedup), "Replays").
//!
//! Submissions come in three kinds of groups, never mixed in one INSERT:
//!
//! - **free**: frames never sent before (and batches without a frame), cut by rows,
//!   bytes and age as always. Their token, when they form one contiguous run of one
//!   spool, is computed from the frames and recorded in the [`RangeLog`] before the
//!   INSERT is sent;
//! - **replay**: frames an earlier run sent as one INSERT (they carry its
//!   [`FrameRange`]). They are held until every one of them that is still unacknowledged
//!   is queued — the queue holds a later submission, or the range's last frame — and
//!   then sent together under the range's token, whatever their size;
//! - **token-less**: frames of a range that cannot be gathered: the worker is stopping,
//!   or the rest cannot come (nothing in flight that would make room, and the feeder
//!   waits for room or has sent nothing for [`REPLAY_STALL`]). They go without a
//!   token, and so do later frames of that range: at-least-once for them, never a second
//!   INSERT under a token that may already name other rows.
//!
//! [`RangeLog`]: crate::sink::dedup::RangeLog

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Flusher, Submission};
use crate::sink::dedup::{self, FrameRange};
use crate::sink::Sink;

/// How long the rest of a replayed range may take to arrive when nothing else can
/// bring it (its last frame lost to quarantine at the end of the spool, or a queue
/// too small for the range after a configuration change).
pub(super) const REPLAY_STALL: Duration = Duration::from_secs(2);

/// The next INSERT's kind; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Group {
    Free,
    Replay(FrameRange),
    Tokenless(FrameRange),
}

/// What the INSERT task needs besides the rows.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub token: Option<String>,
    /// The range the token names (recorded as split if the INSERT is refused).
    pub range: Option<FrameRange>,
    /// Record `range` as sent before the first attempt (a free group's new range).
    pub record: bool,
}

impl<S: Sink> Flusher<S> {
    /// The recorded range the front submission must be sent in, unless given up.
    pub(super) fn front_range(&self) -> Option<FrameRange> {
        let range = self.pending.front()?.range?;
        (self.spent != Some(range)).then_some(range)
    }

    /// `Some(due)` when the front replays a recorded range: whether to cut it now.
    pub(super) fn replay_cut_due(&self, now: Instant, closing: bool) -> Option<bool> {
        let range = self.front_range()?;
        Some(closing || self.gathered(range) || self.stalled(now))
    }

    /// When the loop must wake for a replayed range at the front: the stall deadline,
    /// unless an INSERT in flight will wake it first.
    pub(super) fn replay_wake(&self) -> Option<Instant> {
        self.inflight
            .is_empty()
            .then(|| self.last_received + REPLAY_STALL)
    }

    /// Every frame of `range` the feeder will send is queued. Frames arrive in sequence
    /// order, so anything queued after the range, or its last frame, proves it.
    fn gathered(&self, range: FrameRange) -> bool {
        let Some(back) = self.pending.back() else {
            return false;
        };
        back.range != Some(range) || back.origin.as_ref().is_some_and(|o| o.seq >= range.last)
    }

    /// The rest of the range at the front cannot come: no INSERT in flight would make
    /// room, and the feeder waits for room or has been silent for [`REPLAY_STALL`].
    fn stalled(&self, now: Instant) -> bool {
        self.inflight.is_empty()
            && (self.shared.room_waiters.load(Ordering::Acquire) > 0
                || now >= self.last_received + REPLAY_STALL)
    }

    /// The kind of the next INSERT (called when it is due). A range cut before it was
    /// gathered is given up for good (`spent`).
    pub(super) fn front_group(&mut self) -> Group {
        let Some(range) = self.pending.front().and_then(|s| s.range) else {
            return Group::Free;
        };
        if self.spent != Some(range) && self.gathered(range) {
            return Group::Replay(range);
        }
        if self.spent != Some(range) {
            tracing::warn!(
                first = range.first,
                last = range.last,
                "a replayed range could not be gathered into one INSERT; sending it without \
                 a deduplication token (its rows may be stored twice)"
            );
            self.spent = Some(range);
        }
        Group::Tokenless(range)
    }

    /// Whether `next` joins an INSERT of `group` that already holds `rows` and `bytes`.
    pub(super) fn joins(&self, group: Group, next: &Submission, rows: usize, bytes: usize) -> bool {
        match group {
            Group::Replay(range) | Group::Tokenless(range) => next.range == Some(range),
            Group::Free => {
                next.range.is_none()
                    && rows + next.batch.len() <= self.cfg.max_rows
                    && bytes + next.batch.byte_len() <= self.cfg.max_bytes
            }
        }
    }
}

/// The token of an INSERT of `taken`, cut as `group`, and what to record.
pub(super) fn plan(group: Group, taken: &[Submission]) -> Plan {
    let spool = taken
        .first()
        .and_then(|s| s.origin.as_ref())
        .map(|o| Arc::clone(&o.spool));
    match (group, spool) {
        (Group::Replay(range), Some(spool)) => Plan {
            token: Some(range.token(&spool)),
            range: Some(range),
            // Already in the log, from the run that sent it first.
            record: false,
        },
        (Group::Free, Some(spool)) => {
            let range = dedup::range(taken.iter().map(|s| s.origin.as_ref()));
            Plan {
                token: range.map(|r| r.token(&spool)),
                range,
                record: range.is_some(),
            }
        }
        _ => Plan::default(),
    }
}
