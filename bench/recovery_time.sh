#!/usr/bin/env bash
# Recovery time after SIGKILL and after a clean shutdown, at N keys (docs/durability.md).
#
#   bench/recovery_time.sh N [BINARY]      (default BINARY: target/release/ringkv)
#
# Loads N keys with DEBUG POPULATE (key:i = value:i) into a fresh data directory, SIGKILLs the
# server right after the last write was acknowledged, restarts it and measures the time to the
# first PONG and to DBSIZE = N; then SHUTDOWN (clean) and the same again.
set -euo pipefail
keys="$1"
bin="${2:-target/release/ringkv}"
port="${PORT:-7390}"
work="$(mktemp -d "${TMPDIR:-/tmp}/ringkv-recovery.XXXXXX")"
trap 'kill -9 $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

now_ms() { date +%s%3N; }
start() {
    "$bin" --port "$port" --dir "$work/data" --no-admin --appendfsync everysec --loglevel info \
        2>>"$work/log" >/dev/null &
    echo $! >"$work/pid"
}
wait_pong() { until redis-cli -p "$port" PING 2>/dev/null | grep -q PONG; do sleep 0.005; done; }
wait_dbsize() { until [ "$(redis-cli -p "$port" DBSIZE 2>/dev/null)" = "$keys" ]; do sleep 0.01; done; }

start; wait_pong
t0=$(now_ms)
redis-cli -p "$port" DEBUG POPULATE "$keys" >/dev/null
echo "loaded $keys keys in $(( $(now_ms) - t0 )) ms; data $(du -sh "$work/data" | cut -f1)"
kill -9 "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true
t0=$(now_ms); start; wait_pong; t1=$(now_ms); wait_dbsize; t2=$(now_ms)
echo "after SIGKILL: first PONG $(( t1 - t0 )) ms, DBSIZE exact $(( t2 - t0 )) ms"
grep -E "database opened|storage opened|key counts" "$work/log" | tail -3 | sed 's/^/  log: /'
redis-cli -p "$port" SHUTDOWN >/dev/null 2>&1 || true
while kill -0 "$(cat "$work/pid")" 2>/dev/null; do sleep 0.01; done
t0=$(now_ms); start; wait_pong; t1=$(now_ms); wait_dbsize; t2=$(now_ms)
echo "after clean shutdown: first PONG $(( t1 - t0 )) ms, DBSIZE exact $(( t2 - t0 )) ms"
grep -E "database opened|storage opened|key counts" "$work/log" | tail -3 | sed 's/^/  log: /'
redis-cli -p "$port" SHUTDOWN >/dev/null 2>&1 || true
