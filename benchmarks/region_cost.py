"""What routing per region costs against routing per image, on a 1-megapixel photo.

A routed model (``--model``, default ``mor-dasr``) upscales a 1000x1000 crop of a photo
(``--image``; a synthetic image when it is absent) with ``routing="image"`` and
``routing="region"``, each with the default precision and backend, in interleaved rounds after
one untimed pass of each (graph compilation per tile shape is one-time work). Region routing
runs with the automatic tile and, for each side of ``--region-tiles``, with that tile side
(under region routing a tile is the unit of routing: the side is the granularity). The table
gives the median seconds, the median ratio to image routing of the same round, the tiles and
their side.

    OMP_NUM_THREADS=2 python benchmarks/region_cost.py --image photo.jpg [--rounds 3]
        [--region-tiles 256 320] [--json runs/region_cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mordasr.infer.pipeline import Upscaler
from mordasr.infer.progress import ProgressEvent

SIDE = 1000


def crop(path: Path | None, side: int) -> torch.Tensor:
    """(3, side, side) in [0, 1]: the centre of ``path``, or seeded noise."""
    if path is not None and path.is_file():
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
            array = np.asarray(rgb.crop((left, top, left + side, top + side)), np.float32) / 255
        return torch.from_numpy(array).permute(2, 0, 1)
    return torch.rand(3, side, side, generator=torch.Generator().manual_seed(0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mor-dasr")
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--side", type=int, default=SIDE)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--region-tiles", type=int, nargs="*", default=[])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    image = crop(args.image, args.side)
    runs: dict[str, tuple[str, int | str]] = {
        "image": ("image", "auto"),
        "region": ("region", "auto"),
    }
    runs.update({f"region-{side}": ("region", side) for side in args.region_tiles})
    tiles: dict[str, list[int]] = {name: [] for name in runs}

    def counter(name: str):
        def count(event: ProgressEvent) -> None:
            if event.stage == "tile" and event.tiles_total:
                tiles[name] = [event.tiles_total, event.tile_size or 0]

        return count

    upscalers = {
        name: Upscaler(args.model, device="cpu", routing=mode, tile=tile, progress=counter(name))
        for name, (mode, tile) in runs.items()
    }
    for upscaler in upscalers.values():
        upscaler.upscale_tensor(image)
    times: dict[str, list[float]] = {name: [] for name in upscalers}
    for index in range(args.rounds):
        shift = index % len(upscalers)
        names = list(upscalers)[shift:] + list(upscalers)[:shift]
        for name in names:
            start = time.perf_counter()
            upscalers[name].upscale_tensor(image)
            times[name].append(time.perf_counter() - start)
        print(json.dumps({"round": index, **{n: times[n][-1] for n in times}}), flush=True)
    ratios = {
        name: statistics.median(r / i for r, i in zip(times[name], times["image"], strict=True))
        for name in upscalers
    }
    report = {
        "configuration": upscalers["image"].configuration.describe(),
        "side": args.side,
        "seconds": times,
        "ratio_median": ratios["region"],
        "ratios": ratios,
        "tiles": tiles,
    }
    print("| routing | median s | ratio vs image | tiles | tile side |")
    print("|---|---:|---:|---:|---:|")
    for name in upscalers:
        count, side = tiles[name] or [0, 0]
        median = statistics.median(times[name])
        print(f"| {name} | {median:.1f} | {ratios[name]:.3f} | {count} | {side} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
