"""Run an image-to-image network on overlapping tiles and blend the results seamlessly.

Large images do not fit a super-resolution network's activations in memory, so the input is cut
into tiles of at most ``tile`` pixels a side, each axis into as few tiles as that allows and those
no larger than needed (:func:`balanced_side`). Neighbouring tiles share a strip of at least
``2 * overlap`` pixels; the seam sits in the middle of that strip and the two outputs are
cross-faded there with a raised-cosine ramp ``blend`` pixels wide. An output pixel therefore only
ever takes weight from tiles in which it lies at least ``overlap - blend / 2`` input pixels away
from a cut edge: for a network whose receptive field reaches no further than that, the tiled
result equals the untiled one (up to float rounding). Image borders are not cut edges; the
network sees them exactly as it would untiled.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from mordasr.sr.regions import TileBox

SIDE_MULTIPLE = 16
"""Balanced tile sides are multiples of this (convolution kernels block by 16 channels and
pixels: a 352x341 tile ran about 10 % slower per pixel than 352x336 on OpenVINO)."""
TileFn = Callable[[torch.Tensor], torch.Tensor]
BoxedTileFn = Callable[[torch.Tensor, TileBox], torch.Tensor]
"""A tile function that is also told where its tile lies (for per-tile routing)."""
TileProgress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` before each tile and once when all are done, e.g. to
feed a web page's bar; an exception it raises stops the work before the next tile."""


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Evenly spread start offsets of tiles covering ``length`` pixels.

    Consecutive tiles share at least ``2 * overlap`` pixels (less up to ``align``); a length
    that fits in one tile gives the single start 0 (that tile is then only ``length`` long).
    Starts are multiples of ``align`` (for networks that pixel-unshuffle their input, so every
    tile sees the same pixel grid; ``length`` and ``tile`` must then be multiples of it too).
    """
    if length <= tile:
        return [0]
    step = tile - 2 * overlap
    count = math.ceil((length - tile) / step) + 1
    return [align * round(i * (length - tile) / (count - 1) / align) for i in range(count)]


def balanced_side(length: int, tile: int, overlap: int, align: int = 1) -> int:
    """The smallest tile side (a multiple of ``align`` and of :data:`SIDE_MULTIPLE`, at most
    ``tile``) that covers ``length`` pixels with as few tiles as ``tile`` would: a 384-pixel
    axis cut by 352-pixel tiles takes two of 224, not two of 352, so that overlap is all the
    extra work tiling costs."""
    if length <= tile:
        return length
    count = math.ceil((length - tile) / (tile - 2 * overlap)) + 1
    side = math.ceil((length + 2 * overlap * (count - 1)) / count)
    step = math.lcm(align, SIDE_MULTIPLE)
    side = step * math.ceil(side / step)
    return min(max(side, 2 * overlap + align), tile)


def _seams(starts: Sequence[int], size: int) -> list[float]:
    """Seam positions: the middle of the strip each pair of neighbouring tiles shares."""
    return [(nxt + prev + size) / 2 for prev, nxt in itertools.pairwise(starts)]


def _rise(positions: torch.Tensor, seam: float, half: float) -> torch.Tensor:
    """0 before the seam, 1 after it, with a raised-cosine ramp of half-width ``half``."""
    if half <= 0:
        return (positions >= seam).to(positions.dtype)
    t = ((positions - (seam - half)) / (2 * half)).clamp(0, 1)
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def axis_weights(
    length: int, tile: int, overlap: int, blend: float, scale: int, align: int = 1
) -> list[tuple[int, int, torch.Tensor]]:
    """Per tile along one axis: input start, input size and its output-resolution weights.

    The weights of all tiles sum to one at every output pixel.
    """
    size = balanced_side(length, tile, overlap, align)
    starts = tile_starts(length, size, overlap, align)
    seams = _seams(starts, size)
    # Keep neighbouring ramps apart so at most two tiles ever share a pixel.
    gaps = [b - a for a, b in itertools.pairwise(seams)]
    halves = [
        min([blend / 2] + [gap / 2 for gap in gaps[max(j - 1, 0) : j + 1]])
        for j in range(len(seams))
    ]
    result = []
    for index, start in enumerate(starts):
        positions = torch.arange(start * scale, (start + size) * scale, dtype=torch.float64) + 0.5
        weight = torch.ones_like(positions)
        if index > 0:
            weight *= _rise(positions, seams[index - 1] * scale, halves[index - 1] * scale)
        if index < len(seams):
            weight *= 1 - _rise(positions, seams[index] * scale, halves[index] * scale)
        result.append((start, size, weight))
    return result


def tiled_forward(
    fn: TileFn,
    image: torch.Tensor,
    scale: int,
    tile: int | None = 256,
    overlap: int = 16,
    *,
    blend: float | None = None,
    progress: bool | TileProgress = False,
    align: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` ((B, C, h, w) -> (B, C', h*scale, w*scale)) to ``image`` tile by tile
    (:func:`tiled_forward_at`, ``fn`` not told where its tile lies)."""
    return tiled_forward_at(
        lambda tile_image, _box: fn(tile_image),
        image,
        scale,
        tile,
        overlap,
        blend=blend,
        progress=progress,
        align=align,
    )


