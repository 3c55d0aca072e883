# shellcheck shell=bash
# Sourced by scripts/demo, scripts/bench and scripts/test: progress output, cargo on
# PATH, free loopback ports, and a private ClickHouse server and zero-logs worker
# that this shell starts, tracks by PID and stops again.
#
# Nothing here is ever stopped by name: only the PIDs this shell started.

# --- progress output (stderr) ---------------------------------------------------

: "${SCRIPT_NAME:=$(basename "$0")}"

if [[ -t 2 && -z "${NO_COLOR:-}" ]]; then
    _C_BOLD=$'\e[1m' _C_RED=$'\e[31m' _C_YELLOW=$'\e[33m' _C_DIM=$'\e[2m' _C_OFF=$'\e[0m'
else
    _C_BOLD='' _C_RED='' _C_YELLOW='' _C_DIM='' _C_OFF=''
fi

log() { printf '%s[%s]%s %s\n' "$_C_BOLD" "$SCRIPT_NAME" "$_C_OFF" "$*" >&2; }
warn() { printf '%s[%s] warning:%s %s\n' "$_C_YELLOW" "$SCRIPT_NAME" "$_C_OFF" "$*" >&2; }
die() {
    printf '%s[%s] error:%s %s\n' "$_C_RED" "$SCRIPT_NAME" "$_C_OFF" "$*" >&2
    exit 1
}
dim() { printf '%s%s%s\n' "$_C_DIM" "$*" "$_C_OFF" >&2; }

# Fractional seconds since the epoch (bash 5).
now_s() { printf '%s' "${EPOCHREALTIME/,/.}"; }
# Seconds between two now_s values, one decimal.
elapsed_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# --- toolchain ------------------------------------------------------------------

# rustup installs into ~/.cargo/bin; a non-login shell (CI) may not have it on PATH.
ensure_cargo_on_path() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found. Install the Rust toolchain with rustup (https://rustup.rs), then re-run."
}

# Where cargo puts build output (honours CARGO_TARGET_DIR and .cargo/config).
cargo_target_dir() {
    local dir
    dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    printf '%s' "${dir:-${CARGO_TARGET_DIR:-target}}"
}

# --- the test virtualenvs (tests/otel, tests/chdb) --------------------------------

# The repository this library belongs to.
_ZL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# The virtualenv scripts/install-deps builds from tests/otel/requirements.txt, for
# the OTLP client tests. Under target/ so that a fresh clone (CI) builds it anew and
# `cargo clean` removes it; ZERO_LOGS_OTEL_VENV puts it elsewhere.
otel_venv_dir() { printf '%s' "${ZERO_LOGS_OTEL_VENV:-$_ZL_ROOT/target/otel-venv}"; }

# The virtualenv scripts/install-deps builds from tests/chdb/requirements.txt: the
# current ClickHouse engine (chdb-core) behind tests/chdb/server.py. Same rules;
# ZERO_LOGS_CHDB_VENV puts it elsewhere.
chdb_venv_dir() { printf '%s' "${ZERO_LOGS_CHDB_VENV:-$_ZL_ROOT/target/chdb-venv}"; }

# --- ports ----------------------------------------------------------------------

_PICKED_PORTS=" "

# True if something accepts connections on 127.0.0.1:$1.
port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A loopback TCP port nothing listens on, below the usual ephemeral range, never the
# same twice in one script. Racy by nature: callers retry if the bind fails.
free_port() {
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + RANDOM % 12000))
        [[ "$_PICKED_PORTS" == *" $port "* ]] && continue
        port_in_use "$port" && continue
        _PICKED_PORTS+="$port "
        printf '%s' "$port"
        return 0
    done
    die "found no free loopback port"
}

# --- processes ------------------------------------------------------------------

# stop_pid PID LABEL [TIMEOUT_S]: SIGTERM, wait up to TIMEOUT_S (default 30), then
# SIGKILL. Only for children of this shell.
stop_pid() {
    local pid=$1 label=$2 timeout=${3:-30} i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" 2>/dev/null || true
        return 0
    }
    log "stopping $label (pid $pid, SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$label (pid $pid) still running after ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# HTTP status code of a GET (000 when nothing answered).
http_status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

# --- private ClickHouse ---------------------------------------------------------
#
# ch_start DIR: starts Debian's clickhouse-server (18.16 or newer) with a config of
# its own in DIR (data, tmp, logs), on free loopback ports, as the current user, in a
# session of its own (Ctrl-C in the terminal reaches this script only, which then
# stops it in order). Sets CH_PID, CH_HTTP_PORT, CH_TCP_PORT, CH_URL.

