//! `inflight.log`: the frame ranges the consumer sent as one unit (one INSERT with a
//! deduplication token) and that are not yet acknowledged, so that a replay after a
//! crash delivers those frames in exactly the same units.
//!
//! # Why
//!
//! An INSERT's `insert_deduplication_token` names its first and last frame. After
//! kill -9, frames whose INSERT ClickHouse committed but whose acknowledgement was not
//! yet persisted replay; the batcher would cut them differently (a replay has every
//! frame at once, the live run had them one by one), so the token would differ and the
//! rows would be stored twice. With this log, the reader marks each replayed frame with
//! the range it was sent in ([`SpoolFrame::replay_range`](super::SpoolFrame)), and the
//! batcher sends that range again under its recorded token: ClickHouse drops it if the
//! first INSERT committed.
//!
//! # Cost and durability
//!
//! One 32-byte `write(2)` (`O_APPEND`) per INSERT, before it is sent; no `fsync`. The
//! page cache survives the death of the process, which is the case this serves (kill
//! -9, OOM kill, panic). A power loss can lose the tail of the log: those ranges then
//! replay cut afresh, so their rows may be stored twice (at-least-once, as without
//! the log); never lost, because a token freshly computed always names exactly its
//! frames.
//!
//! # Entries (32 bytes, little-endian)
//!
//! ```text
//! 0 first seq u64 | 8 last seq u64 | 16 append time of last, Unix ms u64
//! 24 kind u8 (1 sent, 2 split) | 25..28 reserved | 28 crc32 of 0..28
//! ```
//!
//! `sent` is written before the INSERT of `first..=last` is sent; `split` before that
//! INSERT, refused for good, is retried frame by frame (each frame then goes alone,
//! under its own token, also at replay). Reading stops at the first entry that is short
//! or fails its checksum (a torn write); the file is cut there.
//!
//! # Pruning and memory
//!
//! An entry is dead once the persisted watermark reaches its last frame. Every state
//! write prunes the in-memory list, and when the file has grown past 64 KiB and is at
//! least three quarters dead it is rewritten with the live entries (temp file, then
//! `rename`; again no `fsync`). Live entries are bounded by the INSERTs sent above the
//! persisted watermark, each holding at least one frame still on disk.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::segment::u64_at;

/// Name of the log inside a spool directory.
pub const INFLIGHT_FILE: &str = "inflight.log";
/// The rewrite's temporary name.
pub const INFLIGHT_TMP_FILE: &str = "inflight.log.tmp";
const ENTRY_LEN: usize = 32;
/// Below this size the file is never rewritten.
const COMPACT_BYTES: u64 = 64 << 10;
const KIND_SENT: u8 = 1;
const KIND_SPLIT: u8 = 2;

/// Frames `first..=last` of this spool, delivered as one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InflightRange {
    pub first: u64,
    pub last: u64,
    /// Append time of frame `last` (Unix ms): part of the unit's token, and known here
    /// even if that frame is lost to quarantine before the replay.
    pub last_appended_unix_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sent,
    Split,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    range: InflightRange,
    kind: Kind,
}

/// The open log; see the module docs.
#[derive(Debug)]
pub struct InflightLog {
    dir: PathBuf,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    /// `None` after an I/O error reopening it: recording stops (logged once).
    file: Option<File>,
    /// Bytes in the file.
    len: u64,
    /// Entries not yet dead, in file order.
    live: VecDeque<Entry>,
}

