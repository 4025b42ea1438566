#!/usr/bin/env bash
# The whole check, as CI runs it: formatting, lints, every test, doc tests.
# Works on a fresh Debian/Ubuntu machine: installs redis-tools (redis-cli, redis-benchmark)
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-cli >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "== installing redis-tools"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    if ! $SUDO apt-get install -y redis-tools; then
        $SUDO apt-get update
        $SUDO apt-get install -y redis-tools
    fi
fi

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
