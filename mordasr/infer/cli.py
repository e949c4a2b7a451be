"""`mordasr upscale INPUT... -o OUT_DIR`: super-resolve files and folders.

The command line only: its flags, checked by :mod:`~mordasr.infer.checks`;
:mod:`~mordasr.infer.launch` gives this process's share of the inputs and its GPU, and
:mod:`~mordasr.infer.batch` runs the batch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from mordasr.estimate.learned import MIN_SIDE
from mordasr.infer.backends import BACKENDS, PRECISIONS
from mordasr.infer.batch import (
    DEFAULT_MAX_PIXELS,
    FAILURES_FILE,
    PROG,
    ResultOptions,
    plan_batch,
    run_batch,
)
from mordasr.infer.checks import argument_error
from mordasr.infer.launch import launch_device, launch_process, parse_shard, process_shard
from mordasr.infer.pipeline import MAX_STRENGTH, Upscaler
from mordasr.infer.progress import TqdmProgress
from mordasr.infer.video import DEFAULT_CRF
from mordasr.io.cliargs import add_subcommand
from mordasr.io.paths import OutputPlanError
from mordasr.sr.regions import REGION_WINDOW, ROUTING_MODES

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OUTPUT_FORMATS = ("auto", "png", "jpg", "webp", "tif", "bmp")

# The sub-command's help line and description.
SUMMARY = (
    "super-resolve images (x4) with the built-in MoR model or another",
    "Super-resolve image files and folders. Formats are detected from content; "
    "gray stays gray, alpha, 16-bit and float depth, colour profile and EXIF are kept, and "
    "whatever cannot be kept is reported. An input is never replaced, even with "
    "--overwrite, and inputs whose outputs would share a name are refused before any work. "
    "Existing outputs are never overwritten without --overwrite; unreadable files are "
    f"reported, skipped and listed in {FAILURES_FILE} (failures-K-of-N.csv for a share) in the "
    "output folder (exit status 1).",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``upscale`` sub-command."""
    parser = add_subcommand(subparsers, "upscale", SUMMARY)
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image or video files or folders"
    )
    parser.add_argument(
        "-o",
        "--output",
        default="out",
        help="output folder (default: out), or for one input file the result's file name "
        "(e.g. result.png or result.mp4; the format follows its extension)",
    )
    parser.add_argument(
        "--model",
        default="default",
        help="'default', a model folder, a backbone (realesrgan-x4plus, a .pth), or 'bicubic'",
    )
    parser.add_argument(
        "--tile",
        type=tile_setting,
        default="auto",
        help="input tile side: 'auto' (default: from the free memory; halved after an "
        "out-of-memory error) or pixels (0: whole image)",
    )
    parser.add_argument("--tile-overlap", type=int, default=32, help="tile overlap in LR pixels")
    parser.add_argument(
        "--device",
        default=None,
        help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:1..., or mps (Apple GPU)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): the fastest precision that kept the quality of float32 on this "
        "device (bfloat16 on CPUs with AMX or AVX512-BF16, half on CUDA); exact: float32",
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="force the network's dtype (overrides --precision); broken half-precision tiles "
        "are redone in float32",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="where the network runs (default auto: OpenVINO, else ONNX Runtime, on the CPU)",
    )
    parser.add_argument(
        "--routing",
        choices=ROUTING_MODES,
        default="image",
        help="MoR models: 'image' (default) routes the whole image by one set of degradation "
        "scores; 'region' scores overlapping regions of the image and routes every tile by "
        "the regions it covers (for unevenly degraded photos; smaller tiles)",
    )
    parser.add_argument(
        "--region-window",
        type=region_window,
        default=REGION_WINDOW,
        metavar="PX",
        help=f"with --routing region: the side of a region in input pixels (default "
        f"{REGION_WINDOW}, at least 32); smaller regions route finer and cost more",
    )
    _add_result_options(parser)
    sd = parser.add_argument_group("one-step SD models (a folder written by OneStepSR)")
    sd.add_argument(
        "--latent-tile", type=int, default=96, help="UNet latent tile side (0: whole latent)"
    )
    sd.add_argument("--latent-overlap", type=int, default=32, help="latent tile overlap")
    sd.add_argument(
        "--vae-tile", type=int, default=1024, help="VAE tile side in SR pixels (0: untiled)"
    )
    sd.add_argument(
        "--color-fix",
        choices=("wavelet", "adain", "none"),
        default="wavelet",
        help="restore the LR colours (default: wavelet)",
    )
    sd.add_argument("--prompt", default=None, help="a fixed prompt (default: the model's)")
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="auto",
        help="output format (default: same as the input)",
    )
    parser.add_argument("--suffix", default="", help="appended to output file stems")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (never an input)"
    )
    video = parser.add_argument_group(
        "videos (.mp4, .mov, .mkv, .webm; needs PyAV: pip install 'mordasr[video]')"
    )
    video.add_argument(
        "--crf",
        type=int,
        default=DEFAULT_CRF,
        help=f"video quality: constant rate factor, lower is better (default {DEFAULT_CRF})",
    )
    video.add_argument(
        "--codec", default=None, help="video encoder (default: libx264 yuv420p, VP9 for .webm)"
    )
    video.add_argument(
        "--routing-log",
        type=Path,
        default=None,
        metavar="FILE",
        help="append each video frame's shot, degradation scores and kept experts to this CSV",
    )
    video.add_argument(
        "--resume",
        action="store_true",
        help="continue a video cut short (Ctrl-C, a crash) after its last finished frames, "
        "kept in a hidden .<name>.parts folder beside the output, with the same settings",
    )
    parser.add_argument(
        "--shard",
        type=parse_shard,
        metavar="K/N",
        help="process only the K-th of N equal shares of the inputs (1-based), e.g. one per "
        "machine or job-array task; the N shares cover every input once. Under "
        "`accelerate launch`/torchrun the processes split the inputs (or this share) "
        "between them by themselves",
    )
    parser.set_defaults(func=run)


