"""Tiled inference for latent diffusion: the UNet over latent tiles, the VAE over image tiles.

Tiles of at most ``tile`` input pixels a side overlap their neighbours by at least ``overlap``
pixels; the last tile of a row or column sits flush with the border. Outputs are blended with
per-tile Gaussian weights centred on the tile (sigma = 0.1 of its side, StableSR's and OSEDiff's
choice) and normalised by their sum, so a constant result stays constant. Unlike theirs, a
tile's weight is zero in the outer quarter of the overlap at every cut edge (not at image
borders), where a network's output is corrupted by the zero padding of the cut: a network whose
receptive radius is at most ``overlap // 4`` input pixels gives exactly its untiled result.

The VAE normalises with GroupNorm over the whole image, which tiles see only a part of. As in
the "Tiled VAE" of multidiffusion-upscaler (its fast mode), the GroupNorm statistics are first
measured on a nearest-neighbour downscaled copy of the whole input and then frozen for every
tile, so all tiles are normalised alike and the seams vanish; measured on the full-size input
(``stats_side`` at least its longest side) they are the exact untiled statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm

from mordasr.infer.tiling import TileProgress, tiled_forward

TileFn = Callable[[Tensor], Tensor]

GAUSSIAN_SIGMA = 0.1
"""Standard deviation of the blending weights, as a fraction of the tile side."""


def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """Start and size of the tiles covering ``length`` pixels along one axis.

    Starts are multiples of ``align`` and evenly spread, the last tile ends at ``length``, and
    neighbours share at least ``overlap`` pixels. A length that fits in one tile gives one span.
    """
    if length <= tile:
        return [(0, length)]
    size = tile // align * align
    max_step = (size - overlap) // align
    if max_step < 1:
        raise ValueError(f"tile ({tile}) must exceed the overlap ({overlap}) by {align} or more")
    steps = (length - size) // align
    count = math.ceil(steps / max_step) + 1
    return [(align * round(i * steps / (count - 1)), size) for i in range(count)]


def axis_weights(size: int, first: bool, last: bool, margin: int) -> Tensor:
    """Blending weights of one tile along one axis at output resolution (float64).

    A Gaussian centred on the tile, zero within ``margin`` pixels of a cut edge (an edge that is
    not the image border: ``first``/``last`` say the tile touches the start/end border).
    """
    if first and last:
        return torch.ones(size, dtype=torch.float64)
    positions = torch.arange(size, dtype=torch.float64)
    weight = torch.exp(-0.5 * ((positions - (size - 1) / 2) / (GAUSSIAN_SIGMA * size)) ** 2)
    if not first:
        weight[:margin] = 0
    if not last:
        weight[size - margin :] = 0
    return weight


def _blend_tiles(
    fn: TileFn,
    x: Tensor,
    tile: int,
    overlap: int,
    up: int,
    down: int,
    progress: bool | TileProgress,
) -> Tensor:
    """Tile ``x`` and blend ``fn``'s outputs, which are ``up / down`` times the tile size."""
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    height, width = x.shape[-2:]
    if height % down or width % down:
        raise ValueError(f"tiled sides must be multiples of {down}, got {height}x{width}")
    margin = overlap * up // (4 * down)
    axes = []
    for length in (height, width):
        spans = tile_spans(length, tile, overlap, down)
        axes.append(
            [
                (start, size, axis_weights(size * up // down, i == 0, i == len(spans) - 1, margin))
                for i, (start, size) in enumerate(spans)
            ]
        )
    rows, cols = axes
    output: Tensor | None = None
    dtype = x.dtype
    total = torch.zeros(height * up // down, width * up // down, dtype=torch.float64)
    report = progress if callable(progress) else None
    count = len(rows) * len(cols)
    quiet = report is not None or not progress
    with tqdm(total=count, desc="tiles", disable=quiet, leave=False) as bar:
        for row, (y0, tile_h, weight_y) in enumerate(rows):
            for col, (x0, tile_w, weight_x) in enumerate(cols):
                if report is not None:
                    report(row * len(cols) + col, count)
                result = fn(x[..., y0 : y0 + tile_h, x0 : x0 + tile_w])
                expected = (tile_h * up // down, tile_w * up // down)
                if result.ndim != 4 or tuple(result.shape[-2:]) != expected:
                    raise ValueError(
                        f"fn returned shape {tuple(result.shape)} for a {tile_h}x{tile_w} tile; "
                        f"expected (B, C, {expected[0]}, {expected[1]})"
                    )
                if output is None:
                    dtype = result.dtype
                    shape = (*result.shape[:2], *total.shape)
                    output = torch.zeros(shape, dtype=torch.float32, device=result.device)
                weight = weight_y[:, None] * weight_x[None, :]
                ys = slice(y0 * up // down, y0 * up // down + expected[0])
                xs = slice(x0 * up // down, x0 * up // down + expected[1])
                output[..., ys, xs] += result.float() * weight.to(result.device, torch.float32)
                total[ys, xs] += weight
                bar.update()
    if output is None:
        raise RuntimeError("no tile was processed")
    if report is not None:
        report(count, count)
    return (output / total.to(output.device, torch.float32)).to(dtype)


def _fits(x: Tensor, tile: int) -> bool:
    return tile <= 0 or max(x.shape[-2:]) <= tile


def tiled_latent_forward(
    fn: TileFn, latents: Tensor, tile: int, overlap: int, progress: bool | TileProgress = False
) -> Tensor:
    """Run the shape-preserving ``fn`` (e.g. the routed UNet's x0 prediction) on latent tiles.

    ``tile`` and ``overlap`` are in latent pixels; ``tile <= 0`` or latents that fit in one tile
    give exactly ``fn(latents)``. ``progress`` shows a tqdm bar over the tiles or, if callable,
    is a :data:`~mordasr.infer.tiling.TileProgress` (an untiled pass counts as one tile).
    """
    if _fits(latents, tile):
        return tiled_forward(fn, latents, 1, None, progress=progress)
    return _blend_tiles(fn, latents, tile, overlap, 1, 1, progress)


def group_norms(module: nn.Module) -> list[nn.GroupNorm]:
    """The GroupNorm layers of ``module`` (itself included)."""
    return [layer for layer in module.modules() if isinstance(layer, nn.GroupNorm)]


def self_attentions(module: nn.Module) -> list[nn.Module]:
    """Spatial self-attention layers of ``module``: diffusers ``Attention`` with a GroupNorm.

    They take keys and values from ``encoder_hidden_states`` when given (the tokens after their
    ``group_norm``), from their own normalised input otherwise.
    """
    return [
        layer
        for layer in module.modules()
        if isinstance(getattr(layer, "group_norm", None), nn.GroupNorm)
        and hasattr(layer, "to_k")
        and not getattr(layer, "is_cross_attention", False)
    ]


@dataclass
class GlobalContext:
    """What a VAE's layers compute over the whole image, measured once for all tiles.

    ``norms``: per GroupNorm layer, per call in forward order, mean and variance (B, groups);
    ``tokens``: per self-attention layer, per call, its normalised input tokens (B, N, C), the
    keys and values of the whole image.
    """

    norms: dict[nn.GroupNorm, list[tuple[Tensor, Tensor]]] = field(default_factory=dict)
    tokens: dict[nn.Module, list[Tensor]] = field(default_factory=dict)


@contextmanager
def _hooks(handles: list[RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def measure_global_context(module: nn.Module, fn: TileFn, x: Tensor) -> GlobalContext:
    """Run ``fn(x)`` and record the GroupNorm statistics and attention tokens of ``module``."""
    context = GlobalContext()

    def record_norm(layer: nn.GroupNorm, args: tuple[Tensor, ...], output: Tensor) -> None:
        grouped = args[0].detach().float().reshape(args[0].shape[0], layer.num_groups, -1)
        var, mean = torch.var_mean(grouped, dim=-1, unbiased=False)
        context.norms.setdefault(layer, []).append((mean, var))

    def record_tokens(attention: nn.Module) -> Callable:
        def hook(layer: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            context.tokens.setdefault(attention, []).append(output.detach().transpose(1, 2))

        return hook

    handles = [layer.register_forward_hook(record_norm) for layer in group_norms(module)]
    handles += [  # self_attentions keeps only layers whose group_norm is a GroupNorm
        cast(nn.GroupNorm, layer.group_norm).register_forward_hook(record_tokens(layer))
        for layer in self_attentions(module)
    ]
    with torch.no_grad(), _hooks(handles):
        fn(x)
    return context


@contextmanager
def frozen_global_context(context: GlobalContext) -> Iterator[None]:
    """Make the recorded layers use ``context`` instead of what they compute on their input.

    GroupNorm layers normalise with the recorded statistics; self-attention layers attend to
    the recorded tokens. A layer called several times per forward uses its calls' records in turn.
    """
    calls: dict[nn.Module, int] = {}

    def next_record(layer: nn.Module, records: list) -> Any:
        index = calls.get(layer, 0)
        calls[layer] = index + 1
        return records[index % len(records)]

    def normalise(layer: nn.GroupNorm, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
        x = args[0]
        mean, var = next_record(layer, context.norms[layer])
        grouped = x.float().reshape(x.shape[0], layer.num_groups, -1)
        normed = ((grouped - mean[..., None]) * torch.rsqrt(var[..., None] + layer.eps)).view(
            x.shape
        )
        if layer.affine:
            channel = (1, -1) + (1,) * (x.ndim - 2)
            normed = normed * layer.weight.view(channel) + layer.bias.view(channel)
        return normed.to(output.dtype)

    def attend_globally(
        layer: nn.Module, args: tuple, kwargs: dict[str, Any]
    ) -> tuple[tuple, dict[str, Any]]:
        tokens = next_record(layer, context.tokens[layer])
        return args, {**kwargs, "encoder_hidden_states": tokens}

    handles = [layer.register_forward_hook(normalise) for layer in context.norms]
    handles += [
        layer.register_forward_pre_hook(attend_globally, with_kwargs=True)
        for layer in context.tokens
    ]
    with _hooks(handles):
        yield


def _stats_copy(x: Tensor, side: int, align: int) -> Tensor:
    """``x`` shrunk by nearest neighbour (which keeps its value distribution) to ``side``."""
    height, width = x.shape[-2:]
    factor = min(1.0, side / max(height, width))
    size = [max(align, round(n * factor / align) * align) for n in (height, width)]
    if size == [height, width]:
        return x
    return F.interpolate(x, size=size, mode="nearest-exact")


def _tiled_vae(
    fn: TileFn,
    x: Tensor,
    tile: int,
    overlap: int,
    up: int,
    down: int,
    norm_module: nn.Module | None,
    stats_side: int | None,
    progress: bool,
) -> Tensor:
    if _fits(x, tile):
        return fn(x)
    if norm_module is None and isinstance(fn, nn.Module):
        norm_module = fn
    if norm_module is None:
        return _blend_tiles(fn, x, tile, overlap, up, down, progress)
    reference = _stats_copy(x, tile if stats_side is None else stats_side, down)
    with frozen_global_context(measure_global_context(norm_module, fn, reference)):
        return _blend_tiles(fn, x, tile, overlap, up, down, progress)


def tiled_vae_encode(
    encoder_fn: TileFn,
    image: Tensor,
    tile: int,
    overlap: int,
    downscale: int,
    *,
    norm_module: nn.Module | None = None,
    stats_side: int | None = None,
    progress: bool = False,
) -> Tensor:
    """Encode ``image`` (B, 3, H, W) to latents (B, C, H/downscale, W/downscale) tile by tile.

    ``tile`` and ``overlap`` are in image pixels (tile starts are multiples of ``downscale``, so
    a tiled side must be one too); ``tile <= 0`` or an image that fits in one tile gives exactly
    ``encoder_fn(image)``. The GroupNorm layers of ``norm_module`` (default: ``encoder_fn`` if it
    is a module; none: plain blended tiles) are frozen at statistics measured on a copy of the
    image shrunk to ``stats_side`` pixels on its longest side (default ``tile``: the memory of
    one tile; at least the image's side: the exact statistics, at the memory of an untiled pass).
    """
    return _tiled_vae(
        encoder_fn, image, tile, overlap, 1, downscale, norm_module, stats_side, progress
    )


def tiled_vae_decode(
    decoder_fn: TileFn,
    latents: Tensor,
    tile: int,
    overlap: int,
    upscale: int,
    *,
    norm_module: nn.Module | None = None,
    stats_side: int | None = None,
    progress: bool = False,
) -> Tensor:
    """Decode ``latents`` (B, C, h, w) to images (B, 3, h*upscale, w*upscale) tile by tile.

    ``tile`` and ``overlap`` are in latent pixels; the rest as :func:`tiled_vae_encode` (with
    ``stats_side`` in latent pixels too).
    """
    return _tiled_vae(
        decoder_fn, latents, tile, overlap, upscale, 1, norm_module, stats_side, progress
    )
