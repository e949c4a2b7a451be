"""Seconds per input megapixel of several models, each as `mordasr upscale` runs it by default.

Every model upscales the same PNG crop of a real photo (``../shared/data``, else noise) through
``Upscaler(model).upscale_file`` with the default precision and backend, in interleaved rounds
in a rotating order after one untimed pass each; the table gives the median seconds per input
megapixel and the median ratio to the first model of the same round.

    OMP_NUM_THREADS=2 python benchmarks/bench_models.py --models realesrgan-x4plus \\
        realesr-animevideov3 [--size 256x256] [--rounds 3] [--json runs/bench_models.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import photo_crop

from mordasr.infer.pipeline import Upscaler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--size", default="256x256", help="WIDTHxHEIGHT")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    upscalers = {name: Upscaler(name, device="cpu") for name in args.models}
    times: dict[str, list[float]] = {name: [] for name in upscalers}
    ratios: dict[str, list[float]] = {name: [] for name in upscalers}
    first = args.models[0]
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.png", Path(folder) / "out.png"
        photo_crop(width, height).save(source)
        for upscaler in upscalers.values():
            upscaler.upscale_file(source, target)
        for index in range(args.rounds):
            names = (
                args.models[index % len(args.models) :] + args.models[: index % len(args.models)]
            )
            got = {}
            for name in names:
                start = time.perf_counter()
                upscalers[name].upscale_file(source, target)
                got[name] = time.perf_counter() - start
            for name in upscalers:
                times[name].append(got[name])
                ratios[name].append(got[name] / got[first])
            print(json.dumps({"round": index, **got}), flush=True)
    megapixels = width * height / 1e6
    rows = [
        {
            "model": name,
            "configuration": upscalers[name].configuration.describe(),
            "s_per_mp": statistics.median(times[name]) / megapixels,
            "ratio": statistics.median(ratios[name]),
            "seconds": times[name],
        }
        for name in upscalers
    ]
    print(f"| model ({args.size}) | ran on | s / MP | ratio vs {first} |")
    print("|---|---|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['configuration']} | {row['s_per_mp']:.1f} "
            f"| {row['ratio']:.3f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": args.size, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
