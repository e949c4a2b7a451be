"""`mordasr benchmark`: several SR models on one LR/HR test set, quality and speed in one table.

Every model first runs once untimed on the first image (one-time start-up costs), then models
are interleaved image by image (each image is run by every model before the next image), so
machine noise affects all of them alike; times cover the network only (no file IO, no
metrics). SR outputs are rounded to 8 bits before scoring, as saved PNGs would be.

With an output folder it writes ``report.md`` (the table, ready to paste), ``results.json`` and
``comparison.png``: the same detailed crop of the first few images as LR (nearest-upscaled),
every model and HR, side by side.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mordasr.eval.cli import add_scoring_options
from mordasr.eval.evaluate import DEFAULT_METRICS, parse_metrics
from mordasr.eval.io import list_images, load_image
from mordasr.infer.pipeline import Upscaler
from mordasr.io.cliargs import add_subcommand
from mordasr.io.image import save_image
from mordasr.metrics.functional import HIGHER_IS_BETTER, metric_functions
from mordasr.sr.manifest import ModelLoadError

# The sub-command's help line and description.
SUMMARY = (
    "compare SR models side by side on an LR/HR test set",
    "Run several models on LR images, score them against HR images and time "
    "them in one run. LR and HR files pair by name (a trailing _LR/_HR tag is ignored).",
)

DEFAULT_MODELS = ("default", "realesrgan-x4plus", "bicubic")
_PAIR_TAG = re.compile(r"([_\-.]?(lr|hr)([_\-.]?x?\d)?)$", re.IGNORECASE)


@dataclass
class ModelRun:
    """One model's per-image metrics and network seconds."""

    name: str
    description: str
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    samples: list[torch.Tensor] = field(default_factory=list)
    """SR outputs (3, H, W) of the first images, kept for the comparison figure."""

    def means(self) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in self.metrics.items()}


def pair_key(stem: str) -> str:
    """File-name stem with a trailing LR/HR tag removed: ``baby_SRF_4_LR`` -> ``baby_SRF_4``."""
    return _PAIR_TAG.sub("", stem)


def pair_lr_hr(lr_dir: Path, hr_dir: Path) -> list[tuple[Path, Path]]:
    """(lr, hr) files with the same name once a trailing LR/HR tag is ignored, in HR order."""
    lrs = {pair_key(p.stem): p for p in list_images(lr_dir)}
    pairs = [(lrs[pair_key(h.stem)], h) for h in list_images(hr_dir) if pair_key(h.stem) in lrs]
    if not pairs:
        raise ValueError(f"no LR image in {lr_dir} matches an HR image in {hr_dir} by name")
    return pairs


def run_benchmark(
    pairs: list[tuple[Path, Path]],
    models: list[str],
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    crop_border: int = 0,
    device: str = "cpu",
    save_dir: Path | None = None,
    progress: bool = True,
    keep: int = 0,
    precision: str = "exact",
) -> list[ModelRun]:
    """Run every model on every pair; optionally save SR outputs under ``save_dir/<model>/``
    and keep those of the first ``keep`` pairs in ``ModelRun.samples``. Models run in float32
    unless ``precision`` is ``auto`` (what ``mordasr upscale`` runs by default)."""

    upscalers = {name: Upscaler(name, device=device, precision=precision) for name in models}
    runs = {
        name: ModelRun(name, up.model.describe(), {m: [] for m in metrics})
        for name, up in upscalers.items()
    }
    functions = metric_functions(crop_border)
    warm_up = load_image(pairs[0][0])[0]
    for upscaler in upscalers.values():
        upscaler.upscale_tensor(warm_up)
    for index, (lr_path, hr_path) in enumerate(
        tqdm(pairs, desc="benchmark", unit="img", disable=not progress)
    ):
        lr, hr = load_image(lr_path)[0], load_image(hr_path).to(device)
        order = models[index % len(models) :] + models[: index % len(models)]
        for name in order:
            start = time.perf_counter()
            sr = upscalers[name].upscale_tensor(lr)
            if sr.is_cuda:
                torch.cuda.synchronize()
            runs[name].seconds.append(time.perf_counter() - start)
            sr = sr.mul(255).round().div(255)[None]
            if sr.shape != hr.shape:
                raise ValueError(
                    f"{name} turned {lr_path.name} into {tuple(sr.shape[-2:])}, "
                    f"HR is {tuple(hr.shape[-2:])}"
                )
            for metric in metrics:
                runs[name].metrics[metric].append(float(functions[metric](sr, hr)[0]))
            if index < keep:
                runs[name].samples.append(sr[0].cpu())
            if save_dir is not None:
                folder = save_dir / _safe(name)
                folder.mkdir(parents=True, exist_ok=True)
                save_image(folder / f"{pair_key(hr_path.stem)}.png", sr[0].cpu())
    return [runs[name] for name in models]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name or name)


def detail_box(hr: torch.Tensor, size: int, multiple: int) -> tuple[int, int, int]:
    """(top, left, side) of the ``size`` square of (3, H, W) ``hr`` with the most gradient energy,
    corners and side multiples of ``multiple`` (so the LR crop is exact)."""
    side = min(size, *hr.shape[-2:]) // multiple * multiple
    gray = hr.mean(dim=0)
    energy = gray.new_zeros(gray.shape)
    energy[:, 1:] += (gray[:, 1:] - gray[:, :-1]).abs()
    energy[1:] += (gray[1:] - gray[:-1]).abs()
    windows = F.avg_pool2d(energy[None, None], side, stride=multiple)[0, 0]
    row, col = divmod(int(windows.argmax()), windows.shape[1])
    return row * multiple, col * multiple, side


