//! Bad days: torn tails, corrupt frames, garbage files, a full filesystem (injected,
//! and a real tiny tmpfs in a private mount namespace), failed `fsync`s, and adoption
//! of orphaned spools (including an adopter stopped half-way).

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::segment::{segment_path, FrameHeader, SegmentFs, SegmentIo, HEADER_LEN, QUARANTINE_DIR};
use super::tests::{append_all, assert_drained, batch, config, next, read_seqs, segments};
use super::*;

/// Offsets of the frames in a segment file.
fn frame_offsets(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + HEADER_LEN <= bytes.len() {
        let header: [u8; HEADER_LEN] = bytes[at..at + HEADER_LEN].try_into().unwrap();
        let Ok(h) = FrameHeader::decode(&header) else {
            break;
        };
        offsets.push(at as u64);
        at += h.frame_len() as usize;
    }
    offsets
}

fn quarantined(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir.join(QUARANTINE_DIR))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Writes `n` frames of 2 records each, then stops the spool cleanly.
async fn spool_with_frames(cfg: &SpoolConfig, n: usize) {
    let (spool, reader) = Spool::open(cfg.clone()).await.unwrap();
    append_all(&spool, (0..n).map(|i| batch(i * 2, 2))).await;
    spool.shutdown().await;
    drop((spool, reader));
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_the_valid_frames_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "1");
    spool_with_frames(&cfg, 5).await;
    let tail = segment_path(&cfg.dir(), 1);
    let good_len = fs::metadata(&tail).unwrap().len();
    let torn_tails: [Vec<u8>; 3] = [
        // A header promising 1000 bytes, followed by 100.
        {
            let header = FrameHeader {
                payload_len: 1000,
                payload_crc: 0,
                seq: 6,
                appended_unix_ms: 0,
            };
            let mut b = header.encode().to_vec();
            b.extend_from_slice(&[7; 100]);
            b
        },
        vec![0; 4096],  // size reached the disk, data blocks did not
        vec![0x5a; 17], // half a header
    ];
    for (round, garbage) in torn_tails.iter().enumerate() {
        let mut file = OpenOptions::new().append(true).open(&tail).unwrap();
        file.write_all(garbage).unwrap();
        drop(file);
        let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
        assert_eq!(
            fs::metadata(&tail).unwrap().len(),
            good_len,
            "round {round}"
        );
        assert_eq!(read_seqs(&mut reader, 5).await, [1, 2, 3, 4, 5]);
        assert_drained(&mut reader).await;
        let stats = spool.stats();
        // Zeros are the unused rest of a preallocated segment: cut, not counted.
        let torn = if round == 1 { 0 } else { 1 };
        assert_eq!(
            (stats.torn_tails_truncated, stats.quarantined_frames),
            (torn, 0),
            "round {round}"
        );
        assert!(quarantined(&cfg.dir()).is_empty());
        spool.shutdown().await;
    }
    let (spool, _reader) = Spool::open(cfg).await.unwrap();
    assert_eq!(spool.append(batch(0, 1)).await.unwrap(), SeqNo(6));
}

#[tokio::test]
async fn a_corrupt_frame_in_a_sealed_segment_is_quarantined_with_the_rest_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        segment_bytes: 1024,
        ..config(tmp.path(), "1")
    };
    spool_with_frames(&cfg, 12).await;
    let segs = segments(&cfg.dir());
    assert!(segs.len() >= 4, "{segs:?}");
    // Damage the second frame of the second segment.
    let (first, size) = segs[1];
    let next_first = segs[2].0;
    let path = segment_path(&cfg.dir(), first);
    let offsets = frame_offsets(&path);
    let bad_at = offsets[1];
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xFF], bad_at + HEADER_LEN as u64 + 5)
        .unwrap();
    drop(file);

    let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
    let mut seqs = Vec::new();
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_millis(500), reader.next()).await
    {
        assert_eq!(frame.batch, batch((frame.seq.0 as usize - 1) * 2, 2));
        seqs.push(frame.seq.0);
    }
    let lost: Vec<u64> = (first + 1..next_first).collect();
    let expected: Vec<u64> = (1..=12).filter(|s| !lost.contains(s)).collect();
    assert_eq!(seqs, expected, "valid prefix, then the following segments");
    let stats = spool.stats();
    assert_eq!(stats.quarantined_frames, lost.len() as u64);
    assert_eq!(stats.quarantined_bytes, size - bad_at);
    let q = quarantined(&cfg.dir());
    assert_eq!(q.len(), 1);
    let original_tail = fs::read(&q[0]).unwrap();
    assert_eq!(original_tail.len() as u64, size - bad_at);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        bad_at,
        "segment cut back"
    );
    // The skipped numbers do not hold the watermark back.
    spool.commit_through(SeqNo(12));
    spool.checkpoint().await;
    assert_eq!(spool.stats().acked_through, 12);
    spool.shutdown().await;
    assert!(segments(&cfg.dir()).is_empty());
}

