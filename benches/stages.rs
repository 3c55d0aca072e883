//! Per-stage micro-benchmarks (criterion; a benchmark, not a test): what each step
//! of the ingest path costs per record on one core, so a regression shows up in the
//! stage that has it. The end-to-end load (`scripts/bench`) says how much the whole
//! worker costs; this says where.
//!
//! Inputs are the load generator's records (`benches/ingest_load/records.rs`, same
//! seed as `scripts/bench`), 100 per request. Groups, each in records/s:
//!
//! - `decode_validate`: body → validated records (JSON array, NDJSON, OTLP/HTTP
//!   protobuf and OTLP/JSON: decode + map); every path validates straight into the
//!   encoding, so this includes encoding; for OTLP protobuf also prost's decoding
//!   instead of our reader (`otlp_protobuf_prost`) and our reader alone;
//! - `encode`: `Batch` → `EncodedBatch` (the spool's frame payload), and
//!   `EncodedBatch::from_payload` (a frame read back, as replay does);
//! - `spool_append`: one append of a 100-record batch to a spool on tmpfs, until its
//!   ack (checksum, hand-off to the writer thread, write, `fdatasync`);
//! - `rowbinary`: the sink's rows from encoded frames written as RowBinary into a
//!   buffer (legacy and `otel_logs` layouts) by the sink's writer, and (`…_serde`)
//!   through the serde row structs as the sink did before, and the frames' records
//!   read without writing them (`decode_only_…` checked, `raw_read_…` as the sink's
//!   writer reads them); LZ4 over such a buffer;
//! - `request`: body → decode/validate → encode, what `Ingest::accept` runs on the
//!   validation pool, for JSON and OTLP protobuf.
//!
//! `cargo bench --bench stages` (all, ~1 min on a 2-core VM); one group:
//! `cargo bench --bench stages -- encode`; compare with a saved run:
//! `--save-baseline NAME` then `--baseline NAME` (docs/BENCHMARKS.md).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::SeedableRng;

use zero_logs::codec::EncodedBatch;
use zero_logs::config::RecordLimits;
use zero_logs::record::Batch;
use zero_logs::sink::rowbinary::RowWriter;
use zero_logs::sink::schema::{DateTime64MapRow, LegacyRow, OtelRow};
use zero_logs::sink::{Layout, ServerVersion};
use zero_logs::spool::{Spool, SpoolConfig};
use zero_logs::validate::otlp::{otlp_batch, otlp_encoded, with_protobuf, LogsView, OtlpOptions};
use zero_logs::validate::{self, Format};

#[path = "ingest_load/records.rs"]
mod records;
#[path = "stages/rowbinary.rs"]
mod rowbinary;

/// Records per request, as `scripts/bench` sends by default.
const BATCH: usize = 100;
/// `ingest_load`'s default `--seed`.
const SEED: u64 = 1;

/// One request's worth of records in every shape the stages take.
struct Inputs {
    json: Vec<u8>,
    ndjson: Vec<u8>,
    otlp_protobuf: Vec<u8>,
    otlp_json: Vec<u8>,
    now_ns: i64,
}

impl Inputs {
    /// `records` records from the load's seed (the first request's, then the next).
    fn new(records: usize) -> Inputs {
        let mut rng = StdRng::seed_from_u64(SEED);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let recs: Vec<records::Rec> = (0..records)
            .map(|_| records::record(&mut rng, now.as_nanos()))
            .collect();
        // As the load generator writes its JSON and NDJSON bodies.
        let lines: Vec<String> = recs.iter().map(|r| r.json().to_string()).collect();
        let otlp_protobuf = records::request_body(&recs, now.as_nanos()).body;
        let request = ExportLogsServiceRequest::decode(otlp_protobuf.as_slice()).unwrap();
        Inputs {
            json: format!("[{}]", lines.join(",")).into_bytes(),
            ndjson: (lines.join("\n") + "\n").into_bytes(),
            otlp_json: serde_json::to_vec(&request).unwrap(),
            otlp_protobuf,
            now_ns: now.as_nanos() as i64,
        }
    }

