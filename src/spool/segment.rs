//! The segment files of a spool directory, and the synchronous primitives that read
//! and write them: frame headers, segment file names, the sequential frame scanner,
//! quarantine copies, and the [`SegmentIo`] seam through which the writer touches a
//! segment (so tests can inject `ENOSPC` and failed `fsync`s).
//!
//! Pure std I/O, no tokio: everything here runs on the writer thread or on
//! `spawn_blocking`, and is tested without a runtime.
//!
//! # Frame (40-byte header + payload, little-endian)
//!
//! ```text
//! 0  magic        "ZLsf"
//! 4  version      u8 = 1
//! 5  flags        u8 = 0   (reserved, e.g. for a compressed payload)
//! 6  header_len   u16 = 40 (lets a later version grow the header)
//! 8  payload_len  u32
//! 12 payload_crc  u32      crc32 (IEEE) of the payload
//! 16 seq          u64      sequence number, +1 per frame across segments
//! 24 appended_ms  u64      wall-clock append time, Unix ms (oldest-unacked age)
//! 32 reserved     u32 = 0
//! 36 header_crc   u32      crc32 of bytes 0..36
//! ```
//!
//! The header has its own CRC so a corrupt length is caught before it is trusted; an
//! all-zero header is reported separately because that is what a crash leaves when
//! the file size reached the disk but the data blocks did not, and what follows the
//! last frame of a preallocated segment (`prealloc`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Frame magic.
pub const FRAME_MAGIC: [u8; 4] = *b"ZLsf";
/// Frame format version written by this build.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 40;
/// Largest payload accepted when reading: far above any request (bodies are capped
/// well below), low enough that a corrupt header cannot make us allocate gigabytes.
pub const MAX_PAYLOAD_BYTES: u32 = 1 << 30;

/// Sub-directory receiving corrupt segment tails.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub payload_crc: u32,
    pub seq: u64,
    pub appended_unix_ms: u64,
}

/// Why 40 bytes are not a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// All zero: pre-allocated or never-written blocks after a crash.
    Zeroed,
    BadMagic,
    UnknownVersion(u8),
    BadCrc,
    TooLarge(u32),
}

impl HeaderError {
    pub fn reason(self) -> String {
        match self {
            HeaderError::Zeroed => "zero-filled header".into(),
            HeaderError::BadMagic => "bad frame magic".into(),
            HeaderError::UnknownVersion(v) => format!("unknown frame version {v}"),
            HeaderError::BadCrc => "header checksum mismatch".into(),
            HeaderError::TooLarge(n) => format!("payload length {n} exceeds the limit"),
        }
    }
}

