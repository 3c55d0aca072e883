//! Getting frames back from disk: recovery when a spool is opened, and the reader's
//! chunked reads of frames that are not (or no longer) in memory.
//!
//! # What opening checks (and what it leaves for later)
//!
//! Opening must not delay `READY=1` by a full replay, so it only:
//!
//! - lists the segment files and reads the first header of each (for the age
//!   statistic) — one small read per segment;
//! - deletes segments whose frames are all acknowledged (a crash came before the
//!   writer did);
//! - fully validates the **last** segment (every header, CRC and sequence number), the
//!   only one a crash can leave half-written, because every earlier segment was
//!   `fdatasync`ed before the next one was created. A torn last frame (incomplete:
//!   never acknowledged) is cut off; a corrupt frame is quarantined with everything
//!   after it. A zero-filled rest (a preallocated segment's unused space, see
//!   `prealloc`) is the segment's end and cut quietly. This reads at most one segment (`segment_bytes`, 64 MiB by
//!   default).
//!
//! Every other segment is validated as the reader streams it (header CRC, payload CRC,
//! contiguous sequence numbers, decodable payload), in the background after `READY`.
//!
//! # Corruption
//!
//! Whatever the reason (bad CRC, bad magic, wrong sequence number, undecodable
//! payload, unreadable length), the valid prefix of the segment is delivered, the rest
//! of the segment from the first bad frame is copied to
//! `quarantine/<segment>.at-<offset>.<unix_ms>.bad` (and `fsync`ed) before the segment
//! is cut back, and the skipped sequence numbers are marked resolved so the watermark
//! can pass them. Each case logs at `error` level and is counted. Nothing here panics
//! or returns an error that would stop the worker: a bad file costs its bad bytes, not
//! the service. The one exception is "stale" frames (valid, but numbered at or beyond
//! the next segment's first): leftovers of a write that failed and could not be cut
//! back, never acknowledged, dropped with a warning.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::ledger::{unix_ms, Counters, SegmentMeta, Shared};
use super::segment::{
    first_header, list_segments, quarantine_copy, segment_file_name, segment_path, FrameHeader,
    Scan, Scanner, QUARANTINE_DIR,
};
use super::SpoolError;
use crate::codec::EncodedBatch;

/// The segments found when opening, validated as described in the module docs.
pub(crate) struct Recovered {
    pub segments: BTreeMap<u64, SegmentMeta>,
    /// Highest sequence number any remaining segment can hold (0: none).
    pub last_seq: u64,
}

/// Opening-time recovery of `dir`; see the module docs.
pub(crate) fn recover(
    dir: &Path,
    acked_through: u64,
    counters: &Counters,
) -> Result<Recovered, SpoolError> {
    let io_err = |source| SpoolError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let list = list_segments(dir).map_err(io_err)?;
    let mut segments = BTreeMap::new();
    let mut last_seq = 0;
    for (i, &(first, size)) in list.iter().enumerate() {
        let path = segment_path(dir, first);
        let meta = match list.get(i + 1) {
            Some(&(next_first, _)) => {
                let first_unix_ms = File::open(&path)
                    .ok()
                    .and_then(|f| first_header(&f))
                    .map_or(0, |h| h.appended_unix_ms);
                Some(SegmentMeta {
                    len: size,
                    last_seq: next_first - 1,
                    sealed: true,
                    first_unix_ms,
                    deleting: false,
                })
                .filter(|_| size > 0)
            }
            None => recover_tail(dir, first, size, counters)?,
        };
        last_seq = last_seq.max(first.saturating_sub(1));
        let Some(meta) = meta else {
            remove_segment(&path)?;
            continue;
        };
        last_seq = last_seq.max(meta.last_seq);
        if meta.last_seq <= acked_through {
            // Fully acknowledged; the previous run stopped before deleting it.
            remove_segment(&path)?;
            continue;
        }
        segments.insert(first, meta);
    }
    Ok(Recovered { segments, last_seq })
}

