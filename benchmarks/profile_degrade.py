"""Where the time of ``degrade`` goes, per stage, batched vs one image per call.

Wraps the stage functions the pipeline calls (unsharp mask, per-image filters, resizes, noise,
JPEG, parameter sampling) with timers, runs the batched call and the per-image loop of
``benchmarks/bench_degrade.py`` on the same patches, and prints milliseconds per image for each
stage on both sides; "rest" is everything outside the wrapped stages (Python glue, indexing,
parameter dicts). It also times a call on a 16x16 image, i.e. the fixed cost of one call: a
batched call pays it once per batch, the loop once per image, so if both sides did the same
per-image work ``W`` the loop/batched ratio would be ``(fixed + W) / (W + fixed / batch)``.

Usage: ``python benchmarks/profile_degrade.py [--preset realesrgan] [--batch 16] [--rounds 3]
[--threads 1]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from common import add_workload_options, load_patches

from mordasr.degrade import degrade
from mordasr.degrade import pipeline as pl

STAGES = {
    "unsharp mask": ("usm_sharpen",),
    "blur / sinc filters": ("filter2d_canvas",),
    "resizes": ("resize_canvas",),
    "noise": ("_apply_noise",),
    "JPEG": ("jpeg_canvas",),
    "parameter sampling": ("_sample_blur", "_sample_final_sinc"),
}


def _timed(fn: Callable[..., Any], stage: str, totals: dict[str, float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[stage] += time.perf_counter() - start

    return wrapper


def profile(run: Callable[[], None], totals: dict[str, float]) -> float:
    """Wall time of ``run`` with every stage function of the pipeline timed into ``totals``."""
    originals = {name: getattr(pl, name) for names in STAGES.values() for name in names}
    for stage, names in STAGES.items():
        for name in names:
            setattr(pl, name, _timed(originals[name], stage, totals))
    try:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    finally:
        for name, fn in originals.items():
            setattr(pl, name, fn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_options(parser, rounds=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hr, origin = load_patches(args.batch, args.size, seed=0)
    degrade(hr, args.preset, seed=0)

    sides: dict[str, dict[str, float]] = {"batched": defaultdict(float), "loop": defaultdict(float)}
    for r in range(1, args.rounds + 1):
        sides["batched"]["total"] += profile(
            lambda r=r: degrade(hr, args.preset, seed=r), sides["batched"]
        )
        sides["loop"]["total"] += profile(
            lambda r=r: [
                degrade(hr[i : i + 1], args.preset, seed=r * 1000 + i) for i in range(args.batch)
            ],
            sides["loop"],
        )
    tiny = hr[:1, :, :16, :16]
    fixed = statistics.median(
        profile(lambda r=r: degrade(tiny, args.preset, seed=r), defaultdict(float))
        for r in range(10)
    )
    per_image = args.rounds * args.batch / 1000
    print(
        f"preset={args.preset} batch={args.batch} HR={args.size}x{args.size} ({origin}) "
        f"threads={torch.get_num_threads()} rounds={args.rounds}; ms per image"
    )
    print(f"{'stage':<22}{'batched':>10}{'loop':>10}{'loop/batched':>14}")
    for stage in [*STAGES, "rest", "total"]:
        b, lo = (
            side[stage] if stage != "rest" else side["total"] - sum(side[s] for s in STAGES)
            for side in (sides["batched"], sides["loop"])
        )
        print(f"{stage:<22}{b / per_image:>10.2f}{lo / per_image:>10.2f}{lo / b:>13.2f}x")
    work = sides["batched"]["total"] / per_image - fixed * 1000 / args.batch
    print(
        f"fixed cost of one call (16x16 image): {fixed * 1000:.2f} ms; per-image work in the "
        f"batched call ~{work:.2f} ms; ratio if the loop did the same work "
        f"{(fixed * 1000 + work) / (work + fixed * 1000 / args.batch):.2f}x"
    )


if __name__ == "__main__":
    main()
