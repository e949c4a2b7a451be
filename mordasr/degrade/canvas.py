"""Batches of images of different sizes stored top-left in one tensor (a "canvas").

Per-image random resizing gives every image of a batch its own size. Rather than looping, the
pipeline keeps them in one ``(B, C, Hc, Wc)`` tensor with each image's valid size in ``hs`` and
``ws`` (``(B,)`` int64 tensors); whatever lies outside the valid area is never read as image
content: padding for convolution and JPEG is rebuilt from the valid area with index gathers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``out[b, c, i, :] = x[b, c, index[b, i], :]``."""
    b, c, _, w = x.shape
    return x.gather(2, index.view(b, 1, -1, 1).expand(b, c, index.shape[1], w))


def gather_cols(x: Tensor, index: Tensor) -> Tensor:
    """``out[b, c, :, j] = x[b, c, :, index[b, j]]``."""
    b, c, h, _ = x.shape
    return x.gather(3, index.view(b, 1, 1, -1).expand(b, c, h, index.shape[1]))


def repeat_last_rows(x: Tensor, hs: Tensor) -> Tensor:
    """Rows at or below each image's height replaced by its last valid row.

    Equals ``gather_rows(x, clamp_index(H, hs))``; a selection is cheaper than a gather.
    """
    if bool((hs == x.shape[-2]).all()):
        return x
    last = gather_rows(x, (hs - 1).view(-1, 1))
    inside = torch.arange(x.shape[-2], device=x.device).view(1, 1, -1, 1) < hs.view(-1, 1, 1, 1)
    return torch.where(inside, x, last)


def repeat_last_cols(x: Tensor, ws: Tensor) -> Tensor:
    """Columns at or right of each image's width replaced by its last valid column."""
    if bool((ws == x.shape[-1]).all()):
        return x
    last = gather_cols(x, (ws - 1).view(-1, 1))
    inside = torch.arange(x.shape[-1], device=x.device).view(1, 1, 1, -1) < ws.view(-1, 1, 1, 1)
    return torch.where(inside, x, last)


def clamp_index(length: int, sizes: Tensor, offset: int = 0) -> Tensor:
    """Positions ``offset .. offset+length-1`` clamped into each image's ``[0, size)``."""
    pos = torch.arange(length, device=sizes.device) + offset
    return torch.minimum(pos.clamp(min=0).unsqueeze(0), (sizes - 1).unsqueeze(1))


def reflect_index(length: int, sizes: Tensor, offset: int = 0) -> Tensor:
    """Positions mirrored into ``[0, size)`` without repeating the edge (``F.pad`` 'reflect')."""
    pos = (torch.arange(length, device=sizes.device) + offset).unsqueeze(0)
    period = (2 * (sizes - 1)).clamp(min=1).unsqueeze(1)
    folded = pos.remainder(period)
    mirrored = torch.where(folded > (sizes - 1).unsqueeze(1), period - folded, folded)
    return torch.where(sizes.unsqueeze(1) > 1, mirrored, torch.zeros_like(mirrored))


def _fills(x: Tensor, hs: Tensor, ws: Tensor) -> bool:
    """Whether every image fills the whole canvas (then plain padding is enough)."""
    h, w = x.shape[-2:]
    return bool((hs == h).all() and (ws == w).all())


def replicate_fill(x: Tensor, hs: Tensor, ws: Tensor, height: int, width: int) -> Tensor:
    """Canvas of ``height x width`` whose area outside each valid image repeats its edge."""
    h, w = x.shape[-2:]
    if height >= h and width >= w and _fills(x, hs, ws):
        return F.pad(x, (0, width - w, 0, height - h), mode="replicate")
    x = gather_rows(x, clamp_index(height, hs))
    return gather_cols(x, clamp_index(width, ws))


def reflect_pad(x: Tensor, hs: Tensor, ws: Tensor, pad: int) -> Tensor:
    """Canvas grown by ``pad`` on every side, each image mirrored about its own valid edges."""
    height, width = x.shape[-2:]
    if pad < min(height, width) and _fills(x, hs, ws):
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = gather_rows(x, reflect_index(height + 2 * pad, hs, -pad))
    return gather_cols(x, reflect_index(width + 2 * pad, ws, -pad))


def full_sizes(x: Tensor) -> tuple[Tensor, Tensor]:
    """Valid sizes of a plain batch where every image fills the tensor."""
    b, _, h, w = x.shape
    return (
        torch.full((b,), h, dtype=torch.long, device=x.device),
        torch.full((b,), w, dtype=torch.long, device=x.device),
    )


CHUNK_VALUES = 1 << 19
"""Elements per slice of a batch in memory-bound CPU stages (2 MB of float32, ``map_chunks``)."""


def map_chunks(fn: Callable[..., Tensor], x: Tensor, *per_image: Tensor) -> Tensor:
    """``fn(x, *per_image)`` applied to slices of the batch of about ``CHUNK_VALUES`` elements.

    For stages where each image is processed independently: on CPU, the intermediates of a
    slice stay in cache, which speeds up memory-bound stages (FFT filtering, JPEG, unsharp
    mask) on large batches. Other devices take the whole batch at once.
    """
    step = max(1, CHUNK_VALUES // max(1, x[0].numel()))
    if x.device.type != "cpu" or step >= x.shape[0]:
        return fn(x, *per_image)
    parts = [
        fn(x[i : i + step], *(t[i : i + step] for t in per_image))
        for i in range(0, x.shape[0], step)
    ]
    return torch.cat(parts)


def size_groups(areas: list[int], overhead: float) -> list[list[int]]:
    """Split images into groups of similar size (area, kernel taps...) to limit padding waste.

    Minimises ``sum over groups of (images x largest area) + overhead`` over groups of
    consecutive images in size order (dynamic programming); returns image indices per group.
    """
    order = sorted(range(len(areas)), key=lambda i: -areas[i])
    best = [0.0] + [math.inf] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):
            cost = best[start] + (end - start) * areas[order[start]] + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups = []
    end = len(order)
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]
