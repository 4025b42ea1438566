#!/usr/bin/env python3
"""Writes N `SET key:%012d <value>` commands as RESP to stdout, for `redis-cli --pipe`.

Keys are named as redis-benchmark names them with `-r` (`key:` and the number
zero-padded to 12 digits), so loading `0..N-1` makes every
`redis-benchmark -t get -r N` request a hit.

Values:
  --values=x       `VALUE_BYTES` times `x`, the payload redis-benchmark's `-d`
                   sends (compresses to almost nothing).
  --values=random  base64 of random bytes, `VALUE_BYTES` printable characters
                   that neither side can compress much (LZ4 gains ~0%), so
                   memory and disk figures are not flattered by compression.

Usage: server_gen_sets.py N [--values=x|random] [--value-bytes=100]
"""
import base64
import os
import sys

CHUNK_KEYS = 10_000  # commands per write(2); keeps the generator's memory flat


def main() -> None:
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    count = int(args[0])
    values = "x"
    value_bytes = 100
    for arg in args[1:]:
        if arg.startswith("--values="):
            values = arg.split("=", 1)[1]
        elif arg.startswith("--value-bytes="):
            value_bytes = int(arg.split("=", 1)[1])
        else:
            sys.exit(f"unknown argument {arg!r}\n{__doc__}")
    assert values in ("x", "random"), values
    assert count >= 0 and value_bytes > 0

    out = sys.stdout.buffer
    head = b"*3\r\n$3\r\nSET\r\n$16\r\n"
    value_head = b"\r\n$%d\r\n" % value_bytes
    fixed_value = b"x" * value_bytes
    for start in range(0, count, CHUNK_KEYS):
        end = min(start + CHUNK_KEYS, count)
        if values == "random":
            # 3 random bytes -> 4 base64 characters; over-generate, then slice.
            raw = os.urandom(((end - start) * value_bytes * 3) // 4 + 3)
            pool = base64.b64encode(raw)
        parts = []
        for i in range(start, end):
            if values == "random":
                offset = (i - start) * value_bytes
                value = pool[offset:offset + value_bytes]
            else:
                value = fixed_value
            parts.append(b"%s%s%s%s\r\n" % (head, b"key:%012d" % i, value_head, value))
        out.write(b"".join(parts))
    out.flush()


if __name__ == "__main__":
    main()
