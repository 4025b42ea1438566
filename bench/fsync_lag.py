#!/usr/bin/env python3
"""WAL fsync lag under a write load (docs/durability.md): how long an acknowledged write waits
for the fsync that makes it survive a power loss.

    bench/fsync_lag.py PORT SECONDS

Polls INFO persistence as fast as it can: at each sample it notes (time, engine_last_sequence);
a noted sequence is covered once wal_synced_seq reaches it, and its lag is the time between the
two samples (an upper bound: it includes one polling interval). Prints max, p99, p50 over all
samples. Run a write load (redis-benchmark -t set) against the same server meanwhile.
"""
import socket
import sys
import time


def info(sock, buf):
    sock.sendall(b"*2\r\n$4\r\nINFO\r\n$11\r\npersistence\r\n")
    while True:
        if buf.startswith(b"$") and b"\r\n" in buf:
            head, rest = buf.split(b"\r\n", 1)
            n = int(head[1:])
            if len(rest) >= n + 2:
                return rest[:n].decode(), rest[n + 2:]
        buf += sock.recv(65536)


def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    sock = socket.create_connection(("127.0.0.1", port))
    buf = b""
    pending = []  # (time, seq) not yet covered by an fsync
    lags = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        text, buf = info(sock, buf)
        now = time.monotonic()
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        last, synced = int(fields["engine_last_sequence"]), int(fields["wal_synced_seq"])
        while pending and pending[0][1] <= synced:
            lags.append(now - pending[0][0])
            pending.pop(0)
        if last > synced and (not pending or pending[-1][1] < last):
            pending.append((now, last))
    if pending:
        lags.append(time.monotonic() - pending[0][0])
    lags.sort()
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1000
    print(f"samples {len(lags)}  fsync lag ms: max {lags[-1] * 1000:.1f}  p99 {pick(0.99):.1f}  p50 {pick(0.5):.1f}")


main()