fn remove_segment(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SpoolError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Validates every frame of the last segment; returns `None` when it holds none.
fn recover_tail(
    dir: &Path,
    first: u64,
    size: u64,
    counters: &Counters,
) -> Result<Option<SegmentMeta>, SpoolError> {
    let path = segment_path(dir, first);
    let io_err = |source| SpoolError::Io {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err)?;
    let mut scanner = Scanner::new(&file, 0, size).map_err(io_err)?;
    let mut payload = Vec::new();
    let mut expected = first;
    let mut first_unix_ms = 0;
    let (valid_len, bad) = loop {
        match scanner.next(Some(&mut payload)).map_err(io_err)? {
            Scan::Frame { header, offset } => {
                if header.seq != expected {
                    let reason = format!(
                        "sequence number {} where {expected} was expected",
                        header.seq
                    );
                    break (offset, Some((false, reason)));
                }
                if expected == first {
                    first_unix_ms = header.appended_unix_ms;
                }
                expected += 1;
            }
            Scan::End => break (size, None),
            Scan::Padding { offset } => {
                // The unused, zero-filled rest of a preallocated segment (or a growing
                // file's size that reached the disk before its data): nothing that was
                // ever acknowledged. Cut it so the file holds exactly its frames; not
                // synced, as a lost cut just repeats this next time.
                tracing::debug!(segment = %path.display(), offset, "zero-filled segment tail cut");
                file.set_len(offset).map_err(io_err)?;
                break (offset, None);
            }
            Scan::Torn { offset, reason } => break (offset, Some((true, reason))),
            Scan::Corrupt { offset, reason } => break (offset, Some((false, reason))),
        }
    };
    if let Some((torn, reason)) = bad {
        if torn {
            TornTail {
                segment: &path,
                offset: valid_len,
                bytes: size - valid_len,
                reason: &reason,
            }
            .emit(counters);
        } else {
            let (copy, bytes) = quarantine_copy(
                &file,
                &segment_file_name(first),
                valid_len,
                size,
                &dir.join(QUARANTINE_DIR),
                unix_ms(),
            )
            .map_err(io_err)?;
            Quarantined {
                segment: &path,
                offset: valid_len,
                bytes,
                frames: 1,
                reason: &reason,
                copy: &copy,
            }
            .emit(counters);
        }
        file.set_len(valid_len).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
    }
    Ok((valid_len > 0).then_some(SegmentMeta {
        len: valid_len,
        last_seq: expected - 1,
        sealed: true,
        first_unix_ms,
        deleting: false,
    }))
}

/// A bad region moved to `quarantine/`: logs loudly and counts.
struct Quarantined<'a> {
    segment: &'a Path,
    offset: u64,
    bytes: u64,
    /// Sequence numbers lost (1 when unknown).
    frames: u64,
    reason: &'a str,
    copy: &'a Path,
}

impl Quarantined<'_> {
    fn emit(&self, counters: &Counters) {
        tracing::error!(
            segment = %self.segment.display(),
            offset = self.offset,
            bytes = self.bytes,
            frames = self.frames,
            reason = self.reason,
            quarantine = %self.copy.display(),
            "corrupt spool frame: valid prefix kept, rest of the segment moved to quarantine"
        );
        Counters::add(&counters.quarantined_frames, self.frames);
        Counters::add(&counters.quarantined_bytes, self.bytes);
    }
}

/// A torn (never acknowledged) last frame cut off: a warning, not an alarm.
struct TornTail<'a> {
    segment: &'a Path,
    offset: u64,
    bytes: u64,
    reason: &'a str,
}

impl TornTail<'_> {
    fn emit(&self, counters: &Counters) {
        tracing::warn!(
            segment = %self.segment.display(),
            offset = self.offset,
            bytes = self.bytes,
            reason = self.reason,
            "torn last spool frame cut off (written during a crash, never acknowledged)"
        );
        Counters::add(&counters.torn_tails, 1);
    }
}

// === Reading chunks for the reader ===

/// Where the reader's next disk read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub seg_first: u64,
    pub offset: u64,
}

/// A consistent snapshot of what may be read, taken under the ledger lock.
pub(crate) struct ChunkRequest {
    pub cursor: Option<Cursor>,
    pub reader_next: u64,
    pub durable_through: u64,
    pub segments: Vec<(u64, SegmentMeta)>,
    pub max_bytes: u64,
}

pub(crate) struct ReadFrame {
    pub header: FrameHeader,
    pub batch: EncodedBatch,
}

