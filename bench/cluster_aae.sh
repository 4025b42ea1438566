#!/usr/bin/env bash
# Issue 14, anti-entropy's cost: a 3-node cluster (N=3, R=2, W=2) loaded with
# KEYS keys (so every node holds all of them), one node's store wiped (killed,
# its data files removed, restarted on the same ports: a replaced disk), and
# anti-entropy left to refill it. Prints the time the refill took, the keys
# anti-entropy repaired and the record bytes it moved, and the client GET
# throughput through another node before, during and after the repair.
#
# Usage:
#   bench/cluster_aae.sh
#   KEYS=1000000 OUT=/tmp/aae.md bench/cluster_aae.sh
#
# Environment (all optional):
#   KEYS               keys loaded (default 1000000)
#   VALUE_BYTES        value size of the GET load (default 100; loaded values are 100 bytes)
#   AAE_INTERVAL       cluster-anti-entropy-interval, seconds (default 5)
#   AAE_KEYS_PER_PASS  cluster-anti-entropy-keys-per-pass (default 100000)
#   BENCH_REQUESTS     GETs per throughput sample (default 100000)
#   CLIENTS            redis-benchmark connections (default 50)
#   BASE_PORT          client port of node 1 (default 7101); nodes use
#                      BASE_PORT..+2, internode ports those + 10000, admin
#                      (metrics) ports those + 20000; all must be free
#   RINGKV_BIN, BENCH_DIR, OUT   as in bench/cluster_bench.sh
#
# The GET load runs at the default R=2 through node 1: a read that asks the
# wiped node repairs the key it read too (read repair), so the report gives
# anti-entropy's own count of keys repaired next to the total. Results are not
# asserted: they depend on the machine and its load.
set -euo pipefail

KEYS=${KEYS:-1000000}
VALUE_BYTES=${VALUE_BYTES:-100}
AAE_INTERVAL=${AAE_INTERVAL:-5}
AAE_KEYS_PER_PASS=${AAE_KEYS_PER_PASS:-100000}
BENCH_REQUESTS=${BENCH_REQUESTS:-100000}
CLIENTS=${CLIENTS:-50}
BASE_PORT=${BASE_PORT:-7101}
OUT=${OUT:-}

source "$(dirname "$0")/server_lib.sh"

ensure_tools
make_work_dir
prepare_ringkv
REPORT="$WORK/report.md"
: >"$REPORT"
report() { printf '%s\n' "$*" | tee -a "$REPORT"; }

