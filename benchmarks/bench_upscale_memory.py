"""Peak memory of `mordasr upscale` with its defaults (``--tile auto``) on a large photo.

Runs the real command line (``mordasr.cli.main``) in this process; run it under
``/usr/bin/time -v`` and read "Maximum resident set size". A full CPU run of the default model on
a 2000x1500 photo costs about 36 MFLOP x 3 MP x 1.5 (tile overlap), hours on a loaded 2-core
machine, so ``--real-tiles N`` runs the network on the first N tiles only and gives every later
tile (none larger than the first) a bicubic stand-in of the same output shape. Every
whole-image buffer (input, tiled output, resize, saving) is the real one, and the network's
working memory is reached on the first tile, so the peak is the full run's peak as long as
memory does not grow from tile to tile. Without ``--real-tiles`` every tile is real.

    /usr/bin/time -v python benchmarks/bench_upscale_memory.py photo.jpg -o out [--real-tiles 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch.nn.functional as F
from torch import Tensor

from mordasr.cli import main
from mordasr.infer import pipeline
from mordasr.infer.tiling import BoxedTileFn
from mordasr.sr.regions import TileBox


def _limit_real_tiles(count: int) -> None:
    """Make ``tiled_forward_at`` call the network on its first ``count`` tiles only."""
    real_tiled_forward = pipeline.tiled_forward_at

    def tiled_forward_at(
        fn: BoxedTileFn, image: Tensor, scale: int, *args: object, **kwargs: object
    ) -> Tensor:
        calls = 0

        def some_real(tile: Tensor, box: TileBox) -> Tensor:
            nonlocal calls
            calls += 1
            if calls <= count:
                return fn(tile, box)
            return F.interpolate(tile, scale_factor=scale, mode="bicubic", align_corners=False)

        return real_tiled_forward(some_real, image, scale, *args, **kwargs)  # type: ignore[arg-type]

    pipeline.tiled_forward_at = tiled_forward_at


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-tiles", type=int, default=None)
    args, rest = parser.parse_known_args()
    if args.real_tiles is not None:
        _limit_real_tiles(args.real_tiles)
    start = time.perf_counter()
    status = main(["upscale", *rest])
    print(f"wall {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(run())
