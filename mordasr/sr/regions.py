"""Routing by region: degradation scores per region of an image, so that each tile can fold its
own kept ranks (``--routing region``).

Real photos are not uniformly degraded (noise in the shadows, defocus in the background, JPEG
blocks in flat areas), so one score vector per image routes some regions wrongly. Following
M3ESR's region router (section 3.3, eq. 13), the image is covered by a grid of overlapping
windows (:class:`RegionGrid`), each scored in one of two ways (:data:`RegionSource`):

- ``estimator`` — the degradation estimator (the routers' own input) on each window;
- ``uncertainty`` — the uncertainty map ``U = |backbone(x) - bicubic(x)|`` of the frozen
  backbone (M3ESR's eq. 13) pooled over each window; a region's scores are the image's scores
  times its ``U`` relative to the image's mean ``U`` (clamped to [0, 1]), so regions the
  backbone changes more route as more degraded.

The window scores are then smoothed over neighbouring regions (a Gaussian over the grid) so
that neighbours do not flip between expert sets. A tile's scores are the region scores averaged
over the windows its core overlaps (:func:`tile_core`: the tile without the context it shares
with its neighbours), weighted by the overlap's area (:meth:`RegionScores.for_box`).
Which source routes by default, the window size and the tile size are to be settled by
measurement; M3ESR's text, depth and segmentation modalities need weights that are not available
offline and are not built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mordasr.mor import LayerPlan, RoutingPlan, mor_layers

RoutingMode = Literal["image", "region"]
"""How a MoR model is routed: one plan per ``image``, or one per tile from its ``region``."""
ROUTING_MODES: tuple[str, ...] = get_args(RoutingMode)
RegionSource = Literal["estimator", "uncertainty"]
"""What scores a region: the estimator on its window, or the pooled uncertainty map."""
REGION_SOURCES: tuple[str, ...] = get_args(RegionSource)

REGION_WINDOW = 64
"""Side of a region's window in LR pixels (at least the estimator's ``MIN_SIDE``)."""
REGION_STRIDE = 64
"""Distance between neighbouring windows in LR pixels: windows tile the image without
overlap, so the estimator scores each pixel once (overlapping by half cost four times the
estimator work, BENCHMARKS.md section 22)."""
REGION_SMOOTHING = 0.5
"""Standard deviation, in regions, of the Gaussian that smooths scores over the grid (half a
region: 32 LR pixels)."""
TILE_WINDOWS = 4
"""Under region routing a tile's core (its part between seams) spans this many windows."""
UNCERTAINTY_BLOCK = 128
"""LR block side over which the frozen backbone runs for the uncertainty map (memory)."""
UNCERTAINTY_CONTEXT = 16
"""LR pixels of context each block of the uncertainty map keeps beyond its edges."""
ESTIMATOR_BATCH = 64
"""Windows the estimator scores at once."""

TileBox = tuple[int, int, int, int]
"""(top, left, bottom, right) of an input tile in LR pixels."""


