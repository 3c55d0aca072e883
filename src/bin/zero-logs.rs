//! The worker binary: everything lives in the library.

/// mimalloc instead of glibc's malloc: under load (`scripts/bench -- --rate 4360`)
/// `perf` put ~20 % of the worker's CPU in glibc's malloc/free (arena locks,
/// `malloc_consolidate`); see docs/BENCHMARKS.md for the numbers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    zero_logs::worker::main()
}
