#!/usr/bin/env python3
"""A test front for the current ClickHouse engine: ClickHouse's HTTP interface, as far
as zero-logs' sink (the `clickhouse` crate 0.15) and its tests use it, over ONE chdb
session (chdb-core: the full ClickHouse 26.x engine in a library, no server).

    target/chdb-venv/bin/python tests/chdb/server.py --data DIR [--port N] [--tmp DIR]

Listens on 127.0.0.1:N (0, the default, picks a free port) and prints
`LISTENING 127.0.0.1:PORT` as the first line on stdout once the engine answers; then
serves until SIGTERM or SIGINT, when it stops accepting, lets a running query finish,
closes the session (its data stays in DIR for the next start) and exits 0. Every
request is logged on stderr. `zero_logs::testing::ChdbServer` runs it for the tests.

This is a TEST FRONT for the real engine, not a server to ship: no TLS, no real users,
loopback only. What the engine does (DDL, type checks, RowBinary parsing, MergeTree,
deduplication by `insert_deduplication_token`, every error) is the engine's own; what
the front does is the HTTP part of ClickHouse:

- `GET /`, `GET /ping`, `GET /replicas_status`: `Ok.`; any other path takes queries.
- The query is the `query` URL parameter, a line break, then the request body (as
  ClickHouse does it); a GET is read-only (Code 164 for anything else).
- `INSERT … [(columns)] [SETTINGS …] FORMAT <fmt>` with the rows after it (in the body,
  `Content-Length` or chunked): the rows go to a temp file, read back by
  `INSERT INTO … SELECT * FROM file(tmp, <fmt>, <structure>)` with the structure taken
  from `DESCRIBE TABLE` (so the rows are parsed by the engine with the table's types;
  a column the table lacks fails in the engine with Code 16, as on a server).
- `decompress=1`: the body is ClickHouse's compressed format (blocks of checksum,
  method, sizes), LZ4 or uncompressed blocks; the CityHash checksums are NOT verified.
  `Content-Encoding: gzip`/`deflate` request bodies are decoded too.
- Responses are never compressed: `compress=1` is refused (Code 48); `Accept-Encoding`
  is ignored, which ClickHouse also does unless `enable_http_compression=1`.
- `default_format` (else TabSeparated) unless the query names a FORMAT; `database`;
  `param_<name>` query parameters; every other URL parameter is a setting for that
  query alone (SET before, the previous value restored after; an unknown one fails
  with Code 115 as on a server), except HTTP transport settings that mean nothing
  in-process (listed in TRANSPORT_SETTINGS), which are ignored.
- `SET` and `USE` statements answer OK and change nothing: without `session_id` every
  HTTP request of ClickHouse is a session of its own. `session_id` is refused (48).
- Users are those of Debian's default users.xml: `default` and `readonly` (read-only),
  both without password, from `X-ClickHouse-User`/`X-ClickHouse-Key`, the `user` and
  `password` parameters or Basic auth; anything else gets Code 516 (HTTP 403). The
  read-only check is the front's: statements that do not start with SELECT, WITH,
  SHOW, DESC(RIBE), EXISTS or EXPLAIN get Code 164.
- Errors as ClickHouse sends them: the HTTP status ClickHouse maps the code to (500
  for most, 404 for unknown table/database, 400 for parse errors, 403 for auth…),
  `X-ClickHouse-Exception-Code: N` and the body
  `Code: N. DB::Exception: … (NAME) (version 26.x)`.
- Headers: `X-ClickHouse-Query-Id`, `X-ClickHouse-Summary` (rows/bytes read and
  written), `X-ClickHouse-Server-Display-Name`. No progress headers.
- Engine calls are serialised by one lock (one session, one query at a time); HTTP
  keep-alive connections are closed after 10 s idle (ClickHouse's default is 3 s;
  clients drop theirs sooner).

Not supported: sessions, temporary tables across requests, external data (multipart),
progress headers, response compression, `max_result_rows`-style partial results,
cancellation on client disconnect, several statements in one request.
"""

