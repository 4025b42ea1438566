#!/usr/bin/env bash
# ringkv vs redis-server, side by side on loopback: throughput and latency of
# the same redis-benchmark workloads, resident memory per key, restart time.
#
# Usage:
#   bench/server_vs_redis.sh
#   ROUNDS=3 N_MEM=10000000 OUT=/tmp/server.md bench/server_vs_redis.sh
#
# Environment (all optional):
#   ROUNDS        rounds of every workload on both servers (default 3); odd
#                 rounds run ringkv first, even rounds Redis first
#   KEYSPACE      random keys for the throughput workloads, -r (default 1000000)
#   HOT_KEYS      keys of the hot-set GET workload, -r (default 1000)
#   CLIENTS       redis-benchmark connections, -c (default 50)
#   VALUE_BYTES   value size, -d (default 100)
#   PIPELINES     pipeline depths, -P (default "1 16")
#   REQUESTS_P1   requests per run at pipeline 1 (default 200000)
#   REQUESTS_PN   requests per run at deeper pipelines (default 1000000)
#                 (MSET runs a quarter of these: each command sets 10 keys)
#   N_MEM         keys loaded for the memory and restart phase (default 1000000)
#   PHASES        "throughput memory" (default), or one of them
#   WORKLOADS     throughput workloads to run (default
#                 "SET GET INCR MSET MIXED_90_10 GET_HOT")
#   OUT           also write the report (markdown tables) to this file
#   RINGKV_BIN    use this ringkv binary instead of building one
#   BENCH_DIR     parent of the temporary data directories (default /tmp)
#
# Both servers run with equivalent durability: Redis `appendonly yes`,
# `appendfsync everysec`, no RDB snapshots (`save ""`); ringkv
# `--appendfsync everysec`. Each gets its own temporary directory and a free
# loopback port; only the servers this script started are ever stopped.
# Results are not asserted anywhere: they depend on the machine and its load.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
KEYSPACE=${KEYSPACE:-1000000}
HOT_KEYS=${HOT_KEYS:-1000}
CLIENTS=${CLIENTS:-50}
VALUE_BYTES=${VALUE_BYTES:-100}
PIPELINES=${PIPELINES:-"1 16"}
REQUESTS_P1=${REQUESTS_P1:-200000}
REQUESTS_PN=${REQUESTS_PN:-1000000}
N_MEM=${N_MEM:-1000000}
PHASES=${PHASES:-"throughput memory"}
WORKLOADS=${WORKLOADS:-"SET GET INCR MSET MIXED_90_10 GET_HOT"}
OUT=${OUT:-}

source "$(dirname "$0")/server_lib.sh"

ensure_tools
make_work_dir
prepare_ringkv
RESULTS="$WORK/results.tsv"   # round server workload pipeline rps p50_ms p99_ms
REPORT="$WORK/report.md"
: >"$RESULTS"
: >"$REPORT"

report() { printf '%s\n' "$*" | tee -a "$REPORT"; }

# bench_csv PORT ARGS...: runs redis-benchmark with --csv and prints
# "rps p50_ms p99_ms" of its single test line.
bench_csv() {
    local port=$1
    shift
    redis-benchmark -h 127.0.0.1 -p "$port" --csv "$@" 2>"$WORK/bench.err" \
        | awk -F'","' 'NR == 2 { print $2, $5, $7 }' \
        | grep . || { cat "$WORK/bench.err" >&2; exit 1; }
}

requests_for() { # PIPELINE [DIVISOR]
    local n=$REQUESTS_PN
    [ "$1" = 1 ] && n=$REQUESTS_P1
    echo $((n / ${2:-1}))
}

