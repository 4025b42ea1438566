#!/usr/bin/env bash
# Runs every fuzz target for a bounded time each, on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 30)
#
# Targets: the RESP request parser (crates/protocol/fuzz), the WAL/manifest
# reader and the sorted-table reader (crates/engine/fuzz). cargo-fuzz needs
# nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable
# compiler accept them. A crash fails the script; its input lands in
# fuzz/artifacts/<target>/ (git-ignored). Corpora grow in fuzz/corpus/.
set -euo pipefail
seconds="${1:-30}"
cd "$(dirname "$0")/.."

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

run() {
    local crate_dir="$1" target="$2" max_len="$3"
    echo "== fuzz $target (${seconds}s)"
    mkdir -p "$crate_dir/fuzz/corpus/$target"
    (cd "$crate_dir/fuzz" && cargo fuzz run --debug-assertions "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>&1 | grep -E "^(stat::|==|SUMMARY|#[0-9]+ *DONE)|panicked|ERROR" || true)
    # cargo fuzz exits non-zero on a crash; check for artifacts instead of
    # the pipeline's status (grep hides it).
    if compgen -G "$crate_dir/fuzz/artifacts/$target/crash-*" >/dev/null \
        || compgen -G "$crate_dir/fuzz/artifacts/$target/leak-*" >/dev/null \
        || compgen -G "$crate_dir/fuzz/artifacts/$target/oom-*" >/dev/null \
        || compgen -G "$crate_dir/fuzz/artifacts/$target/timeout-*" >/dev/null; then
        echo "fuzz target $target found a failing input:" "$crate_dir/fuzz/artifacts/$target/"*
        exit 1
    fi
}

run crates/protocol parse_request 4096
run crates/engine wal_reader 65536
run crates/engine table_reader 65536
