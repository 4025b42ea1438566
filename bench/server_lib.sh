# Shared by bench/server_vs_redis.sh and bench/server_profile.sh: installing
# the tools, starting and stopping servers this script owns, and reading their
# state. Sourced, not run. Every server started here is recorded in
# STARTED_PIDS and only those are ever signalled.

SERVER_LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp}
STARTED_PIDS=()
WORK=""

log() { printf '%s\n' "$*" >&2; }

apt_install() {
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    # `apt-get update` only when the install fails (stale or missing lists).
    $sudo apt-get install -y "$@" || { $sudo apt-get update && $sudo apt-get install -y "$@"; }
}

# Installs redis-server, redis-tools, python3 (and perf with PERF=1) when missing.
ensure_tools() {
    command -v redis-server >/dev/null || apt_install redis-server
    if ! command -v redis-benchmark >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-tools
    fi
    command -v python3 >/dev/null || apt_install python3
    if [ "${PERF:-0}" = 1 ] && ! command -v perf >/dev/null; then
        apt_install linux-perf
    fi
    # --csv with latency percentiles needs redis-benchmark 7.
    local major
    major=$(redis-benchmark --version | sed -E 's/^redis-benchmark ([0-9]+).*/\1/')
    if [ "$major" -lt 7 ]; then
        log "redis-benchmark $major.x has no latency percentiles in --csv; need 7 or later"
        exit 1
    fi
}

# Builds ringkv in release and copies the binary into $WORK, so a rebuild by
# someone else during the run cannot swap the binary under test.
# RINGKV_BIN=path skips the build and uses that binary (RINGKV_REVISION=...
# names the commit it was built from, for the report).
prepare_ringkv() {
    if [ -n "${RINGKV_BIN:-}" ]; then
        RINGKV="$RINGKV_BIN"
        # The work tree may not be what that binary was built from.
        RINGKV_REVISION=${RINGKV_REVISION:-"given binary, revision not known (set RINGKV_REVISION)"}
        return
    fi
    (cd "$SERVER_LIB_ROOT" && cargo build --release --quiet -p ringkv)
    cp "$SERVER_LIB_ROOT/target/release/ringkv" "$WORK/ringkv"
    RINGKV="$WORK/ringkv"
    RINGKV_REVISION=$(cd "$SERVER_LIB_ROOT" && git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
}

make_work_dir() {
    WORK=$(mktemp -d "$BENCH_DIR/server-vs-redis.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# Stops every server this script started that is still running (SIGTERM, then
# SIGKILL after 20 s), by PID only, and removes the work directory.
cleanup() {
    local pid waited
    for pid in "${STARTED_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            waited=0
            while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 200 ]; do
                sleep 0.1
                waited=$((waited + 1))
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    [ -n "$WORK" ] && rm -rf "$WORK"
}

# A loopback TCP port nobody listens on right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_server KIND DIR PORT: starts redis or ringkv in the background and sets
# SERVER_PID. Equivalent durability: Redis appends every write to its AOF and
# fsyncs it once a second, with no RDB snapshots; ringkv appends every write to
# its WAL and fsyncs it once a second. APPENDFSYNC=always (or no) sets both to
# that policy instead.
start_server() {
    local kind=$1 dir=$2 port=$3
    mkdir -p "$dir"
    case $kind in
        redis)
            redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
                --appendonly yes --appendfsync "${APPENDFSYNC:-everysec}" --save "" \
                --enable-debug-command local --daemonize no \
                --logfile "$dir/redis.log" >>"$dir/redis.stdout" 2>&1 &
            ;;
        ringkv)
            # RINGKV_EXTRA_ARGS: more flags for ringkv (e.g. a memory budget).
            # shellcheck disable=SC2086
            "$RINGKV" --port "$port" --bind 127.0.0.1 --dir "$dir/data" --no-admin \
                --appendfsync "${APPENDFSYNC:-everysec}" --loglevel warn ${RINGKV_EXTRA_ARGS:-} >>"$dir/ringkv.log" 2>&1 &
            ;;
        *) log "unknown server kind $kind"; exit 1 ;;
    esac
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
}

# Waits (at most 600 s) until the server on PORT answers PING with PONG.
wait_pong() {
    local port=$1 tries=0
    until [ "$(redis-cli -p "$port" PING 2>/dev/null || true)" = PONG ]; do
        sleep 0.01
        tries=$((tries + 1))
        if [ "$tries" -gt 60000 ]; then log "no PONG on port $port"; exit 1; fi
    done
}

# Waits for PID to exit (it must be one of ours).
wait_exit() {
    local pid=$1
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    wait "$pid" 2>/dev/null || true
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Waits until PID uses under 4% of a core over half a second (background
# flushes, compactions or AOF rewrites done), at most MAX seconds (default 60),
# so one server's leftover work does not land on the other's measurement.
wait_idle() {
    local pid=$1 max=${2:-60} before after waited=0
    while [ "$waited" -lt $((max * 2)) ]; do
        before=$(cpu_ticks "$pid")
        sleep 0.5
        after=$(cpu_ticks "$pid")
        [ $((after - before)) -le 2 ] && return 0
        waited=$((waited + 1))
    done
    log "pid $pid still busy after ${max}s; going on"
}

rss_bytes() { awk '/^VmRSS:/ { printf "%d\n", $2 * 1024 }' "/proc/$1/status"; }

dbsize() { redis-cli -p "$1" DBSIZE; }

# Loads keys key:000000000000 .. key:(N-1) with SETs through redis-cli --pipe.
load_keys() {
    local port=$1 count=$2 values=$3
    python3 "$SERVER_LIB_ROOT/bench/server_gen_sets.py" "$count" --values="$values" \
        | redis-cli -p "$port" --pipe >"$WORK/pipe.log" 2>&1 \
        || { cat "$WORK/pipe.log" >&2; exit 1; }
    grep -q 'errors: 0' "$WORK/pipe.log" || { cat "$WORK/pipe.log" >&2; exit 1; }
}

# Redis 7 AOF: rewrite the AOF (RDB-preamble base file) and wait until done.
redis_rewrite_aof() {
    local port=$1
    redis-cli -p "$port" BGREWRITEAOF >/dev/null
    sleep 0.2
    while redis-cli -p "$port" INFO persistence \
        | grep -Eq '^aof_rewrite_(in_progress|scheduled):1'; do
        sleep 0.2
    done
}