#[tokio::test]
async fn a_corrupt_frame_in_the_last_segment_is_quarantined_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "1");
    spool_with_frames(&cfg, 6).await;
    let path = segment_path(&cfg.dir(), 1);
    let offsets = frame_offsets(&path);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0x00, 0x01], offsets[3] + 10).unwrap(); // header of frame 4
    drop(file);
    let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
    assert_eq!(read_seqs(&mut reader, 3).await, [1, 2, 3]);
    assert_drained(&mut reader).await;
    let stats = spool.stats();
    assert!(
        stats.quarantined_frames >= 1 && stats.quarantined_bytes > 0,
        "{stats:?}"
    );
    assert_eq!(quarantined(&cfg.dir()).len(), 1);
    // Appends continue; the quarantined numbers (4..=6) are never reused, so frame
    // ids stay unique.
    assert_eq!(spool.append(batch(0, 1)).await.unwrap(), SeqNo(7));
    assert_eq!(next(&mut reader).await.unwrap().seq, SeqNo(7));
    spool.commit_through(SeqNo(7));
    spool.checkpoint().await;
    assert_eq!(spool.stats().acked_through, 7);
}

#[tokio::test]
async fn garbage_files_never_crash_the_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "1");
    let dir = cfg.dir();
    fs::create_dir_all(&dir).unwrap();
    let mut noise = vec![0u8; 10_000];
    rand::Rng::fill(&mut rand::rng(), &mut noise[..]);
    fs::write(dir.join(segment::segment_file_name(1)), &noise).unwrap();
    fs::write(dir.join(segment::segment_file_name(50)), &noise[..300]).unwrap();
    fs::write(dir.join(segment::segment_file_name(90)), &noise[..3]).unwrap();
    fs::write(dir.join(state_file::STATE_FILE), &noise[..7]).unwrap();
    fs::write(dir.join("seg-1.zls.tmp"), b"ignored").unwrap();
    let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
    assert_drained(&mut reader).await;
    let seq = spool.append(batch(0, 3)).await.unwrap();
    let frame = next(&mut reader).await.unwrap();
    assert_eq!((frame.seq, frame.batch), (seq, batch(0, 3)));
    assert!(spool.stats().quarantined_bytes > 0);
    spool.commit_through(seq);
    spool.shutdown().await;
    drop((spool, reader));
    let (_spool, mut reader) = Spool::open(cfg).await.unwrap();
    assert_drained(&mut reader).await;
}

// === A full filesystem, injected ===

/// Segment files that fail like a full disk once `budget` bytes were written (the
/// failing write lands partially), or fail `fdatasync` on command.
#[derive(Clone, Default)]
struct FaultyFs {
    budget: Arc<AtomicI64>,
    fail_sync: Arc<AtomicBool>,
}

struct FaultyFile {
    file: fs::File,
    fs: FaultyFs,
}

