//! Benchmark (not a test): the spool's codec cost per record and how many
//! appends share one fsync under concurrency (group commit), on a disk and on
//! tmpfs.
//!
//! `cargo bench --bench spool`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zero_logs::codec::{self, EncodedBatch};
use zero_logs::record::{Batch, Level, Record};
use zero_logs::spool::{Spool, SpoolConfig};

fn record(i: usize) -> Record {
    Record {
        timestamp_ns: 1_714_564_800_000_000_000 + i as i64,
        level: Level::Info,
        service: format!("service-{}", i % 7),
        message: format!(
            "GET /api/v1/items/{i} completed with status 200 in {} ms",
            i % 97
        ),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        attributes: vec![
            ("http.status".into(), "200".into()),
            ("region".into(), "eu-west-1".into()),
        ],
        otel: None,
    }
}

fn batch(seed: usize, n: usize) -> Batch {
    Batch::new((0..n).map(|i| record(seed * 1000 + i)).collect())
}

fn main() {
    for batch_len in [10, 100, 1000] {
        measure_codec(batch_len);
    }
    measure_group_commit();
}

fn measure_group_commit() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for dir in ["/var/tmp", "/dev/shm"] {
        for appenders in [1, 8, 64] {
            for window_ms in [0, 2] {
                let per_task = 12_800 / appenders;
                runtime.block_on(group_commit_run(
                    Path::new(dir),
                    window_ms,
                    appenders,
                    per_task,
                ));
            }
        }
    }
}

fn measure_codec(batch_len: usize) {
    // ~220 bytes per record: the usual record with a longer message.
    let b = Batch::new(
        (0..batch_len)
            .map(|i| {
                let mut r = record(i);
                r.message.push_str(" (cache miss, 3 items)");
                r
            })
            .collect(),
    );
    let per_record = b.approx_bytes() / b.len();
    let mut buf = Vec::new();
    codec::encode_batch(&b, &mut buf);
    let rounds = 2_000_000 / batch_len;
    let start = Instant::now();
    for _ in 0..rounds {
        buf.clear();
        codec::encode_batch(std::hint::black_box(&b), &mut buf);
    }
    let encode = start.elapsed();
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(codec::decode_batch(std::hint::black_box(&buf)).unwrap());
    }
    let decode = start.elapsed();
    // What a frame read back from disk costs now: checked, not decoded.
    let payload = bytes::Bytes::from(buf.clone());
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(
            EncodedBatch::from_payload(std::hint::black_box(payload.clone())).unwrap(),
        );
    }
    let check = start.elapsed();
    // The floor set by the allocator: `Batch::clone` makes the same allocations.
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(std::hint::black_box(&b).clone());
    }
    let clone = start.elapsed();
    // The same without the frees of the decoded records (the consumer pays those
    // whichever way a batch reaches it).
    let keep = 100_000 / batch_len;
    let mut decoded = Vec::with_capacity(keep);
    let start = Instant::now();
    for _ in 0..keep {
        decoded.push(codec::decode_batch(std::hint::black_box(&buf)).unwrap());
    }
    let decode_only = start.elapsed();
    drop(decoded);
    let records = (rounds * b.len()) as f64;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(crc32fast::hash(std::hint::black_box(&buf)));
    }
    let crc = start.elapsed();
    println!(
        "codec, {batch_len} records/batch: {per_record} B/record approx, \
         {} B/record encoded; encode {:.0} ns/record, \
         decode {:.0} ns/record (decode + drop), {:.0} ns/record (decode only), \
         check {:.0} ns/record (EncodedBatch::from_payload), \
         Batch::clone + drop {:.0} ns/record (allocator floor), crc32 {:.1} ns/record",
        buf.len() / b.len(),
        encode.as_nanos() as f64 / records,
        decode.as_nanos() as f64 / records,
        decode_only.as_nanos() as f64 / (keep * b.len()) as f64,
        check.as_nanos() as f64 / records,
        clone.as_nanos() as f64 / records,
        crc.as_nanos() as f64 / records,
    );
}

async fn group_commit_run(base: &Path, window_ms: u64, appenders: usize, per_task: usize) {
    let Ok(tmp) = tempfile::tempdir_in(base) else {
        return;
    };
    let cfg = SpoolConfig {
        commit_window: Duration::from_millis(window_ms),
        ..SpoolConfig::new(tmp.path(), "1")
    };
    let (spool, mut reader) = Spool::open(cfg).await.unwrap();
    let drain = tokio::spawn(async move {
        while let Some(frame) = reader.next().await {
            std::hint::black_box(frame);
        }
    });
    let start = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..appenders)
        .map(|t| {
            let spool = spool.clone();
            let latencies = Arc::clone(&latencies);
            tokio::spawn(async move {
                let b = EncodedBatch::encode(&batch(t, 10));
                for _ in 0..per_task {
                    let at = Instant::now();
                    spool.append(b.clone()).await.unwrap();
                    latencies.lock().unwrap().push(at.elapsed());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed();
    let stats = spool.stats();
    spool.shutdown().await;
    drain.await.unwrap();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{}: window {window_ms} ms, {appenders} appenders: {} appends, {} fsyncs, \
         {:.1} appends/fsync, {:.0} appends/s, {:.0} records/s, p50 {:?} p99 {:?}",
        base.display(),
        stats.appended_frames,
        stats.fsyncs,
        stats.appended_frames as f64 / stats.fsyncs as f64,
        stats.appended_frames as f64 / elapsed.as_secs_f64(),
        stats.appended_records as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
    );
}
