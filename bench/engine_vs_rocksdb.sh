#!/usr/bin/env bash
# Runs ringkv-engine's db_bench example and RocksDB's db_bench with the same
# workloads, sizes and settings, and prints ours/theirs ratios.
#
# Usage:
#   bench/engine_vs_rocksdb.sh [NUM]           # NUM keys, default 1000000
#   READS=1000000 bench/engine_vs_rocksdb.sh 10000000
#
# Environment (all optional):
#   BENCHMARKS  comma-separated db_bench workloads, run in one process per side
#               (default fillseq,fillrandom,readrandom,readseq,overwrite;
#               fillseq and fillrandom start from an empty database, the others
#               read or overwrite what the previous ones left, as in db_bench)
#   READS       operations of readrandom/readseq (default: NUM, at most 1000000)
#   SYNC        0: no fsync per write (default); 1: fsync every write
#   RUNS        times each side runs, alternating ringkv/RocksDB (default 1)
#   BENCH_DIR   parent of the temporary database directories (default /tmp)
#   ROW_CACHE_SIZE   row cache bytes on both sides (default 256 MiB, ringkv's default; 0: none)
#   RINGKV_EXTRA, ROCKSDB_EXTRA   extra flags for one side only
#   RINGKV_DB_BENCH  a prebuilt ringkv db_bench to run instead of building this tree's
#
# Results are not asserted anywhere: they depend on the machine and its load.
set -euo pipefail

NUM=${1:-1000000}
BENCHMARKS=${BENCHMARKS:-fillseq,fillrandom,readrandom,readseq,overwrite}
READS=${READS:-$((NUM < 1000000 ? NUM : 1000000))}
SYNC=${SYNC:-0}
RUNS=${RUNS:-1}
BENCH_DIR=${BENCH_DIR:-/tmp}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v db_bench >/dev/null; then
    echo "db_bench not found; installing Debian's rocksdb-tools" >&2
    sudo apt-get install -y rocksdb-tools || apt-get install -y rocksdb-tools
fi

# lz4 on both sides when this db_bench was built with it, none on both otherwise.
COMPRESSION=none
if db_bench --benchmarks=fillseq --num=1 --compression_type=lz4 \
    --db="$(mktemp -d "$BENCH_DIR/lz4-probe.XXXXXX")" 2>&1 | grep -q '^Compression: LZ4'; then
    COMPRESSION=lz4
fi
rm -rf "$BENCH_DIR"/lz4-probe.*

if [ -n "${RINGKV_DB_BENCH:-}" ]; then
    RINGKV=$RINGKV_DB_BENCH        # an A/B: another commit's build of the example
else
    (cd "$ROOT" && cargo build --release --quiet -p ringkv-engine --example db_bench)
    RINGKV="$ROOT/target/release/examples/db_bench"
fi

