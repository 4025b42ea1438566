#!/usr/bin/env bash
# Replication lag under a write-heavy redis-benchmark: one leader, two replicas on this machine.
# Samples the leader's INFO replication (slaveN lag_seq and lag_ms) every SAMPLE_SECONDS
# (default 0.01, the lag sampler's resolution) over one redis-cli connection while
# redis-benchmark writes, then prints median and p99 per replica.
# Usage: [SAMPLE_SECONDS=0.01] bench/replication_lag.sh [ringkv binary] [requests]
set -euo pipefail
BIN=${1:-target/release/ringkv}
REQUESTS=${2:-1000000}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-0.01}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
"$BIN" --no-admin --port 7801 --dir "$WORK/l" --loglevel warning & PIDS+=($!)
sleep 1
"$BIN" --no-admin --port 7802 --dir "$WORK/r1" --loglevel warning --replicaof "127.0.0.1 7801" & PIDS+=($!)
"$BIN" --no-admin --port 7803 --dir "$WORK/r2" --loglevel warning --replicaof "127.0.0.1 7801" & PIDS+=($!)
sleep 3
redis-benchmark -p 7801 -t set -n "$REQUESTS" -c 50 -P 16 -r 1000000 -d 64 -q > "$WORK/bench.txt" & BENCH=$!
# One connection repeating INFO (-r -1 -i): a process per sample would cost more CPU than the
# servers on a small machine, and could not sample every 10 ms.
redis-cli -p 7801 -r -1 -i "$SAMPLE_SECONDS" info replication > "$WORK/info" 2>/dev/null &
SAMPLER=$!
PIDS+=($SAMPLER)
wait "$BENCH"
kill "$SAMPLER" 2>/dev/null || true
tr -d '\r' < "$WORK/info" | grep '^slave[0-9]' > "$WORK/samples" || true
cat "$WORK/bench.txt"
python3 - "$WORK/samples" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    name, fields = line.split(':', 1)
    kv = dict(f.split('=') for f in fields.strip().split(','))
    rows.setdefault(kv['port'], []).append((int(kv['lag_seq']), int(kv['lag_ms'])))
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
for port, s in sorted(rows.items()):
    seqs = [a for a, _ in s]; ms = [b for _, b in s]
    print(f"replica port {port}: {len(s)} samples; lag_seq median {pct(seqs,50)} p99 {pct(seqs,99)} max {max(seqs)}; "
          f"lag_ms median {pct(ms,50)} p99 {pct(ms,99)} max {max(ms)}")
PY
for port in 7802 7803; do
  deadline=$((SECONDS + 60))
  until [ "$(redis-cli -p $port info replication | tr -d '\r' | grep slave_repl_offset | cut -d: -f2)" = \
          "$(redis-cli -p 7801 info replication | tr -d '\r' | grep master_repl_offset | cut -d: -f2)" ] || [ $SECONDS -gt $deadline ]; do sleep 0.1; done
  echo "replica $port dbsize $(redis-cli -p $port dbsize) leader dbsize $(redis-cli -p 7801 dbsize)"
done
