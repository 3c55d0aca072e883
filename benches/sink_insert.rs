//! Benchmark (not a test): CPU cost per row of the ClickHouse sink alone —
//! RowBinary encoding, LZ4 and HTTP — against a private ClickHouse it starts.
//!
//! `cargo bench --features test-support --bench sink_insert`

use std::time::Duration;

use tokio::time::Instant;
use zero_logs::codec::EncodedBatch;
use zero_logs::config::ClickHouseConfig;
use zero_logs::record::{Batch, Level, Record};
use zero_logs::sink::ClickHouseSink;
use zero_logs::testing::ClickHouseServer;

/// utime + stime of this process (clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn rows(n: i64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            timestamp_ns: 1_700_000_000_000_000_000 + i * 1_000_003,
            level: Level::Info,
            service: format!("service-{}", i % 7),
            message: format!(
                "GET /api/v1/items/{i} completed with status 200 in {} ms",
                i % 97
            ),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            attributes: vec![
                ("http.method".into(), "GET".into()),
                ("http.status".into(), "200".into()),
                ("user".into(), format!("u{}", i % 1000)),
            ],
            otel: None,
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; nothing else is configurable.
    let ch = ClickHouseServer::start()?;
    let db = ch.fresh_database();
    let cfg = ClickHouseConfig {
        url: ch.http_url(),
        database: db,
        table: "logs".into(),
        user: "default".into(),
        password: String::new(),
        create_table: true,
        retry_budget: Duration::from_secs(5),
        insert_timeout: Duration::from_secs(30),
        compression: zero_logs::config::Compression::Auto,
        schema: zero_logs::config::TableSchema::Native,
        ttl_days: 0,
        cluster: None,
    };
    let sink = ClickHouseSink::connect(&cfg).await?;
    // 100-record batches, as requests submit them; the batcher sends 500 per INSERT.
    let batches: Vec<EncodedBatch> = rows(200_000)
        .chunks(100)
        .map(|c| EncodedBatch::encode(&Batch::new(c.to_vec())))
        .collect();
    sink.insert(&batches[..10], None).await?; // warm up the connection
    let (mut total, cpu, started) = (0usize, process_cpu(), Instant::now());
    for _ in 0..5 {
        for chunk in batches.chunks(500) {
            sink.insert(chunk, None).await?;
            total += chunk.iter().map(EncodedBatch::len).sum::<usize>();
        }
    }
    let cpu = process_cpu() - cpu;
    let wall = started.elapsed();
    println!(
        "sink_insert: {total} rows in 50k-row INSERTs: {:.0} rows/s wall (ClickHouse included), {:.3} µs CPU per row in the sink",
        total as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / total as f64
    );
    Ok(())
}