def tiled_forward_at(
    fn: BoxedTileFn,
    image: torch.Tensor,
    scale: int,
    tile: int | None = 256,
    overlap: int = 16,
    *,
    blend: float | None = None,
    progress: bool | TileProgress = False,
    align: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` ((B, C, h, w) tile and its :data:`TileBox` -> (B, C', h*scale, w*scale))
    to ``image`` tile by tile.

    ``tile`` is the largest input tile side (``None`` or 0: one pass over the whole image),
    ``overlap`` the context each tile keeps beyond a seam, in input pixels, and ``blend`` the
    width of the cross-fade at a seam (default ``overlap``; 0 gives hard seams). The result is
    exact for networks whose receptive radius is at most ``overlap - blend / 2`` input pixels.
    ``progress`` shows a tqdm bar over the tiles or, if callable, is a :data:`TileProgress`
    (an untiled pass counts as one tile); tile starts are multiples of ``align`` (see
    :func:`tile_starts`).

    Memory beyond ``fn``'s own: the output image and one weight row and column per tile (the
    per-pixel weight normaliser is the outer product of the per-axis sums, never a full image).
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) image, got shape {tuple(image.shape)}")
    height, width = image.shape[-2:]
    report = progress if callable(progress) else None
    if not tile or (height <= tile and width <= tile):
        if report is not None:
            report(0, 1)
        whole = fn(image, (0, 0, height, width))
        if report is not None:
            report(1, 1)
        return whole
    blend = overlap if blend is None else blend
    if overlap < 0 or tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must exceed twice the overlap ({overlap}), overlap >= 0")
    if not 0 <= blend <= 2 * overlap:
        raise ValueError(f"blend must lie in [0, 2 * overlap], got {blend}")
    rows = axis_weights(height, tile, overlap, blend, scale, align)
    cols = axis_weights(width, tile, overlap, blend, scale, align)
    output: torch.Tensor | None = None
    count = len(rows) * len(cols)
    quiet = report is not None or not progress
    with tqdm(total=count, desc="tiles", disable=quiet, leave=False) as bar:
        for row, (y0, tile_h, weight_y) in enumerate(rows):
            for col, (x0, tile_w, weight_x) in enumerate(cols):
                bar.update()
                if report is not None:
                    report(row * len(cols) + col, count)
                weight = weight_y[:, None] * weight_x[None, :]
                if not bool(weight.any()):
                    continue
                box = (y0, x0, y0 + tile_h, x0 + tile_w)
                result = fn(image[..., y0 : y0 + tile_h, x0 : x0 + tile_w], box)
                expected = (tile_h * scale, tile_w * scale)
                if result.ndim != 4 or tuple(result.shape[-2:]) != expected:
                    raise ValueError(
                        f"fn returned shape {tuple(result.shape)} for a {tile_h}x{tile_w} tile; "
                        f"expected (..., {expected[0]}, {expected[1]}) at scale {scale}"
                    )
                if output is None:
                    output = result.new_zeros((*result.shape[:2], height * scale, width * scale))
                ys = slice(y0 * scale, y0 * scale + expected[0])
                xs = slice(x0 * scale, x0 * scale + expected[1])
                output[..., ys, xs] += result * weight.to(result.device, result.dtype)
    if output is None:
        raise RuntimeError("no tile carried any weight")
    if report is not None:
        report(count, count)
    return _normalise(output, _axis_total(rows, height, scale), _axis_total(cols, width, scale))


def _axis_total(
    weights: list[tuple[int, int, torch.Tensor]], length: int, scale: int
) -> torch.Tensor:
    """The sum of one axis's tile weights at every output position (one up to rounding)."""
    total = torch.zeros(length * scale, dtype=torch.float64)
    for start, _, weight in weights:
        total[start * scale : start * scale + weight.numel()] += weight
    return total


def _normalise(output: torch.Tensor, total_y: torch.Tensor, total_x: torch.Tensor) -> torch.Tensor:
    """Divide ``output`` in place by the separable weight sum ``total_y[:, None] * total_x``."""
    device, dtype = output.device, output.dtype
    output /= total_y.to(device, dtype)[:, None]
    output /= total_x.to(device, dtype)[None, :]
    return output
