"""Speed of the 16-bit PNG reader, and equality with the reader it replaced.

A 2000x1500 16-bit RGB PNG whose rows use all five filter types (random filter bytes and
random filtered data, which any PNG decoder must accept) is decoded by ``decode_png16``
(median of ``--rounds``, wall and CPU time) and once by the previous byte-by-byte reader, read
from git history (commit ``abe25f6``), and the two results are compared bit for bit.

    python benchmarks/bench_png16.py [--rounds 5] [--width 2000] [--height 1500]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import subprocess
import time
import types
import zlib
from pathlib import Path

import numpy as np

from mordasr.io.png16 import SIGNATURE, decode_png16

PREVIOUS = "abe25f6"
"""The last commit with the byte-by-byte reader."""


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def random_png(height: int, width: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    body = rng.integers(0, 256, (height, width * 6 + 1), dtype=np.uint8)
    body[:, 0] = rng.integers(0, 5, height)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    idat = _chunk(b"IDAT", zlib.compress(body.tobytes(), 6))
    return SIGNATURE + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")


def previous_reader() -> types.ModuleType:
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{PREVIOUS}:mordasr/io/png16.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("previous_png16")
    exec(compile(source, "previous_png16.py", "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()
    data = random_png(args.height, args.width)
    walls, cpus = [], []
    for _ in range(args.rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        decoded = decode_png16(data)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(
        f"vectorised: wall median {statistics.median(walls):.2f} s (min {min(walls):.2f}), "
        f"CPU median {statistics.median(cpus):.2f} s over {args.rounds} rounds"
    )
    wall, cpu = time.perf_counter(), time.process_time()
    reference = previous_reader().decode_png16(data)
    print(
        f"previous ({PREVIOUS}): wall {time.perf_counter() - wall:.1f} s, "
        f"CPU {time.process_time() - cpu:.1f} s"
    )
    same = reference.dtype == decoded.dtype and np.array_equal(reference, decoded)
    print(f"bit-identical: {same}")


if __name__ == "__main__":
    main()
