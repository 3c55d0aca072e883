//! Behaviour of the spool against real files in temporary directories: durability and
//! order, group commit, rotation and deletion, replay, the cap, the lock; plus the
//! (ignored) measurements. Recovery from bad files, `ENOSPC` and adoption are in
//! `recovery_tests.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use futures_util::FutureExt;
use rand::seq::SliceRandom;

use super::segment::{list_segments, segment_path, FrameHeader, HEADER_LEN};
use super::*;
use crate::codec::{self, EncodedBatch};
use crate::record::{Batch, Level, Record};

/// A record of about 190 bytes (`approx_bytes`), like a typical service log line.
pub(super) fn record(i: usize) -> Record {
    Record {
        timestamp_ns: 1_700_000_000_000_000_000 + i as i64,
        level: [Level::Info, Level::Warn, Level::Error][i % 3],
        service: "checkout-api".into(),
        message: format!(
            "GET /api/v1/cart/{i} completed with status 200 in 12.{i} ms for user 4242"
        ),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        attributes: vec![
            ("http.method".into(), "GET".into()),
            ("host".into(), "web-7".into()),
        ],
        otel: None,
    }
}

pub(super) fn batch(start: usize, n: usize) -> EncodedBatch {
    EncodedBatch::encode(&Batch::new((start..start + n).map(record).collect()))
}

pub(super) fn config(root: &Path, instance: &str) -> SpoolConfig {
    SpoolConfig {
        lock_wait: Duration::from_secs(2),
        orphan_min_idle: Duration::ZERO,
        ..SpoolConfig::new(root, instance)
    }
}

/// The next frame, failing the test instead of hanging.
pub(super) async fn next(reader: &mut SpoolReader) -> Option<SpoolFrame> {
    tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .expect("the reader did not answer within 10 s")
}

pub(super) async fn read_seqs(reader: &mut SpoolReader, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        seqs.push(next(reader).await.expect("a frame").seq.0);
    }
    seqs
}

/// Nothing more is available right now (waits briefly for a disk read to finish).
pub(super) async fn assert_drained(reader: &mut SpoolReader) {
    let more = tokio::time::timeout(Duration::from_millis(200), reader.next()).await;
    assert!(
        !matches!(more, Ok(Some(_))),
        "unexpected frame: {:?}",
        more.map(|f| f.map(|f| f.seq))
    );
}

pub(super) fn segments(dir: &Path) -> Vec<(u64, u64)> {
    list_segments(dir).unwrap()
}

/// Appends one batch after another, each awaited.
pub(super) async fn append_all(
    spool: &Spool,
    batches: impl IntoIterator<Item = EncodedBatch>,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    for b in batches {
        seqs.push(spool.append(b).await.expect("append").0);
    }
    seqs
}

