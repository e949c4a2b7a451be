"""How much tile overlap the default model needs: tiled output against the untiled one.

A real photo crop (``--size``, LR pixels; ``../shared/data``, else noise) is upscaled once whole
and once in tiles of ``--tile`` pixels for every overlap in ``--overlaps``, all in float32 on
the fastest exact backend, so that every difference comes from tiling. For each overlap: the
largest and the 99.9th-percentile difference from the untiled output (8-bit levels), the same
within 8 output pixels of a seam, the tiles, the time, and the input pixels computed per image
pixel (the overlap's cost: 1.0 without tiles).

    OMP_NUM_THREADS=2 python benchmarks/tile_overlap.py [--tile 352] [--size 704x528]
        [--overlaps 8 10 16 24 32] [--json runs/tile_overlap.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import photo_crop

from mordasr.infer.pipeline import Upscaler
from mordasr.infer.tiling import balanced_side, tile_starts

SEAM_BAND = 8
"""Output pixels on each side of a seam that the seam columns of the table cover."""


def photo(width: int, height: int) -> torch.Tensor:
    """(3, H, W) in [0, 1]: :func:`common.photo_crop` as a tensor."""
    array = np.asarray(photo_crop(width, height), np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


def levels(image: torch.Tensor) -> np.ndarray:
    return image.clamp(0, 1).mul(255).round().to(torch.int16).numpy()


def seam_mask(height: int, width: int, tile: int, overlap: int, scale: int) -> np.ndarray:
    """Output pixels within :data:`SEAM_BAND` of the middle of a strip two tiles share."""
    mask = np.zeros((height * scale, width * scale), bool)
    for axis, length in ((0, height), (1, width)):
        side = balanced_side(length, tile, overlap)
        starts = tile_starts(length, side, overlap)
        for previous, start in itertools.pairwise(starts):
            middle = (start + previous + side) // 2 * scale
            band = slice(max(middle - SEAM_BAND, 0), middle + SEAM_BAND)
            if axis == 0:
                mask[band, :] = True
            else:
                mask[:, band] = True
    return mask


def computed_share(height: int, width: int, tile: int, overlap: int) -> float:
    """Input pixels the tiles hold per image pixel."""
    side_h, side_w = balanced_side(height, tile, overlap), balanced_side(width, tile, overlap)
    rows = tile_starts(height, side_h, overlap)
    cols = tile_starts(width, side_w, overlap)
    return len(rows) * len(cols) * side_h * side_w / (height * width)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tile", type=int, default=352)
    parser.add_argument("--size", default="704x528", help="LR crop WIDTHxHEIGHT")
    parser.add_argument("--overlaps", type=int, nargs="+", default=[8, 10, 16, 24, 32])
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    image = photo(width, height)
    whole = Upscaler(args.model, device="cpu", tile=0, precision="exact")
    start = time.perf_counter()
    reference = levels(whole.upscale_tensor(image))
    rows: list[dict[str, object]] = [
        {"overlap": None, "seconds": time.perf_counter() - start, "computed_share": 1.0}
    ]
    for overlap in args.overlaps:
        tiled = Upscaler(
            args.model, device="cpu", tile=args.tile, tile_overlap=overlap, precision="exact"
        )
        start = time.perf_counter()
        out = levels(tiled.upscale_tensor(image))
        seconds = time.perf_counter() - start
        diff = np.abs(out - reference).max(axis=0)
        seam = seam_mask(height, width, args.tile, overlap, whole.scale)
        row = {
            "overlap": overlap,
            "seconds": seconds,
            "computed_share": computed_share(height, width, args.tile, overlap),
            "max_levels": int(diff.max()),
            "p999_levels": float(np.percentile(diff, 99.9)),
            "seam_max_levels": int(diff[seam].max()) if seam.any() else 0,
            "seam_p999_levels": float(np.percentile(diff[seam], 99.9)) if seam.any() else 0.0,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"tile": args.tile, "size": args.size, "model": args.model, "rows": rows}
    print(
        "| overlap | computed / image pixels | s | max diff | p99.9 diff | seam max | seam p99.9 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows[1:]:
        print(
            f"| {row['overlap']} | {row['computed_share']:.3f} | {row['seconds']:.1f} "
            f"| {row['max_levels']} | {row['p999_levels']:.1f} | {row['seam_max_levels']} "
            f"| {row['seam_p999_levels']:.1f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