CH_PID='' CH_HTTP_PORT='' CH_TCP_PORT='' CH_URL=''

_ch_write_config() {
    local dir=$1 token=$2
    cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Private ClickHouse for zero-logs scripts; removed on exit. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>50M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <interserver_http_port>$3</interserver_http_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>/etc/clickhouse-server/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <!-- Lets ch_start tell its own server from anyone else's on the same port. -->
    <macros><zero_logs_instance>$token</zero_logs_instance></macros>
</yandex>
EOF
}

# ch_query SQL: runs SQL on the private server (POST to the HTTP interface).
ch_query() {
    curl -sS --fail-with-body -m 30 --data-binary "$1" "$CH_URL/" 2>&1
}

# With autogroup scheduling (kernel.sched_autogroup_enabled=1, the default) every
# session is one scheduling entity and CPU is shared between sessions first, whatever
# the nice levels inside them: ClickHouse runs under setsid, so its process nice only
# ranks it against itself. The session's own nice is /proc/PID/autogroup.
_ch_autogroup_nice() {
    [[ -n "${CH_NICE:-}" && -w "/proc/$CH_PID/autogroup" ]] || return 0
    if echo "$CH_NICE" >"/proc/$CH_PID/autogroup" 2>/dev/null; then
        log "ClickHouse session at nice $CH_NICE ($(cat "/proc/$CH_PID/autogroup"))"
    else
        log "cannot set the nice of ClickHouse's session (autogroup); process nice only"
    fi
}

# CH_IDLE=1 (scripts/bench --clickhouse-idle) puts ClickHouse in a cgroup of its own
# with cpu.idle=1, which is what systemd's CPUWeight=idle does for a service: any
# other task that wakes up preempts it at once, and it gets only the CPU nobody else
# wants. Needs a writable cgroup cpu controller (v1 /sys/fs/cgroup/cpu or the v2 root).
CH_CGROUP=''
_ch_idle_cgroup() {
    [[ "${CH_IDLE:-0}" == 1 ]] || return 0
    local base
    for base in /sys/fs/cgroup/cpu /sys/fs/cgroup; do
        [[ -f "$base/cpu.idle" || -f "$base/cgroup.subtree_control" ]] && break
        base=''
    done
    [[ -n "$base" && -w "$base" ]] ||
        die "--clickhouse-idle needs a writable cpu cgroup (tried /sys/fs/cgroup/cpu, /sys/fs/cgroup)"
    CH_CGROUP="$base/zero-logs-bench-$$-clickhouse"
    mkdir "$CH_CGROUP" || die "cannot create cgroup $CH_CGROUP"
    echo 1 >"$CH_CGROUP/cpu.idle" || die "cannot set cpu.idle in $CH_CGROUP (kernel < 5.15?)"
    echo "$CH_PID" >"$CH_CGROUP/cgroup.procs" || die "cannot move ClickHouse ($CH_PID) into $CH_CGROUP"
    log "ClickHouse in idle cgroup $CH_CGROUP (cpu.idle=1, like CPUWeight=idle)"
}

_ch_idle_cgroup_remove() {
    [[ -n "$CH_CGROUP" ]] || return 0
    rmdir "$CH_CGROUP" 2>/dev/null || warn "could not remove cgroup $CH_CGROUP"
    CH_CGROUP=''
}

