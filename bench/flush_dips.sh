#!/usr/bin/env bash
# Dips at flushes (issue 12): a long SET run at pipeline 16 against ringkv and
# then redis-server (AOF everysec, no RDB, as in server_vs_redis.sh), each
# sampled every 100 ms from INFO while it runs, and one chart of both.
#
# Usage:
#   bench/flush_dips.sh                      (60 s per server, chart in docs/figures/)
#   DURATION=20 OUT=/tmp/dips.svg bench/flush_dips.sh
#
# Environment: DURATION (60 s of load per server), KEYSPACE (10 000 000 random
# keys: most SETs insert, so the memtable fills and flushes and compactions run
# throughout), CLIENTS (50), PIPELINE (16), OUT (the SVG,
# docs/figures/set_throughput_windows.svg), RINGKV_BIN / RINGKV_REVISION (a
# given build instead of building this tree), BENCH_DIR.
#
# Prints, per server, the 100 ms windows of the run, their median ops/s, how
# many fell below 50% of that median (the target: none), the lowest window and
# the flushes and compactions that ended during the run. The servers run one
# after the other, never at once; the sampler (bench/throughput_windows.py)
# adds two INFO calls per window to each alike.
set -euo pipefail

DURATION=${DURATION:-60}
KEYSPACE=${KEYSPACE:-10000000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-16}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/../docs/figures/set_throughput_windows.svg}

source "$HERE/server_lib.sh"

ensure_tools
make_work_dir
prepare_ringkv

# run_side KIND: starts a server of KIND, loads it with SET for DURATION seconds
# while sampling it, stops it.
run_side() {
    local kind=$1 port pid sampler
    port=$(free_port)
    start_server "$kind" "$WORK/run-$kind" "$port"
    pid=$SERVER_PID
    wait_pong "$port"
    python3 "$HERE/throughput_windows.py" sample "$port" "$WORK/$kind.csv" &
    sampler=$!
    sleep 0.5
    log "$kind: SET -P $PIPELINE for ${DURATION}s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    timeout --signal=INT "$DURATION" redis-benchmark -p "$port" -t set -P "$PIPELINE" \
        -c "$CLIENTS" -d 100 -r "$KEYSPACE" -n 2000000000 -q >/dev/null 2>&1 || true
    sleep 0.5
    kill -TERM "$sampler"
    wait "$sampler" || true
    kill -TERM "$pid"
    wait_exit "$pid"
}

run_side ringkv
run_side redis
mkdir -p "$(dirname "$OUT")"
echo "ringkv $RINGKV_REVISION, redis $(redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/'), ${DURATION}s each, SET -P $PIPELINE, $CLIENTS clients, 100-byte values, $KEYSPACE random keys; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$HERE/throughput_windows.py" chart "$OUT" "ringkv=$WORK/ringkv.csv" "redis=$WORK/redis.csv"
echo "chart: $OUT"
