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
    mkdir -p "$crate_dir/fuzz/corpus/$target" "$crate_dir/fuzz/seeds/$target"
    local log
    log="$(mktemp)"
    # A build failure or a crash makes cargo fuzz exit non-zero: fail loudly with the log's tail
    # (only the summary lines are shown otherwise).
    if ! (cd "$crate_dir/fuzz" && cargo fuzz run --debug-assertions "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1) >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target failed (build error or failing input); artifacts:" \
            "$crate_dir/fuzz/artifacts/$target/"
        exit 1
    fi
    grep -E "^(stat::(number_of_executed_units|peak_rss_mb)|#[0-9]+ *DONE)" "$log" || true
    rm -f "$log"
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
# crates/server/fuzz (parse_request with tiny limits, Frame round trip) covers the same code as
# crates/protocol/fuzz's parse_request, which also varies limits and chunking and checks Frame
# re-encoding; it is not run here to keep CI short. Run it by hand with cargo fuzz.
