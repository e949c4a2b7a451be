"""Throughput of batched degradation synthesis vs a per-image loop of the same operations.

The loop calls ``degrade`` on one image at a time (batch of 1), as a per-sample data loader
(e.g. OSEDiff's) would; the batched path synthesises the whole batch in one call. Both run the
same code, preset and patch size; rounds alternate between the two so that load from other
processes hits both alike, and the median round is reported.

HR patches are 256x256 crops of ``../shared/data/train/SunHays80_HR`` when that folder exists
(beside the project root), otherwise smooth random images.

Each round runs, for every thread count in ``--threads``, the batched call then the loop; the
table reports per setting the median images/s of each side and the median of the per-round
ratios, with the machine's load average before and after (other jobs on a shared machine slow
both sides, the ratio much less). ``--target`` is the ratio the batched path should reach.

Usage: ``python benchmarks/bench_degrade.py [--preset realesrgan] [--batch 16] [--rounds 7]
[--threads 1 2]``"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import add_workload_options, load_patches

from mordasr.degrade import degrade


def time_batched(hr: torch.Tensor, preset: str, seed: int) -> float:
    start = time.perf_counter()
    degrade(hr, preset, seed=seed)
    return time.perf_counter() - start


def time_loop(hr: torch.Tensor, preset: str, seed: int) -> float:
    start = time.perf_counter()
    for i in range(hr.shape[0]):
        degrade(hr[i : i + 1], preset, seed=seed * 1000 + i)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_options(parser, rounds=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads")
    parser.add_argument("--target", type=float, default=4.0, help="batched/loop ratio to reach")
    args = parser.parse_args()

    hr, origin = load_patches(args.batch, args.size, seed=0)
    load_before = os.getloadavg()[0]
    batched: dict[int, list[float]] = {t: [] for t in args.threads}
    loop: dict[int, list[float]] = {t: [] for t in args.threads}
    for threads in args.threads:
        torch.set_num_threads(threads)
        time_batched(hr, args.preset, seed=0)
        time_loop(hr[:2], args.preset, seed=0)
    for r in range(1, args.rounds + 1):
        for threads in args.threads:
            torch.set_num_threads(threads)
            batched[threads].append(args.batch / time_batched(hr, args.preset, seed=r))
            loop[threads].append(args.batch / time_loop(hr, args.preset, seed=r))
    print(
        f"degrade(): batched call vs per-image loop (same preset, same code, batch of 1)\n"
        f"preset={args.preset} batch={args.batch} HR={args.size}x{args.size} ({origin}), "
        f"{args.rounds} interleaved rounds, medians; cpus={os.cpu_count()}, "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(f"{'threads':>7} {'batched img/s':>14} {'loop img/s':>11} {'ratio':>7}  target")
    for threads in args.threads:
        ratios = [b / lo for b, lo in zip(batched[threads], loop[threads], strict=True)]
        ratio = statistics.median(ratios)
        verdict = "met" if ratio >= args.target else "not met"
        print(
            f"{threads:>7} {statistics.median(batched[threads]):>14.2f} "
            f"{statistics.median(loop[threads]):>11.2f} {ratio:>6.2f}x  "
            f">= {args.target:g}x {verdict}"
        )


if __name__ == "__main__":
    main()