# run_workload SERVER PORT WORKLOAD PIPELINE: one measurement, appended to RESULTS.
run_workload() {
    local server=$1 port=$2 workload=$3 pipeline=$4
    local common=(-d "$VALUE_BYTES" -P "$pipeline")
    local n result
    n=$(requests_for "$pipeline")
    case $workload in
        SET | GET | INCR)
            result=$(bench_csv "$port" "${common[@]}" -c "$CLIENTS" -r "$KEYSPACE" -n "$n" \
                -t "$(echo "$workload" | tr 'A-Z' 'a-z')")
            ;;
        MSET)
            n=$(requests_for "$pipeline" 4)
            result=$(bench_csv "$port" "${common[@]}" -c "$CLIENTS" -r "$KEYSPACE" -n "$n" -t mset)
            ;;
        GET_HOT)
            result=$(bench_csv "$port" "${common[@]}" -c "$CLIENTS" -r "$HOT_KEYS" -n "$n" -t get)
            ;;
        MIXED_90_10)
            # Two redis-benchmark processes at once over the same keys: 90% of
            # the clients send 90% of the requests as GETs, 10% of the clients
            # send 10% as SETs. Each client does the same number of requests,
            # so both finish together when GET and SET cost the same. The
            # combined rate is all requests over the longer of the two
            # elapsed times (n / rps of each, redis-benchmark's own clock);
            # latency is the GET side's (90% of the requests).
            local get_clients=$((CLIENTS * 9 / 10)) set_clients
            set_clients=$((CLIENTS - get_clients))
            local n_get=$((n * 9 / 10)) n_set
            n_set=$((n - n_get))
            bench_csv "$port" "${common[@]}" -c "$set_clients" -r "$KEYSPACE" -n "$n_set" -t set \
                >"$WORK/mixed-set.out" &
            local set_job=$!
            local get_result
            get_result=$(bench_csv "$port" "${common[@]}" -c "$get_clients" -r "$KEYSPACE" -n "$n_get" -t get)
            wait "$set_job"
            local set_result
            set_result=$(cat "$WORK/mixed-set.out")
            result=$(echo "$get_result $set_result" | awk -v ng="$n_get" -v ns="$n_set" '{
                tg = ng / $1; ts = ns / $4; t = (tg > ts ? tg : ts)
                printf "%.2f %s %s\n", (ng + ns) / t, $2, $3 }')
            log "    mixed: GET side $get_result, SET side $set_result (rps p50 p99)"
            ;;
        *) log "unknown workload $workload"; exit 1 ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$server" "$workload" "$pipeline" \
        "$(echo "$result" | tr ' ' '\t')" >>"$RESULTS"
    log "    $server $workload -P $pipeline: $result"
}

machine_report() {
    report "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    report "- ringkv: $RINGKV_REVISION ($RINGKV)"
    report "- $(redis-server --version)"
    report "- $(redis-benchmark --version)"
    report "- nproc: $(nproc); $(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2 }'); kernel $(uname -r)"
    report "- RAM: $(free -g | awk '/^Mem:/ { print $2 " GiB total, " $7 " GiB available" }')"
    report "- work dir: $WORK ($(df -hT "$WORK" | awk 'NR == 2 { print $1 ", " $2 }'))"
}

throughput_phase() {
    local redis_dir="$WORK/redis" ringkv_dir="$WORK/ringkv"
    local redis_port ringkv_port redis_pid ringkv_pid
    redis_port=$(free_port)
    start_server redis "$redis_dir" "$redis_port"
    redis_pid=$SERVER_PID
    ringkv_port=$(free_port)
    start_server ringkv "$ringkv_dir" "$ringkv_port"
    ringkv_pid=$SERVER_PID
    wait_pong "$redis_port"
    wait_pong "$ringkv_port"
    log "redis pid $redis_pid port $redis_port; ringkv pid $ringkv_pid port $ringkv_port"

    # Every GET hits: keys 0..KEYSPACE-1 exist before the first run (the hot
    # set is the first HOT_KEYS of them).
    log "loading $KEYSPACE keys of $VALUE_BYTES bytes into each server"
    load_keys "$redis_port" "$KEYSPACE" x
    load_keys "$ringkv_port" "$KEYSPACE" x
    wait_idle "$ringkv_pid" 120
    wait_idle "$redis_pid" 120
    report "- keys before the first run: redis $(dbsize "$redis_port"), ringkv $(dbsize "$ringkv_port")"
    report ""
    report "Load average before each round (\`uptime\`):"
    report ""

    local workloads
    read -r -a workloads <<<"$WORKLOADS"
    for ROUND in $(seq 1 "$ROUNDS"); do
        local order=(ringkv redis)
        [ $((ROUND % 2)) = 0 ] && order=(redis ringkv)
        report "- round $ROUND (${order[0]} first): $(uptime | sed 's/^ *//')"
        local workload pipeline server
        for pipeline in $PIPELINES; do
            for workload in "${workloads[@]}"; do
                for server in "${order[@]}"; do
                    # The other server's background work (flush, compaction,
                    # AOF fsync) must not land on this measurement.
                    wait_idle "$ringkv_pid" 60
                    wait_idle "$redis_pid" 60
                    if [ "$server" = redis ]; then
                        run_workload redis "$redis_port" "$workload" "$pipeline"
                    else
                        run_workload ringkv "$ringkv_port" "$workload" "$pipeline"
                    fi
                done
            done
        done
    done
    report ""
    report "- keys after the last run: redis $(dbsize "$redis_port"), ringkv $(dbsize "$ringkv_port")"
    report "- server CPU seconds (user+sys) over the whole phase: redis $(($(cpu_ticks "$redis_pid") / 100)), ringkv $(($(cpu_ticks "$ringkv_pid") / 100))"
    report ""
    python3 "$SERVER_LIB_ROOT/bench/server_table.py" "$RESULTS" | tee -a "$REPORT"
    report ""
    redis-cli -p "$redis_port" SHUTDOWN >/dev/null 2>&1 || true
    redis-cli -p "$ringkv_port" SHUTDOWN >/dev/null 2>&1 || true
    wait_exit "$redis_pid"
    wait_exit "$ringkv_pid"
    rm -rf "$redis_dir" "$ringkv_dir"
}

