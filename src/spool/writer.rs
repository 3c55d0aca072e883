//! The writer thread: the only code that writes segment files and the state file.
//!
//! # Why a dedicated thread
//!
//! Writing a group and `fdatasync`ing it is blocking I/O that runs back to back under
//! load. On tokio's blocking pool each group would pay a hand-off and could queue
//! behind unrelated blocking work (validation, reader chunks); a dedicated OS thread
//! owns the open segment for its whole life, never contends with anything, and gets
//! group commit for free: while it sits in `fdatasync`, new appends queue in its
//! channel and become the next group.
//!
//! # Group commit
//!
//! The thread takes every request already queued (up to `max_group_bytes`). If fewer
//! arrived than in the previous group, it waits up to `commit_window` after the first
//! one's arrival for the others: a lone sequential client pays no delay, and
//! concurrent clients share one `fdatasync` without waiting out the whole window once
//! all of them are in. Then: one positioned write of all frames, one `fdatasync`, the
//! ledger update (frames become readable), and only then each `Ack` resolves.
//!
//! # Failures (`ENOSPC`, `EIO`)
//!
//! A failed write or `fdatasync` fails the whole group (`NoSpace` or `Io`), and the
//! segment is cut back to its last durable length, so no partial frame stays behind.
//! After a failed `fdatasync` the kernel may already have dropped the dirty pages, so
//! nothing in the group can be trusted; its sequence numbers are reused by the next
//! group, which also starts a new segment file (a fresh descriptor, whose `fsync`
//! reports errors afresh). If the cut itself fails, the segment is likewise sealed at
//! its durable length (replay recognises the leftover bytes as stale). The
//! thread never exits on an I/O error: the next group simply tries again, so the
//! spool works again as soon as space returns.
//!
//! # Maintenance
//!
//! When acks moved, the watermark is persisted in `spool.state` (one `fdatasync`) and
//! then every sealed segment whose frames are all acknowledged is deleted. Persisting
//! first keeps `next_seq` ahead of every deleted frame, so a restart never reuses a
//! sequence number. The reaper thread (`reaper.rs`) does both, in that order, since
//! they take milliseconds that queued appends would otherwise wait out; checkpoints
//! and shutdown wait for the reaper and then do it inline.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::ledger::{unix_ms, Counters, HotFrame, SegmentMeta, Shared};
use super::prealloc::Spare;
use super::reaper::{delete_segment, mark_deleting, persist_state, Reaper, SharedState};
use super::segment::{
    is_no_space, segment_path, sync_dir, FrameHeader, SegmentFs, SegmentIo, HEADER_LEN,
};
use super::state_file::{SpoolState, StateFile};
use super::{SeqNo, SpoolError};
use crate::codec::EncodedBatch;

/// What the handles send to the writer thread.
pub(crate) enum WriterMsg {
    Append(AppendRequest),
    /// Acks moved: persist the watermark and delete covered segments.
    Maintain,
    /// Like `Maintain`, and answer when done.
    Checkpoint(oneshot::Sender<()>),
    /// Refuse appends queued after this one; the reader ends once it has everything.
    CloseAppends,
    /// Commit what is queued before, close appends, checkpoint, and stop.
    Shutdown(oneshot::Sender<()>),
}

pub(crate) struct AppendRequest {
    pub payload_crc: u32,
    pub batch: EncodedBatch,
    /// When the handle queued it: the group-commit window counts from here.
    pub enqueued: Instant,
    pub done: oneshot::Sender<Result<SeqNo, SpoolError>>,
}

impl AppendRequest {
    fn frame_len(&self) -> u64 {
        (HEADER_LEN + self.batch.byte_len()) as u64
    }
}

/// The segment being appended to.
struct Active {
    first: u64,
    io: Box<dyn SegmentIo>,
    /// Durable bytes.
    len: u64,
    /// File length: more than `len` when the segment was preallocated (zeros after
    /// the frames).
    capacity: u64,
    /// A failed write could not be cut back, or `fdatasync` failed: start a new
    /// segment before writing again.
    broken: bool,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<WriterMsg>,
    fs: Arc<dyn SegmentFs>,
    state: SharedState,
    active: Option<Active>,
    next_seq: u64,
    buf: Vec<u8>,
    appends_closed: bool,
    last_group_len: usize,
    /// Prepares zero-filled segments ahead of rotation; `None`: segments grow.
    spare: Option<Spare>,
    /// Persists acks and deletes acknowledged segments; `None` (thread did not
    /// start): inline.
    reaper: Option<Reaper>,
}

