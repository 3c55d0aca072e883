//! Fuzz target `decompress`: see `zero_logs::fuzzing::decompress` for the input
//! layout and the properties checked. This binary also counts the heap: the peak
//! of one call may not exceed a small multiple of the cap (a decompression bomb
//! must cost at most about the cap, whatever it expands to). zstd's C code
//! allocates outside Rust's allocator; libFuzzer's `-rss_limit_mb` bounds that.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        new
    }
}

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(live, Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Decoder state (inflate window and tables) on top of the output.
const STATE_BYTES: usize = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let cap = data
        .get(1..3)
        .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    zero_logs::fuzzing::decompress(data);
    let peak = PEAK.load(Relaxed) - before;
    // The output buffer may double past the cap once, and `Bytes` may copy it.
    let bound = 4 * (cap + 1) + 2 * data.len() + STATE_BYTES;
    assert!(
        peak <= bound,
        "{peak} bytes of heap for a {}-byte body with a cap of {cap}",
        data.len()
    );
});