ch_start() {
    local dir=$1 attempt token i
    command -v clickhouse-server >/dev/null 2>&1 ||
        die "clickhouse-server not found: run scripts/install-deps"
    mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
    token="zl$$x$RANDOM$RANDOM"
    for attempt in 1 2 3 4 5; do
        CH_HTTP_PORT=$(free_port)
        CH_TCP_PORT=$(free_port)
        _ch_write_config "$dir" "$token" "$(free_port)"
        CH_URL="http://127.0.0.1:$CH_HTTP_PORT"
        : >"$dir/log/clickhouse-server.err.log"
        # CH_NICE=N runs it at that nice level (scripts/bench --clickhouse-nice); see
        # _ch_autogroup_nice for why the process nice alone is not enough.
        local prefix=()
        [[ -z "${CH_NICE:-}" ]] || prefix=(nice -n "$CH_NICE")
        setsid ${prefix[@]+"${prefix[@]}"} clickhouse-server --config-file="$dir/config.xml" \
            >"$dir/log/stdout.log" 2>&1 </dev/null &
        CH_PID=$!
        for ((i = 0; i < 600; i++)); do
            if ! kill -0 "$CH_PID" 2>/dev/null; then
                wait "$CH_PID" 2>/dev/null || true
                CH_PID=''
                break
            fi
            if [[ "$(curl -s -m 2 --data-binary \
                "SELECT substitution FROM system.macros WHERE macro = 'zero_logs_instance'" \
                "$CH_URL/" 2>/dev/null)" == "$token" ]]; then
                log "ClickHouse $(ch_query 'SELECT version()') up: $CH_URL (tcp $CH_TCP_PORT, pid $CH_PID, data $dir)"
                _ch_autogroup_nice
                _ch_idle_cgroup
                return 0
            fi
            sleep 0.1
        done
        if [[ -n "$CH_PID" ]]; then
            stop_pid "$CH_PID" "ClickHouse" 10
            CH_PID=''
            tail -n 20 "$dir/log/clickhouse-server.err.log" "$dir/log/stdout.log" >&2 || true
            die "ClickHouse did not answer within 60 s"
        fi
        if grep -q 'Address already in use' "$dir/log/clickhouse-server.err.log" "$dir/log/stdout.log" 2>/dev/null; then
            warn "ClickHouse port taken meanwhile (attempt $attempt), trying other ports"
            continue
        fi
        tail -n 30 "$dir/log/clickhouse-server.err.log" "$dir/log/stdout.log" >&2 || true
        die "clickhouse-server exited during start-up (logs above; config $dir/config.xml)"
    done
    die "could not start ClickHouse on free ports after 5 attempts"
}

ch_stop() {
    if [[ -n "$CH_PID" ]]; then
        stop_pid "$CH_PID" "ClickHouse" 30
        CH_PID=''
    fi
    _ch_idle_cgroup_remove
}

# --- zero-logs worker -----------------------------------------------------------
#
# worker_start BIN PORT LOG [ENV=VALUE...]: runs `BIN serve --listen 127.0.0.1:PORT`
# against the private ClickHouse, in a session of its own, output to LOG (or to this
# script's stderr, prefixed by a sed that ignores Ctrl-C, when LOG is "-"). Waits for GET /health = 200. Sets
# WORKER_PID and WORKER_URL. Returns 2 if the port was taken (caller may retry).

WORKER_PID='' WORKER_URL=''

worker_start() {
    local bin=$1 port=$2 logfile=$3 i
    shift 3
    WORKER_URL="http://127.0.0.1:$port"
    if [[ "$logfile" == - ]]; then
        env -u CLICKHOUSE_USER -u CLICKHOUSE_PASSWORD CLICKHOUSE_URL="$CH_URL" "$@" setsid "$bin" serve --listen "127.0.0.1:$port" \
            </dev/null 2> >(trap '' INT && exec sed -u 's/^/[worker] /' >&2) >&2 &
    else
        env -u CLICKHOUSE_USER -u CLICKHOUSE_PASSWORD CLICKHOUSE_URL="$CH_URL" "$@" setsid "$bin" serve --listen "127.0.0.1:$port" \
            </dev/null >"$logfile" 2>&1 &
    fi
    WORKER_PID=$!
    for ((i = 0; i < 600; i++)); do
        if ! kill -0 "$WORKER_PID" 2>/dev/null; then
            local rc=0
            wait "$WORKER_PID" 2>/dev/null || rc=$?
            WORKER_PID=''
            if [[ "$logfile" != - ]]; then
                tail -n 30 "$logfile" >&2 || true
                if grep -qi 'address already in use' "$logfile"; then return 2; fi
            fi
            die "zero-logs worker exited during start-up (exit status $rc)"
        fi
        # Still alive after answering: the answer came from this worker, not from
        # another process that holds the port this one failed to bind.
        if [[ "$(http_status "$WORKER_URL/health")" == 200 ]] && sleep 0.2 &&
            kill -0 "$WORKER_PID" 2>/dev/null; then
            log "zero-logs worker up: $WORKER_URL (pid $WORKER_PID)"
            return 0
        fi
        sleep 0.1
    done
    stop_pid "$WORKER_PID" "zero-logs worker" 10
    WORKER_PID=''
    if [[ "$logfile" != - ]]; then tail -n 30 "$logfile" >&2; fi
    die "zero-logs worker did not report healthy (GET $WORKER_URL/health) within 60 s"
}

worker_stop() {
    if [[ -n "$WORKER_PID" ]]; then
        stop_pid "$WORKER_PID" "zero-logs worker" 30
        WORKER_PID=''
    fi
}
