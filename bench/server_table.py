#!/usr/bin/env python3
"""Turns bench/server_vs_redis.sh's raw results into markdown tables.

  server_table.py RESULTS.tsv          throughput: medians over rounds
  server_table.py --memory MEMORY.tsv  memory per key and restart times

RESULTS.tsv rows: round, server, workload, pipeline, ops/s, p50 ms, p99 ms.
MEMORY.tsv rows: server, keys, RSS empty, RSS loaded, disk loaded, disk after
clean shutdown, RSS after restart, RSS after 1M random GETs (bytes), load seconds,
restart after SIGKILL seconds, restart after SHUTDOWN seconds.
"""
import statistics
import sys
from collections import defaultdict

# Issue 6's targets: ringkv >= 1.0x Redis ops/s on SET and GET at every
# pipeline depth, with p99 no worse than 1.2x Redis'.
TARGET_WORKLOADS = ("SET", "GET")
OPS_RATIO_MIN = 1.0
P99_RATIO_MAX = 1.2
WORKLOAD_ORDER = ["SET", "GET", "INCR", "MSET", "MIXED_90_10", "GET_HOT"]
WORKLOAD_NAMES = {
    "MSET": "MSET (10 keys)",
    "MIXED_90_10": "90% GET / 10% SET",
    "GET_HOT": "GET, hot 1 000 keys",
}


def throughput(path: str) -> None:
    samples = defaultdict(lambda: defaultdict(list))  # (workload, P) -> server -> [(rps, p50, p99)]
    rounds = set()
    for line in open(path):
        if not line.strip():
            continue
        round_, server, workload, pipeline, rps, p50, p99 = line.split("\t")
        rounds.add(round_)
        samples[(workload, int(pipeline))][server].append((float(rps), float(p50), float(p99)))

    print(f"Medians over {len(rounds)} rounds; latencies in ms.")
    print()
    print("| workload | pipeline | ringkv ops/s | redis ops/s | ratio | ringkv p50/p99 | redis p50/p99 | p99 ratio | target |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|---|")
    keys = sorted(samples, key=lambda k: (k[1], WORKLOAD_ORDER.index(k[0]) if k[0] in WORKLOAD_ORDER else 99))
    for workload, pipeline in keys:
        by_server = samples[(workload, pipeline)]
        if "ringkv" not in by_server or "redis" not in by_server:
            continue
        med = {
            server: tuple(statistics.median(v[i] for v in values) for i in range(3))
            for server, values in by_server.items()
        }
        ours, theirs = med["ringkv"], med["redis"]
        ratio = ours[0] / theirs[0]
        p99_ratio = ours[2] / theirs[2] if theirs[2] > 0 else float("inf")
        if workload in TARGET_WORKLOADS:
            met = ratio >= OPS_RATIO_MIN and p99_ratio <= P99_RATIO_MAX
            target = "met" if met else "**not met**"
        else:
            target = "–"
        print(
            f"| {WORKLOAD_NAMES.get(workload, workload)} | {pipeline} | {ours[0]:,.0f} | {theirs[0]:,.0f} | "
            f"{ratio:.2f}x | {ours[1]:.3f} / {ours[2]:.3f} | {theirs[1]:.3f} / {theirs[2]:.3f} | "
            f"{p99_ratio:.2f}x | {target} |"
        )
    print()
    print("Per round (ops/s, p99 ms):")
    print()
    print("| workload | pipeline | server | " + " | ".join(f"round {r}" for r in sorted(rounds)) + " |")
    print("|---|--:|---|" + "--:|" * len(rounds))
    for workload, pipeline in keys:
        for server in ("ringkv", "redis"):
            values = samples[(workload, pipeline)].get(server, [])
            cells = " | ".join(f"{rps:,.0f} / {p99:.3f}" for rps, _, p99 in values)
            print(f"| {WORKLOAD_NAMES.get(workload, workload)} | {pipeline} | {server} | {cells} |")


def mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def memory(path: str) -> None:
    rows = {}
    for line in open(path):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        server = fields[0]
        keys = int(fields[1])
        numbers = [float(x) for x in fields[2:]]
        rows[server] = (keys, *numbers)
    print("| server | keys | RSS empty | RSS loaded | bytes/key (RSS) | bytes/key (RSS − empty) | disk loaded | disk after SHUTDOWN | RSS after restart | RSS after 1M random GETs | load s |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for server in ("ringkv", "redis"):
        if server not in rows:
            continue
        keys, empty, loaded, disk, disk_clean, rss_restart, rss_reads, load_s, _, _ = rows[server]
        print(
            f"| {server} | {keys:,} | {mib(empty)} | {mib(loaded)} | {loaded / keys:.1f} | "
            f"{(loaded - empty) / keys:.1f} | {mib(disk)} | {mib(disk_clean)} | {mib(rss_restart)} | "
            f"{mib(rss_reads)} | {load_s:.1f} |"
        )
    if "ringkv" in rows and "redis" in rows:
        ours, theirs = rows["ringkv"], rows["redis"]
        ratio = ours[2] / theirs[2]
        target = "met" if ratio <= 1.0 else "**not met**"
        print()
        print(f"bytes/key (RSS loaded) ringkv/redis: {ratio:.2f}x — target ≤ 1.0x: {target}")
    print()
    print("| server | restart after SIGKILL s | restart after SHUTDOWN s |")
    print("|---|--:|--:|")
    for server in ("ringkv", "redis"):
        if server in rows:
            print(f"| {server} | {rows[server][8]:.3f} | {rows[server][9]:.3f} |")
    if "ringkv" in rows and "redis" in rows:
        ours, theirs = rows["ringkv"], rows["redis"]
        crash = theirs[8] / ours[8]
        clean = theirs[9] / ours[9]
        print()
        print(
            f"Redis/ringkv restart time: after SIGKILL {crash:.1f}x, after SHUTDOWN {clean:.1f}x "
            f"(target ≥ 5x at 10 000 000 keys: {'met' if min(crash, clean) >= 5 else '**not met**'} at {ours[0]:,} keys)"
        )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--memory":
        memory(sys.argv[2])
    elif len(sys.argv) == 2:
        throughput(sys.argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