def _crop(image: torch.Tensor, top: int, left: int, side: int) -> np.ndarray:
    patch = image[:, top : top + side, left : left + side].clamp(0, 1)
    return (patch.permute(1, 2, 0) * 255).round().byte().numpy()


def comparison_grid(
    pairs: list[tuple[Path, Path]], runs: list[ModelRun], size: int
) -> tuple[list[list[np.ndarray]], list[str]]:
    """Rows of crops (LR nearest-upscaled, each model's SR, HR) of the pairs the runs kept,
    and the column titles."""
    grid, lr_title = [], "LR"
    for index, (lr_path, hr_path) in enumerate(pairs[: len(runs[0].samples)]):
        lr, hr = load_image(lr_path)[0], load_image(hr_path)[0]
        scale = hr.shape[-1] // lr.shape[-1]
        lr_title = f"LR (nearest x{scale})"
        top, left, side = detail_box(hr, size, scale)
        lr_up = lr.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
        row = [_crop(lr_up, top, left, side)]
        row += [_crop(run.samples[index], top, left, side) for run in runs]
        grid.append([*row, _crop(hr, top, left, side)])
    return grid, [lr_title, *(_safe(run.name) for run in runs), "HR"]


def write_report(
    folder: Path, runs: list[ModelRun], pairs: list[tuple[Path, Path]], table: str, size: int
) -> Path:
    """``report.md`` with the table and, where matplotlib is installed, ``comparison.png``."""
    from mordasr.eval.plots import MissingMatplotlibError, plot_comparison

    lines = [f"# Benchmark ({len(runs[0].seconds)} LR/HR pairs)", "", table, ""]
    grid, columns = comparison_grid(pairs, runs, size)
    if grid:
        try:
            rows = [pair_key(hr.stem) for _, hr in pairs[: len(grid)]]
            plot_comparison(grid, columns, rows, folder / "comparison.png")
            lines += ["![side-by-side crops](comparison.png)", ""]
        except MissingMatplotlibError as error:
            print(f"mordasr benchmark: no comparison.png ({error})", file=sys.stderr)
    report = folder / "report.md"
    report.write_text("\n".join(lines))
    return report


def markdown(runs: list[ModelRun], reference: str | None) -> str:
    """One row per model: metric means, seconds per image, time relative to ``reference``."""
    metrics = list(runs[0].metrics)
    ref = next((r for r in runs if r.name == reference), None)
    head = [f"{m.upper()} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in metrics]
    ratio_head = f"time vs {reference}" if ref else "time ratio"
    lines = [
        "| model | " + " | ".join(head) + f" | s/img | {ratio_head} |",
        "|---|" + "---:|" * (len(metrics) + 2),
    ]
    for run in runs:
        means = run.means()
        cells = [f"{means[m]:.{2 if m in ('psnr', 'niqe') else 4}f}" for m in metrics]
        total = sum(run.seconds)
        ratio = f"{total / sum(ref.seconds):.3f}" if ref else "-"
        lines.append(
            f"| {run.name} ({run.description}) | "
            + " | ".join(cells)
            + f" | {total / len(run.seconds):.3f} | {ratio} |"
        )
    return "\n".join(lines)


def as_json(runs: list[ModelRun], reference: str | None) -> dict[str, object]:
    """Means, timings and per-image values of every model."""
    ref = next((r for r in runs if r.name == reference), None)
    return {
        run.name: {
            "description": run.description,
            "images": len(run.seconds),
            "mean": run.means(),
            "seconds_per_image": sum(run.seconds) / len(run.seconds),
            "time_ratio_vs_reference": (sum(run.seconds) / sum(ref.seconds)) if ref else None,
            "per_image": run.metrics,
            "seconds": run.seconds,
        }
        for run in runs
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``benchmark`` sub-command."""
    parser = add_subcommand(subparsers, "benchmark", SUMMARY)
    parser.add_argument("--lr", type=Path, required=True, help="folder of LR inputs")
    add_scoring_options(parser)
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="models to compare (see `mordasr upscale --model`)",
    )
    parser.add_argument(
        "--reference", default="realesrgan-x4plus", help="model the time ratio is taken against"
    )
    parser.add_argument("--limit", type=int, help="use only the first N pairs")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write report.md, results.json, comparison.png and the SR images here",
    )
    parser.add_argument(
        "--figure-images", type=int, default=4, help="rows of comparison.png (default 4)"
    )
    parser.add_argument(
        "--figure-crop", type=int, default=128, help="HR side of each crop (default 128)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mordasr benchmark``."""
    try:
        pairs = pair_lr_hr(args.lr, args.hr)[: args.limit]
        metrics = parse_metrics(args.metrics)
    except (ValueError, NotADirectoryError) as error:
        print(f"mordasr benchmark: {error}", file=sys.stderr)
        return 1
    save_dir = args.output / "images" if args.output else None
    try:
        keep = args.figure_images if args.output else 0
        runs = run_benchmark(
            pairs, args.models, metrics, args.crop_border, args.device, save_dir, keep=keep
        )
    except (FileNotFoundError, ModelLoadError) as error:
        print(f"mordasr benchmark: {error}", file=sys.stderr)
        return 1
    reference = args.reference if args.reference in args.models else None
    table = markdown(runs, reference)
    data = as_json(runs, reference)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "results.json").write_text(json.dumps(data, indent=2))
        write_report(args.output, runs, pairs, table, args.figure_crop)
    print(json.dumps(data, indent=2) if args.json else table)
    return 0
