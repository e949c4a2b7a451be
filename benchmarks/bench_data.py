"""Pairs per second the streaming training data delivers with 0, 1 and 2 workers, and memory.

Over a folder of generated photos (default 2000 JPEGs of 1024x768, and the same run over 20 of
them), :class:`mordasr.train.dataset.TrainingBatches` reads, decodes and crops HR patches on
demand and :class:`~mordasr.train.dataset.DegradeCollate` synthesises their LR inputs, in the
workers when there are any (what a CPU training run would do). Nothing consumes the batches, so
this is the most the pipeline can deliver to a training step. Each round runs every
(folder, workers) setting once, starting at a fresh step; the first batch (worker start-up) is
not timed. Peak memory is the largest sum of the proportional set sizes (PSS: each shared page
split between the processes sharing it) of this process and its workers, sampled by psutil
every 0.1 s: what the machine spends on the pipeline, shared libraries and all.

    python benchmarks/bench_data.py [--photos 2000] [--small 20] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import PeakMemory, generate_photos

from mordasr.train.dataset import DegradeCollate, HRCropDataset, TrainingBatches


def measure(
    files: list[Path], workers: int, start: int, args: argparse.Namespace
) -> tuple[float, int]:
    """(pairs per second after the first batch, peak PSS bytes) of ``args.steps`` batches."""
    dataset = HRCropDataset(files, args.patch, args.batch, seed=0)
    collate = DegradeCollate(args.preset, scale=4, seed=0)
    batches = TrainingBatches(
        dataset, start, start + args.steps + 1, num_workers=workers, collate=collate
    )
    with PeakMemory() as memory:
        stream = iter(batches)
        next(stream)
        begin = time.perf_counter()
        count = sum(batch["lr"].shape[0] for batch in stream)
        seconds = time.perf_counter() - begin
    return count / seconds, memory.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000, help="photos in the large folder")
    parser.add_argument("--small", type=int, default=20, help="photos in the small folder")
    parser.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT of the photos")
    parser.add_argument("--folder", help="keep the generated photos here (default: a temp dir)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=256, help="HR crop side")
    parser.add_argument("--preset", nargs="+", default=["mordasr-mild", "mordasr-severe"])
    parser.add_argument("--steps", type=int, default=12, help="timed batches per setting")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.folder or scratch)
        tic = time.perf_counter()
        files = generate_photos(folder, args.photos, width, height)
        print(f"{len(files)} photos of {args.size} ready in {time.perf_counter() - tic:.0f} s")
        folders = {args.photos: files, args.small: files[: args.small]}
        rates: dict[tuple[int, int], list[float]] = {}
        peaks: dict[tuple[int, int], list[int]] = {}
        load_before = os.getloadavg()[0]
        for round_index in range(args.rounds):
            for photos, subset in folders.items():
                for workers in args.workers:
                    start = 1000 * (round_index + 1)
                    rate, peak = measure(subset, workers, start, args)
                    rates.setdefault((photos, workers), []).append(rate)
                    peaks.setdefault((photos, workers), []).append(peak)
                    print(
                        f"round {round_index}: {photos} photos, {workers} workers: "
                        f"{rate:.2f} pairs/s, peak {peak / 2**20:.0f} MiB",
                        flush=True,
                    )
        load_after = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for (photos, workers), values in rates.items():
        base = rates[(photos, args.workers[0])]
        rows.append(
            {
                "photos": photos,
                "workers": workers,
                "pairs_per_s": statistics.median(values),
                "ratio": statistics.median(v / b for v, b in zip(values, base, strict=True)),
                "peak_mib": max(peaks[(photos, workers)]) / 2**20,
            }
        )
    print(
        f"\nbatch {args.batch} x {args.patch} px, presets {', '.join(args.preset)}, "
        f"{args.steps} timed batches x {args.rounds} rounds, torch {torch.__version__}, "
        f"load average {load_before:.1f} -> {load_after:.1f}\n"
    )
    print(f"| photos | workers | pairs/s | ratio vs {args.workers[0]} workers | peak PSS MiB |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['photos']} | {row['workers']} | {row['pairs_per_s']:.2f} | "
            f"{row['ratio']:.2f} | {row['peak_mib']:.0f} |"
        )
    if args.json:
        meta = {**vars(args), "load_before": load_before, "load_after": load_after}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