#[tokio::test]
async fn appended_frames_are_on_disk_when_acked_and_read_back_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(config(tmp.path(), "1")).await.unwrap();
    let acks: Vec<Ack> = (0..3).map(|i| spool.append(batch(i * 10, 10))).collect();
    for (i, ack) in acks.into_iter().enumerate() {
        let seq = ack.await.unwrap();
        assert_eq!(seq, SeqNo(i as u64 + 1));
        // Durable means: the frame is already in the file when the Ack resolves.
        let file = std::fs::read(segment_path(spool.dir(), 1)).unwrap();
        let mut offset = 0;
        for _ in 0..=i {
            let header: [u8; HEADER_LEN] = file[offset..offset + HEADER_LEN].try_into().unwrap();
            offset += FrameHeader::decode(&header).unwrap().frame_len() as usize;
        }
    }
    for i in 0..3 {
        let frame = next(&mut reader).await.unwrap();
        assert_eq!(frame.seq, SeqNo(i as u64 + 1));
        assert_eq!(frame.batch, batch(i * 10, 10));
        assert!(!frame.replayed);
        assert!(
            frame.id.to_string().starts_with("1-")
                && frame.id.to_string().ends_with(&format!("-{}", i + 1))
        );
    }
    let stats = spool.stats();
    assert_eq!((stats.appended_frames, stats.appended_records), (3, 30));
    assert_eq!(stats.unacked_frames, 3);
    assert!(stats.fsyncs >= 1 && stats.fsyncs <= 3);
    assert_eq!(stats.bytes, segments(spool.dir())[0].1);
    assert!(stats.oldest_unacked_age_ms < 60_000);
    spool.commit_through(SeqNo(3));
    spool.checkpoint().await;
    let stats = spool.stats();
    assert_eq!((stats.acked_through, stats.unacked_frames), (3, 0));
    assert_eq!(stats.oldest_unacked_age_ms, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_fsyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(config(tmp.path(), "1")).await.unwrap();
    let appenders = 64;
    let per_task = 25;
    let tasks: Vec<_> = (0..appenders)
        .map(|t| {
            let spool = spool.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    spool.append(batch(t * 1000 + i, 2)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total = (appenders * per_task) as u64;
    let stats = spool.stats();
    assert_eq!(stats.appended_frames, total);
    assert!(
        stats.fsyncs * 4 <= total,
        "{} fsyncs for {total} appends: group commit is not batching",
        stats.fsyncs
    );
    // Every frame is readable exactly once, in sequence order.
    let seqs = read_seqs(&mut reader, total as usize).await;
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn acked_segments_are_deleted_in_the_background_without_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        segment_bytes: 2048,
        ..config(tmp.path(), "1")
    };
    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    let n = 30;
    append_all(&spool, (0..n).map(|i| batch(i, 3))).await;
    let before = spool.stats();
    assert!(before.segments >= 6, "rotation: {before:?}");
    for seq in read_seqs(&mut reader, n).await {
        spool.ack(SeqNo(seq));
    }
    // Only the acks' maintenance runs (the reaper deletes); nobody waits for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while spool.stats().segments > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "acked segments not deleted: {:?}",
            spool.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = spool.stats();
    assert_eq!(after.segments_deleted, before.segments - 1, "{after:?}");
    assert!(after.bytes < before.bytes, "{before:?} -> {after:?}");
    assert_eq!(
        segments(spool.dir()).len(),
        1,
        "only the active segment is left"
    );
    spool.shutdown().await;
}

#[tokio::test]
async fn segments_rotate_and_are_deleted_only_when_every_frame_is_acked() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        segment_bytes: 2048,
        ..config(tmp.path(), "1")
    };
    let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
    let n = 40;
    append_all(&spool, (0..n).map(|i| batch(i, 3))).await;
    let initial = segments(spool.dir());
    assert!(initial.len() >= 8, "rotation: {} segments", initial.len());
    assert!(initial[..initial.len() - 1]
        .iter()
        .all(|&(_, size)| size <= 2048));
    let seqs = read_seqs(&mut reader, n).await;
    let mut order = seqs.clone();
    order.shuffle(&mut rand::rng());
    let mut acked = BTreeSet::new();
    for seq in order {
        spool.ack(SeqNo(seq));
        acked.insert(seq);
        spool.checkpoint().await;
        let now: BTreeSet<u64> = segments(spool.dir()).iter().map(|s| s.0).collect();
        for (i, &(first, _)) in initial.iter().enumerate() {
            let last = initial.get(i + 1).map_or(n as u64, |s| s.0 - 1);
            let all_acked = (first..=last).all(|s| acked.contains(&s));
            let is_last = i + 1 == initial.len();
            // Deleted exactly when all its frames are acknowledged (never the active one).
            assert_eq!(
                !now.contains(&first),
                all_acked && !is_last,
                "segment {first}"
            );
        }
    }
    assert_eq!(spool.stats().segments, 1);
    spool.shutdown().await;
    assert!(segments(spool.dir()).is_empty(), "all acked: nothing left");
    drop((spool, reader));
    // Sequence numbers continue after a restart, even with no segment left.
    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    assert_eq!(
        spool.append(batch(0, 1)).await.unwrap(),
        SeqNo(n as u64 + 1)
    );
    assert_eq!(next(&mut reader).await.unwrap().seq, SeqNo(n as u64 + 1));
}