    fn json_batch(&self, limits: &RecordLimits) -> Batch {
        validate::decode(&self.json, Format::Json, limits, self.now_ns).unwrap()
    }

    fn otlp_batch(&self, limits: &RecordLimits, options: &OtlpOptions) -> Batch {
        let request = ExportLogsServiceRequest::decode(self.otlp_protobuf.as_slice()).unwrap();
        let (batch, rejected) = otlp_batch(request, limits, options, self.now_ns);
        assert_eq!(rejected.count, 0, "{}", rejected.message());
        batch
    }
}

fn otlp_options() -> OtlpOptions {
    OtlpOptions {
        default_service: "unknown".into(),
    }
}

/// Every group: records/s, short enough that the whole run stays near a minute
/// on a 2-core VM.
fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
    records: usize,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(records as u64))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g
}

fn decode_validate(c: &mut Criterion) {
    let inputs = Inputs::new(BATCH);
    let limits = RecordLimits::default();
    let options = otlp_options();
    let mut g = group(c, "decode_validate", BATCH);
    // The native API validates straight into the encoding (`decode_encoded`): this
    // is decode, validate and encode in one pass.
    g.bench_function("json", |b| {
        b.iter(|| {
            validate::decode_encoded(
                black_box(&inputs.json),
                Format::Json,
                &limits,
                inputs.now_ns,
            )
        })
    });
    g.bench_function("ndjson", |b| {
        b.iter(|| {
            validate::decode_encoded(
                black_box(&inputs.ndjson),
                Format::Ndjson,
                &limits,
                inputs.now_ns,
            )
        })
    });
    // OTLP too validates straight into the encoding (`otlp_encoded`), as
    // `ingest::otlp` does: decode, map and encode. Protobuf is read in place by our
    // reader (since session 12); `_prost` is the path before it (prost's owned
    // decoding, still what gRPC takes), `_read_only` our reader alone.
    g.bench_function("otlp_protobuf", |b| {
        b.iter(|| {
            let view = LogsView::decode(black_box(inputs.otlp_protobuf.as_slice())).unwrap();
            otlp_encoded(&view, &limits, &options, inputs.now_ns)
        })
    });
    g.bench_function("otlp_protobuf_prost", |b| {
        b.iter(|| {
            let request =
                ExportLogsServiceRequest::decode(black_box(inputs.otlp_protobuf.as_slice()))
                    .unwrap();
            otlp_encoded(
                &LogsView::from_request(&request),
                &limits,
                &options,
                inputs.now_ns,
            )
        })
    });
    g.bench_function("otlp_protobuf_read_only", |b| {
        b.iter(|| LogsView::decode(black_box(inputs.otlp_protobuf.as_slice())).unwrap())
    });
    g.bench_function("otlp_json", |b| {
        b.iter(|| {
            let request: ExportLogsServiceRequest =
                serde_json::from_slice(black_box(&inputs.otlp_json)).unwrap();
            otlp_encoded(
                &LogsView::from_request(&request),
                &limits,
                &options,
                inputs.now_ns,
            )
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let inputs = Inputs::new(BATCH);
    let limits = RecordLimits::default();
    let json = inputs.json_batch(&limits);
    let otlp = inputs.otlp_batch(&limits, &otlp_options());
    let mut g = group(c, "encode", BATCH);
    g.bench_function("encode_json_records", |b| {
        b.iter(|| EncodedBatch::encode(black_box(&json)))
    });
    g.bench_function("encode_otlp_records", |b| {
        b.iter(|| EncodedBatch::encode(black_box(&otlp)))
    });
    let payload: Bytes = EncodedBatch::encode(&otlp).payload().clone();
    g.bench_function("from_payload", |b| {
        b.iter(|| EncodedBatch::from_payload(black_box(payload.clone())).unwrap())
    });
    g.finish();
}

/// tmpfs when there is one (the CPU cost, not the disk's), else the temp directory.
fn spool_base() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

fn spool_append(c: &mut Criterion) {
    let inputs = Inputs::new(BATCH);
    let batch = EncodedBatch::encode(&inputs.json_batch(&RecordLimits::default()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let base = spool_base();
    let dir = tempfile::tempdir_in(&base).unwrap();
    eprintln!("spool_append: spool under {}", base.display());
    let (spool, mut reader) = runtime
        .block_on(Spool::open(SpoolConfig::new(dir.path(), "1")))
        .unwrap();
    // The consumer acknowledges every frame at once, as if ClickHouse took it, so the
    // segments are deleted and the spool never fills however long criterion runs.
    let acker = spool.clone();
    let drain = runtime.spawn(async move {
        while let Some(frame) = reader.next().await {
            acker.ack(frame.seq);
        }
    });
    let mut g = group(c, "spool_append", batch.len());
    g.bench_function("append_fdatasync", |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Every 4 096 appends (~50 MiB), untimed: let the consumer catch up and
                // delete acknowledged segments, so a slow drain on a busy machine
                // cannot fill the spool (1 GiB) during a long measurement.
                let round = left.min(4096);
                let start = Instant::now();
                for _ in 0..round {
                    runtime
                        .block_on(spool.append(black_box(batch.clone())))
                        .unwrap();
                }
                measured += start.elapsed();
                left -= round;
                runtime.block_on(async {
                    while spool.acked_through() < spool.stats().last_seq {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    spool.checkpoint().await;
                });
            }
            measured
        })
    });
    g.finish();
    let stats = spool.stats();
    eprintln!(
        "spool_append: {} appends, {} fsyncs, {} segments deleted",
        stats.appended_frames, stats.fsyncs, stats.segments_deleted
    );
    runtime.block_on(spool.shutdown());
    runtime.block_on(drain).unwrap();
}

/// `batch`'s frames written as serde `Row`s, as the sink's INSERT did row by row through
/// the crate before it wrote RowBinary itself: the oracle, and the comparison.
fn write_serde_rows<'a, R: serde::Serialize + 'a>(
    out: &mut Vec<u8>,
    batch: &'a EncodedBatch,
    row: impl Fn(zero_logs::codec::RecordRef<'a>) -> R,
) {
    for record in batch.records() {
        rowbinary::write_row(out, &row(record.unwrap())).unwrap();
    }
}

/// `batch`'s frames written by the sink's own RowBinary writer, as its INSERT does
/// (from the raw view: the batch was checked when it was built).
fn write_rows(out: &mut Vec<u8>, batch: &EncodedBatch, writer: &mut RowWriter) {
    for record in batch.raw_records() {
        writer.write(record.unwrap(), out).unwrap();
    }
}

fn rowbinary(c: &mut Criterion) {
    let inputs = Inputs::new(BATCH);
    let limits = RecordLimits::default();
    let json = EncodedBatch::encode(&inputs.json_batch(&limits));
    let otlp = EncodedBatch::encode(&inputs.otlp_batch(&limits, &otlp_options()));
    let mut legacy = RowWriter::new(Layout::Legacy);
    let mut otel = RowWriter::new(Layout::Otel);
    let mut out = Vec::with_capacity(1 << 20);
    // Before measuring: both writers make the bytes the sink sends (legacy layout for
    // an 18.16 server; `Map` columns for 22.2+, as the otel layout's attributes).
    for (batch, version, layout) in [
        (&json, ServerVersion::new(18, 16, 1), Layout::Legacy),
        (&otlp, ServerVersion::new(22, 2, 0), Layout::DateTime64Map),
    ] {
        out.clear();
        write_rows(&mut out, batch, &mut RowWriter::new(layout));
        rowbinary::check_against_sink(batch, version, &out);
        out.clear();
        match layout {
            Layout::Legacy => write_serde_rows(&mut out, batch, LegacyRow::new),
            _ => write_serde_rows(&mut out, batch, DateTime64MapRow::new),
        }
        rowbinary::check_against_sink(batch, version, &out);
    }
    // And the `otel_logs` rows measured below.
    out.clear();
    write_rows(&mut out, &otlp, &mut RowWriter::new(Layout::Otel));
    rowbinary::check_otel_against_sink(&otlp, &out);
    out.clear();
    write_serde_rows(&mut out, &otlp, OtelRow::new);
    rowbinary::check_otel_against_sink(&otlp, &out);
    let mut g = group(c, "rowbinary", BATCH);
    g.bench_function("legacy_from_json_frames", |b| {
        b.iter(|| {
            out.clear();
            write_rows(&mut out, black_box(&json), &mut legacy);
        })
    });
    g.bench_function("otel_from_otlp_frames", |b| {
        b.iter(|| {
            out.clear();
            write_rows(&mut out, black_box(&otlp), &mut otel);
        })
    });
    g.bench_function("legacy_from_json_frames_serde", |b| {
        b.iter(|| {
            out.clear();
            write_serde_rows(&mut out, black_box(&json), LegacyRow::new);
        })
    });
    g.bench_function("otel_from_otlp_frames_serde", |b| {
        b.iter(|| {
            out.clear();
            write_serde_rows(&mut out, black_box(&otlp), OtelRow::new);
        })
    });
    // Reading the records out of the frames: the checked view (lengths, UTF-8, the
    // otel attribute split), which the serde rows pay first, and the raw view the
    // sink's writer reads (lengths and the split only).
    g.bench_function("decode_only_json_frames", |b| {
        b.iter(|| {
            for record in black_box(&json).records() {
                black_box(record.unwrap());
            }
        })
    });
    g.bench_function("decode_only_otlp_frames", |b| {
        b.iter(|| {
            for record in black_box(&otlp).records() {
                black_box(record.unwrap());
            }
        })
    });
    g.bench_function("raw_read_json_frames", |b| {
        b.iter(|| {
            for record in black_box(&json).raw_records() {
                black_box(record.unwrap());
            }
        })
    });
    g.bench_function("raw_read_otlp_frames", |b| {
        b.iter(|| {
            for record in black_box(&otlp).raw_records() {
                black_box(record.unwrap());
            }
        })
    });
    g.finish();

    // LZ4 as the clickhouse crate applies it to each chunk of an INSERT body (its
    // chunks are ~256 KiB): here 2 000 distinct rows of the legacy layout, ~260 KiB
    // (repeating one request's rows would let LZ4 find whole repeats).
    const ROWS: usize = 2_000;
    let many = Inputs::new(ROWS);
    let many = EncodedBatch::encode(&many.json_batch(&limits));
    let mut chunk = Vec::new();
    write_rows(&mut chunk, &many, &mut legacy);
    let mut compressed = vec![0; lz4_flex::block::get_maximum_output_size(chunk.len())];
    let mut g = group(c, "rowbinary_lz4", ROWS);
    g.bench_function("lz4_legacy_chunk", |b| {
        b.iter(|| lz4_flex::block::compress_into(black_box(&chunk), &mut compressed).unwrap())
    });
    g.finish();
    let n = lz4_flex::block::compress_into(&chunk, &mut compressed).unwrap();
    eprintln!(
        "rowbinary_lz4: {} B of RowBinary ({} B/row) -> {n} B LZ4",
        chunk.len(),
        chunk.len() / ROWS
    );
}

fn request(c: &mut Criterion) {
    let inputs = Inputs::new(BATCH);
    let limits = RecordLimits::default();
    let options = otlp_options();
    let mut g = group(c, "request", BATCH);
    g.bench_function("json", |b| {
        b.iter(|| {
            validate::decode_encoded(
                black_box(&inputs.json),
                Format::Json,
                &limits,
                inputs.now_ns,
            )
            .unwrap()
        })
    });
    // What `ingest::otlp` runs for an OTLP/HTTP protobuf body (our reader, prost
    // only for what it leaves to prost).
    g.bench_function("otlp_protobuf", |b| {
        b.iter(|| {
            let (batch, rejected) =
                with_protobuf(black_box(inputs.otlp_protobuf.as_slice()), |view| {
                    otlp_encoded(&view, &limits, &options, inputs.now_ns)
                })
                .unwrap();
            assert_eq!(rejected.count, 0);
            batch
        })
    });
    g.finish();
}

criterion_group!(
    stages,
    decode_validate,
    encode,
    spool_append,
    rowbinary,
    request
);
criterion_main!(stages);