impl SegmentFs for FaultyFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        let file = super::segment::create_segment_file(path)?;
        Ok(Box::new(FaultyFile {
            file,
            fs: self.clone(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        let file = super::segment::open_segment_file(path)?;
        Ok(Box::new(FaultyFile {
            file,
            fs: self.clone(),
        }))
    }
}

impl SegmentIo for FaultyFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let allowed = self.fs.budget.fetch_sub(buf.len() as i64, SeqCst).max(0) as usize;
        if allowed >= buf.len() {
            return self.file.write_all_at(buf, offset);
        }
        self.fs.budget.store(0, SeqCst);
        self.file.write_all_at(&buf[..allowed], offset)?;
        Err(io::Error::from(io::ErrorKind::StorageFull))
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.fs.fail_sync.load(SeqCst) {
            return Err(io::Error::other("injected EIO"));
        }
        self.file.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

#[tokio::test]
async fn enospc_refuses_cuts_back_and_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "1");
    let faults = FaultyFs::default();
    faults.budget.store(3000, SeqCst);
    let (spool, mut reader) = Spool::open_with(cfg.clone(), Arc::new(faults.clone()))
        .await
        .unwrap();
    let mut ok = Vec::new();
    let err = loop {
        match spool.append(batch(ok.len() * 2, 2)).await {
            Ok(seq) => ok.push(seq.0),
            Err(err) => break err,
        }
    };
    assert!(
        matches!(err, SpoolError::NoSpace { .. }) && err.is_full(),
        "{err}"
    );
    let seg = segment_path(&cfg.dir(), 1);
    let durable = fs::metadata(&seg).unwrap().len();
    assert_eq!(
        durable,
        spool.stats().bytes,
        "the partial frame was cut back"
    );
    assert_eq!(frame_offsets(&seg).len(), ok.len());
    // Still full: refused again, still consistent.
    assert!(spool.append(batch(0, 2)).await.unwrap_err().is_full());
    assert!(spool.stats().no_space_errors >= 2);
    // Space returns: the next frame takes the next number, no gap.
    faults.budget.store(i64::MAX / 2, SeqCst);
    let after = spool.append(batch(999, 2)).await.unwrap();
    assert_eq!(after.0, ok.len() as u64 + 1);
    let all = read_seqs(&mut reader, ok.len() + 1).await;
    assert_eq!(all, (1..=after.0).collect::<Vec<_>>());
    // An fsync that fails is an I/O error for the group, cut back as well.
    faults.fail_sync.store(true, SeqCst);
    let err = spool.append(batch(0, 2)).await.unwrap_err();
    assert!(matches!(err, SpoolError::Io { .. }), "{err}");
    faults.fail_sync.store(false, SeqCst);
    assert_eq!(spool.append(batch(5, 2)).await.unwrap().0, after.0 + 1);
    spool.shutdown().await;
    drop((spool, reader));
    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    assert_eq!(
        read_seqs(&mut reader, after.0 as usize + 1).await.len(),
        after.0 as usize + 1
    );
    assert_drained(&mut reader).await;
    let stats = spool.stats();
    assert_eq!(
        (stats.torn_tails_truncated, stats.quarantined_bytes),
        (0, 0)
    );
}

// === A full filesystem, for real: a 1 MiB tmpfs in a private mount namespace ===

/// `unshare --mount` child holding a tmpfs mounted at `mnt` in its own namespace; we
/// reach it through `/proc/<pid>/root`. Killed (by its pid) on drop.
struct PrivateTmpfs {
    child: Child,
    root: PathBuf,
}

impl PrivateTmpfs {
    fn mount(mnt: &Path, size: &str) -> Option<PrivateTmpfs> {
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size} zero-logs-test \"$0\" && echo ready && exec sleep 600"
            ))
            .arg(mnt)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        let stdout = child.stdout.take()?;
        let _ = io::BufReader::new(stdout).read_line(&mut line);
        let root =
            PathBuf::from(format!("/proc/{}/root", child.id())).join(mnt.strip_prefix("/").ok()?);
        let tmpfs = PrivateTmpfs { child, root };
        (line.trim() == "ready").then_some(tmpfs)
    }
}

impl Drop for PrivateTmpfs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_full_tmpfs_is_refused_and_survived() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let Some(tmpfs) = PrivateTmpfs::mount(&mnt, "1m") else {
        eprintln!(
            "skipped: cannot mount a tmpfs in a private mount namespace here \
             (the injected-ENOSPC test covers the logic)"
        );
        return;
    };
    let cfg = SpoolConfig {
        max_bytes: 64 << 20, // far above the filesystem
        segment_bytes: 128 << 10,
        ..config(&tmpfs.root, "1")
    };
    let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
    let mut acked = Vec::new();
    let err = loop {
        match spool.append(batch(acked.len(), 40)).await {
            Ok(seq) => acked.push(seq.0),
            Err(err) => break err,
        }
    };
    assert!(matches!(err, SpoolError::NoSpace { .. }), "{err}");
    assert!(acked.len() > 20, "only {} frames fit", acked.len());
    for (first, len) in segments(&cfg.dir()) {
        // Every segment holds whole frames only.
        let offsets = frame_offsets(&segment_path(&cfg.dir(), first));
        assert!(!offsets.is_empty());
        let path = segment_path(&cfg.dir(), first);
        let end = {
            let bytes = fs::read(&path).unwrap();
            let last = *offsets.last().unwrap() as usize;
            let h: [u8; HEADER_LEN] = bytes[last..last + HEADER_LEN].try_into().unwrap();
            last as u64 + FrameHeader::decode(&h).unwrap().frame_len()
        };
        assert_eq!(end, len, "segment {first} has no partial frame");
    }
    assert!(spool.append(batch(0, 40)).await.unwrap_err().is_full());
    // The consumer catches up; acked segments are deleted; space returns.
    let seqs = read_seqs(&mut reader, acked.len()).await;
    assert_eq!(seqs, acked);
    spool.commit_through(SeqNo(*acked.last().unwrap()));
    spool.checkpoint().await;
    let again = spool.append(batch(7, 40)).await.expect("writable again");
    assert_eq!(again.0, *acked.last().unwrap() + 1);
    spool.shutdown().await;
    drop((spool, reader));
    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    assert_eq!(next(&mut reader).await.unwrap().seq, again);
    assert_drained(&mut reader).await;
    let stats = spool.stats();
    assert_eq!(
        (stats.torn_tails_truncated, stats.quarantined_bytes),
        (0, 0)
    );
    drop((spool, reader));
    drop(tmpfs);
}

