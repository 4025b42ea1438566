#!/usr/bin/env bash
# Issue 13: ringkv as a 3-node cluster on one machine (N=3, R=2, W=2, the
# defaults) against a single ringkv node: throughput and p99 of redis-benchmark
# SET and GET at -P 1 and -P 16, and the cluster/single ratios against the
# issue's targets (SET >= 70% of single-node, GET >= 100%, p99 <= 2x).
#
# Usage:
#   bench/cluster_bench.sh
#   RUN_SECONDS=10 OUT=/tmp/cluster.md bench/cluster_bench.sh
#
# Environment (all optional):
#   RUN_SECONDS   target length of each measured run (default 10); -n is set
#                 from a short calibration run of the same configuration
#   CLIENTS       redis-benchmark connections, -c (default 50; in the
#                 three-process configuration, 50 per process)
#   KEYSPACE      random keys, -r (default 100000)
#   VALUE_BYTES   value size, -d (default 100)
#   CALIBRATION_P1, CALIBRATION_PN  requests of the calibration runs at -P 1
#                 and deeper pipelines (default 20000, 200000)
#   PIPELINES     pipeline depths, -P (default "1 16")
#   BASE_PORT     client port of the first cluster node (default 7001); the
#                 nodes use BASE_PORT..BASE_PORT+2 and, for the internode
#                 transport, those plus 10000; all six must be free
#   OUT           also write the report (markdown) to this file
#   RINGKV_BIN    use this ringkv binary instead of building one (release)
#   BENCH_DIR     parent of the temporary data directories (default /tmp)
#
# Configurations, one after the other (only one is ever under load):
#   single     one ringkv node, cluster mode off
#   cluster-c  the cluster with redis-benchmark --cluster pointed at node 1:
#              the benchmark reads CLUSTER NODES, spreads its clients over the
#              three masters, and each client uses keys of a slot its node
#              lists as its own (a hash tag), so all three nodes coordinate
#   one-node   the cluster through node 1 only (plain redis-benchmark): node 1
#              coordinates every request
#   three      three plain redis-benchmark processes at once, one per node,
#              CLIENTS each; throughput is the sum of the three, p99 the worst
# In each configuration SET runs before GET (both depths), so GETs find the
# keys SET wrote. Every node runs with --appendfsync everysec (the server
# benchmark's durability). Only the servers this script started are stopped.
# Results are not asserted: they depend on the machine and its load.
set -euo pipefail

RUN_SECONDS=${RUN_SECONDS:-10}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
VALUE_BYTES=${VALUE_BYTES:-100}
PIPELINES=${PIPELINES:-"1 16"}
BASE_PORT=${BASE_PORT:-7001}
CALIBRATION_P1=${CALIBRATION_P1:-20000}
CALIBRATION_PN=${CALIBRATION_PN:-200000}
OUT=${OUT:-}

source "$(dirname "$0")/server_lib.sh"

ensure_tools
make_work_dir
prepare_ringkv
RESULTS="$WORK/results.tsv" # config test pipeline rps p99_ms
REPORT="$WORK/report.md"
: >"$RESULTS"
: >"$REPORT"

report() { printf '%s\n' "$*" | tee -a "$REPORT"; }

# bench_csv PORT ARGS...: runs redis-benchmark with --csv and prints
# "rps p99_ms" of its one test line (--cluster prints the nodes it found first).
bench_csv() {
    local port=$1
    shift
    redis-benchmark -h 127.0.0.1 -p "$port" --csv "$@" 2>"$WORK/bench.$port.err" \
        | awk -F'","' 'NF == 8 && $1 != "\"test" { print $2, $7 }' \
        | grep . || { cat "$WORK/bench.$port.err" >&2; return 1; }
}

calibration_requests() { # PIPELINE
    if [ "$1" = 1 ]; then echo "$CALIBRATION_P1"; else echo "$CALIBRATION_PN"; fi
}

# measure CONFIG TEST PIPELINE: a calibration run, then one of ~RUN_SECONDS;
# appends "config test pipeline rps p99" to RESULTS.
measure() {
    local config=$1 test=$2 pipeline=$3
    local args=(-d "$VALUE_BYTES" -P "$pipeline" -r "$KEYSPACE" -t "$test")
    local cal rps n result
    cal=$(calibration_requests "$pipeline")
    case $config in
        single) result=$(bench_csv "$SINGLE_PORT" "${args[@]}" -c "$CLIENTS" -n "$cal") ;;
        cluster-c) result=$(bench_csv "$BASE_PORT" --cluster "${args[@]}" -c "$CLIENTS" -n "$cal") ;;
        one-node) result=$(bench_csv "$BASE_PORT" "${args[@]}" -c "$CLIENTS" -n "$cal") ;;
        three) result=$(three_parallel "$cal" "${args[@]}") ;;
    esac
    rps=${result%% *}
    n=$(awk -v r="$rps" -v s="$RUN_SECONDS" -v c="$cal" 'BEGIN { n = int(r * s); if (n < c) n = c; print n }')
    wait_all_idle
    case $config in
        single) result=$(bench_csv "$SINGLE_PORT" "${args[@]}" -c "$CLIENTS" -n "$n") ;;
        cluster-c) result=$(bench_csv "$BASE_PORT" --cluster "${args[@]}" -c "$CLIENTS" -n "$n") ;;
        one-node) result=$(bench_csv "$BASE_PORT" "${args[@]}" -c "$CLIENTS" -n "$n") ;;
        three) result=$(three_parallel "$n" "${args[@]}") ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$config" "$test" "$pipeline" "$(echo "$result" | tr ' ' '\t')" >>"$RESULTS"
    log "    $config $test -P $pipeline -n $n: $result (rps p99_ms)"
}

