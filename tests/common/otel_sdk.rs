//! The OpenTelemetry Python SDK as a test client: `tests/otel/send_logs.py`, run with
//! the venv `scripts/install-deps` builds (`target/otel-venv`, or
//! `ZERO_LOGS_OTEL_VENV`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The venv's Python; the run fails loudly when the setup was not run.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("ZERO_LOGS_OTEL_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/otel-venv"),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps (it builds the OpenTelemetry SDK venv)",
        python.display()
    );
    python
}

/// Runs the SDK sender and returns what it reports delivered.
pub fn send(base: &str, protocol: &str, run_id: &str, count: usize, extra: &[&str]) -> Value {
    let out = run(base, protocol, run_id, count, extra, &[]);
    assert!(
        out.status.success(),
        "sender ({protocol}) failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the sender prints JSON")
}

/// Runs the SDK sender with `env` added to its environment (e.g.
/// `OTEL_EXPORTER_OTLP_HEADERS`, which the SDK's exporters read themselves) and returns
/// its output whatever its exit status.
pub fn run(
    base: &str,
    protocol: &str,
    run_id: &str,
    count: usize,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/otel/send_logs.py");
    Command::new(python())
        .envs(env.iter().copied())
        .arg(script)
        .args([
            "--endpoint",
            base,
            "--protocol",
            protocol,
            "--run-id",
            run_id,
        ])
        .args(["--count", &count.to_string(), "--service", "checkout"])
        .args(["--timeout", "20", "--batch-size", "64"])
        .args(extra)
        .output()
        .expect("run the OTel sender")
}

/// A typed attribute from the sender as zero-logs stores it: strings as they are,
/// numbers and booleans as JSON writes them.
pub fn as_text(typed: &Value) -> String {
    match &typed["value"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
