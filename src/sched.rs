//! The worker's CPU time slice: a short EEVDF slice for every one of its threads, so
//! that a thread woken by a finished `fdatasync`, a readable socket or a queued
//! append runs at once instead of waiting for a busy core's next tick.
//!
//! # Why
//!
//! Since Linux 6.6 the fair scheduler is EEVDF, and since 6.12 a thread can ask for
//! its own slice (`sched_setattr` with `sched_runtime` under `SCHED_OTHER`). A woken
//! thread with a shorter slice than the running one preempts it; with equal slices it
//! usually waits until the running thread's slice ends or the tick comes (4 ms at
//! `HZ=250`). An acknowledgement crosses several wake-ups (connection task → spool
//! writer → `fdatasync` completion → connection task), and on a host whose cores are
//! busy (ClickHouse's merges, here even at nice 19) each one could wait a tick.
//! Measured with `scripts/bench` (docs/BENCHMARKS.md, session 6): at the sustained
//! peak the spool's `fdatasync` p99 went from ≤ 5.1 to ≤ 1.5–2.6 ms and the client p99
//! from 16–17 to 11–15 ms with a 100 µs slice, at 80 % of it from 10.5 to 7.4–9.4 ms,
//! for up to ~10 % more CPU per record (more preemptions). The slice
//! does not change the worker's share of the CPU (that is its weight: nice,
//! `CPUWeight=`), only how soon it gets the core when it wakes.
//!
//! The main thread sets it before the runtime starts; threads inherit it when they
//! are created, so every runtime, validation, spool and blocking-pool thread has it.
//! Kernels before 6.12 keep no per-thread slice and ignore the request; that is
//! reported, not an error. systemd's `SystemCallFilter=~@resources` would refuse the
//! call, so the unit allows `sched_setattr` explicitly.
//!
//! This module holds the crate's only `unsafe` code: the two system calls have no
//! safe wrapper in `rustix` or `libc`.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::time::Duration;

/// Shortest slice the kernel accepts (shorter requests are raised to it).
pub const MIN_SLICE: Duration = Duration::from_micros(100);
/// Longest slice the kernel accepts.
pub const MAX_SLICE: Duration = Duration::from_millis(100);

/// What `WORKER_CPU_SLICE_US` is when unset.
pub const DEFAULT_SLICE: Duration = Duration::from_micros(100);

/// The fair policies, which have a slice.
const FAIR_POLICIES: [libc::c_int; 3] = [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE];
/// The one flag a read-back may carry that must be kept.
const RESET_ON_FORK: u64 = libc::SCHED_FLAG_RESET_ON_FORK as u64;

/// Why a slice could not be set.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("cannot read the thread's scheduling attributes (sched_getattr): {0}")]
    Read(#[source] io::Error),
    #[error(
        "cannot set a CPU slice of {} µs (sched_setattr): {source}; a seccomp filter \
         may refuse the call (allow `sched_setattr`), or set WORKER_CPU_SLICE_US=0 to \
         keep the kernel's default",
        slice.as_micros()
    )]
    Set {
        slice: Duration,
        #[source]
        source: io::Error,
    },
    #[error("this kernel keeps no per-thread CPU slice (needs Linux 6.12 or later)")]
    Unsupported,
    #[error("the thread runs under scheduling policy {0}, not a fair one: slice left as is")]
    NotFair(u32),
}

/// The slice before and after [`set_thread_slice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceChange {
    pub before: Duration,
    pub after: Duration,
}

/// Sets the calling thread's slice (inherited by threads it creates afterwards),
/// keeping its policy, nice value and reset-on-fork flag.
pub fn set_thread_slice(slice: Duration) -> Result<SliceChange, SchedError> {
    let mut attr = get_attr().map_err(SchedError::Read)?;
    if !FAIR_POLICIES.contains(&(attr.sched_policy as libc::c_int)) {
        return Err(SchedError::NotFair(attr.sched_policy));
    }
    let before = Duration::from_nanos(attr.sched_runtime);
    attr.size = size_of::<libc::sched_attr>() as u32;
    attr.sched_flags &= RESET_ON_FORK;
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    set_attr(&attr).map_err(|source| SchedError::Set { slice, source })?;
    let after = thread_slice()?;
    if after.is_zero() {
        return Err(SchedError::Unsupported);
    }
    Ok(SliceChange { before, after })
}

/// The calling thread's slice as the kernel reports it (zero: none kept).
pub fn thread_slice() -> Result<Duration, SchedError> {
    get_attr()
        .map(|attr| Duration::from_nanos(attr.sched_runtime))
        .map_err(SchedError::Read)
}

/// Applies `slice` (if any) to the calling thread, which must be the main thread
/// before it starts any other, and logs the outcome. What is in effect later is
/// what [`thread_slice`] reads (`/stats` `cpu_slice_us`).
pub fn apply_to_process(slice: Option<Duration>) {
    let Some(slice) = slice else {
        return;
    };
    match set_thread_slice(slice) {
        Ok(change) => tracing::info!(
            slice_us = change.after.as_micros() as u64,
            default_us = change.before.as_micros() as u64,
            "CPU slice set for the worker's threads (WORKER_CPU_SLICE_US)"
        ),
        Err(err @ (SchedError::Unsupported | SchedError::NotFair(_))) => {
            tracing::info!(error = %err, "WORKER_CPU_SLICE_US has no effect here")
        }
        Err(err) => tracing::warn!(error = %err, "kernel's default CPU slice kept"),
    }
}

fn get_attr() -> io::Result<libc::sched_attr> {
    let mut attr = libc::sched_attr {
        size: 0,
        sched_policy: 0,
        sched_flags: 0,
        sched_nice: 0,
        sched_priority: 0,
        sched_runtime: 0,
        sched_deadline: 0,
        sched_period: 0,
    };
    let size = size_of::<libc::sched_attr>() as libc::c_uint;
    // SAFETY: `attr` is a live, writable `sched_attr` of `size` bytes; pid 0 is the
    // calling thread, and flags must be 0. The kernel writes at most `size` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0 as libc::pid_t,
            &mut attr as *mut libc::sched_attr,
            size,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(attr)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_attr(attr: &libc::sched_attr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `sched_attr` whose `size` field is its own size; the
    // kernel only reads it. pid 0 is the calling thread, and flags must be 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0 as libc::pid_t,
            attr as *const libc::sched_attr,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(major, minor)` of the running kernel.
    fn kernel_version() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (next(), next())
    }

    #[test]
    fn a_thread_slice_is_set_kept_and_inherited_by_new_threads() {
        // On a thread of its own: the slice would otherwise stay on a test thread.
        std::thread::spawn(|| {
            let wanted = Duration::from_micros(250);
            let result = set_thread_slice(wanted);
            if kernel_version() < (6, 12) {
                assert!(matches!(result, Err(SchedError::Unsupported)), "{result:?}");
                return;
            }
            let change = result.expect("setting a fair thread's slice needs no privilege");
            assert_eq!(change.after, wanted);
            assert_ne!(change.before, wanted);
            assert_eq!(thread_slice().unwrap(), wanted);
            let child = std::thread::spawn(|| thread_slice().unwrap());
            assert_eq!(child.join().unwrap(), wanted, "new threads inherit it");
            // Below the kernel's minimum: raised to it, not refused.
            let change = set_thread_slice(Duration::from_micros(20)).unwrap();
            assert_eq!(change.after, MIN_SLICE);
        })
        .join()
        .unwrap();
    }
}