# three_parallel N ARGS...: one redis-benchmark per node at once, N/3 requests
# and CLIENTS connections each; prints "sum of rps, worst p99".
three_parallel() {
    local n=$1
    shift
    local per=$((n / 3)) i pids=()
    for i in 0 1 2; do
        bench_csv $((BASE_PORT + i)) "$@" -c "$CLIENTS" -n "$per" >"$WORK/three.$i.out" &
        pids+=($!)
    done
    for i in 0 1 2; do wait "${pids[$i]}"; done
    log "      per node: $(cat "$WORK"/three.*.out | tr '\n' ';')"
    cat "$WORK"/three.*.out | awk '{ s += $1; if ($2 > p) p = $2 } END { printf "%.2f %s\n", s, p }'
}

ALL_PIDS=()
wait_all_idle() {
    local pid
    for pid in "${ALL_PIDS[@]}"; do wait_idle "$pid" 20; done
}

port_free() { ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_node DIR PORT [FLAGS...]: a ringkv node with the single node's flags.
start_node() {
    local dir=$1 port=$2
    shift 2
    mkdir -p "$dir"
    "$RINGKV" --port "$port" --bind 127.0.0.1 --dir "$dir/data" --no-admin \
        --appendfsync everysec --loglevel warn "$@" >>"$dir/ringkv.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
}

wait_cluster() {
    local port tries
    for port in "$BASE_PORT" $((BASE_PORT + 1)) $((BASE_PORT + 2)); do
        tries=0
        until redis-cli -p "$port" CLUSTER INFO 2>/dev/null | tr -d '\r' \
            | grep -q '^cluster_known_nodes:3$' \
            && redis-cli -p "$port" CLUSTER INFO | tr -d '\r' | grep -q '^cluster_state:ok$'; do
            sleep 0.1
            tries=$((tries + 1))
            if [ "$tries" -gt 1200 ]; then
                log "node $port does not know 3 nodes:"
                redis-cli -p "$port" CLUSTER INFO >&2 || true
                exit 1
            fi
        done
    done
}

run_config() {
    local config=$1 test pipeline
    report "- $config: $(uptime | sed 's/^ *//')"
    for test in set get; do
        for pipeline in $PIPELINES; do
            wait_all_idle
            measure "$config" "$test" "$pipeline"
        done
    done
}

report "### Machine and run"
report ""
report "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
report "- ringkv: $RINGKV_REVISION ($RINGKV)"
report "- $(redis-benchmark --version)"
report "- nproc: $(nproc); $(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2 }'); kernel $(uname -r)"
report "- RUN_SECONDS=$RUN_SECONDS CLIENTS=$CLIENTS KEYSPACE=$KEYSPACE VALUE_BYTES=$VALUE_BYTES PIPELINES=\"$PIPELINES\""
report ""
report "Load average at the start of each configuration (\`uptime\`):"
report ""

# Single node.
SINGLE_PORT=$(free_port)
start_node "$WORK/single" "$SINGLE_PORT"
single_pid=$SERVER_PID
wait_pong "$SINGLE_PORT"
ALL_PIDS=("$single_pid")
run_config single
redis-cli -p "$SINGLE_PORT" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
wait_exit "$single_pid"

# The cluster: node 1 founds it, nodes 2 and 3 join through its client port.
for port in "$BASE_PORT" $((BASE_PORT + 1)) $((BASE_PORT + 2)); do
    for p in "$port" $((port + 10000)); do
        port_free "$p" || { log "port $p is in use; set BASE_PORT"; exit 1; }
    done
done
start_node "$WORK/n1" "$BASE_PORT" --cluster-enabled yes
ALL_PIDS=("$SERVER_PID")
wait_pong "$BASE_PORT"
for i in 1 2; do
    start_node "$WORK/n$((i + 1))" $((BASE_PORT + i)) --cluster-enabled yes \
        --cluster-join "127.0.0.1:$BASE_PORT"
    ALL_PIDS+=("$SERVER_PID")
done
wait_cluster
report "- cluster: $(redis-cli -p "$BASE_PORT" CLUSTER INFO | tr -d '\r' \
    | grep -E '^cluster_(replicas|read_quorum|write_quorum):' | tr '\n' ' ')"
for config in cluster-c one-node three; do
    run_config "$config"
done
report "- end: $(uptime | sed 's/^ *//')"
report ""

# The table: every configuration next to the single node, with the ratios and
# the issue's targets (SET >= 0.70x, GET >= 1.00x throughput; p99 <= 2x).
awk -F'\t' '
    $1 == "single" { srps[$2 FS $3] = $4; sp99[$2 FS $3] = $5 }
    { rows[NR] = $0 }
    END {
        print "| configuration | test | -P | ops/s | p99 ms | ops/s ÷ single | p99 ÷ single | throughput target | p99 target |"
        print "|---|---|---|---:|---:|---:|---:|---|---|"
        for (i = 1; i <= NR; i++) {
            split(rows[i], f, FS)
            k = f[2] FS f[3]
            if (f[1] == "single") {
                printf "| %s | %s | %s | %.0f | %.3f | | | | |\n", f[1], toupper(f[2]), f[3], f[4], f[5]
                continue
            }
            r = f[4] / srps[k]; l = f[5] / sp99[k]
            want = (f[2] == "set") ? 0.70 : 1.00
            printf "| %s | %s | %s | %.0f | %.3f | %.2f | %.2f | %s (≥ %.2f) | %s (≤ 2) |\n",
                f[1], toupper(f[2]), f[3], f[4], f[5], r, l,
                (r >= want ? "met" : "NOT met"), want, (l <= 2 ? "met" : "NOT met")
        }
    }' "$RESULTS" | tee -a "$REPORT"

if [ -n "$OUT" ]; then cp "$REPORT" "$OUT"; fi
