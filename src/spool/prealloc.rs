//! The spare segment: a file of zeros written ahead of need on its own thread, so
//! that appends overwrite blocks that already exist instead of growing a file.
//!
//! # Why
//!
//! An append that grows a file changes its size and block map, so its `fdatasync`
//! must commit the filesystem journal — on ext4 that commit also waits for the data
//! of every other file with pending allocations (ClickHouse writing its parts on the
//! same disk). Overwriting blocks that were written and synced before changes no
//! metadata `fdatasync` has to persist: only the data pages go to disk. Measured on
//! the development VM (200 KiB write + `fdatasync`, another process writing 32 MiB
//! files with `fsync`): p99 5.8–6.6 ms growing vs 1.1–1.3 ms overwriting. Blocks
//! reserved with `fallocate` alone would not do: they are "unwritten" extents, and
//! the first write to each converts it (a metadata change again).
//!
//! # Protocol
//!
//! The thread writes `spare.segment.tmp` in 1 MiB chunks, each synced and paced (see
//! below) so the disk sees no 64 MiB burst, `fsync`s it, renames it to `spare.segment` and syncs the
//! directory: a `spare.segment` is therefore always complete and all zero. The writer,
//! when it rotates, takes it ([`Spare::take`]), renames it to the new segment's name
//! and syncs the directory before writing a frame into it; the thread then prepares
//! the next one. Nothing waits for the thread: without a ready spare the writer
//! creates an empty segment that grows, as before.
//!
//! # Recycling
//!
//! Deleting an acknowledged 64 MiB segment frees its blocks (on a disk mounted with
//! `discard`, that is also 64 MiB of discards queued with the writer's syncs) and
//! the next spare allocates as many again. So the reaper keeps one acknowledged
//! segment as `recycle.segment` ([`keep_for_recycling`]) instead of deleting it, and
//! the thread, when one is there, renames it to `spare.segment.tmp` and overwrites it
//! with zeros rather than creating a file: same zeros, same protocol, so a spare is
//! still complete and all zero, and replay does not change. A leftover
//! `recycle.segment` at start is used the same way; its old frames are below the
//! acknowledged watermark and never read.
//!
//! A preallocated segment ends in zeros after its last frame; recovery and the
//! reader treat an all-zero remainder as the end of the segment, not as damage
//! (see `replay`). The writer cuts a segment to its frames when it seals it.
//!
//! # Pacing
//!
//! The zeros go through the same disk write cache as the frames, and every `fdatasync`
//! of the writer waits for that cache to be flushed, zeros included. Written as fast as
//! the disk takes them, 64 MiB of zeros with a sync every 8 MiB put 8 MiB in front of
//! the frames' syncs about once a second at 500 k records/s, and those were the slowest
//! acknowledgements on a disk the spool had to itself. So the thread spreads a spare
//! over half the time the last segment took to fill (at most [`MAX_SPAN`]), in 1 MiB
//! steps each synced: the spare is still ready before it is needed at a steady rate,
//! and no sync carries more than 1 MiB of zeros. The first spare, with nothing to go
//! by, is written at full speed.
//!
//! Costs: up to two extra segments of disk (the spare and a kept segment, each
//! `SPOOL_SEGMENT_BYTES`, outside `SPOOL_MAX_BYTES`, which counts frames) and the zeros' write bandwidth. On tmpfs
//! (no disk, `fdatasync` is free) and with `SPOOL_PREALLOCATE=false` there is no
//! spare. A spare that cannot be written (disk full) is deleted and retried later.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::segment::sync_dir;

/// A complete spare, ready to be renamed into a segment.
pub const SPARE_FILE: &str = "spare.segment";
/// A spare being written; deleted when found at start.
pub const SPARE_TMP_FILE: &str = "spare.segment.tmp";
/// An acknowledged segment kept to become the next spare.
pub const RECYCLE_FILE: &str = "recycle.segment";

