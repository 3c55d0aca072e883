//! The validation pool (`ENABLE_WORKER_VALIDATION=true`): plain threads taking
//! decode jobs (compressed bodies and plain ones over `INLINE_MAX_BYTES`) from one
//! queue and sleeping in the kernel while it is empty.
//!
//! Why not rayon: its idle workers spin with `sched_yield` before they sleep. With
//! requests arriving a few thousand times a second they never reach sleep, and on a
//! 2-core host that spinning took about a third of the worker's CPU (`perf` during
//! `scripts/bench -- --rate 4360`) and lengthened every request's wait for a core.
//! Validation jobs are independent and short (one request body each), so a shared
//! FIFO is all the scheduling they need.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of threads running submitted jobs in FIFO order. Dropping it lets the
/// threads finish the queued jobs and exit (they are not joined).
pub struct Pool {
    tx: Sender<Job>,
}

impl Pool {
    /// Starts `threads` threads named `<name>-<i>`.
    pub fn new(threads: usize, name: &str) -> std::io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || run(&rx))?;
        }
        Ok(Pool { tx })
    }

    /// Queues `job`; it runs on the first free thread.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        // The threads only stop once this sender is dropped, so sending cannot fail;
        // if it ever did, the job (and its result channel) is dropped and the caller
        // sees its oneshot closed.
        let _ = self.tx.send(Box::new(job));
    }
}

fn run(rx: &Mutex<Receiver<Job>>) {
    loop {
        // One thread waits in `recv` while the others wait for the lock: both sleep.
        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_job_on_its_threads() {
        let pool = Pool::new(3, "test-pool").unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            pool.spawn(move || {
                let name = std::thread::current().name().unwrap_or("").to_string();
                tx.send((i, name)).unwrap();
            });
        }
        drop(tx);
        let mut seen: Vec<(i32, String)> = rx.iter().collect();
        seen.sort();
        assert_eq!(seen.len(), 100);
        assert!(seen.iter().all(|(_, n)| n.starts_with("test-pool-")));
        assert_eq!(
            seen.iter().map(|(i, _)| *i).sum::<i32>(),
            (0..100).sum::<i32>()
        );
    }
}
