#!/usr/bin/env python3
"""TEST AID FOR tests/otel/send_logs.py ONLY: a throwaway OTLP logs receiver.

Run it with the venv's Python (target/otel-venv/bin/python); tests/otel/selfcheck.py does.

It exists to check the sender (that the SDK's requests carry what send_logs.py says it
sent) without zero-logs. It is NOT a reference for, nor a replacement of, zero-logs' own
OTLP receiver: it stores nothing, validates only what the sender check needs, and is
never used by the Rust tests.

  fake_receiver.py --protocol http --out FILE   POST /v1/logs, application/x-protobuf or
                                                application/json, optional gzip/deflate
  fake_receiver.py --protocol grpc --out FILE   LogsService/Export over h2c (grpcio)

It binds 127.0.0.1 on a free port (or --port), prints `LISTENING 127.0.0.1:PORT` on
stdout once it accepts connections, and appends one JSON line per request to FILE: the
headers (gRPC: metadata), the content type and encoding, and the decoded request in a
normalised form shared by the protobuf and the JSON decoders (ids as lowercase hex,
values typed as the sender's Python types). The OTLP/JSON decoder is strict where the
spec is (lowerCamelCase keys, hex ids, integer enums) and lists every deviation under
"json_issues". --fail N answers the first N requests with --fail-status (HTTP) or
--fail-code (gRPC), with --retry-after as Retry-After / google.rpc.RetryInfo, to watch
the SDK's retries. It runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import re
import signal
import sys
import threading
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

GRPC_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

_lock = threading.Lock()
_state = {"requests": 0}


def _count_request() -> int:
    with _lock:
        _state["requests"] += 1
        return _state["requests"]


def _write(out: str, entry: dict[str, Any]) -> None:
    line = json.dumps(entry, ensure_ascii=False)
    with _lock, open(out, "a", encoding="utf-8") as f:
        f.write(line + "\n")


# --- protobuf -> normalised ---------------------------------------------------------------


def pb_value(v: common_pb2.AnyValue) -> dict[str, Any]:
    kind = v.WhichOneof("value")
    if kind is None:
        return {"type": "empty", "value": None}
    if kind == "string_value":
        return {"type": "str", "value": v.string_value}
    if kind == "bool_value":
        return {"type": "bool", "value": v.bool_value}
    if kind == "int_value":
        return {"type": "int", "value": v.int_value}
    if kind == "double_value":
        return {"type": "float", "value": v.double_value}
    if kind == "bytes_value":
        return {"type": "bytes", "value": v.bytes_value.hex()}
    if kind == "array_value":
        return {"type": "list", "value": [pb_value(x) for x in v.array_value.values]}
    return {"type": "dict", "value": {kv.key: pb_value(kv.value) for kv in v.kvlist_value.values}}


def pb_attrs(kvs) -> dict[str, Any]:
    return {kv.key: pb_value(kv.value) for kv in kvs}


def pb_request(req: logs_service_pb2.ExportLogsServiceRequest) -> list[dict[str, Any]]:
    out = []
    for rl in req.resource_logs:
        scopes = []
        for sl in rl.scope_logs:
            records = []
            for r in sl.log_records:
                records.append({
                    "time_unix_nano": r.time_unix_nano,
                    "observed_time_unix_nano": r.observed_time_unix_nano,
                    "severity_number": int(r.severity_number),
                    "severity_text": r.severity_text,
                    "body": pb_value(r.body),
                    "attributes": pb_attrs(r.attributes),
                    "dropped_attributes_count": r.dropped_attributes_count,
                    "flags": r.flags,
                    "trace_id": r.trace_id.hex(),
                    "span_id": r.span_id.hex(),
                    "event_name": r.event_name,
                })
            scopes.append({
                "scope": {"name": sl.scope.name, "version": sl.scope.version,
                          "attributes": pb_attrs(sl.scope.attributes)},
                "schema_url": sl.schema_url,
                "log_records": records,
            })
        out.append({
            "resource": {"attributes": pb_attrs(rl.resource.attributes),
                         "dropped_attributes_count": rl.resource.dropped_attributes_count},
            "schema_url": rl.schema_url,
            "scope_logs": scopes,
        })
    return out


# --- OTLP/JSON -> normalised, strictly ------------------------------------------------------

_HEX = re.compile(r"[0-9a-f]*")
_INT = re.compile(r"-?[0-9]+")


class JsonDecoder:
    """Decodes OTLP/JSON logs by the spec's mapping, noting every deviation in `issues`."""

    def __init__(self) -> None:
        self.issues: list[str] = []

    def _obj(self, where: str, value: Any, known: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.issues.append(f"{where}: expected an object, got {type(value).__name__}")
            return {}
        for key in value:
            if key not in known:
                self.issues.append(f"{where}: unexpected key {key!r} (OTLP/JSON keys are lowerCamelCase)")
        return value

    def _int64(self, where: str, value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, str) and _INT.fullmatch(value):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            self.issues.append(f"{where}: 64-bit integer as a JSON number ({value}), expected a decimal string")
            return value
        self.issues.append(f"{where}: not a 64-bit integer: {value!r}")
        return 0

    def _int32(self, where: str, value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.issues.append(f"{where}: expected a JSON integer, got {value!r}")
        return int(value) if isinstance(value, str) and _INT.fullmatch(value) else 0

    def _hex_id(self, where: str, value: Any, nbytes: int) -> str:
        if value is None or value == "":
            return ""
        if not isinstance(value, str) or len(value) != 2 * nbytes or not _HEX.fullmatch(value):
            self.issues.append(f"{where}: expected {2 * nbytes} lowercase hex digits, got {value!r}")
            return str(value)
        return value

    def _str(self, where: str, value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            self.issues.append(f"{where}: expected a string, got {value!r}")
            return str(value)
        return value

    def value(self, where: str, v: Any) -> dict[str, Any]:
        v = self._obj(where, v, {"stringValue", "boolValue", "intValue", "doubleValue", "arrayValue",
                                 "kvlistValue", "bytesValue"})
        if not v:
            return {"type": "empty", "value": None}
        if len(v) != 1:
            self.issues.append(f"{where}: AnyValue with {len(v)} members")
        key, val = next(iter(v.items()))
        if key == "stringValue":
            return {"type": "str", "value": self._str(where, val)}
        if key == "boolValue":
            if not isinstance(val, bool):
                self.issues.append(f"{where}: boolValue not a JSON boolean: {val!r}")
            return {"type": "bool", "value": bool(val)}
        if key == "intValue":
            return {"type": "int", "value": self._int64(where, val)}
        if key == "doubleValue":
            if isinstance(val, str) and val in ("NaN", "Infinity", "-Infinity"):
                return {"type": "float", "value": float(val)}
            if not isinstance(val, (int, float)) or isinstance(val, bool):
                self.issues.append(f"{where}: doubleValue not a JSON number: {val!r}")
                return {"type": "float", "value": None}
            return {"type": "float", "value": float(val)}
        if key == "bytesValue":
            return {"type": "bytes", "value": base64.b64decode(val).hex()}
        if key == "arrayValue":
            arr = self._obj(where, val, {"values"})
            return {"type": "list", "value": [self.value(f"{where}[{i}]", x)
                                              for i, x in enumerate(arr.get("values") or [])]}
        kvl = self._obj(where, val, {"values"})
        return {"type": "dict", "value": self.attrs(where, kvl.get("values"))}

    def attrs(self, where: str, kvs: Any) -> dict[str, Any]:
        out = {}
        for i, kv in enumerate(kvs or []):
            kv = self._obj(f"{where}.attributes[{i}]", kv, {"key", "value"})
            key = self._str(f"{where}.attributes[{i}].key", kv.get("key"))
            out[key] = self.value(f"{where}.attributes[{key}]", kv.get("value"))
        return out

    def request(self, doc: Any) -> list[dict[str, Any]]:
        doc = self._obj("request", doc, {"resourceLogs"})
        out = []
        for i, rl in enumerate(doc.get("resourceLogs") or []):
            w = f"resourceLogs[{i}]"
            rl = self._obj(w, rl, {"resource", "scopeLogs", "schemaUrl"})
            res = self._obj(f"{w}.resource", rl.get("resource") or {},
                            {"attributes", "droppedAttributesCount", "entityRefs"})
            scopes = []
            for j, sl in enumerate(rl.get("scopeLogs") or []):
                ws = f"{w}.scopeLogs[{j}]"
                sl = self._obj(ws, sl, {"scope", "logRecords", "schemaUrl"})
                sc = self._obj(f"{ws}.scope", sl.get("scope") or {},
                               {"name", "version", "attributes", "droppedAttributesCount"})
                records = []
                for k, r in enumerate(sl.get("logRecords") or []):
                    wr = f"{ws}.logRecords[{k}]"
                    r = self._obj(wr, r, {"timeUnixNano", "observedTimeUnixNano", "severityNumber",
                                          "severityText", "body", "attributes", "droppedAttributesCount",
                                          "flags", "traceId", "spanId", "eventName"})
                    records.append({
                        "time_unix_nano": self._int64(f"{wr}.timeUnixNano", r.get("timeUnixNano")),
                        "observed_time_unix_nano": self._int64(f"{wr}.observedTimeUnixNano",
                                                               r.get("observedTimeUnixNano")),
                        "severity_number": self._int32(f"{wr}.severityNumber", r.get("severityNumber")),
                        "severity_text": self._str(f"{wr}.severityText", r.get("severityText")),
                        "body": self.value(f"{wr}.body", r.get("body") or {}),
                        "attributes": self.attrs(wr, r.get("attributes")),
                        "dropped_attributes_count": self._int32(f"{wr}.droppedAttributesCount",
                                                                r.get("droppedAttributesCount")),
                        "flags": self._int32(f"{wr}.flags", r.get("flags")),
                        "trace_id": self._hex_id(f"{wr}.traceId", r.get("traceId"), 16),
                        "span_id": self._hex_id(f"{wr}.spanId", r.get("spanId"), 8),
                        "event_name": self._str(f"{wr}.eventName", r.get("eventName")),
                    })
                scopes.append({
                    "scope": {"name": self._str(f"{ws}.scope.name", sc.get("name")),
                              "version": self._str(f"{ws}.scope.version", sc.get("version")),
                              "attributes": self.attrs(f"{ws}.scope", sc.get("attributes"))},
                    "schema_url": self._str(f"{ws}.schemaUrl", sl.get("schemaUrl")),
                    "log_records": records,
                })
            out.append({
                "resource": {"attributes": self.attrs(f"{w}.resource", res.get("attributes")),
                             "dropped_attributes_count": self._int32(f"{w}.resource.droppedAttributesCount",
                                                                     res.get("droppedAttributesCount"))},
                "schema_url": self._str(f"{w}.schemaUrl", rl.get("schemaUrl")),
                "scope_logs": scopes,
            })
        return out


# --- HTTP -------------------------------------------------------------------------------------


def serve_http(a: argparse.Namespace) -> tuple[Any, int]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's HTTP clients expect

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  pylint: disable=redefined-builtin
            pass

        def _reply(self, status: int, ctype: str, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            n = _count_request()
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            enc = headers.get("content-encoding", "").strip().lower()
            entry: dict[str, Any] = {"n": n, "transport": "http", "method": "POST", "path": self.path,
                                     "headers": headers, "content_type": ctype, "content_encoding": enc,
                                     "wire_bytes": len(raw)}
            if self.path != "/v1/logs":
                entry["status"] = 404
                _write(a.out, entry)
                self._reply(404, "text/plain", b"not found\n")
                return
            if n <= a.fail:
                entry["status"] = a.fail_status
                entry["failed_on_purpose"] = True
                _write(a.out, entry)
                extra = {"Retry-After": a.retry_after} if a.retry_after is not None else None
                self._reply(a.fail_status, ctype or "text/plain", b"", extra)
                return
            try:
                if enc == "gzip":
                    body = gzip.decompress(raw)
                elif enc == "deflate":
                    body = zlib.decompress(raw)
                elif enc in ("", "identity"):
                    body = raw
                else:
                    raise ValueError(f"unknown Content-Encoding {enc!r}")
                entry["decoded_bytes"] = len(body)
                if ctype == "application/x-protobuf":
                    req = logs_service_pb2.ExportLogsServiceRequest()
                    req.ParseFromString(body)
                    entry["encoding"] = "protobuf"
                    entry["resource_logs"] = pb_request(req)
                    reply = (ctype, logs_service_pb2.ExportLogsServiceResponse().SerializeToString())
                elif ctype == "application/json":
                    dec = JsonDecoder()
                    entry["encoding"] = "json"
                    entry["resource_logs"] = dec.request(json.loads(body.decode("utf-8")))
                    entry["json_issues"] = dec.issues
                    reply = (ctype, b"{}")
                else:
                    raise ValueError(f"unsupported Content-Type {ctype!r}")
            except Exception as e:  # pylint: disable=broad-exception-caught
                entry["status"] = 400
                entry["error"] = f"{type(e).__name__}: {e}"
                _write(a.out, entry)
                self._reply(400, "text/plain", f"{entry['error']}\n".encode())
                return
            entry["status"] = 200
            _write(a.out, entry)
            self._reply(200, *reply)

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


# --- gRPC -------------------------------------------------------------------------------------


def serve_grpc(a: argparse.Namespace) -> tuple[Any, int]:
    import grpc  # pylint: disable=import-outside-toplevel

    class Logs(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request, context):  # noqa: N802
            n = _count_request()
            metadata = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in context.invocation_metadata()}
            entry: dict[str, Any] = {"n": n, "transport": "grpc", "method": GRPC_METHOD,
                                     "headers": metadata, "content_type": "application/grpc",
                                     "content_encoding": metadata.get("grpc-encoding", ""),
                                     "decoded_bytes": request.ByteSize()}
            if n <= a.fail:
                code = grpc.StatusCode[a.fail_code]
                entry["status"] = code.name
                entry["failed_on_purpose"] = True
                _write(a.out, entry)
                if a.retry_after is not None:
                    from google.protobuf.duration_pb2 import Duration  # pylint: disable=import-outside-toplevel
                    from google.rpc.error_details_pb2 import RetryInfo  # pylint: disable=import-outside-toplevel

                    delay = float(a.retry_after)
                    info = RetryInfo(retry_delay=Duration(seconds=int(delay), nanos=int((delay % 1) * 1e9)))
                    context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
                context.abort(code, "fake_receiver: failing on purpose (--fail)")
            entry["status"] = "OK"
            entry["encoding"] = "protobuf"
            entry["resource_logs"] = pb_request(request)
            _write(a.out, entry)
            return logs_service_pb2.ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    port = server.add_insecure_port(f"127.0.0.1:{a.port}")
    if port == 0:
        raise SystemExit(f"fake_receiver: cannot bind 127.0.0.1:{a.port}")
    server.start()
    return server, port


def main() -> int:
    p = argparse.ArgumentParser(description="Test aid for send_logs.py only: a throwaway OTLP logs receiver.")
    p.add_argument("--protocol", choices=("http", "grpc"), required=True)
    p.add_argument("--out", required=True, help="file to append one JSON line per request to")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--fail", type=int, default=0, help="fail the first N requests")
    p.add_argument("--fail-status", type=int, default=503, help="HTTP status for --fail (default 503)")
    p.add_argument("--fail-code", default="UNAVAILABLE", help="gRPC status code name for --fail")
    p.add_argument("--retry-after", default=None,
                   help="with --fail: Retry-After header value (HTTP) / RetryInfo delay in s (gRPC)")
    a = p.parse_args()
    open(a.out, "a", encoding="utf-8").close()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server, port = serve_http(a) if a.protocol == "http" else serve_grpc(a)
    print(f"LISTENING 127.0.0.1:{port}", flush=True)
    stop.wait()
    if a.protocol == "http":
        server.shutdown()
    else:
        server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