impl FrameHeader {
    /// Total bytes of the frame on disk.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&FRAME_MAGIC);
        h[4] = FRAME_VERSION;
        h[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        h[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.appended_unix_ms.to_le_bytes());
        let crc = crc32fast::hash(&h[..36]);
        h[36..40].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<FrameHeader, HeaderError> {
        if h.iter().all(|&b| b == 0) {
            return Err(HeaderError::Zeroed);
        }
        if h[0..4] != FRAME_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if h[4] != FRAME_VERSION || usize::from(u16_at(h, 6)) != HEADER_LEN {
            return Err(HeaderError::UnknownVersion(h[4]));
        }
        if crc32fast::hash(&h[..36]) != u32_at(h, 36) {
            return Err(HeaderError::BadCrc);
        }
        let payload_len = u32_at(h, 8);
        if payload_len > MAX_PAYLOAD_BYTES {
            return Err(HeaderError::TooLarge(payload_len));
        }
        Ok(FrameHeader {
            payload_len,
            payload_crc: u32_at(h, 12),
            seq: u64_at(h, 16),
            appended_unix_ms: u64_at(h, 24),
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian `u64` at `b[at..at + 8]` (the caller checked the length).
pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// `seg-<20-digit first seq>.zls`: zero-padded so names sort like sequence numbers.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.zls")
}

/// The first sequence number encoded in a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".zls")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(segment_file_name(first_seq))
}

/// Segments of `dir`, sorted by first sequence number, with their sizes.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(first) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        segments.push((first, entry.metadata()?.len()));
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Makes a directory entry (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

// === Reading ===

/// What the scanner found at the current offset.
#[derive(Debug)]
pub enum Scan {
    /// A valid frame; `payload` is filled only when it was asked for.
    Frame { header: FrameHeader, offset: u64 },
    /// Clean end: the offset is exactly the readable length.
    End,
    /// Zeros from `offset` to the readable length: the unused rest of a preallocated
    /// segment (or blocks a crash left unwritten — the caller decides by what it
    /// expected there).
    Padding { offset: u64 },
    /// The frame at `offset` runs past the readable length (a torn write), or its
    /// header is zero-filled.
    Torn { offset: u64, reason: String },
    /// The bytes at `offset` are not a valid frame.
    Corrupt { offset: u64, reason: String },
}

/// Reads frames sequentially from `offset` up to `limit` bytes of one segment.
///
/// Never reads past `limit`, which is the segment's durable length: bytes beyond it
/// may be a write in progress.
pub struct Scanner<'f> {
    reader: BufReader<io::Take<&'f File>>,
    offset: u64,
    limit: u64,
    header: [u8; HEADER_LEN],
}

impl<'f> Scanner<'f> {
    pub fn new(file: &'f File, offset: u64, limit: u64) -> io::Result<Scanner<'f>> {
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        let reader = BufReader::with_capacity(256 * 1024, file.take(limit.saturating_sub(offset)));
        Ok(Scanner {
            reader,
            offset,
            limit,
            header: [0; HEADER_LEN],
        })
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next frame. With `payload = Some(buf)` the payload is read into `buf` and
    /// its CRC checked; with `None` it is skipped unread (for frames already acked).
    pub fn next(&mut self, payload: Option<&mut Vec<u8>>) -> io::Result<Scan> {
        let offset = self.offset;
        let left = self.limit - offset;
        if left == 0 {
            return Ok(Scan::End);
        }
        if left < HEADER_LEN as u64 {
            let file: &File = self.reader.get_ref().get_ref();
            if is_zero_range(file, offset, self.limit)? {
                return Ok(Scan::Padding { offset });
            }
            return Ok(Scan::Torn {
                offset,
                reason: format!("{left} bytes left, less than a frame header"),
            });
        }
        self.reader.read_exact(&mut self.header)?;
        let header = match FrameHeader::decode(&self.header) {
            Ok(header) => header,
            Err(HeaderError::Zeroed) => {
                let file: &File = self.reader.get_ref().get_ref();
                if is_zero_range(file, offset + HEADER_LEN as u64, self.limit)? {
                    return Ok(Scan::Padding { offset });
                }
                return Ok(Scan::Torn {
                    offset,
                    reason: HeaderError::Zeroed.reason(),
                });
            }
            Err(err) => {
                return Ok(Scan::Corrupt {
                    offset,
                    reason: err.reason(),
                })
            }
        };
        if header.frame_len() > left {
            return Ok(Scan::Torn {
                offset,
                reason: format!(
                    "frame of {} bytes but only {left} bytes left",
                    header.frame_len()
                ),
            });
        }
        match payload {
            Some(buf) => {
                buf.clear();
                buf.resize(header.payload_len as usize, 0);
                self.reader.read_exact(buf)?;
                if crc32fast::hash(buf) != header.payload_crc {
                    return Ok(Scan::Corrupt {
                        offset,
                        reason: "payload checksum mismatch".into(),
                    });
                }
            }
            None => self.reader.seek_relative(i64::from(header.payload_len))?,
        }
        self.offset += header.frame_len();
        Ok(Scan::Frame { header, offset })
    }
}

/// Whether `[offset, end)` of `file` is all zero bytes: the never-written rest of a
/// preallocated segment.
pub fn is_zero_range(file: &File, offset: u64, end: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    while at < end {
        let n = (end - at).min(1 << 20) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Where the data in `[from, end)` of `file` ends: `end` minus the whole 4 KiB pages
/// of zeros before it (the unused rest of a preallocated segment), at least `from`.
/// Whole pages only, so the zeros a frame may legitimately end with stay.
pub fn data_end(file: &File, from: u64, end: u64) -> io::Result<u64> {
    const PAGE: u64 = 4096;
    let mut buf = vec![0u8; 1 << 20];
    let mut stop = end;
    while stop > from {
        let n = (stop - from).min(1 << 20) as usize;
        let start = stop - n as u64;
        file.read_exact_at(&mut buf[..n], start)?;
        if let Some(last) = buf[..n].iter().rposition(|&b| b != 0) {
            let data = start + last as u64 + 1;
            return Ok(data.next_multiple_of(PAGE).clamp(from, end));
        }
        stop = start;
    }
    Ok(from)
}

/// Reads the first frame header of a segment, if it has a valid one.
pub fn first_header(file: &File) -> Option<FrameHeader> {
    let mut h = [0u8; HEADER_LEN];
    file.read_exact_at(&mut h, 0).ok()?;
    FrameHeader::decode(&h).ok()
}

/// Copies `[offset, end)` of `src`, without the zeros that end a preallocated
/// segment, into a new file under `quarantine_dir`, durably, and returns its path and
/// the bytes copied. The name keeps the segment and offset so an operator can find
/// where the bytes came from.
pub fn quarantine_copy(
    src: &File,
    segment_name: &str,
    offset: u64,
    end: u64,
    quarantine_dir: &Path,
    unix_ms: u64,
) -> io::Result<(PathBuf, u64)> {
    let end = data_end(src, offset, end)?;
    fs::create_dir_all(quarantine_dir)?;
    let path = quarantine_dir.join(format!("{segment_name}.at-{offset}.{unix_ms}.bad"));
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let mut from = src;
    from.seek(SeekFrom::Start(offset))?;
    io::copy(&mut from.take(end.saturating_sub(offset)), &mut out)?;
    out.sync_all()?;
    sync_dir(quarantine_dir)?;
    Ok((path, end - offset))
}

// === Writing ===

/// The writer's view of an open segment: positioned writes, `fdatasync`, truncation.
///
/// A seam for fault injection only; production uses [`File`].
pub trait SegmentIo: Send {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl SegmentIo for File {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Creates segment files for the writer. Production: [`RealFs`].
pub trait SegmentFs: Send + Sync {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>>;
    /// Opens an existing file (a preallocated spare renamed into a segment).
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>>;
}

/// Plain files.
pub struct RealFs;

/// Opens a new segment file for reading and writing; fails if it exists.
pub fn create_segment_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Opens an existing segment file for reading and writing.
pub fn open_segment_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

impl SegmentFs for RealFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        Ok(Box::new(create_segment_file(path)?))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        Ok(Box::new(open_segment_file(path)?))
    }
}

/// Whether an I/O error means "no space" (`ENOSPC`, `EDQUOT`): refused like a full
/// spool (429), not a crash.
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u64, payload: &[u8]) -> FrameHeader {
        FrameHeader {
            payload_len: payload.len() as u32,
            payload_crc: crc32fast::hash(payload),
            seq,
            appended_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn header_round_trip_and_every_bit_flip_is_caught() {
        let h = header(42, b"hello");
        let bytes = h.encode();
        assert_eq!(FrameHeader::decode(&bytes), Ok(h));
        for i in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut bad = bytes;
                bad[i] ^= 1 << bit;
                assert!(FrameHeader::decode(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
        assert_eq!(
            FrameHeader::decode(&[0; HEADER_LEN]),
            Err(HeaderError::Zeroed)
        );
    }

    #[test]
    fn segment_names_sort_and_parse() {
        assert_eq!(segment_file_name(7), "seg-00000000000000000007.zls");
        assert_eq!(
            parse_segment_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_name("seg-7.zls"), None);
        assert_eq!(parse_segment_name("seg-0000000000000000000x.zls"), None);
        assert_eq!(parse_segment_name("LOCK"), None);
    }

    #[test]
    fn scanner_reports_frames_torn_tails_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut bytes = Vec::new();
        for seq in 1..=3u64 {
            let payload = vec![seq as u8; 10 * seq as usize];
            bytes.extend_from_slice(&header(seq, &payload).encode());
            bytes.extend_from_slice(&payload);
        }
        let full = bytes.len() as u64;
        fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();

        let mut scanner = Scanner::new(&file, 0, full).unwrap();
        let mut buf = Vec::new();
        let mut seqs = Vec::new();
        while let Scan::Frame { header, .. } = scanner.next(Some(&mut buf)).unwrap() {
            seqs.push(header.seq);
        }
        assert_eq!(seqs, [1, 2, 3]);

        // Skipping payloads lands on the same boundaries.
        let mut scanner = Scanner::new(&file, 0, full).unwrap();
        for _ in 0..3 {
            assert!(matches!(scanner.next(None).unwrap(), Scan::Frame { .. }));
        }
        assert!(matches!(scanner.next(None).unwrap(), Scan::End));

        // A limit inside the last frame is a torn tail.
        let mut scanner = Scanner::new(&file, 0, full - 1).unwrap();
        scanner.next(None).unwrap();
        scanner.next(None).unwrap();
        assert!(matches!(
            scanner.next(None).unwrap(),
            Scan::Torn { offset: 110, .. }
        ));

        // A flipped payload byte is corruption, at that frame's offset.
        bytes[HEADER_LEN + 10 + HEADER_LEN + 3] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut scanner = Scanner::new(&file, 0, full).unwrap();
        scanner.next(Some(&mut buf)).unwrap();
        assert!(matches!(
            scanner.next(Some(&mut buf)).unwrap(),
            Scan::Corrupt { offset: 50, .. }
        ));
    }

    #[test]
    fn zero_check_finds_a_stray_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut bytes = vec![0u8; 3 * (1 << 20)];
        fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        assert!(is_zero_range(&file, 10, bytes.len() as u64).unwrap());
        bytes[2 * (1 << 20) + 5] = 1;
        fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        assert!(!is_zero_range(&file, 10, bytes.len() as u64).unwrap());
        assert!(is_zero_range(&file, 10, 2 * (1 << 20) as u64).unwrap());
        let len = bytes.len() as u64;
        // The page holding the stray byte is kept whole; the zero pages after it go.
        assert_eq!(data_end(&file, 0, len).unwrap(), 2 * (1 << 20) + 4096);
        assert_eq!(
            data_end(&file, 0, 2 * (1 << 20) + 100).unwrap(),
            2 * (1 << 20) + 100
        );
        assert_eq!(
            data_end(&file, 2 * (1 << 20) + 4096, len).unwrap(),
            2 * (1 << 20) + 4096
        );
        assert_eq!(data_end(&file, 7, 2 * (1 << 20)).unwrap(), 7);
    }
}
