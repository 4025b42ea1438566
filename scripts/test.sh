#!/usr/bin/env bash
# The whole check, as CI runs it: formatting, lints, every test, doc tests.
# Works on a fresh Debian/Ubuntu machine: installs redis-tools (redis-cli, redis-benchmark) and
# redis-server (the reference Redis 7.0 that strings.rs compares replies against) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-cli >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1 \
    || ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing redis-tools and redis-server"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    # The package would start a redis-server daemon on 6379; the tests start their own
    # redis-server on a free port and one test runs ringkv on 6379 (its default), so no
    # daemon may be left running. A policy-rc.d that answers 101 is Debian's way to install
    # without starting services; it is only added (and removed again) when none exists.
    policy=/usr/sbin/policy-rc.d
    added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod +x "$policy"
        added_policy=1
        trap '$SUDO rm -f "$policy"' EXIT
    fi
    if ! $SUDO apt-get install -y redis-tools redis-server; then
        $SUDO apt-get update
        $SUDO apt-get install -y redis-tools redis-server
    fi
    if [ -n "$added_policy" ]; then
        $SUDO rm -f "$policy"
        trap - EXIT
    fi
    # Belt and braces: a system that started it anyway (or on boot) gets it stopped and disabled.
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
    else
        $SUDO service redis-server stop >/dev/null 2>&1 || true
    fi
fi

# iproute2 (`ip`): the protected-mode test makes a network namespace to connect from a real
# non-loopback address (it fails, rather than skips, without one).
if ! command -v ip >/dev/null 2>&1; then
    echo "== installing iproute2"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    if ! $SUDO apt-get install -y iproute2; then
        $SUDO apt-get update
        $SUDO apt-get install -y iproute2
    fi
fi

# nftables (`nft`): tests/cluster_netsplit.rs partitions a cluster of nodes in network
# namespaces by dropping packets between them (it fails, rather than skips, without it).
if ! command -v nft >/dev/null 2>&1; then
    echo "== installing nftables"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    if ! $SUDO apt-get install -y nftables; then
        $SUDO apt-get update
        $SUDO apt-get install -y nftables
    fi
fi

# redis-py (`redis.cluster.RedisCluster`): tests/cluster_clients.rs runs it against a real
# cluster with `python3`, or `/usr/bin/python3` when `python3` is another interpreter (pyenv).
# Debian's python3-redis serves the system python; pip is the fallback for any other.
has_redis_py() {
    python3 -c 'import redis.cluster' >/dev/null 2>&1 \
        || /usr/bin/python3 -c 'import redis.cluster' >/dev/null 2>&1
}
if ! has_redis_py; then
    echo "== installing python3-redis"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    if ! $SUDO apt-get install -y python3-redis; then
        $SUDO apt-get update
        $SUDO apt-get install -y python3-redis || true
    fi
    if ! has_redis_py; then
        python3 -m pip install redis
    fi
fi

echo "== layers: ringkv-store builds on the engine only (no tokio, no RESP; docs/architecture.md)"
store_deps="$(cargo tree -p ringkv-store -e normal --prefix none --format '{p}')"
for forbidden in tokio ringkv-protocol ringkv-server ringkv-cluster; do
    if grep -qE "^${forbidden} " <<<"$store_deps"; then
        echo "ringkv-store must not depend on ${forbidden}:"
        cargo tree -p ringkv-store -e normal -i "$forbidden"
        exit 1
    fi
done

echo "== cargo fmt"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== build the server binary the integration tests start"
cargo build -p ringkv --bin ringkv
export RINGKV_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/ringkv"

echo "== tests"
summary="$(mktemp)"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$summary"
else
    cargo test --workspace --no-fail-fast 2>&1 | tee "$summary"
fi

echo "== doc tests"
cargo test --doc --workspace

echo "== fuzz (20 s per target; builds the fuzz crates and installs cargo-fuzz when missing)"
bash scripts/fuzz.sh 20

# The test count again, last, so the doc-test and fuzz output above cannot hide it.
passed=$(grep -oE '[0-9]+ tests? run: [0-9]+ passed' "$summary" | grep -oE '[0-9]+ passed' | tail -1 | grep -oE '[0-9]+' || true)
if [ -z "$passed" ]; then
    passed=$(grep -oE 'test result: ok\. [0-9]+ passed' "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' | awk '{s+=$1} END {print s}')
fi
rm -f "$summary"
echo "tests: ${passed:-0} passed, 0 failed"