impl InflightLog {
    /// Opens `dir/inflight.log` (creating it), keeps the entries above `acked_through`
    /// and returns the ranges the reader must replay as units. `reset`: the spool's
    /// state was lost, so old entries are meaningless and dropped. Blocking.
    pub fn open(
        dir: &Path,
        acked_through: u64,
        reset: bool,
    ) -> io::Result<(InflightLog, ReplayRanges)> {
        let path = dir.join(INFLIGHT_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let entries = if reset { Vec::new() } else { decode(&bytes) };
        let valid = (entries.len() * ENTRY_LEN) as u64;
        if valid != bytes.len() as u64 {
            if !reset {
                tracing::warn!(
                    path = %path.display(),
                    bytes = bytes.len() as u64 - valid,
                    "torn end of the in-flight range log cut off"
                );
            }
            file.set_len(valid)?;
        }
        let live: VecDeque<Entry> = entries
            .into_iter()
            .filter(|e| e.range.last > acked_through)
            .collect();
        let replay = ReplayRanges::from_entries(live.iter().copied());
        let log = InflightLog {
            dir: dir.to_path_buf(),
            state: Mutex::new(LogState {
                file: Some(file),
                len: valid,
                live,
            }),
        };
        Ok((log, replay))
    }

    /// Records that `range` is about to be sent as one unit.
    pub fn sent(&self, range: InflightRange) {
        self.append(Entry {
            range,
            kind: Kind::Sent,
        });
    }

    /// Records that the unit `range` was refused and goes frame by frame.
    pub fn split(&self, range: InflightRange) {
        self.append(Entry {
            range,
            kind: Kind::Split,
        });
    }

    fn append(&self, entry: Entry) {
        let mut state = self.state();
        let Some(file) = state.file.as_mut() else {
            return;
        };
        if let Err(err) = file.write_all(&encode(&entry)) {
            // Deduplication of this unit degrades to at-least-once; nothing is lost.
            tracing::warn!(dir = %self.dir.display(), error = %err, "cannot record an in-flight range");
            return;
        }
        state.len += ENTRY_LEN as u64;
        state.live.push_back(entry);
    }

    /// Forgets entries whose frames are all at or below the persisted watermark, and
    /// rewrites the file when mostly dead (see the module docs).
    pub fn prune(&self, acked_through: u64) {
        let mut state = self.state();
        state.live.retain(|e| e.range.last > acked_through);
        let live_bytes = (state.live.len() * ENTRY_LEN) as u64;
        if state.len < COMPACT_BYTES || live_bytes > state.len / 4 {
            return;
        }
        match self.rewrite(&state.live) {
            Ok(file) => {
                state.file = Some(file);
                state.len = live_bytes;
            }
            Err(err) => {
                // The old file is still complete; the next prune tries again.
                tracing::warn!(dir = %self.dir.display(), error = %err, "cannot compact the in-flight range log");
            }
        }
    }

    /// Writes `live` to a new file that replaces the log; returns it open for appends.
    fn rewrite(&self, live: &VecDeque<Entry>) -> io::Result<File> {
        let tmp = self.dir.join(INFLIGHT_TMP_FILE);
        let bytes: Vec<u8> = live.iter().flat_map(encode).collect();
        fs::write(&tmp, &bytes)?;
        fs::rename(&tmp, self.dir.join(INFLIGHT_FILE))?;
        OpenOptions::new()
            .append(true)
            .open(self.dir.join(INFLIGHT_FILE))
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        // Each critical section leaves the state consistent before any call that can fail.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Live entries (tests).
    #[cfg(test)]
    fn live_len(&self) -> usize {
        self.state().live.len()
    }
}

/// What the reader attaches to replayed frames: for each frame, the unit it was sent
/// in by an earlier run, if any. Consumed in sequence order.
#[derive(Debug, Default)]
pub struct ReplayRanges {
    /// Disjoint, ascending; `split` ranges hand out single-frame units.
    ranges: VecDeque<(InflightRange, bool)>,
}

impl ReplayRanges {
    /// The newest entry wins where ranges overlap (they should not: each frame is sent
    /// in one unit per run, and a split is recorded under the unit's own range).
    fn from_entries(entries: impl DoubleEndedIterator<Item = Entry>) -> ReplayRanges {
        let mut splits = std::collections::HashSet::new();
        let mut kept: BTreeMap<u64, (InflightRange, bool)> = BTreeMap::new();
        for entry in entries.rev() {
            let r = entry.range;
            if entry.kind == Kind::Split {
                splits.insert((r.first, r.last));
                continue;
            }
            let overlaps = kept
                .range(..=r.last)
                .next_back()
                .is_some_and(|(_, (k, _))| k.last >= r.first);
            if r.first <= r.last && !overlaps {
                kept.insert(r.first, (r, splits.contains(&(r.first, r.last))));
            }
        }
        ReplayRanges {
            ranges: kept.into_values().collect(),
        }
    }

    /// The unit frame `seq` (appended at `appended_unix_ms`) was sent in, if any.
    /// Calls must come in ascending `seq` order.
    pub fn unit_of(&mut self, seq: u64, appended_unix_ms: u64) -> Option<InflightRange> {
        while self.ranges.front().is_some_and(|(r, _)| r.last < seq) {
            self.ranges.pop_front();
        }
        let &(range, split) = self.ranges.front()?;
        if seq < range.first {
            return None;
        }
        Some(if split {
            InflightRange {
                first: seq,
                last: seq,
                last_appended_unix_ms: appended_unix_ms,
            }
        } else {
            range
        })
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

fn encode(entry: &Entry) -> [u8; ENTRY_LEN] {
    let mut b = [0u8; ENTRY_LEN];
    b[0..8].copy_from_slice(&entry.range.first.to_le_bytes());
    b[8..16].copy_from_slice(&entry.range.last.to_le_bytes());
    b[16..24].copy_from_slice(&entry.range.last_appended_unix_ms.to_le_bytes());
    b[24] = match entry.kind {
        Kind::Sent => KIND_SENT,
        Kind::Split => KIND_SPLIT,
    };
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The valid entries from the start, up to the first torn or corrupt one.
fn decode(bytes: &[u8]) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    for b in bytes.chunks_exact(ENTRY_LEN) {
        let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        let kind = match b[24] {
            KIND_SENT => Kind::Sent,
            KIND_SPLIT => Kind::Split,
            _ => break,
        };
        if crc != crc32fast::hash(&b[..28]) {
            break;
        }
        entries.push(Entry {
            range: InflightRange {
                first: u64_at(b, 0),
                last: u64_at(b, 8),
                last_appended_unix_ms: u64_at(b, 16),
            },
            kind,
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u64, last: u64) -> InflightRange {
        InflightRange {
            first,
            last,
            last_appended_unix_ms: 1000 + last,
        }
    }

    /// Every frame of `seqs` and the unit the replay hands it in.
    fn units(
        replay: &mut ReplayRanges,
        seqs: impl IntoIterator<Item = u64>,
    ) -> Vec<(u64, Option<(u64, u64)>)> {
        seqs.into_iter()
            .map(|seq| {
                (
                    seq,
                    replay.unit_of(seq, 2000 + seq).map(|r| (r.first, r.last)),
                )
            })
            .collect()
    }

    #[test]
    fn recovery_hands_out_the_ranges_above_the_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let (log, replay) = InflightLog::open(dir.path(), 0, false).unwrap();
        assert!(replay.is_empty());
        log.sent(range(1, 3));
        log.sent(range(4, 4));
        log.sent(range(5, 9));
        log.sent(range(12, 13));
        drop(log);
        let (log, mut replay) = InflightLog::open(dir.path(), 4, false).unwrap();
        assert_eq!(log.live_len(), 2, "1..=3 and 4..=4 are acknowledged");
        assert_eq!(
            units(&mut replay, [5, 6, 9, 10, 11, 12, 13, 14]),
            vec![
                (5, Some((5, 9))),
                (6, Some((5, 9))),
                (9, Some((5, 9))),
                (10, None),
                (11, None),
                (12, Some((12, 13))),
                (13, Some((12, 13))),
                (14, None),
            ]
        );
        assert!(replay.is_empty(), "passed ranges are freed");
        // The recorded append time of the last frame is kept, whatever the frame says.
        let (_, mut replay) = InflightLog::open(dir.path(), 4, false).unwrap();
        assert_eq!(replay.unit_of(7, 1), Some(range(5, 9)));
    }

    #[test]
    fn a_torn_last_entry_is_ignored_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = InflightLog::open(dir.path(), 0, false).unwrap();
        log.sent(range(1, 2));
        log.sent(range(3, 5));
        drop(log);
        let path = dir.path().join(INFLIGHT_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(ENTRY_LEN + 20); // the second entry half-written
        fs::write(&path, &bytes).unwrap();
        let (log, mut replay) = InflightLog::open(dir.path(), 0, false).unwrap();
        assert_eq!(
            units(&mut replay, [1, 2, 3]),
            vec![(1, Some((1, 2))), (2, Some((1, 2))), (3, None)]
        );
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            ENTRY_LEN as u64,
            "cut at the torn entry"
        );
        // Appends continue on an entry boundary.
        log.sent(range(3, 6));
        drop(log);
        let (_, mut replay) = InflightLog::open(dir.path(), 0, false).unwrap();
        assert_eq!(
            units(&mut replay, [2, 4]),
            vec![(2, Some((1, 2))), (4, Some((3, 6)))]
        );

        // A flipped bit ends the log there too.
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (_, replay) = InflightLog::open(dir.path(), 0, false).unwrap();
        assert!(replay.is_empty());
    }

    #[test]
    fn a_split_range_replays_frame_by_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = InflightLog::open(dir.path(), 0, false).unwrap();
        log.sent(range(1, 3));
        log.sent(range(4, 6));
        log.split(range(1, 3));
        drop(log);
        let (_, mut replay) = InflightLog::open(dir.path(), 0, false).unwrap();
        assert_eq!(
            replay.unit_of(2, 2002),
            Some(InflightRange {
                first: 2,
                last: 2,
                last_appended_unix_ms: 2002
            })
        );
        assert_eq!(
            units(&mut replay, [3, 4]),
            vec![(3, Some((3, 3))), (4, Some((4, 6)))]
        );
    }

    #[test]
    fn overlapping_ranges_keep_the_newest() {
        let entries = [range(1, 5), range(3, 4), range(6, 8)].map(|range| Entry {
            range,
            kind: Kind::Sent,
        });
        let mut replay = ReplayRanges::from_entries(entries.into_iter());
        assert_eq!(
            units(&mut replay, 1..=6),
            vec![
                (1, None),
                (2, None),
                (3, Some((3, 4))),
                (4, Some((3, 4))),
                (5, None),
                (6, Some((6, 8)))
            ]
        );
    }

    #[test]
    fn a_reset_spool_forgets_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = InflightLog::open(dir.path(), 0, false).unwrap();
        log.sent(range(1, 2));
        drop(log);
        let (_, replay) = InflightLog::open(dir.path(), 0, true).unwrap();
        assert!(replay.is_empty());
        assert_eq!(
            fs::metadata(dir.path().join(INFLIGHT_FILE)).unwrap().len(),
            0
        );
    }

    #[test]
    fn pruning_drops_acknowledged_ranges_and_compacts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INFLIGHT_FILE);
        let (log, _) = InflightLog::open(dir.path(), 0, false).unwrap();
        let n = COMPACT_BYTES / ENTRY_LEN as u64 + 10;
        for seq in 1..=n {
            log.sent(range(seq, seq));
        }
        log.prune(10);
        assert_eq!(log.live_len(), n as usize - 10);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            n * ENTRY_LEN as u64,
            "mostly live: kept"
        );
        log.prune(n - 3);
        assert_eq!(log.live_len(), 3);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            3 * ENTRY_LEN as u64,
            "rewritten"
        );
        assert!(!dir.path().join(INFLIGHT_TMP_FILE).exists());
        // Appends go to the new file; recovery sees exactly the live entries.
        log.sent(range(n + 1, n + 2));
        drop(log);
        let (log, mut replay) = InflightLog::open(dir.path(), n - 3, false).unwrap();
        assert_eq!(log.live_len(), 4);
        assert_eq!(
            units(&mut replay, [n - 3, n - 2, n + 1]),
            vec![
                (n - 3, None),
                (n - 2, Some((n - 2, n - 2))),
                (n + 1, Some((n + 1, n + 2)))
            ]
        );
    }
}
