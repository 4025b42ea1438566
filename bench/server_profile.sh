#!/usr/bin/env bash
# Profiles ringkv (perf, cpu-clock with call graphs) under redis-benchmark's
# SET and GET at pipeline 16, the workloads of bench/server_vs_redis.sh, and
# prints the top self-time functions of each (WORKLOADS picks others, e.g.
# "incr mset").
#
# Usage:
#   bench/server_profile.sh
#   SECONDS_PER_PROFILE=20 OUT_DIR=/tmp/ringkv-prof bench/server_profile.sh
#
# Environment (all optional): KEYSPACE (1000000), CLIENTS (50), VALUE_BYTES
# (100), PIPELINE (16), SECONDS_PER_PROFILE (15), TOP (25 lines per report),
# WORKLOADS ("set get": redis-benchmark -t names),
# OUT_DIR (keeps perf.data files and full reports; default: removed at exit),
# RINGKV_BIN, BENCH_DIR as for server_vs_redis.sh.
set -euo pipefail

KEYSPACE=${KEYSPACE:-1000000}
CLIENTS=${CLIENTS:-50}
VALUE_BYTES=${VALUE_BYTES:-100}
PIPELINE=${PIPELINE:-16}
SECONDS_PER_PROFILE=${SECONDS_PER_PROFILE:-15}
TOP=${TOP:-25}
OUT_DIR=${OUT_DIR:-}
WORKLOADS=${WORKLOADS:-"set get"}

source "$(dirname "$0")/server_lib.sh"

PERF=1 ensure_tools
make_work_dir
prepare_ringkv
DEST=${OUT_DIR:-$WORK/profile}
mkdir -p "$DEST"

port=$(free_port)
start_server ringkv "$WORK/ringkv" "$port"
pid=$SERVER_PID
wait_pong "$port"
log "ringkv $RINGKV_REVISION pid $pid port $port; loading $KEYSPACE keys"
load_keys "$port" "$KEYSPACE" x
wait_idle "$pid" 120

for workload in $WORKLOADS; do
    # Enough requests to outlast the profile; the benchmark is stopped after it.
    redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -P "$PIPELINE" -d "$VALUE_BYTES" \
        -r "$KEYSPACE" -n 100000000 -t "$workload" -q >"$WORK/bench-$workload.out" 2>&1 &
    bench_pid=$!
    sleep 2 # connections up, steady state
    log "uptime before $workload profile: $(uptime)"
    perf record -g -F 999 -p "$pid" -o "$DEST/perf-$workload.data" -- sleep "$SECONDS_PER_PROFILE" \
        2>"$WORK/perf-$workload.err" || { cat "$WORK/perf-$workload.err" >&2; exit 1; }
    kill "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
    wait_idle "$pid" 120
    perf report -i "$DEST/perf-$workload.data" --no-children --stdio -g none \
        --sort symbol --percent-limit 0.3 >"$DEST/report-$workload.txt" 2>/dev/null
    perf report -i "$DEST/perf-$workload.data" --no-children --stdio -g none \
        --sort comm >"$DEST/report-$workload-threads.txt" 2>/dev/null
    perf report -i "$DEST/perf-$workload.data" --children --stdio -g none \
        --sort symbol --percent-limit 2 >"$DEST/report-$workload-inclusive.txt" 2>/dev/null
    echo "=== ${workload^^} -P $PIPELINE: self time by thread ==="
    grep -v '^#' "$DEST/report-$workload-threads.txt" | grep . | head -10
    echo "=== ${workload^^} -P $PIPELINE: top self time by function ==="
    grep -v '^#' "$DEST/report-$workload.txt" | grep . | head -"$TOP"
done
redis-cli -p "$port" SHUTDOWN >/dev/null 2>&1 || true
wait_exit "$pid"
[ -n "$OUT_DIR" ] && log "perf data and reports in $OUT_DIR"
