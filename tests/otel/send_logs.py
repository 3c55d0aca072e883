#!/usr/bin/env python3
"""Sends log records to an OTLP endpoint through the official OpenTelemetry Python SDK.

Test client for zero-logs' OTLP ingestion (issue 18). It logs the way an application
does: a stdlib `logging` logger with the SDK's `LoggingHandler`, a `LoggerProvider`
with a `Resource` and a `BatchLogRecordProcessor`, an SDK exporter underneath, and a
`TracerProvider` whose active spans give some records a trace id and span id. Each
record's message holds the run id and the record's index so a test finds its rows.

  --protocol grpc           opentelemetry-exporter-otlp-proto-grpc: unary
                            opentelemetry.proto.collector.logs.v1.LogsService/Export
                            over h2c to --endpoint's host:port (http:// = plaintext)
  --protocol http/protobuf  opentelemetry-exporter-otlp-proto-http: POST <endpoint>/v1/logs,
                            Content-Type: application/x-protobuf
  --protocol http/json      opentelemetry-exporter-otlp-json-http: POST <endpoint>/v1/logs,
                            Content-Type: application/json

OTLP/JSON: opentelemetry-exporter-otlp-json-http (0.66b1, beta, from the
opentelemetry-python repository, on PyPI since 2026) is the official Python exporter
for it, so the JSON path is the SDK's own too, not a hand-made encoding. It writes the
OTLP/JSON mapping, not protobuf's generic JSON (`MessageToJson`): lowerCamelCase keys,
traceId/spanId as lowercase hex (not base64), severityNumber as an integer, 64-bit
integers (timeUnixNano, intValue) as decimal strings; json.dumps escapes non-ASCII as
\\uXXXX (surrogate pairs for emoji). tests/otel/fake_receiver.py checks all of that.

Output: on success, ONE JSON document on stdout describing exactly what was exported,
record by record, taken from the records the exporter reported as delivered (format
"zero-logs/otel-sent/v1", see tests/otel/README.md). Progress and the SDK's own
warnings go to stderr.

Exit status: 0 when every record was delivered; 1 when an export failed (after the
SDK's own retries, bounded by --timeout), a record was dropped, or a flush did not
finish; 2 for bad arguments; 3 when the whole run overran its watchdog
(2 x --timeout + 10 s). The SDK's processors swallow export errors, so the exporter is
wrapped and every export() result is recorded; after the first failed export, later
batches are not sent, so a dead endpoint fails the run within about --timeout.

Runs with the virtualenv scripts/install-deps builds (target/otel-venv, or
$ZERO_LOGS_OTEL_VENV); started with another Python, it re-executes itself with that one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_VENV_ENV = "ZERO_LOGS_OTEL_VENV"


def _venv_dir() -> Path:
    if os.environ.get(_VENV_ENV):
        return Path(os.environ[_VENV_ENV])
    return Path(__file__).resolve().parents[2] / "target" / "otel-venv"


def _reexec_in_venv() -> None:
    """Re-executes this script with the venv's Python unless it already runs in it."""
    venv = _venv_dir()
    python = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    if python.exists() and not os.environ.get("_ZERO_LOGS_OTEL_REEXEC"):
        os.environ["_ZERO_LOGS_OTEL_REEXEC"] = "1"
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.stderr.write(f"send_logs: {python} is missing or not a working venv: run scripts/install-deps\n")
    sys.exit(2)


_reexec_in_venv()

# pylint: disable=wrong-import-position
import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from importlib.metadata import version as _pkg_version  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler  # noqa: E402
from opentelemetry.sdk._logs.export import (  # noqa: E402
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

PROTOCOLS = ("grpc", "http/protobuf", "http/json")
CONTENT_TYPES = {
    "grpc": "application/grpc",
    "http/protobuf": "application/x-protobuf",
    "http/json": "application/json",
}
PACKAGES = (
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-proto",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-exporter-otlp-json-http",
    "grpcio",
    "protobuf",
)
SIGNAL_PATH = "/v1/logs"
APP_LOGGER = "zero_logs.otel_test"

# Python level -> what the SDK's LoggingHandler sends (severity_number, severity_text).
LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)

# Message tails that exercise the body's encoding on every path.
TAILS = (
    "",
    " unicode: naïve café ✓ 😀",
    ' quotes "double" \'single\' back\\slash\ttab',
    "\nsecond line of a multi-line message",
)


