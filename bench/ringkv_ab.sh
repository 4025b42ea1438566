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
#   A_BIN=/tmp/glibc B_BIN=/tmp/mimalloc C_BIN=/tmp/jemalloc REDIS=1 MEMORY=1 bench/ringkv_ab.sh
#
# Environment: A_BIN, B_BIN (required), A_ARGS, B_ARGS (extra flags), C_BIN and
# C_ARGS (a third build, optional), REDIS=1 (also a redis-server, set up as in
# server_vs_redis.sh: AOF everysec, no RDB; ratios against it are printed too),
# MEMORY=1 (after the rounds: each server's RSS, then FLUSHALL, then its RSS
# once it is idle and 3 s more have passed, for the memory tick), ROUNDS
# (3), WORKLOADS ("SET GET INCR"; MSET also works), PIPELINES ("1 16"),
# KEYSPACE (1000000), CLIENTS (50), REQUESTS_P1 (200000), REQUESTS_PN
# (1000000; MSET runs a quarter of these, as in server_vs_redis.sh: each
# command sets 10 keys, and its ops/s are MSET commands), BENCH_DIR.
# The sides run in turn, the order rotated by one each round, so that a
# machine busy with something else hits every side alike; medians per side.
# "CPU us/req" is the server's user+system CPU over a run divided by its
# requests (keys, for MSET: 10 a command).
set -euo pipefail

: "${A_BIN:?set A_BIN}" "${B_BIN:?set B_BIN}"
A_ARGS=${A_ARGS:-}
B_ARGS=${B_ARGS:-}
C_BIN=${C_BIN:-}
C_ARGS=${C_ARGS:-}
REDIS=${REDIS:-0}
MEMORY=${MEMORY:-0}
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

# Sides: name, pid, port.
SIDES=(a b)
declare -A PID PORT
read -r PID[a] PORT[a] < <(start_side a "$A_BIN" "$A_ARGS")
STARTED_PIDS+=("${PID[a]}")
read -r PID[b] PORT[b] < <(start_side b "$B_BIN" "$B_ARGS")
STARTED_PIDS+=("${PID[b]}")
if [ -n "$C_BIN" ]; then
    SIDES+=(c)
    read -r PID[c] PORT[c] < <(start_side c "$C_BIN" "$C_ARGS")
    STARTED_PIDS+=("${PID[c]}")
fi
if [ "$REDIS" = 1 ]; then
    SIDES+=(redis)
    PORT[redis]=$(free_port)
    start_server redis "$WORK/redis" "${PORT[redis]}"
    PID[redis]=$SERVER_PID
fi
for side in "${SIDES[@]}"; do wait_pong "${PORT[$side]}"; done
log "A: $A_BIN $A_ARGS (port ${PORT[a]}); B: $B_BIN $B_ARGS (port ${PORT[b]}); C: ${C_BIN:-none} $C_ARGS; redis: $REDIS; $(uptime | sed 's/^ *//')"
for side in "${SIDES[@]}"; do load_keys "${PORT[$side]}" "$KEYSPACE" x; done
[ "$REDIS" = 1 ] && redis_rewrite_aof "${PORT[redis]}"
wait_idle_all() { local side; for side in "${SIDES[@]}"; do wait_idle "${PID[$side]}" "$1"; done; }
wait_idle_all 120

