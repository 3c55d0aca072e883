//! The worker's resident memory at rest: transparent huge pages are turned off for
//! the process at start.
//!
//! # Why
//!
//! mimalloc reserves a 1 GiB arena and, on Linux, asks for transparent huge pages on
//! it (`madvise(MADV_HUGEPAGE)`, its `allow_thp` option, on by default). With THP in
//! `madvise` or `always` mode every 2 MiB of the arena that the worker touches at all
//! becomes a whole resident huge page: an idle release worker held 11.6 MiB of
//! anonymous memory for ~1 MiB of live allocations (20.5 MiB RSS in all, over issue
//! 21's 20 MiB target); with `MIMALLOC_ALLOW_THP=0` it holds 1.7 MiB (10.7 MiB RSS),
//! at the same throughput (`scripts/bench --idle 10`, `scripts/bench`; the numbers
//! are in docs/BENCHMARKS.md).
//!
//! Two parts, because neither is enough alone:
//! - mimalloc is built without its `madvise` (feature `no_thp`, Cargo.toml): in the
//!   `madvise` mode most distributions use, the arena then never gets huge pages,
//!   including the pages touched before `main`.
//! - `prctl(PR_SET_THP_DISABLE)` here covers the `always` mode: a flag of the whole
//!   process (inherited by children) that the kernel checks at every page fault.
//!   Alone it left 14.2 MiB: the huge pages faulted before `main` stay.
//!
//! An operator who sets `MIMALLOC_ALLOW_THP` decides instead: the worker then leaves
//! the process flag alone (mimalloc itself sets it for `MIMALLOC_ALLOW_THP=0`).

/// The environment variable with which mimalloc's own THP option is set.
const MIMALLOC_ALLOW_THP: &str = "MIMALLOC_ALLOW_THP";

/// What [`disable_transparent_huge_pages`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Thp {
    /// Turned off for the process now.
    Disabled,
    /// Already off: the flag is inherited from the parent process.
    AlreadyDisabled,
    /// Left as it was: `MIMALLOC_ALLOW_THP` is set.
    LeftToMimalloc,
}

/// Turns transparent huge pages off for the process unless `MIMALLOC_ALLOW_THP` is
/// set. Call first thing in `main`.
pub fn disable_transparent_huge_pages() -> std::io::Result<Thp> {
    if std::env::var_os(MIMALLOC_ALLOW_THP).is_some() {
        return Ok(Thp::LeftToMimalloc);
    }
    if rustix::thread::transparent_huge_pages_are_disabled()? {
        return Ok(Thp::AlreadyDisabled);
    }
    rustix::thread::disable_transparent_huge_pages(true)?;
    Ok(Thp::Disabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_end_up_disabled_for_the_process() {
        // The test binary runs without MIMALLOC_ALLOW_THP unless a developer set it.
        if std::env::var_os(MIMALLOC_ALLOW_THP).is_some() {
            assert_eq!(
                disable_transparent_huge_pages().unwrap(),
                Thp::LeftToMimalloc
            );
            return;
        }
        let outcome = disable_transparent_huge_pages().expect("prctl(PR_SET_THP_DISABLE)");
        assert!(
            matches!(outcome, Thp::Disabled | Thp::AlreadyDisabled),
            "{outcome:?}"
        );
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
        // A flag of the process, not of the thread: another thread sees it.
        let seen = std::thread::spawn(rustix::thread::transparent_huge_pages_are_disabled)
            .join()
            .unwrap()
            .unwrap();
        assert!(seen);
        assert_eq!(
            disable_transparent_huge_pages().unwrap(),
            Thp::AlreadyDisabled
        );
    }
}
