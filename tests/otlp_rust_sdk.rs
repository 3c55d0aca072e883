//! The Rust OpenTelemetry SDK (`opentelemetry_sdk` + `opentelemetry-otlp` 0.33, its
//! tonic exporter on the same tonic 0.14 as zero-logs) logs to a real worker over
//! OTLP/gRPC; the rows in a real ClickHouse carry what it sent.

mod common;

use std::time::Duration;

use common::*;
use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::Resource;
use zero_logs::testing::ClickHouseServer;

const RECORDS: usize = 20;

/// Emits `RECORDS` records through a provider with the simple (synchronous) processor.
fn emit(endpoint: String) -> Result<(), String> {
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let provider = SdkLoggerProvider::builder()
        .with_resource(Resource::builder().with_service_name("rust-sdk").build())
        .with_simple_exporter(exporter)
        .build();
    let logger = provider.logger("zero-logs-test");
    for i in 0..RECORDS {
        let mut record = logger.create_log_record();
        record.set_body(AnyValue::from(format!("rust sdk record {i}")));
        record.set_severity_number(if i % 2 == 0 {
            Severity::Warn
        } else {
            Severity::Debug
        });
        record.add_attribute("i", i as i64);
        record.add_attribute("even", i % 2 == 0);
        logger.emit(record);
    }
    provider.force_flush().map_err(|e| e.to_string())?;
    provider.shutdown().map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_tonic_exporter_logs_land() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let db = ch.fresh_database();
    let worker = Worker::start(&ch, &db, &[]).await;
    let endpoint = worker.base.clone();
    let handle = tokio::runtime::Handle::current();
    // The simple processor blocks on each export; the tonic channel needs the runtime.
    tokio::task::spawn_blocking(move || {
        let _guard = handle.enter();
        emit(endpoint)
    })
    .await
    .unwrap()
    .expect("the SDK exported every record");
    assert_eq!(
        wait_rows(&ch, &db, RECORDS as u64, Duration::from_secs(30)).await,
        RECORDS as u64
    );
    let rows = ch
        .query(&format!(
            "SELECT service, level, message, arrayStringConcat(arrayMap((k, v) -> concat(k, '=', v), \
             `attributes.key`, `attributes.value`), ',') FROM {db}.logs \
             WHERE message = 'rust sdk record 4' FORMAT TSV"
        ))
        .unwrap();
    let fields: Vec<&str> = rows.trim().split('\t').collect();
    assert_eq!(
        fields[..3],
        ["rust-sdk", "warn", "rust sdk record 4"],
        "{rows}"
    );
    let attributes = fields[3];
    for kv in [
        "i=4",
        "even=true",
        "otel.scope.name=zero-logs-test",
        "telemetry.sdk.language=rust",
    ] {
        assert!(
            attributes.split(',').any(|a| a == kv),
            "{kv} in {attributes}"
        );
    }
    let levels = ch
        .query(&format!(
            "SELECT level, count() FROM {db}.logs GROUP BY level ORDER BY level FORMAT TSV"
        ))
        .unwrap();
    assert_eq!(levels, "debug\t10\nwarn\t10\n");
}