#[tokio::test]
async fn unacked_frames_replay_after_drop_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        segment_bytes: 4096,
        ..config(tmp.path(), "1")
    };
    let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
    let sizes = [
        1, 5, 2, 30, 1, 7, 3, 12, 1, 1, 9, 2, 4, 6, 8, 10, 1, 2, 3, 4,
    ];
    let batches: Vec<EncodedBatch> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| batch(i * 100, n))
        .collect();
    append_all(&spool, batches.clone()).await;
    read_seqs(&mut reader, 5).await; // delivered but never acked
    drop((spool, reader)); // no shutdown: like a crash after the fsyncs

    let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
    let stats = spool.stats();
    assert!(stats.replay_pending);
    assert_eq!(stats.unacked_frames, 20);
    for (i, expected) in batches.iter().enumerate() {
        let frame = next(&mut reader).await.unwrap();
        assert_eq!(frame.seq, SeqNo(i as u64 + 1));
        assert_eq!(&frame.batch, expected);
        assert!(frame.replayed);
    }
    let stats = spool.stats();
    assert_eq!(stats.replayed_frames, 20);
    assert!(!stats.replay_pending);
    // New frames follow the replayed ones.
    assert_eq!(spool.append(batch(0, 1)).await.unwrap(), SeqNo(21));
    assert_eq!(next(&mut reader).await.unwrap().seq, SeqNo(21));
    spool.commit_through(SeqNo(10));
    spool.shutdown().await;
    drop((spool, reader));

    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    assert_eq!(
        read_seqs(&mut reader, 11).await,
        (11..=21).collect::<Vec<_>>()
    );
    assert_drained(&mut reader).await;
    assert_eq!(spool.stats().replayed_frames, 11);
}

#[tokio::test]
async fn a_reader_behind_the_memory_tail_reads_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        memory_tail_bytes: 3000, // ~2 batches of 6 records
        segment_bytes: 8192,
        ..config(tmp.path(), "1")
    };
    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    append_all(&spool, (0..30).map(|i| batch(i * 6, 6))).await;
    for i in 0..30 {
        let frame = next(&mut reader).await.unwrap();
        assert_eq!(frame.seq, SeqNo(i as u64 + 1));
        assert_eq!(frame.batch, batch(i * 6, 6));
    }
    // Caught up: new frames come through memory again, interleaved with reads.
    for i in 30..40 {
        spool.append(batch(i * 6, 6)).await.unwrap();
        assert_eq!(next(&mut reader).await.unwrap().seq, SeqNo(i as u64 + 1));
    }
}

#[tokio::test]
async fn the_cap_refuses_at_once_and_frees_after_acks() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        max_bytes: 8192,
        segment_bytes: 1024,
        ..config(tmp.path(), "1")
    };
    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    let mut accepted = 0;
    let refused = loop {
        let ack = spool.append(batch(accepted, 2));
        // A refusal is decided before anything is queued: the future is already ready.
        match ack.now_or_never() {
            Some(Err(err)) => break err,
            Some(Ok(_)) => unreachable!("a fresh append cannot be durable yet"),
            None => {}
        }
        accepted += 1;
        // (The pending Ack was dropped; the append still completes.)
    };
    assert!(
        matches!(
            refused,
            SpoolError::Full {
                max_bytes: 8192,
                ..
            }
        ),
        "{refused}"
    );
    assert!(refused.is_full());
    spool.checkpoint().await; // the dropped appends are committed by now
    let stats = spool.stats();
    assert!(stats.bytes <= 8192 && stats.full_refusals == 1, "{stats:?}");
    let seqs = read_seqs(&mut reader, accepted).await;
    spool.commit_through(SeqNo(*seqs.last().unwrap()));
    spool.checkpoint().await;
    let stats = spool.stats();
    assert!(
        stats.bytes <= 1024 + 512,
        "{stats:?} {:?}",
        segments(spool.dir())
    );
    spool
        .append(batch(0, 2))
        .await
        .expect("room again after the acks");
}