def tile_setting(value: str) -> int | str:
    """``--tile``: ``auto`` or a side in pixels (0: the whole image)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {value!r}") from None


def region_window(value: str) -> int:
    """``--region-window``: a side in pixels, at least the estimator's."""
    try:
        side = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {value!r}") from None
    if side < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"a region is at least {MIN_SIDE} px, got {side}")
    return side


def _pixel_count(value: str) -> int | None:
    """``--max-pixels``: a number of pixels, with an optional ``M`` (millions); 0: no limit."""
    text = value.strip().upper()
    scale = 1_000_000 if text.endswith("M") else 1
    try:
        count = float(text.removesuffix("M")) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected pixels such as 100M, got {value!r}") from None
    if not count >= 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more pixels, got {value!r}")
    return int(count) or None


def _add_result_options(parser: argparse.ArgumentParser) -> None:
    """Output size, strength, alpha, recursion, quality and progress flags."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--outscale",
        type=float,
        default=None,
        help="output scale, any factor (default: the model's, 4): the model's scale first, "
        "then a bicubic resize",
    )
    size.add_argument("--width", type=int, default=None, help="output width (keeps the aspect)")
    parser.add_argument(
        "--height", type=int, default=None, help="output height (with --width: both exact)"
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help=f"MoR models: scale of the adapter delta, 0 (the plain backbone) to 1 (default, "
        f"as trained); up to {MAX_STRENGTH} extrapolates, with a warning",
    )
    parser.add_argument(
        "--alpha",
        choices=("model", "bicubic"),
        default=None,
        help="alpha channel: through the model as gray (default for feed-forward models) "
        "or bicubic (default for one-step SD)",
    )
    parser.add_argument(
        "--recursive", action="store_true", help="also read sub-folders, keeping the tree"
    )
    parser.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    parser.add_argument(
        "--max-pixels",
        type=_pixel_count,
        default=DEFAULT_MAX_PIXELS,
        help="largest input, in pixels (e.g. 250M; 0: no limit), checked from each file's "
        f"header before it is decoded (default: {DEFAULT_MAX_PIXELS // 1_000_000}M)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars (default: on a terminal)"
    )


def _load_upscaler(args: argparse.Namespace, bars: TqdmProgress | None) -> Upscaler:
    return Upscaler(
        args.model,
        device=args.device,
        dtype=None if args.dtype is None else DTYPES[args.dtype],
        precision=args.precision,
        tile=args.tile or None,
        tile_overlap=args.tile_overlap,
        progress=bars or False,
        strength=args.strength,
        alpha=args.alpha,
        latent_tile=args.latent_tile,
        latent_overlap=args.latent_overlap,
        vae_tile=args.vae_tile,
        color_fix=args.color_fix,
        prompt=args.prompt,
        backend=args.backend,
        routing=args.routing,
        region_window=args.region_window,
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mordasr upscale``: exit status 0, 1 if any input failed, 2 for a bad
    command line (nothing done), 130 when interrupted.

    Every check that can fail without computing (arguments, device, output names, the output
    folder) runs before the model is loaded; inputs are never replaced.
    """
    try:
        return _run(args)
    except KeyboardInterrupt:  # before the batch started (its own summary covers the rest)
        print(f"{PROG}: interrupted before any image was upscaled", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        process = launch_process()
    except ValueError as bad_launch:
        print(
            f"{PROG}: cannot tell this process's share of the inputs: {bad_launch}", file=sys.stderr
        )
        return 2
    error = argument_error(args)
    if error is not None:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if process is not None and args.device in (None, "auto"):
        args.device = launch_device(os.environ, torch.cuda.device_count())
    try:
        plan = plan_batch(
            args.inputs,
            Path(args.output),
            recursive=args.recursive,
            fmt=args.format,
            suffix=args.suffix,
            shard=process_shard(args.shard, process),
            first=process is None or process[0] == 0,  # says what is shared by all processes
        )
    except OutputPlanError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    options = ResultOptions(
        args.outscale,
        args.width,
        args.height,
        args.quality,
        args.overwrite,
        args.max_pixels,
        crf=args.crf,
        codec=args.codec,
        routing_log=args.routing_log,
        resume=args.resume,
    )
    bars = TqdmProgress() if not args.quiet and sys.stderr.isatty() else None
    return run_batch(plan, options, lambda: _load_upscaler(args, bars), model=args.model, bars=bars)