# timed_start KIND DIR PORT KEYS: starts the server and sets SERVER_PID and
# TIMED_S, the seconds from process start until PING answers PONG (Redis
# answers -LOADING until its dataset is in memory) and DBSIZE reports KEYS.
timed_start() {
    local kind=$1 dir=$2 port=$3 keys=$4 t0 t1
    t0=$(date +%s.%N)
    start_server "$kind" "$dir" "$port"
    wait_pong "$port"
    until [ "$(dbsize "$port" 2>/dev/null || true)" = "$keys" ]; do sleep 0.01; done
    t1=$(date +%s.%N)
    TIMED_S=$(echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }')
}

# memory_phase_one KIND: load N_MEM random 100-byte values into a fresh server,
# read RSS, then restart it after SIGKILL and after a clean SHUTDOWN.
memory_phase_one() {
    local kind=$1 dir="$WORK/mem-$1" port pid
    port=$(free_port)
    start_server "$kind" "$dir" "$port"
    pid=$SERVER_PID
    wait_pong "$port"
    wait_idle "$pid" 10
    local rss_empty t0 t1 load_s
    rss_empty=$(rss_bytes "$pid")
    log "$kind: loading $N_MEM keys with random $VALUE_BYTES-byte values"
    t0=$(date +%s.%N)
    load_keys "$port" "$N_MEM" random
    t1=$(date +%s.%N)
    load_s=$(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }')
    wait_idle "$pid" 300
    local keys rss_loaded disk_loaded
    keys=$(dbsize "$port")
    rss_loaded=$(rss_bytes "$pid")
    disk_loaded=$(du -sb "$dir" | cut -f1)
    log "$kind: $keys keys, RSS $rss_loaded, disk $disk_loaded"

    # Crash: SIGKILL after the last once-a-second fsync.
    sleep 1.5
    kill -KILL "$pid"
    wait_exit "$pid"
    timed_start "$kind" "$dir" "$port" "$keys"
    local crash_s=$TIMED_S
    pid=$SERVER_PID
    log "$kind: restart after SIGKILL ${crash_s}s"
    wait_idle "$pid" 300

    # Clean: Redis gets its fastest restart, a freshly rewritten AOF (an RDB
    # preamble base file and an empty increment); ringkv a clean SHUTDOWN.
    [ "$kind" = redis ] && redis_rewrite_aof "$port"
    redis-cli -p "$port" SHUTDOWN >/dev/null 2>&1 || true
    wait_exit "$pid"
    local disk_clean
    disk_clean=$(du -sb "$dir" | cut -f1)
    timed_start "$kind" "$dir" "$port" "$keys"
    local clean_s=$TIMED_S
    pid=$SERVER_PID
    log "$kind: restart after SHUTDOWN ${clean_s}s"
    local rss_restart rss_reads
    rss_restart=$(rss_bytes "$pid")
    # 1M random GETs over the keyspace (hits), then RSS again: ringkv fills
    # its block cache, Redis has nothing to fill.
    bench_csv "$port" -c "$CLIENTS" -P 16 -d "$VALUE_BYTES" -r "$N_MEM" -n 1000000 -t get >/dev/null
    rss_reads=$(rss_bytes "$pid")
    redis-cli -p "$port" SHUTDOWN >/dev/null 2>&1 || true
    wait_exit "$pid"
    rm -rf "$dir"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$keys" "$rss_empty" \
        "$rss_loaded" "$disk_loaded" "$disk_clean" "$rss_restart" "$rss_reads" "$load_s" \
        "$crash_s" "$clean_s" >>"$WORK/memory.tsv"
}

memory_phase() {
    : >"$WORK/memory.tsv"
    report "Memory and restart, $N_MEM keys (load average before: $(uptime | sed 's/.*load average: //')):"
    report ""
    memory_phase_one ringkv
    memory_phase_one redis
    python3 "$SERVER_LIB_ROOT/bench/server_table.py" --memory "$WORK/memory.tsv" | tee -a "$REPORT"
    report ""
}

report "## ringkv vs redis-server"
report ""
machine_report
report "- command: ROUNDS=$ROUNDS KEYSPACE=$KEYSPACE HOT_KEYS=$HOT_KEYS CLIENTS=$CLIENTS VALUE_BYTES=$VALUE_BYTES PIPELINES=\"$PIPELINES\" REQUESTS_P1=$REQUESTS_P1 REQUESTS_PN=$REQUESTS_PN N_MEM=$N_MEM PHASES=\"$PHASES\" bench/server_vs_redis.sh"
report ""
for phase in $PHASES; do
    case $phase in
        throughput) throughput_phase ;;
        memory) memory_phase ;;
        *) log "unknown phase $phase"; exit 1 ;;
    esac
done
if [ -n "$OUT" ]; then
    cp "$REPORT" "$OUT"
    cp "$RESULTS" "$OUT.results.tsv"
    [ -f "$WORK/memory.tsv" ] && cp "$WORK/memory.tsv" "$OUT.memory.tsv"
    log "report written to $OUT"
fi