#[tokio::test]
async fn the_lock_keeps_a_second_owner_out() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        lock_wait: Duration::from_millis(100),
        ..config(tmp.path(), "1")
    };
    let (spool, reader) = Spool::open(cfg.clone()).await.unwrap();
    let second = Spool::open(cfg.clone()).await;
    assert!(
        matches!(second, Err(SpoolError::Locked { .. })),
        "{second:?}"
    );
    spool.shutdown().await;
    drop((spool, reader));
    Spool::open(cfg)
        .await
        .expect("free again once the owner is gone");
}

#[tokio::test]
async fn a_rejected_frame_is_kept_in_quarantine_and_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(config(tmp.path(), "1")).await.unwrap();
    spool.append(batch(0, 4)).await.unwrap();
    let frame = next(&mut reader).await.unwrap();
    spool.reject(&frame, "Type mismatch").await.unwrap();
    spool.checkpoint().await;
    let stats = spool.stats();
    assert_eq!((stats.rejected_frames, stats.acked_through), (1, 1));
    let kept = std::fs::read(
        spool
            .dir()
            .join("quarantine/rejected-00000000000000000001.zls"),
    )
    .unwrap();
    let header: [u8; HEADER_LEN] = kept[..HEADER_LEN].try_into().unwrap();
    let header = FrameHeader::decode(&header).unwrap();
    assert_eq!(header.seq, 1);
    let payload = &kept[HEADER_LEN..];
    assert_eq!(crc32fast::hash(payload), header.payload_crc);
    assert_eq!(
        codec::decode_batch(payload).unwrap(),
        batch(0, 4).decode().unwrap()
    );
}

#[tokio::test]
async fn closing_appends_ends_the_reader_after_the_last_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(config(tmp.path(), "1")).await.unwrap();
    let pending = spool.append(batch(0, 1));
    spool.close_appends();
    assert_eq!(pending.await.unwrap(), SeqNo(1));
    assert!(matches!(
        spool.append(batch(0, 1)).await,
        Err(SpoolError::Closed)
    ));
    assert_eq!(next(&mut reader).await.unwrap().seq, SeqNo(1));
    assert!(next(&mut reader).await.is_none());
    // Acks are still persisted after appends closed.
    spool.ack(SeqNo(1));
    spool.checkpoint().await;
    assert_eq!(spool.stats().acked_through, 1);
}

#[tokio::test]
async fn ranges_noted_in_flight_come_back_with_the_replayed_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "1");
    let (spool, mut reader) = Spool::open(cfg.clone()).await.unwrap();
    append_all(&spool, (0..6).map(|i| batch(i, 1))).await;
    let mut read = Vec::new();
    for _ in 0..6 {
        read.push(next(&mut reader).await.unwrap());
    }
    assert!(read.iter().all(|f| f.replay_range.is_none()), "new frames");
    let noted = |first: u64, last: u64| InflightRange {
        first,
        last,
        last_appended_unix_ms: read[last as usize - 1].appended_unix_ms,
    };
    spool.note_in_flight(noted(1, 2));
    spool.note_in_flight(noted(3, 5));
    // 1..=2 committed and acknowledged (persisted: pruned); 3..=5 and 6 not: a crash.
    spool.ack_range(SeqNo(1), SeqNo(2));
    spool.checkpoint().await;
    spool.shutdown().await;
    drop((spool, reader));

    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    let mut ranges = Vec::new();
    for _ in 0..4 {
        let frame = next(&mut reader).await.unwrap();
        assert!(frame.replayed);
        ranges.push((frame.seq.0, frame.replay_range.map(|r| (r.first, r.last))));
    }
    assert_eq!(
        ranges,
        vec![
            (3, Some((3, 5))),
            (4, Some((3, 5))),
            (5, Some((3, 5))),
            (6, None)
        ]
    );
    spool.shutdown().await;
}
