#!/usr/bin/env python3
"""Checks tests/otel/send_logs.py without zero-logs: the sender, not the receiver.

  1. Nothing listening: every protocol exits 1 within about --timeout, saying why.
  2. Against tests/otel/fake_receiver.py (a test aid, see there), for grpc, http/protobuf
     and http/json, plain and gzip, several batches: what the receiver decoded equals,
     field by field, what the sender printed (body, severity, timestamps, trace and span
     ids, flags, attributes with their types, resource, scope), the extra header arrives,
     the content type and encoding are the announced ones, and the OTLP/JSON body
     follows the spec's mapping (no "json_issues").
  3. Retries: 503 + Retry-After and gRPC UNAVAILABLE + RetryInfo are retried to success;
     400 and gRPC INVALID_ARGUMENT fail the run at once.
  4. The checks bite: a tampered account is caught, and so is protobuf's generic JSON.

Runs with the virtualenv of scripts/install-deps (re-executes itself with it). Every
process it starts is its own child, bound to 127.0.0.1, and stopped by its PID. Ends
with the line "N passed, N failed"; exit status 1 if any check failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _venv_dir() -> Path:
    env = os.environ.get("ZERO_LOGS_OTEL_VENV")
    return Path(env) if env else HERE.parents[1] / "target" / "otel-venv"


if Path(sys.prefix).resolve() != _venv_dir().resolve():
    _py = _venv_dir() / "bin" / "python"
    if not _py.exists() or os.environ.get("_ZERO_LOGS_OTEL_REEXEC"):
        sys.exit(f"selfcheck: {_py} is missing: run scripts/install-deps")
    os.environ["_ZERO_LOGS_OTEL_REEXEC"] = "1"
    os.execv(str(_py), [str(_py), str(Path(__file__).resolve()), *sys.argv[1:]])

# pylint: disable=wrong-import-position
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

PY = sys.executable
SENDER = str(HERE / "send_logs.py")
RECEIVER = str(HERE / "fake_receiver.py")
PROTOCOLS = ("grpc", "http/protobuf", "http/json")

results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    results.append((name, ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}", flush=True)
    return ok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """fake_receiver.py as a child process, stopped by its PID."""

    def __init__(self, protocol: str, out: str, *extra: str) -> None:
        self.out = out
        self.proc = subprocess.Popen([PY, RECEIVER, "--protocol", protocol, "--out", out, *extra],
                                     stdout=subprocess.PIPE, text=True)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(20)
        if not line or not line[0].startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"fake_receiver did not start: {line!r}")
        self.port = int(line[0].strip().rsplit(":", 1)[1])

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        with open(self.out, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # this child's PID only
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def send(endpoint: str, protocol: str, *extra: str) -> tuple[int, float, dict | None, str]:
    started = time.monotonic()
    p = subprocess.run([PY, SENDER, "--endpoint", endpoint, "--protocol", protocol, *extra],
                       capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.monotonic() - started
    doc = None
    if p.returncode == 0:
        doc = json.loads(p.stdout)
    return p.returncode, elapsed, doc, p.stderr


def received_records(reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every log record the receiver accepted, with its resource and scope."""
    out = []
    for r in reqs:
        if r.get("status") not in (200, "OK"):
            continue
        for rl in r["resource_logs"]:
            for sl in rl["scope_logs"]:
                for rec in sl["log_records"]:
                    out.append({**rec, "_resource": rl["resource"]["attributes"], "_scope": sl["scope"]})
    return out


