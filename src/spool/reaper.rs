//! The reaper thread: deletes fully acknowledged segments off the writer thread.
//!
//! # Why
//!
//! Unlinking a 64 MiB segment on ext4 frees its blocks inside a journal transaction:
//! `strace -T` on the writer at 5 600 requests/s showed `unlink` at ~15 ms (p50),
//! while one `fdatasync` took 0.2 ms (p50) and 4–5 ms (p99). About once a second every
//! append queued behind such an unlink waited for it, and that was the spool's commit
//! p99. The writer now marks the segment `deleting` in the ledger and hands it here.
//!
//! # Rules
//!
//! - The writer persists `spool.state` before handing a segment over (see
//!   `Writer::maintain`), exactly as before an inline delete.
//! - A segment leaves the ledger (and its bytes leave the spool's total) only once
//!   its file is gone. On failure it is logged, counted in `io_errors` and unmarked, so
//!   the next maintenance tries again.
//! - [`Reaper::flush`] waits for every deletion handed over before it: checkpoints and
//!   shutdown use it, so they still report a spool without acknowledged segments.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::ledger::{Counters, Shared};
use super::segment::segment_path;

enum Job {
    Delete { first: u64, len: u64 },
    Flush(SyncSender<()>),
}

/// Owns the reaper thread of one spool; finishes the queue and joins on drop.
pub(crate) struct Reaper {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// `None` if the thread cannot start: the writer then deletes inline.
    pub fn start(shared: Arc<Shared>) -> Option<Reaper> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("spool-reaper".into())
            .spawn(move || run(&shared, rx))
            .map_err(|err| tracing::warn!(error = %err, "cannot start the spool reaper"))
            .ok()?;
        Some(Reaper {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues the deletion of segment `first` (`len` bytes of frames); `false` if the
    /// thread is gone (the caller deletes inline).
    pub fn delete(&self, first: u64, len: u64) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(Job::Delete { first, len }).is_ok())
    }

    /// Returns once every deletion queued before has been done or has failed.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let queued = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Job::Flush(done_tx)).is_ok());
        if queued {
            let _ = done_rx.recv();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Delete { first, len } => {
                if !delete_segment(shared, first, len) {
                    if let Some(meta) = shared.ledger().segments.get_mut(&first) {
                        meta.deleting = false;
                    }
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Deletes the file of acknowledged segment `first` and forgets it in the ledger;
/// `false` (logged and counted) if the file could not be removed.
pub(crate) fn delete_segment(shared: &Shared, first: u64, len: u64) -> bool {
    let path = segment_path(&shared.dir, first);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            Counters::add(&shared.counters.io_errors, 1);
            tracing::error!(
                path = %path.display(), error = %e,
                "cannot delete an acknowledged segment"
            );
            return false;
        }
    }
    shared.ledger().segments.remove(&first);
    shared.release(len);
    shared.counters.segments_deleted.fetch_add(1, Relaxed);
    true
}
