"""How large a tile fits in memory: free memory, a model's memory per pixel, out-of-memory errors.

``tile="auto"`` picks the largest input tile whose working memory (the model's measured bytes
per input pixel times the tile's pixels) fits in a share of the free memory, capped so that a
laptop stays usable; an out-of-memory error then halves the tile (see
:meth:`mordasr.infer.pipeline.Upscaler`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import nn

from mordasr.nets.rrdbnet import RRDBNet

RRDBNET_BYTES_PER_PIXEL = 21_000
"""Peak memory growth per input pixel of the x4 RRDBNet (64 features) in float32, measured as
the slope of ``Maximum resident set size`` between 64x64 and 128x128 inputs (537164 and 789456
KiB: 20.5 KiB per pixel, rounded up) with the whole image as one tile::

    /usr/bin/time -v mordasr upscale crop64.png -o out --tile 0
    /usr/bin/time -v mordasr upscale crop128.png -o out --tile 0

Other RRDBNets are scaled by ``num_feat * scale**2`` (the upsampling tail dominates)."""

FALLBACK_BYTES_PER_PIXEL = 32_000
"""For models of unknown layout: a conservative guess (more than the x4 RRDBNet)."""

MEMORY_SHARE = 0.5
"""The share of the free memory a tile may use (the rest: the whole-image input and output,
other programs, allocator slack)."""

TILE_MEMORY_CAP = 5 * 2**29
"""At most 2.5 GiB per tile however much memory is free: keeps a 2000x1500 photo under 4 GiB
of peak memory on CPU with the default model (BENCHMARKS.md) while tiles stay large enough
that their overlap costs little."""

MIN_TILE = 96
"""Below this side, tiling overhead (the overlap) dominates; auto never goes lower."""

TILE_MULTIPLE = 16


def available_memory(device: torch.device) -> int:
    """Bytes free for tensors on ``device``: ``torch.cuda.mem_get_info`` on CUDA, else
    ``MemAvailable`` from ``/proc/meminfo`` (elsewhere: 4 GiB, an assumption)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def bytes_per_pixel(model: object, dtype: torch.dtype) -> int:
    """Working memory per input pixel of a feed-forward SR model at ``dtype``: from the
    measured RRDBNet figure for models built on one, small for models without parameters
    (interpolation), :data:`FALLBACK_BYTES_PER_PIXEL` otherwise."""
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    net = next((m for m in modules if isinstance(m, RRDBNet)), None)
    if net is not None:
        per_pixel = RRDBNET_BYTES_PER_PIXEL * net.config.num_feat * net.scale**2 // (64 * 16)
    elif not any(p.numel() for m in modules for p in m.parameters(recurse=False)):
        per_pixel = 64 * int(getattr(model, "scale", 4)) ** 2
    else:
        per_pixel = FALLBACK_BYTES_PER_PIXEL
    element = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    return max(per_pixel * element // 4, 1)


def auto_tile(per_pixel: int, free: int, overlap: int) -> int:
    """The largest input tile side (a multiple of 16) whose memory fits ``MEMORY_SHARE`` of
    ``free`` bytes and ``TILE_MEMORY_CAP``; at least ``MIN_TILE`` and over twice the overlap."""
    budget = min(free * MEMORY_SHARE, TILE_MEMORY_CAP)
    side = int(math.sqrt(max(budget, 0) / per_pixel)) // TILE_MULTIPLE * TILE_MULTIPLE
    floor = max(MIN_TILE, (2 * overlap // TILE_MULTIPLE + 1) * TILE_MULTIPLE)
    return max(side, floor)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed (CUDA, CPU, Python or ONNX Runtime, whose
    errors are plain ``Exception`` subclasses)."""
    if isinstance(error, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    from_runtime = isinstance(error, RuntimeError) or type(error).__module__.startswith(
        "onnxruntime"
    )
    return from_runtime and (
        "out of memory" in text
        or "failed to allocate" in text
        or "can't allocate" in text
        or "bad_alloc" in text
    )


@cache
def _libc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand memory freed by native code back to the operating system (glibc ``malloc_trim``).

    ONNX Runtime frees a tile's activations into the C heap, where glibc keeps them
    fragmented: without this the resident size grew by about 100 MiB per tile of a new shape
    (BENCHMARKS section 13). A no-op where ``malloc_trim`` does not exist."""
    trim = _libc_trim()
    if trim is not None:
        trim(0)
