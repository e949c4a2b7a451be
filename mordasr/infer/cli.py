"""`mordasr upscale INPUT... -o OUT_DIR`: super-resolve files and folders.

Big batches split: ``--shard K/N`` takes one of N disjoint shares (machines, job arrays), and
under ``accelerate launch``/``torchrun`` each process takes its own share (and GPU) from the
launcher's environment; the shares never wait for each other and never write the same file.
"""

from __future__ import annotations

import argparse
import csv
import os
import pickle
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from mordasr.infer.backends import BACKENDS, ONNX_HINT, onnxruntime_available
from mordasr.infer.pipeline import MAX_STRENGTH, Upscaler, output_size
from mordasr.infer.progress import TqdmProgress
from mordasr.io.cliargs import add_subcommand
from mordasr.io.image import (
    DataDroppedWarning,
    ImageReadError,
    UnsupportedFormatError,
    read_image,
    save_like,
    sniff_format,
)
from mordasr.io.paths import (
    SUBFOLDER,
    InputScan,
    OutputPlanError,
    check_output_folder,
    check_plan,
    scan_inputs,
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OUTPUT_FORMATS = ("auto", "png", "jpg", "webp", "tif", "bmp")
_SUFFIX_OF_FORMAT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
PROG = "mordasr upscale"
FAILURES_FILE = "failures.csv"
MODEL_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    SafetensorError,
)
"""What loading a model can raise for a bad name, file or manifest (each shown as one line)."""

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


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) -> ``(K, N)``: this job's share of the inputs out of N jobs."""
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"--shard wants K/N with 1 <= K <= N, got {text!r}")
    return int(k), int(n)