def compare(sent: dict[str, Any], got: list[dict[str, Any]]) -> list[str]:
    """Differences between the sender's account and what the receiver decoded."""
    diffs = []
    by_index: dict[int, dict] = {}
    for g in got:
        idx = g["attributes"].get("index", {}).get("value")
        if idx in by_index:
            diffs.append(f"record {idx} received twice")
        by_index[idx] = g
    if sorted(by_index) != [r["index"] for r in sent["records"]]:
        diffs.append(f"received indexes {sorted(by_index)[:10]}..., sent {sent['count']}")
    for s in sent["records"]:
        g = by_index.get(s["index"])
        if g is None:
            continue
        pairs = {
            "body": (s["body"], g["body"]["value"] if g["body"]["type"] == "str" else g["body"]),
            "severity_number": (s["severity_number"], g["severity_number"]),
            "severity_text": (s["severity_text"], g["severity_text"]),
            "time_unix_nano": (s["time_unix_nano"], g["time_unix_nano"]),
            "observed_time_unix_nano": (s["observed_time_unix_nano"], g["observed_time_unix_nano"]),
            "trace_id": (s["trace_id"], g["trace_id"]),
            "span_id": (s["span_id"], g["span_id"]),
            "flags": (s["trace_flags"], g["flags"]),
            "attributes": (s["attributes"], g["attributes"]),
            "resource": (s["resource_attributes"], g["_resource"]),
            "service": (s["service"], g["_resource"].get("service.name", {}).get("value")),
            "scope": ((s["scope"] or {}).get("name", ""), g["_scope"]["name"]),
            "dropped": (s["dropped_attributes_count"], g["dropped_attributes_count"]),
        }
        for field, (want, have) in pairs.items():
            if want != have:
                diffs.append(f"record {s['index']} {field}: sent {want!r}, received {have!r}")
    return diffs


def variety(sent: dict[str, Any]) -> list[str]:
    """The run exercised what it claims to (so a comparison is not vacuous)."""
    recs = sent["records"]
    missing = []
    if {r["severity_number"] for r in recs} != {5, 9, 13, 17, 21}:
        missing.append("all five severities")
    if not any(r["trace_id"] for r in recs) or all(r["trace_id"] for r in recs):
        missing.append("records with and without trace ids")
    types = {a["type"] for r in recs for a in r["attributes"].values()}
    if not {"str", "int", "float", "bool"} <= types:
        missing.append(f"attribute types str/int/float/bool (have {sorted(types)})")
    if not any("exception.stacktrace" in r["attributes"] for r in recs):
        missing.append("an exception record")
    return missing


def test_unreachable() -> None:
    port = free_port()  # nothing listens on it once the socket is closed
    for proto in PROTOCOLS:
        timeout = 3.0
        rc, elapsed, _, err = send(f"http://127.0.0.1:{port}", proto, "--count", "3", "--timeout", str(timeout))
        check(f"unreachable {proto}: exit 1 within --timeout ({elapsed:.1f} s)",
              rc == 1 and elapsed < timeout + 3 and "FAILED" in err,
              f"rc={rc} elapsed={elapsed:.1f}s stderr tail: {err[-300:]!r}")


def test_roundtrip(tmp: str) -> None:
    for proto in PROTOCOLS:
        for gz in (False, True):
            name = f"round trip {proto}{' gzip' if gz else ''}"
            rx = Receiver("grpc" if proto == "grpc" else "http", f"{tmp}/{uuid.uuid4().hex}.jsonl")
            try:
                run_id = uuid.uuid4().hex[:12]
                args = ["--count", "23", "--batch-size", "10", "--run-id", run_id, "--service", "selfcheck-svc",
                        "--header", "X-Zero-Logs-Test=selfcheck", "--timeout", "10"] + (["--gzip"] if gz else [])
                rc, _, sent, err = send(rx.endpoint(), proto, *args)
                reqs = rx.requests()
            finally:
                rx.stop()
            if not check(f"{name}: sender exit 0", rc == 0, err[-500:]):
                continue
            diffs = compare(sent, received_records(reqs))
            check(f"{name}: 23 records match field by field", not diffs, "; ".join(diffs[:5]))
            check(f"{name}: run covers severities, ids, types, exception", not variety(sent),
                  ", ".join(variety(sent)))
            check(f"{name}: 3 requests (batches of 10)", len(reqs) == 3 and len(sent["exports"]) == 3,
                  f"{len(reqs)} requests, {len(sent['exports'])} exports")
            hdr_ok = all(r["headers"].get("x-zero-logs-test") == "selfcheck" for r in reqs)
            ua_ok = all(r["headers"].get("user-agent", "").startswith("OTel-OTLP-") for r in reqs)
            check(f"{name}: custom header and OTel user-agent arrive", hdr_ok and ua_ok,
                  json.dumps([r["headers"] for r in reqs])[:400])
            if proto != "grpc":
                want_enc = "gzip" if gz else ""
                ok = all(r["content_type"] == sent["content_type"] and r["content_encoding"] == want_enc
                         and r["path"] == "/v1/logs" for r in reqs)
                check(f"{name}: POST /v1/logs, {sent['content_type']}, encoding {want_enc or 'none'}", ok,
                      json.dumps([(r["path"], r["content_type"], r["content_encoding"]) for r in reqs]))
            if proto == "http/json":
                issues = [i for r in reqs for i in r.get("json_issues", [])]
                check(f"{name}: body is spec OTLP/JSON (camelCase, hex ids, int enums, int64 strings)",
                      not issues and all(r["encoding"] == "json" for r in reqs), "; ".join(issues[:5]))