WORK=$(mktemp -d "$BENCH_DIR/engine-vs-rocksdb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Flags both binaries understand, with the same meaning. Each value is
# ringkv's default, given to RocksDB explicitly where its default differs.
COMMON=(
    --num="$NUM"
    --reads="$READS"
    --key_size=16                  # db_bench's default and key format (8 BE bytes + '0' padding)
    --value_size=100
    --compression_ratio=0.5        # values compress to half, db_bench's generator
    --compression_type="$COMPRESSION"
    --threads=1
    --sync="$SYNC"                 # 0: WAL written to the OS per write, never fsynced
                                   #    (ringkv FsyncPolicy::No); 1: fsync per write (Always)
    --cache_size=268435456         # 256 MiB block cache (ringkv's default; RocksDB's is 8 MiB)
    --row_cache_size="${ROW_CACHE_SIZE:-268435456}"  # 256 MiB row cache (ringkv's default;
                                   # db_bench's is none). ringkv's is written through by every
                                   # write, RocksDB's filled by reads only: after fillrandom,
                                   # ringkv's readrandom hits it and reads no block, so its
                                   # readseq that follows starts with a cold block cache.
    --bloom_bits=10                # ~1% false positives, whole-key filter per table
    --write_buffer_size=67108864   # 64 MiB memtable (both defaults)
    --max_write_buffer_number=3    # RocksDB counts the active memtable: 1 active + 2 frozen,
                                   # ringkv frozen_memtables_max=2 (RocksDB default is 2 in all)
    --block_size=4096
    --block_restart_interval=16
    --level0_file_num_compaction_trigger=4
    --level0_slowdown_writes_trigger=12   # RocksDB default 20
    --level0_stop_writes_trigger=20       # RocksDB default 36
    --max_bytes_for_level_base=268435456  # 256 MiB level 1
    --max_bytes_for_level_multiplier=10
    --target_file_size_base=67108864      # 64 MiB tables
)

# RocksDB-only flags that make it do what ringkv does.
ROCKSDB_ONLY=(
    --max_background_jobs=2        # ringkv: one flush thread + one compaction thread
    --subcompactions=1             # ringkv splits no compaction across threads
    --level_compaction_dynamic_level_bytes=false  # static level targets, as ringkv
    --cache_index_and_filter_blocks=false  # index and filter stay with the open table, as ringkv
    --bytes_per_sync=0 --wal_bytes_per_sync=0  # no background range syncs (ringkv has none)
    --disable_wal=false
    --histogram=false
    --statistics=false
)

run_side() { # side run -> writes $WORK/<side>.<run>.out
    local side=$1 run=$2 db="$WORK/$1.$2.db" out="$WORK/$1.$2.out"
    local load
    load=$(uptime | sed 's/.*load average: //')
    echo "# $side run $run (load average before: $load)" >&2
    # /usr/bin/time adds the process's CPU seconds (all threads): on a shared,
    # loaded machine they say more than wall-clock ops/sec alone.
    local timed=()
    if [[ -x /usr/bin/time ]]; then
        timed=(/usr/bin/time -f 'cpu %U s user %S s sys %e s elapsed %M KiB max rss' -a -o "$out.time")
    fi
    if [[ $side == ringkv ]]; then
        "${timed[@]}" "$RINGKV" --benchmarks="$BENCHMARKS" "${COMMON[@]}" --db="$db" --stats=1 \
            ${RINGKV_EXTRA:-} >"$out" 2>"$WORK/$side.$run.err"
    else
        "${timed[@]}" db_bench --benchmarks="$BENCHMARKS" "${COMMON[@]}" "${ROCKSDB_ONLY[@]}" --db="$db" \
            ${ROCKSDB_EXTRA:-} >"$out" 2>"$WORK/$side.$run.err"
    fi
    echo "load $load" >>"$out"
    [[ -f $out.time ]] && cat "$out.time" >>"$out"
    grep -E '^[a-z0-9_]+ +: .*ops/sec|^ringkv stats' "$out" >&2 || cat "$WORK/$side.$run.err" >&2
    rm -rf "$db"
}

# ops/sec of benchmark $2 in output file $1 (the token before "ops/sec").
ops_of() {
    awk -v name="$2" '$1 == name && $2 == ":" {
        for (i = 3; i <= NF; i++) if ($i == "ops/sec") { print $(i - 1); exit }
    }' "$1"
}

echo "# ringkv-engine vs RocksDB $(db_bench --version 2>&1 | head -1 | awk '{print $NF}'):" \
    "num=$NUM reads=$READS sync=$SYNC compression=$COMPRESSION runs=$RUNS" >&2
echo "# common flags: ${COMMON[*]}" >&2
echo "# rocksdb-only flags: ${ROCKSDB_ONLY[*]}" >&2
for run in $(seq 1 "$RUNS"); do
    # Alternate which side goes first so neither always gets the cooler disk.
    if ((run % 2)); then order=(ringkv rocksdb); else order=(rocksdb ringkv); fi
    for side in "${order[@]}"; do run_side "$side" "$run"; done
done

printf '\n| %-11s | %3s | %12s | %13s | %5s |\n' workload run "ringkv ops/s" "rocksdb ops/s" ratio
printf '|%s|%s|%s|%s|%s|\n' ------------- ----: -------------: --------------: ------:
for bench in ${BENCHMARKS//,/ }; do
    for run in $(seq 1 "$RUNS"); do
        ours=$(ops_of "$WORK/ringkv.$run.out" "$bench")
        theirs=$(ops_of "$WORK/rocksdb.$run.out" "$bench")
        [[ -z $ours || -z $theirs ]] && continue
        ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
        printf '| %-11s | %3s | %12s | %13s | %5s |\n' "$bench" "$run" "$ours" "$theirs" "${ratio}x"
    done
done
echo
for run in $(seq 1 "$RUNS"); do
    echo "run $run: readrandom found: ringkv $(grep -o '([0-9]* of [0-9]* found)' "$WORK/ringkv.$run.out" || true)," \
        "rocksdb $(grep -o '([0-9]* of [0-9]* found)' "$WORK/rocksdb.$run.out" || true)"
    echo "run $run load average before: ringkv $(sed -n 's/^load //p' "$WORK/ringkv.$run.out");" \
        "rocksdb $(sed -n 's/^load //p' "$WORK/rocksdb.$run.out")"
    echo "run $run whole process: ringkv $(grep '^cpu ' "$WORK/ringkv.$run.out" || true);" \
        "rocksdb $(grep '^cpu ' "$WORK/rocksdb.$run.out" || true)"
done