/// What one chunk read found; applied to the ledger by the reader.
pub(crate) struct ChunkOutcome {
    pub frames: Vec<ReadFrame>,
    pub cursor: Option<Cursor>,
    pub reader_next: u64,
    /// Sequence ranges that no longer exist (quarantined or missing): resolved.
    pub resolved: Vec<(u64, u64)>,
    /// Sealed segments cut back to a new length: (first, new length).
    pub shrunk: Vec<(u64, u64)>,
    /// An I/O error that stopped the read; retried later from `cursor`.
    pub error: Option<SpoolError>,
}

enum SegmentEnd {
    /// Nothing more to read in this segment; continue at the next one.
    Exhausted,
    /// The byte budget is used up; resume at `offset`.
    Budget(u64),
    Error(SpoolError),
}

/// Reads durable frames from `req.cursor` on, up to about `req.max_bytes`.
pub(crate) fn read_chunk(shared: &Shared, req: ChunkRequest) -> ChunkOutcome {
    let segs = &req.segments;
    let mut out = ChunkOutcome {
        frames: Vec::new(),
        cursor: req.cursor,
        reader_next: req.reader_next,
        resolved: Vec::new(),
        shrunk: Vec::new(),
        error: None,
    };
    let start = req
        .cursor
        .and_then(|c| {
            segs.iter()
                .position(|(first, _)| *first == c.seg_first)
                .map(|i| (i, c.offset))
        })
        .unwrap_or_else(|| {
            let i = segs
                .iter()
                .rposition(|(first, _)| *first <= req.reader_next)
                .unwrap_or(0);
            (i, 0)
        });
    let (mut idx, mut offset) = start;
    let mut budget = ReadBudget {
        used: 0,
        max: req.max_bytes,
    };
    let mut payload = Vec::new();
    while let Some(&(first, meta)) = segs.get(idx) {
        if first > out.reader_next {
            // Numbers between segments that no file holds any more (quarantined or
            // cut off in an earlier run).
            out.resolved.push((out.reader_next, first - 1));
            out.reader_next = first;
        }
        if offset < meta.len && meta.last_seq >= out.reader_next {
            match read_segment(
                shared,
                first,
                meta,
                offset,
                &mut out,
                &mut payload,
                &mut budget,
            ) {
                SegmentEnd::Exhausted => {}
                SegmentEnd::Budget(at) => {
                    out.cursor = Some(Cursor {
                        seg_first: first,
                        offset: at,
                    });
                    return out;
                }
                SegmentEnd::Error(err) => {
                    out.error = Some(err);
                    return out;
                }
            }
        }
        let len = out
            .shrunk
            .iter()
            .find(|(f, _)| *f == first)
            .map_or(meta.len, |&(_, l)| l);
        out.cursor = Some(Cursor {
            seg_first: first,
            offset: len,
        });
        if !meta.sealed {
            break; // the segment being written: wait for more
        }
        idx += 1;
        offset = 0;
    }
    // Everything durable was scanned: numbers up to `durable_through` not found are gone.
    if out.reader_next <= req.durable_through {
        out.resolved.push((out.reader_next, req.durable_through));
        out.reader_next = req.durable_through + 1;
    }
    out
}

struct ReadBudget {
    used: u64,
    max: u64,
}