def test_retries(tmp: str) -> None:
    cases = [
        ("http/protobuf", ["--fail", "2", "--fail-status", "503", "--retry-after", "0"], 0, 3,
         "HTTP 503 + Retry-After: 0 twice, then 200: retried, exit 0"),
        ("http/json", ["--fail", "1", "--fail-status", "429", "--retry-after", "0"], 0, 2,
         "HTTP 429 + Retry-After: 0 once, then 200: retried, exit 0"),
        ("http/protobuf", ["--fail", "1", "--fail-status", "400"], 1, 1,
         "HTTP 400: not retried, exit 1"),
        ("grpc", ["--fail", "2", "--fail-code", "UNAVAILABLE", "--retry-after", "0.1"], 0, 3,
         "gRPC UNAVAILABLE + RetryInfo 0.1 s twice, then OK: retried, exit 0"),
        ("grpc", ["--fail", "1", "--fail-code", "INVALID_ARGUMENT"], 1, 1,
         "gRPC INVALID_ARGUMENT: not retried, exit 1"),
    ]
    for proto, rx_args, want_rc, want_reqs, name in cases:
        rx = Receiver("grpc" if proto == "grpc" else "http", f"{tmp}/{uuid.uuid4().hex}.jsonl", *rx_args)
        try:
            rc, elapsed, _, err = send(rx.endpoint(), proto, "--count", "4", "--timeout", "8")
            reqs = rx.requests()
        finally:
            rx.stop()
        check(f"{proto}: {name} ({elapsed:.1f} s)", rc == want_rc and len(reqs) == want_reqs and elapsed < 8,
              f"rc={rc} requests={len(reqs)} elapsed={elapsed:.1f}s stderr tail: {err[-300:]!r}")


def test_checks_bite(tmp: str) -> None:
    """The comparisons above can fail: a tampered account and protobuf's generic JSON."""
    from google.protobuf.json_format import MessageToJson  # pylint: disable=import-outside-toplevel
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # pylint: disable=import-outside-toplevel

    import fake_receiver  # pylint: disable=import-outside-toplevel

    rx = Receiver("http", f"{tmp}/{uuid.uuid4().hex}.jsonl")
    try:
        rc, _, sent, err = send(rx.endpoint(), "http/protobuf", "--count", "5")
        got = received_records(rx.requests())
    finally:
        rx.stop()
    if check("checks bite: baseline send", rc == 0 and not compare(sent, got), err[-300:]):
        bad = json.loads(json.dumps(sent))
        bad["records"][1]["trace_id"] = "0" * 32
        bad["records"][2]["attributes"]["ratio"]["value"] += 1e-9
        bad["records"][3]["attributes"]["index"]["type"] = "str"
        diffs = compare(bad, got)
        check("checks bite: a changed trace id, float and type are each reported", len(diffs) == 3,
              "; ".join(diffs))

    req = logs_service_pb2.ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.trace_id, rec.span_id, rec.severity_number = bytes(range(16)), bytes(range(8)), 9
    dec = fake_receiver.JsonDecoder()
    dec.request(json.loads(MessageToJson(req)))  # base64 ids, enum names: not OTLP/JSON
    check("checks bite: protobuf's generic JSON (base64 ids, enum names) is flagged",
          len(dec.issues) == 3, "; ".join(dec.issues))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="otel-selfcheck-") as tmp:
        for test in (test_unreachable, lambda: test_roundtrip(tmp), lambda: test_retries(tmp),
                     lambda: test_checks_bite(tmp)):
            try:
                test()
            except Exception as e:  # pylint: disable=broad-exception-caught
                check("selfcheck itself", False, f"{type(e).__name__}: {e}")
    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