/// Why `Writer::maintain` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Maintenance {
    /// Acks moved: the state write and the deletions go to the reaper.
    Background,
    /// Someone waits for the result: delete inline and wait for the reaper.
    Checkpoint,
    /// Like `Checkpoint`, and the last segment too (nothing more is appended).
    Closing,
}

/// Marks the writer gone (also when unwinding) and wakes the reader.
struct WriterDone(Arc<Shared>);

impl Drop for WriterDone {
    fn drop(&mut self) {
        self.0.appends_open.store(false, Relaxed);
        {
            let mut ledger = self.0.ledger();
            ledger.writer_done = true;
            ledger.appends_closed = true;
        }
        self.0.data_ready.notify_one();
    }
}

/// Messages taken in one round.
#[derive(Default)]
struct Round {
    appends: Vec<AppendRequest>,
    bytes: u64,
    maintain: bool,
    checkpoints: Vec<oneshot::Sender<()>>,
    close_appends: bool,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Round {
    fn add(&mut self, msg: WriterMsg) {
        match msg {
            WriterMsg::Append(req) => {
                self.bytes += req.frame_len();
                self.appends.push(req);
            }
            WriterMsg::Maintain => self.maintain = true,
            WriterMsg::Checkpoint(done) => self.checkpoints.push(done),
            WriterMsg::CloseAppends => self.close_appends = true,
            WriterMsg::Shutdown(done) => self.shutdown = Some(done),
        }
    }

    /// Appends after a close or shutdown in the same round must not be committed.
    fn is_final(&self) -> bool {
        self.close_appends || self.shutdown.is_some()
    }
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        rx: Receiver<WriterMsg>,
        fs: Arc<dyn SegmentFs>,
        state: StateFile,
        next_seq: u64,
    ) -> Writer {
        let spare = if shared.cfg.preallocate {
            Spare::start(&shared.dir, shared.cfg.segment_bytes)
        } else {
            None
        };
        let state = Arc::new(Mutex::new(state));
        let reaper = Reaper::start(Arc::clone(&shared), Arc::clone(&state));
        Writer {
            shared,
            rx,
            fs,
            state,
            active: None,
            next_seq,
            buf: Vec::new(),
            appends_closed: false,
            last_group_len: 0,
            spare,
            reaper,
        }
    }

    /// Runs until `Shutdown` or until every handle is dropped.
    pub fn run(mut self) {
        // Even if this thread panicked, the reader must end instead of waiting forever.
        let _done = WriterDone(Arc::clone(&self.shared));
        let mut shutdown = None;
        while let Ok(first) = self.rx.recv() {
            let round = self.collect(first);
            let (appends, maintain, checkpoints) =
                (round.appends, round.maintain, round.checkpoints);
            if !appends.is_empty() {
                self.commit(appends);
            }
            if round.close_appends || round.shutdown.is_some() {
                self.close_appends();
            }
            if !checkpoints.is_empty() {
                self.maintain(Maintenance::Checkpoint);
            } else if maintain || self.shared.maintain_pending.load(Relaxed) {
                self.maintain(Maintenance::Background);
            }
            for done in checkpoints {
                let _ = done.send(());
            }
            if round.shutdown.is_some() {
                shutdown = round.shutdown;
                break;
            }
        }
        // Shutdown, or every handle dropped: nothing more can be appended.
        self.close_appends();
        self.seal_active();
        self.maintain(Maintenance::Closing);
        if let Some(done) = shutdown {
            let _ = done.send(());
        }
        tracing::debug!(dir = %self.shared.dir.display(), "spool writer stopped");
    }