def shard_files(files: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    """Files ``K, K + N, K + 2N, ...`` (1-based) of ``files`` for shard ``(K, N)``: the N shards
    of one input list are disjoint and together cover it (machines, job-array tasks)."""
    if shard is None:
        return files
    k, n = shard
    return files[k - 1 :: n]


def launch_process(environ: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """``(rank, world size)`` of this process when a launcher (``accelerate launch``,
    ``torchrun``) started several (``RANK``, or ``LOCAL_RANK``, and ``WORLD_SIZE``), else None.

    A malformed value raises :class:`ValueError` with a one-line reason."""
    world_text = environ.get("WORLD_SIZE")
    rank_text = environ.get("RANK", environ.get("LOCAL_RANK"))
    if world_text is None or rank_text is None:
        return None
    if not (world_text.isdigit() and rank_text.isdigit()):
        raise ValueError(f"RANK {rank_text!r} and WORLD_SIZE {world_text!r} are not counts")
    rank, world = int(rank_text), int(world_text)
    if world <= 1:
        return None
    if rank >= world:
        raise ValueError(f"RANK {rank} is not below WORLD_SIZE {world}")
    return rank, world


def process_shard(
    shard: tuple[int, int] | None, process: tuple[int, int] | None
) -> tuple[int, int] | None:
    """This process's share: the job's ``--shard K/N`` (None: all inputs) split between the
    launch's processes, process ``r`` of ``W`` taking share ``K + N r`` of ``N W`` (the
    processes' shares of one job are disjoint and cover the job's share)."""
    if process is None:
        return shard
    k, n = shard or (1, 1)
    rank, world = process
    return k + n * rank, n * world


def launch_device(environ: Mapping[str, str], cuda_count: int) -> str | None:
    """The GPU of this process under a multi-process launch (``cuda:LOCAL_RANK``, modulo the
    visible GPUs), or None (no launch, no GPU: the default device)."""
    local = environ.get("LOCAL_RANK", environ.get("RANK"))
    if cuda_count == 0 or local is None or not local.isdigit():
        return None
    return f"cuda:{int(local) % cuda_count}"


def failures_name(shard: tuple[int, int] | None) -> str:
    """``failures.csv``, or ``failures-K-of-N.csv`` for share K/N: the shares of one output
    folder (processes, machines) never write over each other's list."""
    if shard is None:
        return FAILURES_FILE
    return f"failures-{shard[0]}-of-{shard[1]}.csv"


def output_path(source: Path, out_dir: Path, image_format: str, fmt: str, suffix: str) -> Path:
    """Where the result of ``source`` goes: same stem (+ suffix), format kept unless forced."""
    extension = "." + fmt if fmt != "auto" else _SUFFIX_OF_FORMAT.get(image_format, ".png")
    return out_dir / f"{source.stem}{suffix}{extension}"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``upscale`` sub-command."""
    parser = add_subcommand(subparsers, "upscale", SUMMARY)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("-o", "--output", default="out", help="output folder (default: out)")
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
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: auto)")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="network dtype; broken half-precision tiles are redone in float32",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="where the network runs (default auto: ONNX Runtime on the CPU when installed)",
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
        "-q", "--quiet", action="store_true", help="no progress bars (default: on a terminal)"
    )


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


def device_error(name: str | None) -> str | None:
    """Why ``--device`` cannot be used on this machine (with the fix), or None."""
    if name is None:
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"--device {name!r} is not a device name: use cpu, cuda or cuda:N"
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
    )
    return next((error for error in errors if error), None)


def plan_outputs(
    files: list[Path],
    out_dir: Path,
    fmt: str,
    suffix: str,
    subfolders: dict[Path, Path] | None = None,
) -> dict[Path, Path]:
    """Where each input's result goes, from its header (below ``out_dir``, in its entry of
    ``subfolders`` if it has one); refuses (raises :class:`~mordasr.io.paths.OutputPlanError`)
    an output that is an input or is shared.

    A file whose header names no image format gets no target: reading it fails with a reason.
    """
    targets: dict[Path, Path] = {}
    for source in files:
        image_format = sniff_format(source)
        if image_format is not None:
            folder = out_dir / (subfolders or {}).get(source, Path())
            targets[source] = output_path(source, folder, image_format, fmt, suffix)
    check_plan(targets, files)
    return targets


def one_line(error: BaseException) -> str:
    """An exception as one line: its first line of text, or its type when it has none."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@dataclass
class BatchTally:
    """What a batch did so far, for its one-line summary."""

    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[Path, str]] = field(default_factory=list)

    def fail(self, source: Path, reason: str) -> None:
        self.failed += 1
        self.failures.append((source, reason))

    def summary(
        self,
        scan: InputScan,
        out_dir: Path,
        interrupted: bool = False,
        shard: tuple[int, int] | None = None,
        left_out: bool = True,
    ) -> str:
        """The batch's line; ``shard``: prefixed by the share it covers; ``left_out``: with
        what the scan did not read (one process of a launch says it for all)."""
        parts = [f"{self.done} upscaled, {self.skipped} skipped (exist), {self.failed} failed"]
        if interrupted:
            left = self.total - self.done - self.skipped - self.failed
            parts[0] = f"interrupted: {parts[0]}, {left} not started"
        if shard is not None:
            parts[0] = f"share {shard[0]}/{shard[1]}: {parts[0]}"
        if left_out and scan.left_out:
            entered = SUBFOLDER not in scan.left_out
            hint = "" if entered else " (sub-folders are not entered without --recursive)"
            parts.append(f"not read: {scan.left_out_summary()}{hint}")
        if self.dropped:
            kinds = ", ".join(f"{what} ({n} file(s))" for what, n in self.dropped.items())
            parts.append(f"dropped: {kinds}")
        return "; ".join(parts) + f" -> {out_dir}"


