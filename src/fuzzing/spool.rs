//! The spool target: arbitrary bytes laid out as segment files, opened by
//! [`Spool::open`] (recovery of the last segment) and read back by the
//! [`SpoolReader`](crate::spool::SpoolReader) (validation of every frame), exactly as
//! after a restart.
//!
//! Properties: opening never fails or panics on bad contents; the frames handed out
//! come in ascending sequence order; each segment's delivered frames, framed again,
//! are byte for byte a prefix of that segment as it was written (garbage is cut or
//! quarantined, never delivered, and nothing valid before it is lost); and every
//! delivered payload re-encodes to itself.
//!
//! Input layout (byte 0 = mode): with bit 0 clear the rest is one segment file as is;
//! with bit 0 set the rest is a list of frames `ctl u8, len u16 le, payload` that
//! this harness frames with correct checksums and sequence numbers unless `ctl` asks
//! otherwise — so the fuzzer reaches the payload decoder without forging CRCs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::spool::segment::{segment_file_name, FrameHeader};
use crate::spool::{Spool, SpoolConfig};

/// `appended_ms` of every frame this harness writes.
const APPENDED_MS: u64 = 1_750_000_000_000;

/// `ctl` bits of a structured frame.
const BAD_HEADER_CRC: u8 = 1;
const BAD_PAYLOAD_CRC: u8 = 1 << 1;
const WRONG_SEQ: u8 = 1 << 2;
const TORN: u8 = 1 << 3;
const NEW_SEGMENT: u8 = 1 << 4;

/// A frame of a seed input: `ctl` bits and the payload.
#[derive(Debug, Clone)]
pub struct SeedFrame {
    pub ctl: u8,
    pub payload: Vec<u8>,
}

/// The structured input (mode 1) for `frames`, for seeds and tests.
pub fn segment_bytes(frames: &[SeedFrame]) -> Vec<u8> {
    let mut out = vec![1];
    for frame in frames {
        let len = u16::try_from(frame.payload.len()).expect("seed payloads < 64 KiB");
        out.push(frame.ctl);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&frame.payload);
    }
    out
}

/// One frame as the writer lays it out.
fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        payload_len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        payload_crc: crc32fast::hash(payload),
        seq,
        appended_unix_ms: APPENDED_MS,
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Segment files (first sequence number, contents) described by `data`.
fn layout(data: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let Some((&mode, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode & 1 == 0 {
        return vec![(1, rest.to_vec())];
    }
    let mut segments = vec![(1, Vec::new())];
    let mut seq = 1u64;
    while let [ctl, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        if ctl & NEW_SEGMENT != 0 && segments.last().is_some_and(|s| !s.1.is_empty()) {
            segments.push((seq, Vec::new()));
        }
        let written = if ctl & WRONG_SEQ != 0 {
            seq + 1 + u64::from(ctl >> 5)
        } else {
            seq
        };
        let mut bytes = frame(written, payload);
        if ctl & BAD_HEADER_CRC != 0 {
            bytes[36] ^= 0x01;
        }
        if ctl & BAD_PAYLOAD_CRC != 0 {
            bytes[12] ^= 0x01;
            // Keep the header's own checksum right: only the payload's is wrong.
            let crc = crc32fast::hash(&bytes[..36]);
            bytes[36..40].copy_from_slice(&crc.to_le_bytes());
        }
        if ctl & TORN != 0 {
            bytes.truncate(bytes.len() / 2);
        }
        if let Some(segment) = segments.last_mut() {
            segment.1.extend_from_slice(&bytes);
        }
        if ctl & TORN != 0 {
            break;
        }
        seq += 1;
    }
    if mode & 2 != 0 {
        // The zero-filled rest of a preallocated segment.
        if let Some(segment) = segments.last_mut() {
            segment
                .1
                .resize(segment.1.len() + usize::from(mode >> 2) * 8, 0);
        }
    }
    segments
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A fresh directory under the temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("zero-logs-fuzz-spool-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// See the module docs.
pub fn spool_segment(data: &[u8]) {
    let segments = layout(data);
    if segments.is_empty() {
        return;
    }
    let scratch = Scratch::new();
    let mut cfg = SpoolConfig::new(&scratch.0, "fuzz");
    cfg.preallocate = false;
    write_segments(&cfg.dir(), &segments);
    let frames = runtime().block_on(async {
        let (spool, mut reader) = match Spool::open(cfg).await {
            Ok(opened) => opened,
            Err(err) => panic!("opening a spool with bad segments failed: {err}"),
        };
        spool.close_appends();
        let mut frames = Vec::new();
        while let Some(frame) = reader.next().await {
            frames.push(frame);
        }
        spool.shutdown().await;
        frames
    });
    let mut last = 0;
    for f in &frames {
        assert!(f.seq.0 > last, "sequence {} after {last}", f.seq);
        last = f.seq.0;
        super::check_encoded(&f.batch);
    }
    // Per segment: the delivered frames, framed again, are a prefix of the file.
    for (i, (first, bytes)) in segments.iter().enumerate() {
        let end = segments.get(i + 1).map_or(u64::MAX, |s| s.0);
        let mut rebuilt = Vec::new();
        for f in frames.iter().filter(|f| (*first..end).contains(&f.seq.0)) {
            let header = FrameHeader {
                payload_len: u32::try_from(f.batch.byte_len()).unwrap_or(u32::MAX),
                payload_crc: crc32fast::hash(f.batch.payload()),
                seq: f.seq.0,
                appended_unix_ms: f.appended_unix_ms,
            };
            rebuilt.extend_from_slice(&header.encode());
            rebuilt.extend_from_slice(f.batch.payload());
        }
        assert!(
            bytes.starts_with(&rebuilt),
            "segment {first}: the {} delivered bytes are not a prefix of the file",
            rebuilt.len()
        );
    }
}

fn write_segments(dir: &Path, segments: &[(u64, Vec<u8>)]) {
    std::fs::create_dir_all(dir).expect("create the spool directory");
    for (first, bytes) in segments {
        std::fs::write(dir.join(segment_file_name(*first)), bytes).expect("write a segment");
    }
}