    fn collect(&mut self, first: WriterMsg) -> Round {
        let max_bytes = self.shared.cfg.max_group_bytes as u64;
        let mut round = Round::default();
        round.add(first);
        while round.bytes < max_bytes && !round.is_final() {
            match self.rx.try_recv() {
                Ok(msg) => round.add(msg),
                Err(_) => break,
            }
        }
        let window = self.shared.cfg.commit_window;
        if let Some(oldest) = round.appends.first().map(|r| r.enqueued) {
            let deadline = oldest + window;
            while round.appends.len() < self.last_group_len
                && round.bytes < max_bytes
                && !round.is_final()
            {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match self.rx.recv_timeout(deadline - now) {
                    Ok(msg) => round.add(msg),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        round
    }

    fn close_appends(&mut self) {
        if self.appends_closed {
            return;
        }
        self.appends_closed = true;
        self.shared.appends_open.store(false, Relaxed);
        self.shared.ledger().appends_closed = true;
        self.shared.data_ready.notify_one();
    }

    /// Commits a round's appends: one write + `fdatasync` per segment they land in
    /// (normally one; two when the round crosses a rotation).
    fn commit(&mut self, mut appends: Vec<AppendRequest>) {
        while !appends.is_empty() {
            if self.appends_closed {
                let total = appends.iter().map(AppendRequest::frame_len).sum();
                return self.fail(appends, total, |_| SpoolError::Closed);
            }
            // Split at the rotation point, so no segment exceeds `segment_bytes` by more
            // than one frame (the cap relies on it: the active segment is never deleted).
            let segment_bytes = self.shared.cfg.segment_bytes;
            let used = self
                .active
                .as_ref()
                .filter(|a| !a.broken)
                .map_or(0, |a| a.len);
            let mut take = 0;
            let mut bytes = 0;
            for req in &appends {
                if take > 0 && used + bytes + req.frame_len() > segment_bytes {
                    break;
                }
                bytes += req.frame_len();
                take += 1;
            }
            let rest = appends.split_off(take);
            match self.write_group(&appends, bytes) {
                Ok(appended_unix_ms) => self.publish(appends, appended_unix_ms, bytes),
                Err((path, err)) => {
                    // The rest would meet the same condition (a full disk): fail it too.
                    let mut failed = appends;
                    failed.extend(rest);
                    let total = failed.iter().map(AppendRequest::frame_len).sum();
                    return self.fail_io(failed, total, path, &err);
                }
            }
            appends = rest;
        }
    }

    /// Writes and syncs one group into one segment (rotating first if needed);
    /// returns the append time stamped on its frames.
    fn write_group(
        &mut self,
        appends: &[AppendRequest],
        total: u64,
    ) -> Result<u64, (PathBuf, io::Error)> {
        self.ensure_segment(total)?;
        let appended_unix_ms = unix_ms();
        self.buf.clear();
        for (i, req) in appends.iter().enumerate() {
            let header = FrameHeader {
                payload_len: req.batch.byte_len() as u32,
                payload_crc: req.payload_crc,
                seq: self.next_seq + i as u64,
                appended_unix_ms,
            };
            self.buf.extend_from_slice(&header.encode());
            self.buf.extend_from_slice(req.batch.payload());
        }
        let Some(active) = self.active.as_mut() else {
            // ensure_segment leaves a segment open; fail softly rather than panic.
            return Err((self.shared.dir.clone(), io::Error::other("no open segment")));
        };
        let mut synced = true;
        let written = active
            .io
            .write_all_at(&self.buf, active.len)
            .and_then(|()| {
                let counters = &self.shared.counters;
                Counters::add(&counters.fsyncs, 1);
                let started = Instant::now();
                let synced_now = active.io.sync_data().inspect_err(|_| synced = false);
                counters.sync_latency.record(started.elapsed());
                synced_now
            });
        if let Err(err) = written {
            // After a failed fdatasync the kernel may have dropped the dirty pages and
            // cleared the error: never trust this file descriptor with new data again.
            active.broken |= !synced;
            let path = segment_path(&self.shared.dir, active.first);
            // Cut the segment back so no partial frame stays; if even that fails, the
            // next group starts a new segment and replay drops the stale bytes.
            active.capacity = active.len;
            if let Err(cut) = active.io.set_len(active.len) {
                tracing::error!(
                    path = %path.display(), error = %cut,
                    "cannot cut a failed write back; sealing the segment"
                );
                active.broken = true;
            }
            return Err((path, err));
        }
        Ok(appended_unix_ms)
    }

    /// Makes the group's frames readable, then resolves the appenders' `Ack`s.
    fn publish(&mut self, appends: Vec<AppendRequest>, appended_unix_ms: u64, total: u64) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let first_seq = self.next_seq;
        let count = appends.len() as u64;
        let start = active.len;
        active.len += total;
        self.next_seq += count;
        self.last_group_len = appends.len();
        let shared = &*self.shared;
        let c = &shared.counters;
        Counters::add(&c.groups, 1);
        Counters::add(&c.appended_frames, count);
        Counters::add(&c.appended_bytes, total);
        let mut dones = Vec::with_capacity(appends.len());
        {
            let mut ledger = shared.ledger();
            if let Some(meta) = ledger.segments.get_mut(&active.first) {
                meta.len = active.len;
                meta.last_seq = self.next_seq - 1;
            }
            ledger.durable_through = self.next_seq - 1;
            let mut end = start;
            for (i, req) in appends.into_iter().enumerate() {
                let seq = first_seq + i as u64;
                end += req.frame_len();
                Counters::add(&c.appended_records, req.batch.len() as u64);
                let contiguous = match ledger.hot.back() {
                    Some(back) => back.seq + 1 == seq,
                    None => ledger.reader_next == seq,
                };
                if contiguous
                    && ledger.hot_bytes + req.batch.byte_len() <= shared.cfg.memory_tail_bytes
                {
                    ledger.hot_bytes += req.batch.byte_len();
                    ledger.hot.push_back(HotFrame {
                        seq,
                        appended_unix_ms,
                        batch: req.batch,
                        seg_first: active.first,
                        end_offset: end,
                    });
                }
                dones.push((seq, req.done, req.enqueued));
            }
        }
        shared.data_ready.notify_one();
        for (seq, done, enqueued) in dones {
            shared.counters.commit_latency.record(enqueued.elapsed());
            let _ = done.send(Ok(SeqNo(seq)));
        }
    }

    /// Seals a full or broken segment and opens a new one when needed.
    fn ensure_segment(&mut self, incoming: u64) -> Result<(), (PathBuf, io::Error)> {
        if let Some(active) = &self.active {
            let full = active.len > 0 && active.len + incoming > self.shared.cfg.segment_bytes;
            if !full && !active.broken {
                return Ok(());
            }
            self.seal_active();
        }
        let first = self.next_seq;
        let path = segment_path(&self.shared.dir, first);
        let (io, capacity) = match self.open_spare(&path) {
            Some(opened) => opened,
            None => (self.create_segment(&path)?, 0),
        };
        // The new name must survive a crash like the frames in it.
        if let Err(err) = sync_dir(&self.shared.dir) {
            let _ = std::fs::remove_file(&path);
            return Err((path, err));
        }
        self.shared.ledger().segments.insert(
            first,
            SegmentMeta {
                len: 0,
                last_seq: first.saturating_sub(1),
                sealed: false,
                first_unix_ms: unix_ms(),
                deleting: false,
            },
        );
        self.active = Some(Active {
            first,
            io,
            len: 0,
            capacity,
            broken: false,
        });
        Ok(())
    }

    /// Renames a ready spare to `path` and opens it, with its length (`segment_bytes`:
    /// the only size `Spare` writes or keeps); `None` (segments grow) when there is
    /// none or it cannot be used.
    fn open_spare(&mut self, path: &Path) -> Option<(Box<dyn SegmentIo>, u64)> {
        let spare = self.spare.as_ref()?;
        let opened = spare.take(path).and_then(|taken| match taken {
            true => Ok(Some((self.fs.open(path)?, self.shared.cfg.segment_bytes))),
            false => Ok(None),
        });
        match opened {
            Ok(opened) => opened,
            Err(err) => {
                tracing::warn!(
                    path = %path.display(), error = %err,
                    "cannot use the preallocated spool segment; creating one that grows"
                );
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn create_segment(&self, path: &Path) -> Result<Box<dyn SegmentIo>, (PathBuf, io::Error)> {
        let path = path.to_path_buf();
        match self.fs.create(&path) {
            Ok(io) => Ok(io),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                // A leftover of a failed attempt that never held a durable frame.
                std::fs::remove_file(&path).map_err(|e| (path.clone(), e))?;
                self.fs.create(&path).map_err(|e| (path, e))
            }
            Err(err) => Err((path, err)),
        }
    }

    fn seal_active(&mut self) {
        let Some(mut active) = self.active.take() else {
            return;
        };
        if active.len > 0 && active.capacity > active.len {
            // Cut the unused zeros so the sealed file holds exactly its frames. Not
            // synced: recovery also accepts a zero tail, should this cut be lost.
            if let Err(err) = active.io.set_len(active.len) {
                tracing::debug!(error = %err, "cannot cut a sealed segment's zero tail");
            }
        }
        drop(active.io);
        let mut ledger = self.shared.ledger();
        if active.len == 0 {
            // Never held a durable frame: remove it so its name (= next_seq) is free.
            drop(ledger);
            let path = segment_path(&self.shared.dir, active.first);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(
                        path = %path.display(), error = %e,
                        "cannot remove an empty segment"
                    )
                }
            }
            self.shared.ledger().segments.remove(&active.first);
        } else if let Some(meta) = ledger.segments.get_mut(&active.first) {
            meta.sealed = true;
        }
    }

    fn fail_io(&mut self, appends: Vec<AppendRequest>, total: u64, path: PathBuf, err: &io::Error) {
        let c = &self.shared.counters;
        if is_no_space(err) {
            Counters::add(&c.no_space_errors, appends.len() as u64);
            tracing::warn!(
                path = %path.display(), frames = appends.len(),
                "spool filesystem full; appends refused until space returns"
            );
            self.fail(appends, total, |_| SpoolError::NoSpace {
                path: path.clone(),
            });
        } else {
            Counters::add(&c.io_errors, 1);
            tracing::error!(
                path = %path.display(), error = %err, frames = appends.len(),
                "spool write failed"
            );
            let kind = err.kind();
            let text = err.to_string();
            self.fail(appends, total, |_| SpoolError::Io {
                path: path.clone(),
                source: io::Error::new(kind, text.clone()),
            });
        }
    }

    fn fail(
        &mut self,
        appends: Vec<AppendRequest>,
        total: u64,
        error: impl Fn(&AppendRequest) -> SpoolError,
    ) {
        self.shared.release(total);
        for req in appends {
            let err = error(&req);
            let _ = req.done.send(Err(err));
        }
    }

    /// Persists the watermark, then deletes fully acknowledged segments (see
    /// [`Maintenance`] for where and which).
    fn maintain(&mut self, how: Maintenance) {
        let closing = how == Maintenance::Closing;
        if how != Maintenance::Background {
            // Inline from here on: let the reaper's queued jobs finish first.
            if let Some(reaper) = &self.reaper {
                reaper.flush();
            }
        }
        self.shared.maintain_pending.store(false, Relaxed);
        let (watermark, deletable) = {
            let ledger = self.shared.ledger();
            let deletable: Vec<(u64, u64)> = ledger
                .segments
                .iter()
                .filter(|(&first, meta)| {
                    !meta.deleting
                        && (meta.sealed || closing)
                        && meta.last_seq >= first
                        && ledger.acks.covers(first, meta.last_seq)
                })
                .map(|(&first, meta)| (first, meta.len))
                .collect();
            (ledger.acks.watermark(), deletable)
        };
        let persisted = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get();
        let wanted = SpoolState {
            acked_through: watermark.max(persisted.acked_through),
            next_seq: self.next_seq.max(persisted.next_seq),
            epoch: persisted.epoch,
        };
        let stale_next = !deletable.is_empty() && persisted.next_seq < self.next_seq;
        let persist = (wanted.acked_through > persisted.acked_through
            || stale_next
            || (closing && wanted != persisted))
            .then_some(wanted);
        if persist.is_none() && deletable.is_empty() {
            return;
        }
        if how == Maintenance::Background && self.hand_to_reaper(persist, &deletable) {
            return;
        }
        if persist.is_some_and(|wanted| !persist_state(&self.shared, &self.state, wanted)) {
            return;
        }
        for (first, len) in deletable {
            if delete_segment(&self.shared, first, len)
                && self.active.as_ref().is_some_and(|a| a.first == first)
            {
                self.active = None;
            }
        }
    }

    /// Marks `segments` `deleting` and queues the job for the reaper; `false`
    /// (unmarked) when there is no reaper thread.
    fn hand_to_reaper(&self, state: Option<SpoolState>, segments: &[(u64, u64)]) -> bool {
        let Some(reaper) = &self.reaper else {
            return false;
        };
        mark_deleting(&self.shared, segments, true);
        let queued = reaper.maintain(state, segments.to_vec());
        if !queued {
            mark_deleting(&self.shared, segments, false);
        }
        queued
    }
}