@contextmanager
def _reporting_drops(source: Path, dropped: set[str]) -> Iterator[None]:
    """Print each :class:`DataDroppedWarning` raised inside as a line about ``source`` and
    collect what was dropped; other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for item in caught:
        if isinstance(item.message, DataDroppedWarning):
            dropped.add(item.message.what)
            tqdm.write(f"note {source}: {item.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def write_failures(
    out_dir: Path, failures: list[tuple[Path, str]], name: str = FAILURES_FILE
) -> Path:
    """Write the failures (path, reason) into ``out_dir / name`` (``failures.csv``)."""
    target = out_dir / name
    with open(target, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "reason"])
        writer.writerows((str(path), reason) for path, reason in failures)
    return target


def _load_upscaler(args: argparse.Namespace, bars: TqdmProgress | None) -> Upscaler:
    return Upscaler(
        args.model,
        device=args.device,
        dtype=DTYPES[args.dtype],
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
    )


def _upscale_one(
    upscaler: Upscaler,
    source: Path,
    target: Path | None,
    args: argparse.Namespace,
    tally: BatchTally,
) -> None:
    """Upscale one file into ``target`` and count the outcome; failures are one line each."""
    dropped: set[str] = set()
    try:
        with _reporting_drops(source, dropped):
            decoded = read_image(source)
        if target is None:
            raise ImageReadError(source, "its format could not be detected from its header")
    except ImageReadError as error:
        tqdm.write(f"skipped {source}: {error}", file=sys.stderr)
        tally.fail(source, error.reason)
        return
    if target.exists() and not args.overwrite:
        tqdm.write(f"skipped {source}: {target} exists (use --overwrite)", file=sys.stderr)
        tally.skipped += 1
        return
    height, width = decoded.tensor.shape[-2:]
    size = output_size(
        height,
        width,
        upscaler.scale,
        outscale=args.outscale,
        out_width=args.width,
        out_height=args.height,
    )
    try:
        result = upscaler.upscale_decoded(decoded, size)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _reporting_drops(source, dropped):
            save_like(target, result.image, decoded, alpha=result.alpha, quality=args.quality)
    except (UnsupportedFormatError, OSError, RuntimeError, ValueError, MemoryError) as error:
        tqdm.write(f"failed {source}: {one_line(error)}", file=sys.stderr)
        tally.fail(source, one_line(error))
        return
    tally.done += 1
    tally.dropped.update(dropped)


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
    if process is not None and args.device is None:
        args.device = launch_device(os.environ, torch.cuda.device_count())
    first = process is None or process[0] == 0  # says what is shared by all processes
    out_dir = Path(args.output)
    scan = scan_inputs(args.inputs, recursive=args.recursive)
    for reason, paths in scan.left_out.items() if first else ():
        for path in paths:
            print(f"{PROG}: not read {path}: {reason}", file=sys.stderr)
    try:
        targets = plan_outputs(scan.files, out_dir, args.format, args.suffix, scan.subfolders)
        check_output_folder(out_dir)
    except OutputPlanError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    shard = process_shard(args.shard, process)
    files = shard_files(scan.files, shard)  # names were checked across all shares
    tally = BatchTally(total=len(files))
    bars = TqdmProgress() if not args.quiet and sys.stderr.isatty() else None
    try:
        try:
            upscaler = _load_upscaler(args, bars)
        except MODEL_ERRORS as error:
            print(f"{PROG}: cannot load model {args.model}: {one_line(error)}", file=sys.stderr)
            return 2
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            print(f"{PROG}: cannot create {out_dir}: {one_line(error)}", file=sys.stderr)
            return 2
        for index, source in enumerate(files):
            upscaler.begin_file(index, len(files), source)
            failed = tally.failed
            _upscale_one(upscaler, source, targets.get(source), args, tally)
            upscaler.end_file(tally.failures[-1][1] if tally.failed > failed else None)
    except KeyboardInterrupt:
        _close(bars)
        summary = tally.summary(scan, out_dir, interrupted=True, shard=shard, left_out=first)
        print(summary, file=sys.stderr)
        return 130
    summary = tally.summary(scan, out_dir, shard=shard, left_out=first)
    if tally.failures:
        listed = write_failures(out_dir, tally.failures, failures_name(shard))
        summary += f" (failures listed in {listed})"
    print(summary)
    return 1 if tally.failed else 0


def _close(bars: TqdmProgress | None) -> None:
    """End the bars' lines (an interrupted batch leaves them open)."""
    if bars is not None:
        bars.close()