results="$WORK/ab.tsv"
: >"$results"
ticks_per_second=$(getconf CLK_TCK)
for round in $(seq 1 "$ROUNDS"); do
    # Rotate the order by one each round (two sides: alternate).
    shift_by=$(((round - 1) % ${#SIDES[@]}))
    order=("${SIDES[@]:$shift_by}" "${SIDES[@]:0:$shift_by}")
    for pipeline in $PIPELINES; do
        n=$REQUESTS_PN
        [ "$pipeline" = 1 ] && n=$REQUESTS_P1
        for workload in $WORKLOADS; do
            requests=$n
            [ "$workload" = MSET ] && requests=$((n / 4))
            for side in "${order[@]}"; do
                port=${PORT[$side]} pid=${PID[$side]}
                wait_idle_all 60
                before=$(cpu_ticks "$pid")
                line=$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -P "$pipeline" -d 100 \
                    -r "$KEYSPACE" -n "$requests" -t "$(echo "$workload" | tr 'A-Z' 'a-z')" --csv 2>/dev/null \
                    | awk -F'","' 'NR == 2 { print $2, $7 }')
                after=$(cpu_ticks "$pid")
                keys=$requests
                [ "$workload" = MSET ] && keys=$((requests * 10))
                cpu_us=$(python3 -c "print(f'{($after - $before) / $ticks_per_second * 1e6 / $keys:.2f}')")
                printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$pipeline" "$side" "$round" "$line" "$cpu_us" >>"$results"
                log "  round $round $side $workload -P $pipeline: $line (ops/s p99), $cpu_us CPU us/req"
            done
        done
    done
done

if [ "$MEMORY" = 1 ]; then
    memory="$WORK/memory.tsv"
    : >"$memory"
    wait_idle_all 60
    for side in "${SIDES[@]}"; do
        loaded=$(rss_bytes "${PID[$side]}")
        keys=$(dbsize "${PORT[$side]}")
        redis-cli -p "${PORT[$side]}" FLUSHALL >/dev/null
        wait_idle "${PID[$side]}" 60
        sleep 3
        printf '%s\t%s\t%s\t%s\n' "$side" "$keys" "$loaded" "$(rss_bytes "${PID[$side]}")" >>"$memory"
    done
fi

python3 - "$results" "${SIDES[@]}" <<'PY'
import statistics, sys
path, sides = sys.argv[1], sys.argv[2:]
names = {"a": "A", "b": "B", "c": "C", "redis": "Redis"}
rows = {}
for line in open(path):
    workload, pipeline, side, _round, rest, cpu = line.rstrip("\n").split("\t")
    rps, p99 = (float(x.strip('"')) for x in rest.split())
    rows.setdefault((workload, pipeline), {}).setdefault(side, []).append((rps, p99, float(cpu)))
builds = [s for s in sides if s != "redis"]
ratios = [(s, "a") for s in builds[1:]] + ([(s, "redis") for s in builds] if "redis" in sides else [])
head = ["workload", "pipeline"] + [f"{names[s]} ops/s (p99 ms)" for s in sides] + [f"{names[x]}/{names[y]}" for x, y in ratios]
print("| " + " | ".join(head) + " |")
print("|---|--:|" + "--:|" * (len(head) - 2))
cpu_lines = []
for (workload, pipeline), got in rows.items():
    med = {s: (statistics.median(r[0] for r in got[s]), statistics.median(r[1] for r in got[s]),
               statistics.median(r[2] for r in got[s])) for s in sides}
    cells = [workload, pipeline] + [f"{med[s][0]:,.0f} ({med[s][1]:.3f})" for s in sides]
    cells += [f"{med[x][0] / med[y][0]:.2f}x" for x, y in ratios]
    print("| " + " | ".join(cells) + " |")
    cpu_lines.append("| " + " | ".join([workload, pipeline] + [f"{med[s][2]:.2f}" for s in sides]) + " |")
print()
print("| workload | pipeline | " + " | ".join(f"{names[s]} CPU us/req" for s in sides) + " |")
print("|---|--:|" + "--:|" * len(sides))
print("\n".join(cpu_lines))
PY
if [ "$MEMORY" = 1 ]; then
    echo
    echo "| side | keys | RSS loaded (MiB) | RSS after FLUSHALL (MiB) |"
    echo "|---|--:|--:|--:|"
    awk -F'\t' '{ printf "| %s | %s | %.0f | %.0f |\n", $1, $2, $3 / 1048576, $4 / 1048576 }' "$memory"
fi
