#!/usr/bin/env bash
# Before/after in one run (issue 6: "each change that claims a speed-up shows
# the before/after in the same run"): two ringkv builds or settings, A and B,
# side by side on loopback with the same keys loaded, the same redis-benchmark
# workloads run on each in alternation, ROUNDS times, medians printed with the
# ratio B/A.
#
# Usage:
#   A_BIN=/tmp/ringkv-before B_BIN=/tmp/ringkv-after bench/ringkv_ab.sh
#   A_BIN=x A_ARGS="--row-cache-bytes 0" B_BIN=x bench/ringkv_ab.sh     (a setting)
#
# Environment: A_BIN, B_BIN (required), A_ARGS, B_ARGS (extra flags), ROUNDS
# (3), WORKLOADS ("SET GET INCR"; MSET also works), PIPELINES ("1 16"),
# KEYSPACE (1000000), CLIENTS (50), REQUESTS_P1 (200000), REQUESTS_PN
# (1000000; MSET runs a quarter of these, as in server_vs_redis.sh: each
# command sets 10 keys, and its ops/s are MSET commands), BENCH_DIR.
set -euo pipefail

: "${A_BIN:?set A_BIN}" "${B_BIN:?set B_BIN}"
A_ARGS=${A_ARGS:-}
B_ARGS=${B_ARGS:-}
ROUNDS=${ROUNDS:-3}
WORKLOADS=${WORKLOADS:-"SET GET INCR"}
PIPELINES=${PIPELINES:-"1 16"}
KEYSPACE=${KEYSPACE:-1000000}
CLIENTS=${CLIENTS:-50}
REQUESTS_P1=${REQUESTS_P1:-200000}
REQUESTS_PN=${REQUESTS_PN:-1000000}

source "$(dirname "$0")/server_lib.sh"

ensure_tools
make_work_dir

# start SIDE BIN ARGS: a ringkv of one side; prints "pid port".
start_side() {
    local side=$1 bin=$2 args=$3 port
    port=$(free_port)
    RINGKV=$bin RINGKV_EXTRA_ARGS=$args start_server ringkv "$WORK/$side" "$port"
    echo "$SERVER_PID $port"
}

read -r a_pid a_port < <(start_side a "$A_BIN" "$A_ARGS")
STARTED_PIDS+=("$a_pid")
read -r b_pid b_port < <(start_side b "$B_BIN" "$B_ARGS")
STARTED_PIDS+=("$b_pid")
wait_pong "$a_port"
wait_pong "$b_port"
log "A: $A_BIN $A_ARGS (port $a_port); B: $B_BIN $B_ARGS (port $b_port); $(uptime | sed 's/^ *//')"
load_keys "$a_port" "$KEYSPACE" x
load_keys "$b_port" "$KEYSPACE" x
wait_idle "$a_pid" 120
wait_idle "$b_pid" 120

results="$WORK/ab.tsv"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
    order=(a b)
    [ $((round % 2)) = 0 ] && order=(b a)
    for pipeline in $PIPELINES; do
        n=$REQUESTS_PN
        [ "$pipeline" = 1 ] && n=$REQUESTS_P1
        for workload in $WORKLOADS; do
            requests=$n
            [ "$workload" = MSET ] && requests=$((n / 4))
            for side in "${order[@]}"; do
                port=$a_port pid=$a_pid
                [ "$side" = b ] && port=$b_port pid=$b_pid
                wait_idle "$a_pid" 60
                wait_idle "$b_pid" 60
                line=$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -P "$pipeline" -d 100 \
                    -r "$KEYSPACE" -n "$requests" -t "$(echo "$workload" | tr 'A-Z' 'a-z')" --csv 2>/dev/null \
                    | awk -F'","' 'NR == 2 { print $2, $7 }')
                printf '%s\t%s\t%s\t%s\t%s\n' "$workload" "$pipeline" "$side" "$round" "$line" >>"$results"
                log "  round $round $side $workload -P $pipeline: $line (ops/s p99)"
            done
        done
    done
done

echo "| workload | pipeline | A ops/s (p99 ms) | B ops/s (p99 ms) | B/A |"
echo "|---|--:|--:|--:|--:|"
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    workload, pipeline, side, _round, rest = line.rstrip("\n").split("\t")
    rps, p99 = (float(x.strip('"')) for x in rest.split())
    rows.setdefault((workload, pipeline), {}).setdefault(side, []).append((rps, p99))
for (workload, pipeline), sides in rows.items():
    a = statistics.median(r for r, _ in sides["a"]); b = statistics.median(r for r, _ in sides["b"])
    a99 = statistics.median(p for _, p in sides["a"]); b99 = statistics.median(p for _, p in sides["b"])
    print(f"| {workload} | {pipeline} | {a:,.0f} ({a99:.3f}) | {b:,.0f} ({b99:.3f}) | {b / a:.2f}x |")
PY
