#!/usr/bin/env python3
"""Throughput per 100 ms window, sampled from a server's INFO, and its chart.

Two commands (used by bench/flush_dips.sh):

  throughput_windows.py sample PORT OUT.csv
      Until SIGTERM or SIGINT: every 100 ms (monotonic, drift-free), reads
      `total_commands_processed` from `INFO stats` and, where the server has
      them (ringkv's `INFO engine`), `flushes` and `compactions`; appends
      `seconds,commands,flushes,compactions` to OUT.csv. Speaks RESP on a raw
      socket: no client library needed.

  throughput_windows.py chart OUT.svg NAME=RUN.csv [NAME=RUN.csv ...]
      Per run: ops/s of each 100 ms window from the first window with traffic
      to the last, its median, the windows below 50% of that median, the
      lowest window, and (ringkv) when flushes and compactions ended. Prints a
      Markdown table and writes an SVG line chart with every run on one set of
      axes (flushes marked as ticks under their run's line).
"""

import csv
import signal
import socket
import statistics
import sys
import time

INTERVAL = 0.1


def command(sock, reader, *args):
    out = b"*%d\r\n" % len(args)
    for arg in args:
        data = arg.encode()
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    sock.sendall(out)
    line = reader.readline()
    if line.startswith(b"-"):
        return ""
    if not line.startswith(b"$"):
        raise RuntimeError("unexpected reply %r" % line)
    size = int(line[1:])
    body = reader.read(size + 2)
    return body[:-2].decode(errors="replace")


def fields(text):
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def sample(port, path):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    sock = socket.create_connection(("127.0.0.1", int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    engine = "flushes:" in command(sock, reader, "INFO", "engine")
    start = time.monotonic()
    tick = 0
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["seconds", "commands", "flushes", "compactions"])
        while not stop:
            stats = fields(command(sock, reader, "INFO", "stats"))
            eng = fields(command(sock, reader, "INFO", "engine")) if engine else {}
            now = time.monotonic() - start
            out.writerow(
                [
                    "%.4f" % now,
                    stats.get("total_commands_processed", "0"),
                    eng.get("flushes", ""),
                    eng.get("compactions", ""),
                ]
            )
            f.flush()
            tick += 1
            delay = start + tick * INTERVAL - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def windows(path):
    """(start seconds, ops/s, flushes ended in it, compactions ended in it) per window."""
    rows = list(csv.DictReader(open(path)))
    out = []
    for before, after in zip(rows, rows[1:]):
        span = float(after["seconds"]) - float(before["seconds"])
        if span <= 0:
            continue
        ops = (int(after["commands"]) - int(before["commands"])) / span
        delta = lambda k: (int(after[k]) - int(before[k])) if after[k] and before[k] else 0
        out.append((float(before["seconds"]), ops, delta("flushes"), delta("compactions")))
    # The run: the windows with traffic (the sampler's own INFO calls are a
    # few commands a window), less the first and the last, which the load
    # starts or stops inside of.
    busy = [i for i, w in enumerate(out) if w[1] > 1000]
    if len(busy) < 3:
        return []
    run = out[busy[0] + 1 : busy[-1]]
    t0 = run[0][0]
    return [(t - t0, ops, fl, co) for t, ops, fl, co in run]


def summary(run):
    rates = [w[1] for w in run]
    median = statistics.median(rates)
    low = [r for r in rates if r < 0.5 * median]
    return {
        "windows": len(rates),
        "median": median,
        "below": len(low),
        "lowest": min(rates),
        "p1": sorted(rates)[max(0, len(rates) // 100 - 1)],
        "flushes": sum(w[2] for w in run),
        "compactions": sum(w[3] for w in run),
    }


COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]


def chart(svg_path, runs):
    width, height = 1000, 420
    left, right, top, bottom = 70, 20, 30, 60
    xmax = max(w[0] for _, run in runs for w in run) + INTERVAL
    # Up to a round 100k above the highest window, gridlines every fifth of it.
    ymax = (int(max(w[1] for _, run in runs for w in run) * 1.05) // 100_000 + 1) * 100_000
    x = lambda t: left + (width - left - right) * t / xmax
    y = lambda v: top + (height - top - bottom) * (1 - v / ymax)
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
        'font-family="sans-serif" font-size="12">' % (width, height),
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="%d" y="18" font-size="14">SET throughput per 100 ms window '
        "(redis-benchmark -P 16, 50 clients, 100-byte values)</text>" % left,
    ]
    for i in range(6):
        v = ymax * i / 5
        parts.append(
            '<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>'
            % (left, width - right, y(v), y(v))
        )
        parts.append(
            '<text x="%d" y="%.1f" text-anchor="end">%dk</text>' % (left - 6, y(v) + 4, v / 1000)
        )
    step = 10 if xmax > 30 else 5
    t = 0
    while t <= xmax:
        parts.append(
            '<text x="%.1f" y="%d" text-anchor="middle">%ds</text>' % (x(t), height - bottom + 16, t)
        )
        t += step
    parts.append(
        '<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>'
        % (left, width - right, height - bottom, height - bottom)
    )
    for i, (name, run) in enumerate(runs):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join("%.1f,%.1f" % (x(t + INTERVAL / 2), y(v)) for t, v, _, _ in run)
        parts.append(
            '<polyline fill="none" stroke="%s" stroke-width="1.2" points="%s"/>' % (colour, points)
        )
        med = summary(run)["median"]
        parts.append(
            '<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="2,4"/>'
            % (left, width - right, y(0.5 * med), y(0.5 * med), colour)
        )
        mark_y = height - bottom + 24 + 10 * i
        for t, _, flushes, _ in run:
            if flushes:
                parts.append(
                    '<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s"/>'
                    % (x(t), x(t), mark_y, mark_y + 7, colour)
                )
        parts.append(
            '<text x="%d" y="%d" fill="%s">%s (dashed: 50%% of its median; ticks below the axis: flushes)</text>'
            % (left + 10, top + 16 + 16 * i, colour, name)
        )
    parts.append("</svg>")
    with open(svg_path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "chart":
        runs = []
        for arg in sys.argv[3:]:
            name, _, path = arg.partition("=")
            runs.append((name, windows(path)))
        runs = [(name, run) for name, run in runs if run]
        print("| server | windows | median ops/s | windows < 50% of median | lowest | 1st percentile | flushes | compactions |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|")
        for name, run in runs:
            s = summary(run)
            print(
                "| %s | %d | %s | %d | %s | %s | %d | %d |"
                % (
                    name,
                    s["windows"],
                    format(round(s["median"]), ","),
                    s["below"],
                    format(round(s["lowest"]), ","),
                    format(round(s["p1"]), ","),
                    s["flushes"],
                    s["compactions"],
                )
            )
        chart(sys.argv[2], runs)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