// === Adoption ===

#[tokio::test]
async fn an_orphaned_spool_is_drained_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let orphan_cfg = SpoolConfig {
        segment_bytes: 1024,
        ..config(tmp.path(), "2")
    };
    spool_with_frames(&orphan_cfg, 10).await;
    let (spool, mut reader) = Spool::open(config(tmp.path(), "1")).await.unwrap();
    let (spool_b, _reader_b) = Spool::open(config(tmp.path(), "3")).await.unwrap();

    // Two live instances look at once: exactly one gets it.
    let (mine, theirs) = tokio::join!(spool.claim_orphans(), spool_b.claim_orphans());
    let (mut mine, mut theirs) = (mine.unwrap(), theirs.unwrap());
    assert_eq!(mine.len() + theirs.len(), 1, "claimed twice");
    let orphan = match (mine.pop(), theirs.pop()) {
        (Some(orphan), None) => orphan,
        (None, Some(orphan)) => {
            // Instance 3 won; it lets go (already renamed), and instance 1 claims it.
            drop(orphan);
            let mut again = spool.claim_orphans().await.unwrap();
            assert_eq!(again.len(), 1);
            again.pop().unwrap()
        }
        _ => unreachable!("exactly one claim"),
    };
    finish_adoption(&spool, &mut reader, orphan, tmp.path()).await;
}

async fn finish_adoption(spool: &Spool, reader: &mut SpoolReader, orphan: Orphan, root: &Path) {
    assert_eq!(orphan.instance(), "2");
    assert!(!root.join("2").exists(), "renamed away while held");
    // Instance 2 can start again meanwhile, with a fresh spool of its own.
    let (fresh, mut fresh_reader) = Spool::open(config(root, "2")).await.unwrap();
    assert_drained(&mut fresh_reader).await;
    fresh.shutdown().await;
    drop((fresh, fresh_reader));

    let report = spool
        .adopt(orphan, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((report.spools, report.frames, report.records), (1, 10, 20));
    for i in 0..10 {
        let frame = next(reader).await.unwrap();
        assert_eq!(frame.batch, batch(i * 2, 2));
    }
    assert_drained(reader).await;
    let leftovers: Vec<_> = fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".adopted-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The empty directory of the restarted instance 2 is adopted (and removed) too,
    // with nothing in it; nothing is delivered twice.
    let again = spool
        .adopt_orphans(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again.frames, 0);
    assert_drained(reader).await;
    assert_eq!(spool.stats().adopted_frames, 10);
}

#[tokio::test]
async fn an_adoption_stopped_half_way_is_finished_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    spool_with_frames(&config(tmp.path(), "2"), 10).await;
    // Our own spool fills up after a few frames, so the adoption stalls there.
    let cfg = SpoolConfig {
        max_bytes: 1200,
        segment_bytes: 300,
        ..config(tmp.path(), "1")
    };
    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    let orphan = spool.claim_orphans().await.unwrap().pop().unwrap();
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stopper.cancel();
    });
    assert!(
        spool.adopt(orphan, &cancel).await.is_err(),
        "stopped while full"
    );
    let mut got = Vec::new();
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_millis(300), reader.next()).await
    {
        got.push(frame.batch);
    }
    let moved = got.len();
    assert!(moved > 0 && moved < 10, "moved {moved}");
    // Make room, then a new round continues from the persisted watermark.
    spool.commit_through(SeqNo(moved as u64));
    spool.checkpoint().await;
    let consume = {
        let spool = spool.clone();
        tokio::spawn(async move {
            while got.len() < 10 {
                let frame = next(&mut reader).await.unwrap();
                spool.ack(frame.seq);
                got.push(frame.batch);
            }
            (got, reader)
        })
    };
    let report = spool
        .adopt_orphans(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.frames as usize, 10 - moved);
    let (got, mut reader) = consume.await.unwrap();
    let expected: Vec<EncodedBatch> = (0..10).map(|i| batch(i * 2, 2)).collect();
    assert_eq!(got, expected, "every frame once, in order");
    assert_drained(&mut reader).await;
}