const CHUNK: usize = 1 << 20;
/// Longest a spare is spread over: a spool that fills a segment in minutes still gets
/// its spare within seconds (a faster burst of appends then finds it ready).
const MAX_SPAN: Duration = Duration::from_secs(5);
/// Wait after a failed attempt (disk full): space rarely returns within seconds.
const RETRY_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The thread should write a spare.
    Wanted,
    /// `spare.segment` is complete.
    Ready,
    Stopping,
}

struct Shared {
    dir: PathBuf,
    size: u64,
    state: Mutex<State>,
    changed: Condvar,
    pacing: Mutex<Pacing>,
}

/// When the writer took the last spare, and over how long to spread the next one.
#[derive(Debug, Default)]
struct Pacing {
    last_take: Option<Instant>,
    span: Option<Duration>,
}

impl Pacing {
    /// A spare was taken at `now`: the next one is spread over half the time the
    /// segment before took to fill.
    fn taken(&mut self, now: Instant) {
        self.span = self
            .last_take
            .map(|last| (now.saturating_duration_since(last) / 2).min(MAX_SPAN));
        self.last_take = Some(now);
    }
}

impl Shared {
    fn new(dir: &Path, size: u64, state: State) -> Shared {
        Shared {
            dir: dir.to_path_buf(),
            size,
            state: Mutex::new(state),
            changed: Condvar::new(),
            pacing: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pacing(&self) -> std::sync::MutexGuard<'_, Pacing> {
        self.pacing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Owns the preallocation thread of one spool directory; stops and joins it on drop.
pub(crate) struct Spare {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Spare {
    /// Starts preparing spares of `size` bytes in `dir`, or returns `None` where they
    /// would not help (tmpfs/ramfs) or the thread cannot start. Leftovers of an
    /// earlier run are kept when complete and of the right size, deleted otherwise.
    pub fn start(dir: &Path, size: u64) -> Option<Spare> {
        if is_memory_fs(dir) {
            tracing::debug!(dir = %dir.display(), "spool on a memory filesystem: no preallocation");
            return None;
        }
        let _ = fs::remove_file(dir.join(SPARE_TMP_FILE));
        let ready = spare_size(dir) == Some(size);
        if !ready {
            let _ = fs::remove_file(dir.join(SPARE_FILE));
        }
        let state = if ready { State::Ready } else { State::Wanted };
        let shared = Arc::new(Shared::new(dir, size, state));
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("spool-prealloc".into())
            .spawn(move || run(&worker))
            .map_err(|err| tracing::warn!(error = %err, "cannot start the spool preallocator"))
            .ok()?;
        Some(Spare {
            shared,
            thread: Some(thread),
        })
    }

    /// Renames a complete spare to `to` and returns `Ok(true)`, or `Ok(false)` when
    /// none is ready. The thread then starts on the next one (not before the rename:
    /// its own rename would replace the one being taken).
    pub fn take(&self, to: &Path) -> io::Result<bool> {
        let mut state = self.shared.state();
        if *state != State::Ready {
            return Ok(false);
        }
        let renamed = fs::rename(self.shared.dir.join(SPARE_FILE), to);
        self.shared.pacing().taken(Instant::now());
        *state = State::Wanted;
        self.shared.changed.notify_all();
        renamed.map(|()| true)
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        *self.shared.state() = State::Stopping;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    let mut warned = false;
    loop {
        {
            let mut state = shared.state();
            while *state == State::Ready {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if *state == State::Stopping {
                return;
            }
        }
        match prepare(shared) {
            // `prepare` made it Ready when it named it.
            Ok(true) => warned = false,
            Ok(false) => {} // stopping
            Err(err) => {
                let _ = fs::remove_file(shared.dir.join(SPARE_TMP_FILE));
                if !warned {
                    tracing::warn!(
                        dir = %shared.dir.display(), error = %err,
                        "cannot preallocate a spool segment; segments grow as they are written"
                    );
                    warned = true;
                }
                let state = shared.state();
                let _ = shared
                    .changed
                    .wait_timeout_while(state, RETRY_AFTER, |s| *s != State::Stopping);
            }
        }
    }
}

/// Writes one spare; `Ok(false)` when interrupted by a stop (the partial file is
/// removed).
fn prepare(shared: &Shared) -> io::Result<bool> {
    let tmp = shared.dir.join(SPARE_TMP_FILE);
    // Only this thread touches the temporary name, and only the reaper creates the
    // recycled one: the rename cannot clobber anything.
    let recycled = fs::rename(shared.dir.join(RECYCLE_FILE), &tmp).is_ok();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(!recycled)
        .open(&tmp)?;
    if recycled && file.metadata()?.len() > shared.size {
        file.set_len(shared.size)?;
    }
    let span = shared.pacing().span;
    let started = Instant::now();
    let zeros = vec![0u8; CHUNK];
    let mut written = 0u64;
    while written < shared.size {
        if !pace(shared, started, span, written) {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Ok(false);
        }
        let n = (shared.size - written).min(CHUNK as u64) as usize;
        file.write_all(&zeros[..n])?;
        written += n as u64;
        file.sync_data()?;
    }
    file.sync_all()?;
    drop(file);
    {
        // Named and ready under one lock: whoever sees the name can take it (the
        // directory's sync may follow a take; both renames are synced by then).
        let mut state = shared.state();
        fs::rename(&tmp, shared.dir.join(SPARE_FILE))?;
        if *state == State::Wanted {
            *state = State::Ready;
        }
    }
    sync_dir(&shared.dir)?;
    Ok(true)
}

/// Waits until `written` bytes are due, `span` spreading the whole spare evenly from
/// `started`; `false` when the spool is stopping.
fn pace(shared: &Shared, started: Instant, span: Option<Duration>, written: u64) -> bool {
    let due = span.map_or(started, |span| {
        started + span.mul_f64(written as f64 / shared.size as f64)
    });
    let state = shared.state();
    let wait = due.saturating_duration_since(Instant::now());
    let (state, _) = shared
        .changed
        .wait_timeout_while(state, wait, |s| *s != State::Stopping)
        .unwrap_or_else(PoisonError::into_inner);
    *state != State::Stopping
}

/// Keeps acknowledged segment file `segment` as the next spare's blocks instead of
/// deleting it, if `enabled` (see `Shared::recycles_segments`) and none is kept yet:
/// `true` when kept, `false` when the caller should delete it.
pub(crate) fn keep_for_recycling(dir: &Path, enabled: bool, segment: &Path) -> bool {
    let target = dir.join(RECYCLE_FILE);
    if !enabled || target.exists() {
        return false;
    }
    fs::rename(segment, &target).is_ok()
}

fn spare_size(dir: &Path) -> Option<u64> {
    fs::metadata(dir.join(SPARE_FILE)).ok().map(|m| m.len())
}

/// tmpfs or ramfs: memory, where preallocating only wastes it.
pub(crate) fn is_memory_fs(dir: &Path) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    rustix::fs::statfs(dir).is_ok_and(|s| {
        let kind = s.f_type as u64;
        kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_take(spare: &Spare, to: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if spare.take(to).unwrap() {
                return;
            }
            assert!(Instant::now() < deadline, "no spare within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn prepares_zero_spares_one_after_another() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let Some(spare) = Spare::start(dir.path(), 3 * CHUNK as u64 + 17) else {
            panic!("the target directory should not be a memory filesystem");
        };
        for round in 0..3 {
            let path = dir.path().join(format!("seg-{round}"));
            wait_take(&spare, &path);
            let file = fs::File::open(&path).unwrap();
            let len = file.metadata().unwrap().len();
            assert_eq!(len, 3 * CHUNK as u64 + 17);
            assert!(super::super::segment::is_zero_range(&file, 0, len).unwrap());
        }
        drop(spare);
        assert!(!dir.path().join(SPARE_TMP_FILE).exists());
    }

    #[test]
    fn the_next_spare_is_spread_over_half_the_last_fill_time_at_most_max_span() {
        let t0 = Instant::now();
        let mut pacing = Pacing::default();
        pacing.taken(t0);
        assert_eq!(pacing.span, None, "nothing to go by: full speed");
        pacing.taken(t0 + Duration::from_secs(2));
        assert_eq!(pacing.span, Some(Duration::from_secs(1)));
        pacing.taken(t0 + Duration::from_secs(60));
        assert_eq!(pacing.span, Some(MAX_SPAN));
    }

    #[test]
    fn a_paced_spare_takes_its_span_and_a_first_one_does_not_wait() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let spare = Spare::start(dir.path(), 4 * CHUNK as u64).unwrap();
        wait_take(&spare, &dir.path().join("seg-0"));
        // Unpaced (one take so far): ready long before a pace would allow.
        std::thread::sleep(Duration::from_millis(600));
        let taken = Instant::now();
        wait_take(&spare, &dir.path().join("seg-1"));
        // 600 ms between the takes: the next spare is spread over ~300 ms, its 4th
        // chunk due 225 ms after it started.
        wait_take(&spare, &dir.path().join("seg-2"));
        let took = taken.elapsed();
        assert!(
            took >= Duration::from_millis(220),
            "paced spare ready after {took:?}"
        );
        let file = fs::File::open(dir.path().join("seg-2")).unwrap();
        assert!(super::super::segment::is_zero_range(&file, 0, 4 * CHUNK as u64).unwrap());
    }

    #[test]
    fn a_stop_interrupts_a_paced_spare_at_once() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let shared = Arc::new(Shared::new(dir.path(), 8 * CHUNK as u64, State::Wanted));
        shared.pacing().span = Some(Duration::from_secs(60));
        let worker = Arc::clone(&shared);
        let thread = std::thread::spawn(move || prepare(&worker));
        std::thread::sleep(Duration::from_millis(100));
        let stopped = Instant::now();
        *shared.state() = State::Stopping;
        shared.changed.notify_all();
        let finished = thread.join().unwrap().unwrap();
        assert!(!finished, "a stop is not a complete spare");
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "{:?}",
            stopped.elapsed()
        );
        assert!(
            !dir.path().join(SPARE_TMP_FILE).exists(),
            "partial spare removed"
        );
        assert!(!dir.path().join(SPARE_FILE).exists());
    }

    #[test]
    fn keeps_a_complete_leftover_and_replaces_a_wrong_one() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        fs::write(dir.path().join(SPARE_FILE), vec![0u8; 4096]).unwrap();
        fs::write(dir.path().join(SPARE_TMP_FILE), b"partial").unwrap();
        let spare = Spare::start(dir.path(), 4096).unwrap();
        // Ready at once: the leftover is complete (the partial one was deleted).
        let taken = dir.path().join("taken");
        assert!(spare.take(&taken).unwrap());
        assert_eq!(fs::read(&taken).unwrap(), vec![0u8; 4096]);
        drop(spare);

        fs::write(dir.path().join(SPARE_FILE), vec![0u8; 100]).unwrap();
        let spare = Spare::start(dir.path(), 4096).unwrap();
        wait_take(&spare, &taken);
        assert_eq!(fs::metadata(&taken).unwrap().len(), 4096);
    }

    #[test]
    fn a_kept_segment_becomes_the_next_spare_overwritten_with_zeros() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        // Not kept without preallocation, nor when one is kept already.
        let seg = dir.path().join("seg-1");
        fs::write(&seg, vec![0xabu8; 8192]).unwrap();
        assert!(!keep_for_recycling(dir.path(), false, &seg));
        assert!(keep_for_recycling(dir.path(), true, &seg));
        assert!(!seg.exists());
        let other = dir.path().join("seg-2");
        fs::write(&other, b"frames").unwrap();
        assert!(
            !keep_for_recycling(dir.path(), true, &other),
            "one kept at a time"
        );
        assert!(other.exists(), "the caller deletes it");

        // Longer than a segment: cut to size; every old byte is overwritten.
        let spare = Spare::start(dir.path(), 4096).unwrap();
        let taken = dir.path().join("taken");
        wait_take(&spare, &taken);
        assert_eq!(fs::read(&taken).unwrap(), vec![0u8; 4096]);
        assert!(!dir.path().join(RECYCLE_FILE).exists(), "used up");
        drop(spare);

        // Shorter than a segment: grown to size. The first thread may have finished
        // a fresh spare before it stopped; without it the recycled file is the one used.
        let _ = fs::remove_file(dir.path().join(SPARE_FILE));
        fs::write(dir.path().join(RECYCLE_FILE), vec![0xcdu8; 100]).unwrap();
        let spare = Spare::start(dir.path(), 4096).unwrap();
        wait_take(&spare, &taken);
        assert_eq!(fs::read(&taken).unwrap(), vec![0u8; 4096]);
        assert!(!dir.path().join(RECYCLE_FILE).exists());
    }

    // === With a spool ===

    use super::super::segment::segment_path;
    use super::super::tests::{append_all, assert_drained, batch, config, read_seqs, segments};
    use super::super::{Spool, SpoolConfig};

    async fn wait_for_spare(dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join(SPARE_FILE).exists() {
            assert!(Instant::now() < deadline, "no spare segment within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn appends_overwrite_a_preallocated_segment_and_a_stop_cuts_its_zeros() {
        let tmp = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let cfg = SpoolConfig {
            segment_bytes: 256 << 10,
            ..config(tmp.path(), "1")
        };
        let (spool, reader) = Spool::open(cfg.clone()).await.unwrap();
        wait_for_spare(&cfg.dir()).await;
        append_all(&spool, (0..5).map(|i| batch(i * 2, 2))).await;
        let seg = segment_path(&cfg.dir(), 1);
        assert_eq!(fs::metadata(&seg).unwrap().len(), 256 << 10, "preallocated");
        assert_eq!(spool.stats().bytes, spool.stats().appended_bytes);
        spool.shutdown().await;
        drop((spool, reader));
        let frames = fs::metadata(&seg).unwrap().len();
        assert!(frames < 4096, "cut to its frames: {frames} bytes");

        let (spool, mut reader) = Spool::open(cfg).await.unwrap();
        assert_eq!(read_seqs(&mut reader, 5).await, [1, 2, 3, 4, 5]);
        let stats = spool.stats();
        assert_eq!(
            (stats.torn_tails_truncated, stats.quarantined_frames),
            (0, 0)
        );
        spool.shutdown().await;
    }

    #[tokio::test]
    async fn a_sealed_segment_left_with_its_zeros_by_a_crash_replays_quietly() {
        let tmp = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let cfg = SpoolConfig {
            segment_bytes: 1024,
            ..config(tmp.path(), "1")
        };
        let (spool, reader) = Spool::open(cfg.clone()).await.unwrap();
        append_all(&spool, (0..12).map(|i| batch(i * 2, 2))).await;
        spool.shutdown().await;
        drop((spool, reader));
        let segs = segments(&cfg.dir());
        assert!(segs.len() >= 3, "{segs:?}");
        // The crash came before the writer cut the second segment's zeros.
        let (first, size) = segs[1];
        let path = segment_path(&cfg.dir(), first);
        let file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.set_len(size + 5000).unwrap();
        drop(file);

        let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
        assert_eq!(
            read_seqs(&mut reader, 12).await,
            (1..=12).collect::<Vec<_>>()
        );
        assert_drained(&mut reader).await;
        let stats = spool.stats();
        assert_eq!(
            (stats.torn_tails_truncated, stats.quarantined_frames),
            (0, 0)
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), size, "zeros cut");
        spool.shutdown().await;
    }
}