def check_routing(routing: str) -> RoutingMode:
    """``routing`` if it names a :data:`RoutingMode`, else a ValueError listing them."""
    if routing not in ROUTING_MODES:
        raise ValueError(f"unknown routing {routing!r}; choose one of {', '.join(ROUTING_MODES)}")
    return routing  # type: ignore[return-value]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Evenly spread starts of windows covering ``length`` pixels, neighbours at most
    ``stride`` apart (a single start 0 when the window covers everything)."""
    if length <= window:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class RegionGrid:
    """Overlapping windows over an LR image: ``rows`` x ``cols`` regions."""

    height: int
    width: int
    window: tuple[int, int]
    """(height, width) of every window (the image's side where it is smaller)."""
    tops: tuple[int, ...]
    lefts: tuple[int, ...]

    @classmethod
    def over(
        cls, height: int, width: int, window: int = REGION_WINDOW, stride: int = REGION_STRIDE
    ) -> RegionGrid:
        """The grid of ``window``-sided windows ``stride`` apart over a ``height`` x ``width``
        image."""
        if not 0 < stride <= window:
            raise ValueError(f"stride must lie in (0, window], got {stride} for {window}")
        return cls(
            height,
            width,
            (min(window, height), min(window, width)),
            tuple(window_starts(height, window, stride)),
            tuple(window_starts(width, window, stride)),
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of regions."""
        return len(self.tops), len(self.lefts)

    def crops(self, image: Tensor) -> Tensor:
        """(B * rows * cols, C, *window) windows of ``image`` (B, C, height, width), image by
        image, row by row."""
        wh, ww = self.window
        crops = [
            image[:, None, :, top : top + wh, left : left + ww]
            for top in self.tops
            for left in self.lefts
        ]
        return torch.cat(crops, dim=1).flatten(0, 1)

    def pool(self, values: Tensor, scale: int = 1) -> Tensor:
        """(B, rows, cols) means of ``values`` (B, height * scale, width * scale) over each
        window (a map at ``scale`` times the LR resolution)."""
        wh, ww = self.window
        rows = torch.stack(
            [values[:, t * scale : (t + wh) * scale, :].mean(dim=1) for t in self.tops], dim=1
        )
        return torch.stack(
            [rows[..., x * scale : (x + ww) * scale].mean(dim=-1) for x in self.lefts], dim=-1
        )

    def coverage(self, box: TileBox) -> Tensor:
        """(rows, cols) area of each window inside ``box`` (float64)."""
        top, left, bottom, right = box
        wh, ww = self.window
        ys = torch.tensor([max(0, min(bottom, t + wh) - max(top, t)) for t in self.tops])
        xs = torch.tensor([max(0, min(right, x + ww) - max(left, x)) for x in self.lefts])
        return ys.double()[:, None] * xs.double()[None, :]


def smooth(values: Tensor, sigma: float = REGION_SMOOTHING) -> Tensor:
    """(B, D, rows, cols) values averaged with their neighbours by a Gaussian of ``sigma``
    regions, renormalised at the grid's edges (a constant grid stays constant); 0: unchanged."""
    if sigma <= 0:
        return values
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (taps[:, None] * taps[None, :])[None, None].to(values.device)
    batch, dims, rows, cols = values.shape
    flat = values.float().reshape(batch * dims, 1, rows, cols)
    summed = F.conv2d(flat, kernel, padding=radius)
    weight = F.conv2d(torch.ones_like(flat[:1]), kernel, padding=radius)
    return (summed / weight).reshape(batch, dims, rows, cols)


@dataclass(frozen=True)
class RegionScores:
    """What the routers see, per region of an image: the smoothed region scores."""

    grid: RegionGrid
    scores: Tensor
    """(B, D, rows, cols) float32 router inputs."""

    def for_box(self, box: TileBox) -> Tensor:
        """(B, D) scores of the tile ``box``: the region scores weighted by the area of each
        window inside the tile."""
        weights = self.grid.coverage(box)
        total = float(weights.sum())
        if total <= 0:
            raise ValueError(f"the tile {box} lies outside the image's regions")
        weights = (weights / total).to(self.scores)
        return torch.einsum("bdrc,rc->bd", self.scores, weights)

    def per_region(self) -> Tensor:
        """(B * rows * cols, D) scores, image by image, row by row (to route every region)."""
        return self.scores.permute(0, 2, 3, 1).flatten(0, 2)

    def tile_side(self, overlap: int) -> int:
        """The largest input tile side that keeps routing at the grid's granularity: a core of
        :data:`TILE_WINDOWS` windows plus ``overlap`` on each side."""
        return TILE_WINDOWS * max(self.grid.window) + 2 * overlap


def tile_core(box: TileBox, height: int, width: int, overlap: int) -> TileBox:
    """The core of the input tile ``box`` in an image of ``height`` x ``width``: ``overlap``
    pixels in from every side that borders another tile (sides on the image's edge stay).
    Its output comes mostly from the core, so the core, not the context it keeps, routes it."""
    top, left, bottom, right = box
    return (
        top + overlap if top > 0 else top,
        left + overlap if left > 0 else left,
        bottom - overlap if bottom < height else bottom,
        right - overlap if right < width else right,
    )


def relative_uncertainty_scores(image_scores: Tensor, uncertainty: Tensor) -> Tensor:
    """(B, D, rows, cols) region scores from the image's (B, D) scores and each region's pooled
    uncertainty (B, rows, cols): the scores times the region's uncertainty over the image's
    mean, clamped to [0, 1]."""
    mean = uncertainty.mean(dim=(1, 2), keepdim=True).clamp_min(1e-8)
    relative = uncertainty / mean
    return (image_scores.float()[:, :, None, None] * relative[:, None]).clamp(0.0, 1.0)


def frozen_plan(network: nn.Module) -> RoutingPlan:
    """A plan under which ``network``'s MoR layers run their frozen weights only (no adapter):
    the plain backbone, for the uncertainty map."""
    layers = {
        name: LayerPlan(layer.config, None, layer.base_layer.weight.detach().float()[None])
        for name, layer in mor_layers(network)
    }
    return RoutingPlan(None, layers)


@torch.no_grad()
def uncertainty_map(network: nn.Module, lr: Tensor, scale: int, multiple_of: int = 1) -> Tensor:
    """(B, height * scale, width * scale) M3ESR's uncertainty ``|f(x) - bicubic(x)|`` (mean
    over channels) of ``network`` run frozen (without its adapters) on ``lr`` (B, 3, h, w),
    block by block (:data:`UNCERTAINTY_BLOCK`) so that large images fit in memory."""
    height, width = lr.shape[-2:]
    parameter = next(network.parameters(), None)
    dtype = lr.dtype if parameter is None else parameter.dtype
    padded = _pad_to(lr.float(), multiple_of)
    block = _round_up(UNCERTAINTY_BLOCK, multiple_of)
    context = _round_up(UNCERTAINTY_CONTEXT, multiple_of)
    full_h, full_w = padded.shape[-2:]
    out = padded.new_zeros(padded.shape[0], 3, full_h * scale, full_w * scale)
    with frozen_plan(network).applied(network):
        for top in range(0, full_h, block):
            for left in range(0, full_w, block):
                y0, x0 = max(0, top - context), max(0, left - context)
                y1, x1 = min(full_h, top + block + context), min(full_w, left + block + context)
                sr = network(padded[..., y0:y1, x0:x1].to(dtype)).float()
                bottom, right = min(full_h, top + block), min(full_w, left + block)
                out[..., top * scale : bottom * scale, left * scale : right * scale] = sr[
                    ...,
                    (top - y0) * scale : (bottom - y0) * scale,
                    (left - x0) * scale : (right - x0) * scale,
                ]
    sr = out[..., : height * scale, : width * scale].clamp(0.0, 1.0)
    up = F.interpolate(lr.float(), scale_factor=scale, mode="bicubic", align_corners=False)
    return (sr - up.clamp(0.0, 1.0)).abs().mean(dim=1)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad_to(image: Tensor, multiple: int) -> Tensor:
    """``image`` replicated at the bottom and right to sides that are multiples of
    ``multiple``."""
    pad_h, pad_w = -image.shape[-2] % multiple, -image.shape[-1] % multiple
    if not pad_h and not pad_w:
        return image
    return F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
