#!/usr/bin/env bash
# Runs the parse_request fuzz target for a bounded time on the stable toolchain.
#
#   crates/protocol/fuzz/run.sh SECONDS     (default 60)
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept them. Crashes land in fuzz/artifacts/parse_request/; the growing
# corpus in fuzz/corpus/parse_request/ (both git-ignored), seeded from fuzz/seeds/.
set -euo pipefail

seconds="${1:-60}"
cd "$(dirname "$0")"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
mkdir -p corpus/parse_request
# -a: keep debug assertions, which check the parser's invariants.
# One job: the machine's cores are shared with other builds.
exec cargo fuzz run --debug-assertions parse_request corpus/parse_request seeds/parse_request -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1