port_free() { ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for i in 0 1 2; do
    for p in $((BASE_PORT + i)) $((BASE_PORT + i + 10000)) $((BASE_PORT + i + 20000)); do
        port_free "$p" || { log "port $p is in use; set BASE_PORT"; exit 1; }
    done
done

PIDS=()
# start_node I [FLAGS...]: node I (0..2) on its fixed ports.
start_node() {
    local i=$1
    shift
    local port=$((BASE_PORT + i))
    mkdir -p "$WORK/n$i"
    "$RINGKV" --port "$port" --cluster-port $((port + 10000)) --bind 127.0.0.1 \
        --dir "$WORK/n$i/data" --admin-port $((port + 20000)) --admin-bind 127.0.0.1 \
        --appendfsync everysec --loglevel info --cluster-enabled yes \
        --cluster-anti-entropy-interval "$AAE_INTERVAL" \
        --cluster-anti-entropy-keys-per-pass "$AAE_KEYS_PER_PASS" "$@" \
        >>"$WORK/n$i/ringkv.log" 2>&1 &
    PIDS[i]=$!
    STARTED_PIDS+=("$!")
    wait_pong "$port"
}

cluster_field() { # PORT FIELD
    redis-cli -p "$1" CLUSTER INFO | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'
}

metric_sum() { # NAME: summed over the three nodes' /metrics
    local i total=0 value
    for i in 0 1 2; do
        value=$(curl -s "http://127.0.0.1:$((BASE_PORT + i + 20000))/metrics" \
            | awk -v n="$1" '$1 == n { print $2 }')
        total=$((total + ${value:-0}))
    done
    echo "$total"
}

get_rps() { # one GET sample through node 1: ops/s
    redis-benchmark -h 127.0.0.1 -p "$BASE_PORT" --csv -t get -r "$KEYS" \
        -n "$BENCH_REQUESTS" -c "$CLIENTS" -d "$VALUE_BYTES" 2>/dev/null \
        | awk -F'","' 'NF == 8 && $1 != "\"test" { print $2 }'
}

command -v curl >/dev/null || apt_install curl

start_node 0
start_node 1 --cluster-join "127.0.0.1:$BASE_PORT"
start_node 2 --cluster-join "127.0.0.1:$BASE_PORT"
for i in 0 1 2; do
    until [ "$(cluster_field $((BASE_PORT + i)) cluster_known_nodes)" = 3 ]; do sleep 0.2; done
done

report "### Anti-entropy refilling a wiped replica"
report ""
report "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); ringkv $RINGKV_REVISION"
report "- KEYS=$KEYS VALUE_BYTES=$VALUE_BYTES AAE_INTERVAL=$AAE_INTERVAL AAE_KEYS_PER_PASS=$AAE_KEYS_PER_PASS BENCH_REQUESTS=$BENCH_REQUESTS CLIENTS=$CLIENTS"
report "- nproc: $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg)"

started=$(date +%s.%N)
load_keys "$BASE_PORT" "$KEYS" random   # 100-byte random values
loaded=$(date +%s.%N)
for i in 0 1 2; do wait_idle "${PIDS[$i]}" 60; done
report "- loaded $KEYS keys through node 1 in $(awk -v a="$started" -v b="$loaded" 'BEGIN { printf "%.1f", b - a }') s; DBSIZE per node: $(dbsize "$BASE_PORT") $(dbsize $((BASE_PORT + 1))) $(dbsize $((BASE_PORT + 2)))"

before=()
for round in 1 2 3; do before+=("$(get_rps)"); done
report "- GET through node 1 before: ${before[*]} ops/s"

# Wipe node 3's store: keep its identity, membership and hints.
kill -KILL "${PIDS[2]}"
wait_exit "${PIDS[2]}"
find "$WORK/n2/data" -mindepth 1 -maxdepth 1 ! -name cluster-node-id ! -name cluster \
    ! -name hints -exec rm -rf {} +
repaired0=$(metric_sum ringkv_cluster_aae_keys_repaired_total)
bytes0=$(metric_sum ringkv_cluster_aae_repair_bytes_total)
start_node 2
t0=$(date +%s.%N)
report "- node 3 wiped and restarted: DBSIZE $(dbsize $((BASE_PORT + 2)))"

during=()
target=$(dbsize "$BASE_PORT")
while [ "$(dbsize $((BASE_PORT + 2)))" -lt "$target" ]; do
    during+=("$(get_rps)")
    elapsed=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print int(b - a) }')
    if [ "$elapsed" -gt 3600 ]; then
        report "- not refilled after an hour: DBSIZE $(dbsize $((BASE_PORT + 2))) of $target"
        break
    fi
done
t1=$(date +%s.%N)
repaired=$(($(metric_sum ringkv_cluster_aae_keys_repaired_total) - repaired0))
bytes=$(($(metric_sum ringkv_cluster_aae_repair_bytes_total) - bytes0))
report "- refilled (DBSIZE $(dbsize $((BASE_PORT + 2))) of $target) in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
report "- anti-entropy repaired $repaired keys, moving $bytes record bytes ($(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB); the rest came by read repair of the GETs"
report "- GET through node 1 during the repair: ${during[*]:-none (done before the first sample)} ops/s"
after=()
for round in 1 2 3; do after+=("$(get_rps)"); done
report "- GET through node 1 after: ${after[*]} ops/s"
report "- exchanges: $(metric_sum ringkv_cluster_aae_exchanges_total); slots found differing: $(metric_sum ringkv_cluster_aae_slots_differing_total)"
grep -h 'anti-entropy exchange repaired' "$WORK"/n*/ringkv.log | tail -5 | sed 's/^/    /' | tee -a "$REPORT" >&2 || true
[ -n "$OUT" ] && cp "$REPORT" "$OUT"
exit 0
