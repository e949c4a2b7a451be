"""Why `mordasr upscale` settings cannot work: one line each, with the fix where there is one.

They all run before any work (no model is loaded, no file is read).
"""

from __future__ import annotations

import argparse
import os

import torch

from mordasr.infer.backends import (
    ONNX_HINT,
    OPENVINO_HINT,
    onnxruntime_available,
    openvino_available,
)
from mordasr.infer.pipeline import MAX_STRENGTH, output_size


def result_error(args: argparse.Namespace) -> str | None:
    """Why the output size, strength or quality flags cannot work, or None."""
    if not 1 <= args.quality <= 100:
        return f"--quality must lie in 1..100 (got {args.quality})"
    if not 0.0 <= args.strength <= MAX_STRENGTH:
        return f"--strength must lie in 0..{MAX_STRENGTH} (got {args.strength})"
    try:
        output_size(1, 1, 4, outscale=args.outscale, out_width=args.width, out_height=args.height)
    except ValueError as error:
        return str(error)
    return None


def tile_error(
    tile: int, overlap: int, tile_flag: str, overlap_flag: str, factor: int
) -> str | None:
    """Why a tile side and overlap cannot work together (``factor``: tiles must exceed
    ``factor`` x overlap), or None."""
    if overlap < 0:
        return f"{overlap_flag} must be 0 or more (got {overlap})"
    if tile < 0:
        return f"{tile_flag} must be 0 (no tiling) or a positive side (got {tile})"
    if tile and tile <= factor * overlap:
        times = "" if factor == 1 else f"{factor} x "
        return (
            f"{tile_flag} must exceed {times}{overlap_flag} ({factor * overlap}): use e.g. "
            f"{tile_flag} {max(2 * factor * overlap, 64)}, or {overlap_flag} {(tile - 1) // factor}"
        )
    return None


def argument_error(args: argparse.Namespace) -> str | None:
    """The first argument or device error of an ``upscale`` command line, or None."""
    tile = 0 if args.tile == "auto" else args.tile
    errors = (
        tile_error(tile, args.tile_overlap, "--tile", "--tile-overlap", 2),
        tile_error(args.latent_tile, args.latent_overlap, "--latent-tile", "--latent-overlap", 1),
        "--vae-tile must be 0 (untiled) or a positive side" if args.vae_tile < 0 else None,
        f"--suffix {args.suffix!r} must not hold a path separator"
        if any(sep in args.suffix for sep in ("/", "\\", os.sep))
        else None,
        device_error(args.device),
        result_error(args),
        ONNX_HINT if args.backend == "onnxruntime" and not onnxruntime_available() else None,
        OPENVINO_HINT if args.backend == "openvino" and not openvino_available() else None,
        "--precision exact and --dtype disagree: --dtype already sets the precision"
        if args.precision == "exact" and args.dtype not in (None, "float32")
        else None,
    )
    return next((error for error in errors if error), None)


def device_error(name: str | None) -> str | None:
    """Why ``--device`` cannot be used on this machine (with the fix), or None."""
    if name is None or name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"--device {name!r} is not a device name: use cpu, cuda, cuda:N or mps"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "" if torch.version.cuda else " (this torch is built without CUDA)"
            return f"--device {name}: no CUDA device is available{build}; use --device cpu"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"--device {name}: there are {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            return f"--device {name}: MPS is not available here; use --device cpu"
    elif device.type != "cpu":
        return f"--device {name}: only cpu, cuda[:N] and mps are supported"
    return None