fn read_segment(
    shared: &Shared,
    first: u64,
    meta: SegmentMeta,
    offset: u64,
    out: &mut ChunkOutcome,
    payload: &mut Vec<u8>,
    budget: &mut ReadBudget,
) -> SegmentEnd {
    let path = segment_path(&shared.dir, first);
    let io_err = |source| {
        Counters::add(&shared.counters.io_errors, 1);
        SegmentEnd::Error(SpoolError::Io {
            path: path.clone(),
            source,
        })
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && meta.sealed => {
            tracing::warn!(
                segment = %path.display(),
                "spool segment vanished; its frames are skipped"
            );
            out.resolved.push((out.reader_next, meta.last_seq));
            out.reader_next = meta.last_seq + 1;
            return SegmentEnd::Exhausted;
        }
        Err(e) => return io_err(e),
    };
    let mut scanner = match Scanner::new(&file, offset, meta.len) {
        Ok(scanner) => scanner,
        Err(e) => return io_err(e),
    };
    // Frames are numbered contiguously inside a segment; a resumed read continues
    // where the reader stopped.
    let mut expected = if offset == 0 { first } else { out.reader_next };
    loop {
        if budget.used >= budget.max {
            return SegmentEnd::Budget(scanner.offset());
        }
        let want = expected >= out.reader_next;
        let scan = match scanner.next(want.then_some(&mut *payload)) {
            Ok(scan) => scan,
            Err(e) => return io_err(e),
        };
        let (at, reason) = match scan {
            Scan::End => return SegmentEnd::Exhausted,
            Scan::Padding { offset: at } if meta.sealed && expected > meta.last_seq => {
                // A sealed segment whose zero tail survived (its cut was lost in a
                // crash): every frame it should hold was read.
                if let Err(e) = cut(&path, at) {
                    return io_err(e);
                }
                out.shrunk.push((first, at));
                return SegmentEnd::Exhausted;
            }
            Scan::Padding { offset } => {
                let reason = format!(
                    "zero-filled where frame {expected} (of up to {}) was expected",
                    meta.last_seq
                );
                (offset, reason)
            }
            Scan::Torn { offset, reason } | Scan::Corrupt { offset, reason } => (offset, reason),
            Scan::Frame { header, offset: at } => {
                if header.seq != expected {
                    if meta.sealed && header.seq > meta.last_seq {
                        return cut_stale(shared, &path, first, meta, at, out);
                    }
                    let reason = format!(
                        "sequence number {} where {expected} was expected",
                        header.seq
                    );
                    (at, reason)
                } else {
                    expected += 1;
                    if !want {
                        continue;
                    }
                    match EncodedBatch::from_payload(Bytes::copy_from_slice(payload)) {
                        Ok(batch) => {
                            budget.used += header.frame_len();
                            out.reader_next = header.seq + 1;
                            out.frames.push(ReadFrame { header, batch });
                            continue;
                        }
                        Err(err) => (at, err.to_string()),
                    }
                }
            }
        };
        return quarantine(shared, &path, &file, first, meta, at, &reason, out);
    }
}

/// Moves `[at, len)` of a segment to quarantine and skips its sequence numbers.
#[allow(clippy::too_many_arguments)]
fn quarantine(
    shared: &Shared,
    path: &Path,
    file: &File,
    first: u64,
    meta: SegmentMeta,
    at: u64,
    reason: &str,
    out: &mut ChunkOutcome,
) -> SegmentEnd {
    let io_err = |path: PathBuf, source| {
        Counters::add(&shared.counters.io_errors, 1);
        SegmentEnd::Error(SpoolError::Io { path, source })
    };
    let (copy, bytes) = match quarantine_copy(
        file,
        &segment_file_name(first),
        at,
        meta.len,
        &shared.dir.join(QUARANTINE_DIR),
        unix_ms(),
    ) {
        Ok(copy) => copy,
        Err(e) => return io_err(shared.dir.join(QUARANTINE_DIR), e),
    };
    if meta.sealed {
        // The segment being written belongs to the writer; a sealed one can be cut.
        if let Err(e) = cut(path, at) {
            return io_err(path.to_path_buf(), e);
        }
        out.shrunk.push((first, at));
    }
    let lost = meta.last_seq.saturating_sub(out.reader_next) + 1;
    Quarantined {
        segment: path,
        offset: at,
        bytes,
        frames: lost,
        reason,
        copy: &copy,
    }
    .emit(&shared.counters);
    if meta.last_seq >= out.reader_next {
        out.resolved.push((out.reader_next, meta.last_seq));
        out.reader_next = meta.last_seq + 1;
    }
    SegmentEnd::Exhausted
}

/// Drops frames a failed write left behind (numbered past this segment).
fn cut_stale(
    shared: &Shared,
    path: &Path,
    first: u64,
    meta: SegmentMeta,
    at: u64,
    out: &mut ChunkOutcome,
) -> SegmentEnd {
    if let Err(source) = cut(path, at) {
        Counters::add(&shared.counters.io_errors, 1);
        return SegmentEnd::Error(SpoolError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    TornTail {
        segment: path,
        offset: at,
        bytes: meta.len - at,
        reason: "frames of a failed write numbered past the segment",
    }
    .emit(&shared.counters);
    out.shrunk.push((first, at));
    SegmentEnd::Exhausted
}

fn cut(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}