import argparse
import base64
import http.server
import ipaddress
import json
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import uuid
import zlib
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.block
from chdb import session as chdb_session

# URL parameters that are part of the HTTP protocol, not settings.
HTTP_PARAMETERS = {
    "query", "database", "default_format", "user", "password", "quota_key",
    "query_id", "session_id", "session_timeout", "session_check", "close_session",
    "compress", "decompress", "buffer_size", "wait_end_of_query", "stacktrace", "role",
    "client_protocol_version",
}
# Settings about the HTTP transport: meaningless in-process, ignored.
TRANSPORT_SETTINGS = {
    "enable_http_compression", "http_zlib_compression_level",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "http_wait_end_of_query", "http_response_buffer_size", "add_http_cors_header",
    "cancel_http_readonly_queries_on_client_close", "http_write_exception_in_output_format",
}
# Statement kinds a read-only user (or a GET) may run.
READ_KINDS = {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN"}
# Users of Debian's default users.xml: name -> read-only.
USERS = {"default": False, "readonly": True}

# ClickHouse's exceptionCodeToHTTPStatus, by error name (codes come from the engine).
HTTP_STATUS_BY_ERROR = {
    401: ["REQUIRED_PASSWORD"],
    403: ["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED",
          "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"],
    400: ["BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT",
          "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE",
          "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
          "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
          "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN",
          "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE",
          "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE",
          "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
          "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"],
    404: ["UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
          "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING",
          "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT",
          "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"],
    413: ["QUERY_IS_TOO_LARGE"],
    501: ["NOT_IMPLEMENTED"],
    503: ["SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"],
    411: ["HTTP_LENGTH_REQUIRED"],
    408: ["TIMEOUT_EXCEEDED"],
    415: ["UNSUPPORTED_MEDIA_TYPE"],
}

KEEP_ALIVE_S = 10
# ClickHouse's compressed block: 16-byte checksum, then method, compressed size
# (including this 9-byte header) and decompressed size.
BLOCK_HEADER = struct.Struct("<BII")
METHOD_NONE, METHOD_LZ4 = 0x02, 0x82

_IDENT = r'(?:`(?:[^`\\]|\\.)*`|"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_$]*)'
# The head of `INSERT … FORMAT <fmt>`; the rows follow after spaces and one line break.
INSERT_HEAD = re.compile(
    r"\s*INSERT\s+INTO\s+(?:TABLE\s+)?(?P<table>" + _IDENT + r"(?:\s*\.\s*" + _IDENT + r")?)"
    r"\s*(?:\((?P<columns>(?:`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"|[^)`\"])*)\))?"
    r"\s*(?:SETTINGS\s+(?P<settings>.*?)\s+)?FORMAT\s+(?P<format>[A-Za-z0-9_]+)[ \t]*\r?\n?",
    re.IGNORECASE | re.DOTALL,
)
SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ENGINE_ERROR = re.compile(r"Code: (\d+)\. ")


class QueryError(Exception):
    """A ClickHouse exception: code and the message after `DB::Exception: `."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def quote_string(text):
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def unquote_identifier(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "`\"":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def split_identifiers(text):
    """The comma-separated identifiers of a column list, as written."""
    return [m.group(0).strip() for m in re.finditer(
        r"(?:`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"|[^,`\"])+", text) if m.group(0).strip()]


def statement_kind(sql):
    """The first keyword, after spaces, comments and opening parentheses."""
    rest = sql
    while True:
        stripped = rest.lstrip().lstrip("(")
        if stripped.startswith("--"):
            rest = stripped.partition("\n")[2]
        elif stripped.startswith("/*"):
            rest = stripped.partition("*/")[2]
        elif stripped != rest:
            rest = stripped
        else:
            break
    match = re.match(r"[A-Za-z]+", rest)
    return match.group(0).upper() if match else ""


def decompress_blocks(data):
    """Undoes ClickHouse's compressed format (what `decompress=1` announces)."""
    out, pos = bytearray(), 0
    while pos < len(data):
        if len(data) - pos < 16 + BLOCK_HEADER.size:
            raise QueryError(None, "CANNOT_DECOMPRESS: truncated compressed block header")
        method, compressed, size = BLOCK_HEADER.unpack_from(data, pos + 16)
        payload = data[pos + 16 + BLOCK_HEADER.size:pos + 16 + compressed]
        if compressed < BLOCK_HEADER.size or len(payload) != compressed - BLOCK_HEADER.size:
            raise QueryError(None, "CANNOT_DECOMPRESS: truncated compressed block")
        if method == METHOD_LZ4:
            try:
                out += lz4.block.decompress(payload, uncompressed_size=size)
            except lz4.block.LZ4BlockError as error:
                raise QueryError(None, f"CANNOT_DECOMPRESS: LZ4 block: {error}") from None
        elif method == METHOD_NONE:
            out += payload
        else:
            raise QueryError(None, f"UNKNOWN_COMPRESSION_METHOD: compression method 0x{method:02x}"
                                   " is not supported by this test front (LZ4 and none are)")
        pos += 16 + compressed
    return bytes(out)


class Engine:
    """The one chdb session, used by one query at a time."""

    def __init__(self, data_dir, tmp_dir):
        self.session = chdb_session.Session(data_dir)
        self.tmp_dir = tmp_dir
        self.lock = threading.Lock()
        self.version = self._text("SELECT version()").decode().strip()
        rows = self._text("SELECT number, errorCodeToName(number) FROM numbers(2000) "
                          "WHERE errorCodeToName(number) != ''").decode()
        self.codes = {name: int(code) for code, name in
                      (line.split("\t") for line in rows.splitlines())}
        self.status = {self.codes[name]: status for status, names in
                       HTTP_STATUS_BY_ERROR.items() for name in names if name in self.codes}

    def _raw(self, sql, fmt, params=None):
        """One engine call: chdb's result (None for some statements)."""
        try:
            result = self.session.query(sql, fmt, params=params or {})
        except Exception as error:  # chdb raises ChdbError with ClickHouse's text
            raise self.error_from(str(error)) from None
        if result is not None and result.has_error():
            raise self.error_from(result.error_message())
        return result

    def _text(self, sql, fmt="TSV"):
        result = self._raw(sql, fmt)
        return b"" if result is None else result.bytes()

    def error_from(self, text):
        match = ENGINE_ERROR.match(text)
        if match:
            return QueryError(int(match.group(1)),
                              text[match.end():].removeprefix("DB::Exception: "))
        return QueryError(self.code("STD_EXCEPTION", 1001), text)

    def code(self, name, fallback=1000):
        return self.codes.get(name, fallback)

    def fail(self, name, message):
        return QueryError(self.code(name), f"{message} ({name})")

    def run(self, sql, fmt, settings, database, params):
        """Runs one statement with these settings and default database; returns the
        output bytes and a summary (rows/bytes read and written)."""
        with self.lock:
            restore = self._apply(settings)
            try:
                if database:
                    self._text(f"USE {quote_identifier(database)}")
                started = time.monotonic_ns()
                result = self._raw(sql, fmt, params)
                elapsed = time.monotonic_ns() - started
            finally:
                if database:
                    self._text("USE default")
                restore()
        if result is None:
            return b"", {}
        output = result.bytes()
        return output, {
            "read_rows": result.rows_read(), "read_bytes": result.bytes_read(),
            "written_rows": result.rows_written(), "written_bytes": result.bytes_written(),
            "result_bytes": len(output), "elapsed_ns": elapsed,
        }

    def _apply(self, settings):
        """SETs `settings` for one query; returns what puts the old values back."""
        if not settings:
            return lambda: None
        for name in settings:
            if not SETTING_NAME.match(name):
                raise self.fail("UNKNOWN_SETTING", f"Unknown setting '{name}'")
        names = ", ".join(quote_string(n) for n in settings)
        old = {row["name"]: row["value"] for row in map(json.loads, self._text(
            f"SELECT name, value FROM system.settings WHERE name IN ({names})",
            "JSONEachRow").decode().splitlines())}

        def restore():
            # An alias (not listed in system.settings) goes back to its default.
            self._text("SET " + ", ".join(
                f"{name} = {quote_string(old[name])}" if name in old else f"{name} = DEFAULT"
                for name in settings))

        self._text("SET " + ", ".join(f"{name} = {quote_string(value)}"
                                      for name, value in settings.items()))
        return restore

    def insert(self, head, data, settings, database):
        """`INSERT … FORMAT fmt` with `data`: through a temp file and `file()`."""
        table, fmt = head.group("table"), head.group("format")
        described = self.run(f"DESCRIBE TABLE {table}", "JSONEachRow", {}, database, {})[0]
        columns = [json.loads(line) for line in described.decode().splitlines()]
        types = {c["name"]: c["type"] for c in columns}
        if head.group("columns") is not None:
            written = split_identifiers(head.group("columns"))
            names = [unquote_identifier(c) for c in written]
        else:
            names = [c["name"] for c in columns
                     if c.get("default_type") not in ("MATERIALIZED", "ALIAS")]
            written = [quote_identifier(n) for n in names]
        # A column the table lacks keeps a placeholder type: the engine then refuses the
        # INSERT with its own error (NO_SUCH_COLUMN_IN_TABLE), as a server does.
        structure = ", ".join(f"{quote_identifier(n)} {types.get(n, 'String')}" for n in names)
        clause = f" SETTINGS {head.group('settings')}" if head.group("settings") else ""
        fd, path = tempfile.mkstemp(dir=self.tmp_dir, suffix=".rows")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            sql = (f"INSERT INTO {table} ({', '.join(written)}){clause} SELECT * FROM "
                   f"file({quote_string(path)}, {quote_string(fmt)}, {quote_string(structure)})")
            return self.run(sql, "TSV", settings, database, {})
        finally:
            os.unlink(path)

    def close(self):
        with self.lock:
            self.session.close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = KEEP_ALIVE_S
    server_version = "chdb-test-front"
    engine: Engine = None

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        sys.stderr.write("%s [%s] %s\n" % (time.strftime("%H:%M:%S"), self.address_string(),
                                           format % args))

    def do_GET(self):
        self.handle_request(read_only=True)

    def do_POST(self):
        self.handle_request(read_only=False)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def handle_request(self, read_only):
        url = urlsplit(self.path)
        params = {}
        for name, value in parse_qsl(url.query, keep_blank_values=True):
            params[name] = value
        body = self.read_body()
        if url.path in ("/ping", "/replicas_status") or (
                url.path == "/" and read_only and "query" not in params and not body):
            return self.reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            output, summary, fmt = self.execute(params, body, read_only)
        except QueryError as error:
            return self.reply_error(error, query_id)
        except Exception as error:  # a bug of the front: still answer as ClickHouse would
            return self.reply_error(QueryError(None, f"STD_EXCEPTION: {error!r}"), query_id)
        content_type = ("application/octet-stream" if fmt.startswith(("RowBinary", "Native"))
                        else "text/tab-separated-values; charset=UTF-8")
        headers = {
            "Content-Type": content_type,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in summary.items()}),
        }
        self.reply(200, output, headers)

    def credentials(self, params):
        user = self.headers.get("X-ClickHouse-User")
        password = self.headers.get("X-ClickHouse-Key")
        if user is None and password is None:
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            else:
                user, password = params.get("user"), params.get("password")
        return user or "default", password or ""

    def execute(self, params, body, read_only):
        engine = self.engine
        user, password = self.credentials(params)
        if user not in USERS or password:
            raise engine.fail("AUTHENTICATION_FAILED",
                              f"{user}: Authentication failed: password is incorrect, or "
                              "there is no user with such name")
        if params.get("session_id"):
            raise engine.fail("NOT_IMPLEMENTED", "sessions are not supported by this test front")
        if params.get("compress", "0") not in ("", "0"):
            raise engine.fail("NOT_IMPLEMENTED",
                              "compress=1 is not supported by this test front")
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("gzip", "deflate"):
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else 0)
        elif encoding not in ("", "identity"):
            raise engine.fail("UNKNOWN_COMPRESSION_METHOD",
                              f"Unknown Content-Encoding {encoding!r} (this test front "
                              "decodes gzip and deflate)")
        if params.get("decompress", "0") not in ("", "0"):
            body = decompress_blocks(body)
        query = params.get("query", "")
        full = (query.encode() + b"\n" if query else b"") + body
        if not full.strip():
            raise engine.fail("SYNTAX_ERROR", "Empty query")

        settings = {name: value for name, value in params.items()
                    if name not in HTTP_PARAMETERS and name not in TRANSPORT_SETTINGS
                    and not name.startswith("param_")}
        if settings.pop("readonly", "0") not in ("", "0"):
            read_only = True
        query_params = {name[6:]: value for name, value in params.items()
                        if name.startswith("param_")}
        database = params.get("database") or None
        fmt = params.get("default_format") or "TabSeparated"

        # Parsed as Latin-1 so that offsets are byte offsets: the rows after FORMAT are
        # taken byte for byte.
        text = full.decode("latin-1")
        kind = statement_kind(text)
        if (read_only or USERS[user]) and kind not in READ_KINDS:
            why = (" For queries over HTTP, method GET implies readonly. You should use "
                   "method POST for modifying queries" if read_only else "")
            raise engine.fail("READONLY", f"{user}: Cannot execute query in readonly mode.{why}")
        if kind in ("SET", "USE"):
            return b"", {}, fmt
        head = INSERT_HEAD.match(text) if kind == "INSERT" else None
        if head:
            # The same match on the head decoded as UTF-8 (non-ASCII names), rows as bytes.
            rows = full[head.end():]
            head = INSERT_HEAD.match(full[:head.end()].decode())
            output, summary = engine.insert(head, rows, settings, database)
            return output, summary, fmt
        try:
            sql = full.decode()
        except UnicodeDecodeError:
            raise engine.fail("NOT_IMPLEMENTED", "the query is not UTF-8; rows are taken only "
                              "after INSERT INTO <table> [(columns)] [SETTINGS …] FORMAT "
                              "<format> by this test front") from None
        output, summary = engine.run(sql, fmt, settings, database, query_params)
        return output, summary, fmt

    def reply_error(self, error, query_id):
        engine = self.engine
        if error.code is None:  # the front's own: "NAME: message"
            name, _, message = error.message.partition(": ")
            error = engine.fail(name, message)
        text = f"Code: {error.code}. DB::Exception: {error.message} (version {engine.version})\n"
        self.reply(engine.status.get(error.code, 500), text.encode(), {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(error.code),
            "X-ClickHouse-Query-Id": query_id,
        })

    def reply(self, status, body, headers):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb-test-front")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the engine's data directory")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--tmp", help="where INSERT rows wait for the engine (default: a "
                        "new temp directory, removed at exit)")
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("a test front listens on loopback addresses only")

    os.makedirs(args.data, exist_ok=True)
    if args.tmp:
        os.makedirs(args.tmp, exist_ok=True)
    tmp_dir = args.tmp or tempfile.mkdtemp(prefix="chdb-front-")
    try:
        Handler.engine = Engine(args.data, tmp_dir)
        server = Server((args.host, args.port), Handler)

        def stop(signum, _frame):
            sys.stderr.write(f"signal {signum}: stopping\n")
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        host, port = server.server_address[:2]
        sys.stderr.write(f"ClickHouse {Handler.engine.version} (chdb {chdb.__version__}) "
                         f"on {host}:{port}, data in {args.data}\n")
        print(f"LISTENING {host}:{port}", flush=True)
        server.serve_forever(poll_interval=0.1)
        server.server_close()
        Handler.engine.close()
    finally:
        if not args.tmp:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    sys.stderr.write("stopped\n")


if __name__ == "__main__":
    main()
