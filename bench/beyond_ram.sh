#!/usr/bin/env bash
# ringkv beyond its memory budget (issue 6): N_KEYS (default 50 000 000) random
# 100-byte values in a server whose caches and memtables are capped at about
# 1 GiB, then GET over the whole keyspace at pipeline 1 and 16; the same
# server and budget holding SMALL_KEYS (default 1 000 000) keys, which fit in
# its caches, is the in-memory case. Redis cannot take part: it keeps every
# key in RAM (~216 bytes per key here, ~10 GiB at 50M keys), so with a 1 GiB
# maxmemory it would refuse writes (or evict) long before 50M keys.
#
# Usage: bench/beyond_ram.sh            (RINGKV_BIN, BENCH_DIR as for server_vs_redis.sh)
#   N_KEYS=50000000 SMALL_KEYS=1000000 REQUESTS_P1=200000 REQUESTS_PN=1000000 bench/beyond_ram.sh
#
# The budget (flags below): memtables 3 x 64 MiB, block cache 384 MiB, row
# cache 192 MiB = 768 MiB, plus table indexes and Bloom filters (~1 byte per
# key for the filters). The data files are not capped: the page cache may hold
# them (this machine has 23 GiB), so "beyond the budget" here means beyond the
# process' own memory, read through the kernel's page cache, not from the disk.
set -euo pipefail

N_KEYS=${N_KEYS:-50000000}
SMALL_KEYS=${SMALL_KEYS:-1000000}
CLIENTS=${CLIENTS:-50}
REQUESTS_P1=${REQUESTS_P1:-200000}
REQUESTS_PN=${REQUESTS_PN:-1000000}
export RINGKV_EXTRA_ARGS="--memtable-bytes-max 67108864 --block-cache-bytes 402653184 --row-cache-bytes 201326592"

source "$(dirname "$0")/server_lib.sh"

ensure_tools
make_work_dir
prepare_ringkv

log "- ringkv: $RINGKV_REVISION; budget flags: $RINGKV_EXTRA_ARGS"
log "- $(nproc) cores; $(free -g | awk '/^Mem:/ { print $2 " GiB RAM" }'); $(uptime | sed 's/^ *//')"

info_field() { redis-cli -p "$1" INFO "$2" | tr -d '\r' | awk -F: -v f="$3" '$1 == f { print $2 }'; }

# measure LABEL KEYS: a fresh server with KEYS keys, then GET at P1 and P16.
measure() {
    local label=$1 keys=$2 port pid t0 p n line
    port=$(free_port)
    start_server ringkv "$WORK/$label" "$port"
    pid=$SERVER_PID
    wait_pong "$port"
    t0=$(date +%s)
    load_keys "$port" "$keys" random
    log "$label: loaded $(dbsize "$port") keys in $(( $(date +%s) - t0 )) s; disk $(du -sh "$WORK/$label/data" | cut -f1)"
    wait_idle "$pid" 600
    log "$label: RSS after load and idle: $(( $(rss_bytes "$pid") / 1048576 )) MiB"
    for p in 1 16; do
        n=$REQUESTS_PN
        [ "$p" = 1 ] && n=$REQUESTS_P1
        line=$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -P "$p" -r "$keys" -n "$n" \
            -t get --csv 2>/dev/null | awk -F'","' 'NR == 2 { print $2, $5, $7 }')
        # shellcheck disable=SC2086
        set -- $line
        printf '| %s | %s | %s | %s | %s / %s | %s MiB |\n' "$label" "$keys" "$p" "$1" "$2" "$3" \
            "$(( $(rss_bytes "$pid") / 1048576 ))" | tee -a "$WORK/table.md"
    done
    log "$label: keyspace_hits $(info_field "$port" stats keyspace_hits), misses $(info_field "$port" stats keyspace_misses); row cache hits/misses $(info_field "$port" engine row_cache_hits)/$(info_field "$port" engine row_cache_misses); block cache hits/misses $(info_field "$port" engine block_cache_hits)/$(info_field "$port" engine block_cache_misses)"
    redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    wait_exit "$pid"
    rm -rf "${WORK:?}/$label"
}

: >"$WORK/table.md"
measure in-memory "$SMALL_KEYS"
measure beyond-budget "$N_KEYS"
echo
echo "| case | keys | pipeline | GET ops/s | p50 / p99 ms | RSS after |"
echo "|---|--:|--:|--:|--:|--:|"
cat "$WORK/table.md"
echo "| redis | $N_KEYS | – | cannot: needs ~216 B/key of RAM (~10 GiB), over a 1 GiB budget | | |"