def log(msg: str) -> None:
    sys.stderr.write(f"send_logs: {msg}\n")
    sys.stderr.flush()


# --- arguments --------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="send_logs.py",
        description="Send N log records through the OpenTelemetry Python SDK to an OTLP "
        "endpoint; print what was delivered as JSON (exit 1 if any export failed).",
    )
    p.add_argument("--endpoint", default="http://127.0.0.1:3000",
                   help="base URL of the receiver (default %(default)s); for HTTP, /v1/logs is "
                   "appended unless the URL already ends with it; for gRPC only host:port is "
                   "used, http:// meaning plaintext (h2c)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    p.add_argument("--count", type=int, default=10, help="records to send (default %(default)s)")
    p.add_argument("--service", default="zero-logs-otel-test", help="resource service.name")
    p.add_argument("--run-id", default=None,
                   help="marker put in every message and attribute run_id (default: random)")
    p.add_argument("--gzip", action="store_true",
                   help="compress requests (HTTP: Content-Encoding: gzip; gRPC: grpc-encoding: gzip)")
    p.add_argument("--header", action="append", default=[], metavar="K=V",
                   help="extra request header (gRPC: metadata, key lower-cased); repeatable")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds one export may take including the SDK's retries "
                   "(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=512,
                   help="records per export request (BatchLogRecordProcessor's "
                   "max_export_batch_size, default %(default)s)")
    a = p.parse_args(argv)
    if a.count < 1:
        p.error("--count must be at least 1")
    if a.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if a.timeout <= 0:
        p.error("--timeout must be positive")
    headers: dict[str, str] = {}
    for h in a.header:
        key, sep, value = h.partition("=")
        if not sep or not key.strip():
            p.error(f"--header wants K=V, got {h!r}")
        headers[key.strip().lower()] = value
    a.headers = headers
    parsed = urlparse(a.endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        p.error(f"--endpoint wants http://host:port or https://host:port, got {a.endpoint!r}")
    if a.run_id is None:
        a.run_id = uuid.uuid4().hex[:16]
    return a


def http_url(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    return base if base.endswith(SIGNAL_PATH) else base + SIGNAL_PATH


# --- the exporter, and a wrapper that records what it delivered --------------------------


def make_exporter(a: argparse.Namespace) -> tuple[LogRecordExporter, str]:
    """The SDK exporter for --protocol, and where it sends (URL or host:port)."""
    if a.protocol == "grpc":
        import grpc  # pylint: disable=import-outside-toplevel
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (  # pylint: disable=import-outside-toplevel
            OTLPLogExporter,
        )

        exporter = OTLPLogExporter(
            endpoint=a.endpoint,
            headers=tuple(a.headers.items()) or None,
            timeout=a.timeout,
            compression=grpc.Compression.Gzip if a.gzip else grpc.Compression.NoCompression,
        )
        return exporter, urlparse(a.endpoint).netloc
    url = http_url(a.endpoint)
    if a.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http import Compression  # pylint: disable=import-outside-toplevel
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (  # pylint: disable=import-outside-toplevel
            OTLPLogExporter,
        )

        return OTLPLogExporter(
            endpoint=url,
            headers=a.headers or None,
            timeout=a.timeout,
            compression=Compression.Gzip if a.gzip else Compression.NoCompression,
        ), url
    from opentelemetry.exporter.otlp.common.http import (  # pylint: disable=import-outside-toplevel
        Compression as JsonCompression,
    )
    from opentelemetry.exporter.otlp.json.http._log_exporter import (  # pylint: disable=import-outside-toplevel
        OTLPLogExporter as OTLPJsonLogExporter,
    )

    return OTLPJsonLogExporter(
        endpoint=url,
        headers=a.headers or None,
        timeout=a.timeout,
        compression=JsonCompression.GZIP if a.gzip else JsonCompression.NONE,
    ), url


class RecordingExporter(LogRecordExporter):
    """Passes batches to the real exporter and records every export() outcome.

    The processors log and drop a failed batch; this keeps the verdict. Once an export
    failed, later batches are refused without sending, so the run ends within about one
    --timeout against a dead endpoint instead of one per batch.
    """

    def __init__(self, inner: LogRecordExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.exports: list[dict[str, Any]] = []
        self.delivered: list[Any] = []
        self.failed = False

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        with self._lock:
            if self.failed:
                self.exports.append({"records": len(batch), "result": "not sent (an earlier export failed)",
                                     "seconds": 0.0})
                return LogRecordExportResult.FAILURE
        started = time.monotonic()
        error = None
        try:
            result = self._inner.export(batch)
        except Exception as e:  # pylint: disable=broad-exception-caught
            result, error = LogRecordExportResult.FAILURE, f"{type(e).__name__}: {e}"
        entry: dict[str, Any] = {
            "records": len(batch),
            "result": "success" if result == LogRecordExportResult.SUCCESS else "failure",
            "seconds": round(time.monotonic() - started, 3),
        }
        if error:
            entry["error"] = error
        with self._lock:
            self.exports.append(entry)
            if result == LogRecordExportResult.SUCCESS:
                self.delivered.extend(batch)
            else:
                self.failed = True
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._inner.shutdown()


class SdkErrors(logging.Handler):
    """Keeps the SDK's own warnings and errors (its only account of why an export failed)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")
        except Exception:  # pylint: disable=broad-exception-caught
            pass


# --- the records --------------------------------------------------------------------------


def emit_records(a: argparse.Namespace, app_logger: logging.Logger, tracer: trace.Tracer) -> None:
    """Logs --count records through the stdlib logger, as application code would."""
    for i in range(a.count):
        level = LEVELS[i % len(LEVELS)]
        message = f"zero-logs otel test run={a.run_id} i={i} level={logging.getLevelName(level).lower()}"
        message += TAILS[i % len(TAILS)]
        extra = {
            "run_id": a.run_id,
            "index": i,                     # int
            "ratio": i + 0.25,              # float
            "ok": i % 2 == 0,               # bool
            "big": 2**53 + i,               # int beyond a double's exact range
            "delta": -1000 * i,             # negative int
            "user.id": f"user-{i % 3}",     # dotted key, as semantic conventions use
            "note": "ünïcode ✓",            # non-ASCII attribute value
        }
        in_span = i % 3 != 2                # two records in three carry trace/span ids
        exception = i % 10 == 3             # an ERROR with exc_info: exception.* attributes
        if in_span:
            with tracer.start_as_current_span(f"otel-test-op-{i}"):
                _log_one(app_logger, level, message, extra, exception)
        else:
            _log_one(app_logger, level, message, extra, exception)


def _log_one(app_logger: logging.Logger, level: int, message: str, extra: dict, exception: bool) -> None:
    if exception:
        try:
            raise ValueError("simulated failure for the exception attributes")
        except ValueError:
            app_logger.log(level, message, extra=extra, exc_info=True)
    else:
        app_logger.log(level, message, extra=extra)


# --- describing what was delivered --------------------------------------------------------


def typed(value: Any) -> dict[str, Any]:
    """An attribute value with its Python type (str, int, float, bool, bytes, list, dict)."""
    if isinstance(value, bytes):
        return {"type": "bytes", "value": value.hex()}
    if isinstance(value, (list, tuple)):
        return {"type": "list", "value": [typed(v) for v in value]}
    if isinstance(value, dict):
        return {"type": "dict", "value": {str(k): typed(v) for k, v in value.items()}}
    return {"type": type(value).__name__, "value": value}


def typed_attrs(attrs: Any) -> dict[str, Any]:
    return {str(k): typed(v) for k, v in (dict(attrs) if attrs else {}).items()}


def level_of(severity_number: int) -> str:
    """OTel's severity ranges (1-4 trace ... 21-24 fatal), lower-case as zero-logs stores them."""
    if severity_number <= 0:
        return ""
    return ("trace", "debug", "info", "warn", "error", "fatal")[min((severity_number - 1) // 4, 5)]


def describe(readable: Any) -> dict[str, Any]:
    rec = readable.log_record
    attrs = dict(rec.attributes or {})
    sev = rec.severity_number.value if rec.severity_number is not None else 0
    scope = readable.instrumentation_scope
    return {
        "index": attrs.get("index"),
        "body": rec.body,
        "severity_number": sev,
        "severity_text": rec.severity_text or "",
        "level": level_of(sev),
        "service": readable.resource.attributes.get("service.name", ""),
        "time_unix_nano": rec.timestamp or 0,
        "observed_time_unix_nano": rec.observed_timestamp or 0,
        "trace_id": f"{rec.trace_id:032x}" if rec.trace_id else "",
        "span_id": f"{rec.span_id:016x}" if rec.span_id else "",
        "trace_flags": int(rec.trace_flags) if rec.trace_flags is not None else 0,
        "scope": {"name": scope.name, "version": scope.version or ""} if scope else None,
        "resource_attributes": typed_attrs(readable.resource.attributes),
        "attributes": typed_attrs(attrs),
        "dropped_attributes_count": readable.dropped_attributes,
    }


# --- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    a = parse_args(argv)

    # A hard bound on the whole run, whatever the SDK does.
    watchdog_s = 2 * a.timeout + 10

    def overrun() -> None:
        log(f"FAILED: the run did not finish within {watchdog_s:.0f} s (2 x --timeout + 10 s)")
        os._exit(3)  # pylint: disable=protected-access

    watchdog = threading.Timer(watchdog_s, overrun)
    watchdog.daemon = True
    watchdog.start()

    # The SDK's own warnings and errors: to stderr, and kept for the verdict. Only the
    # application logger below feeds OpenTelemetry, so these cannot loop back into it.
    sdk_errors = SdkErrors()
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(logging.Formatter("send_logs: sdk %(levelname)s %(name)s: %(message)s"))
    stderr_handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(stderr_handler)
    root.addHandler(sdk_errors)

    resource = Resource.create({
        "service.name": a.service,
        "service.version": "1.2.3",
        "deployment.environment": "zero-logs-test",
        "host.name": "otel-test-host",
        "zero_logs.run_id": a.run_id,
    })
    inner, target = make_exporter(a)
    exporter = RecordingExporter(inner)
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(
        exporter,
        max_export_batch_size=a.batch_size,
        max_queue_size=max(2048, a.count),  # never drop a record for want of room
    ))
    tracer = TracerProvider(resource=resource).get_tracer("zero_logs.otel_test")

    with warnings.catch_warnings():
        # 1.45 deprecates the SDK's LoggingHandler in favour of
        # opentelemetry-instrumentation-logging's; it is still the SDK's documented way.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    app_logger = logging.getLogger(APP_LOGGER)
    app_logger.setLevel(logging.DEBUG)
    app_logger.propagate = False
    app_logger.addHandler(handler)

    log(f"sending {a.count} record(s) by {a.protocol}{' (gzip)' if a.gzip else ''} to {target}, "
        f"run id {a.run_id}, timeout {a.timeout:g} s")
    started = time.monotonic()
    emit_records(a, app_logger, tracer)
    flushed = provider.force_flush(timeout_millis=int(watchdog_s * 1000))
    provider.shutdown()
    app_logger.removeHandler(handler)
    elapsed = time.monotonic() - started
    watchdog.cancel()

    delivered = sorted((describe(r) for r in exporter.delivered), key=lambda r: r["index"])
    indexes = [r["index"] for r in delivered]
    problems = []
    failed = [e for e in exporter.exports if e["result"] != "success"]
    if failed:
        problems.append(f"{len(failed)} of {len(exporter.exports)} export(s) failed")
    if not flushed:
        problems.append("force_flush did not finish")
    if indexes != list(range(a.count)):
        problems.append(f"{len(delivered)} of {a.count} records delivered")
    if problems:
        log(f"FAILED after {elapsed:.1f} s: {'; '.join(problems)} ({a.protocol} to {target})")
        for e in exporter.exports:
            log(f"  export of {e['records']} record(s): {e['result']} in {e['seconds']} s"
                + (f" ({e['error']})" if e.get("error") else ""))
        if sdk_errors.messages:
            log(f"  last SDK message: {sdk_errors.messages[-1]}")
        return 1

    doc = {
        "format": "zero-logs/otel-sent/v1",
        "protocol": a.protocol,
        "endpoint": a.endpoint,
        "target": target,
        "content_type": CONTENT_TYPES[a.protocol],
        "gzip": a.gzip,
        "headers": a.headers,
        "run_id": a.run_id,
        "service": a.service,
        "count": a.count,
        "seconds": round(elapsed, 3),
        "versions": {p: _pkg_version(p) for p in PACKAGES},
        "exports": exporter.exports,
        "records": delivered,
    }
    json.dump(doc, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    sys.stdout.flush()
    log(f"delivered {a.count} record(s) in {len(exporter.exports)} export(s), {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
