"""Evaluate SR results against ground truth over image pairs and summarise them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from mordasr.eval.io import list_images, load_image, pair_images
from mordasr.metrics.functional import HIGHER_IS_BETTER, metric_functions

DEFAULT_METRICS = ("psnr", "ssim", "lpips", "dists", "niqe")


@dataclass
class EvalResult:
    """Per-image metric values (name -> metric -> value) and their means."""

    metrics: tuple[str, ...]
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        """Mean of each metric over the images (``inf`` stays ``inf``, e.g. PSNR of copies)."""
        count = len(self.per_image)
        return {
            metric: sum(values[metric] for values in self.per_image.values()) / count
            for metric in self.metrics
        }


def parse_metrics(spec: str) -> tuple[str, ...]:
    """Parse a comma-separated metric list, rejecting unknown names."""
    names = tuple(name.strip().lower() for name in spec.split(",") if name.strip())
    unknown = [name for name in names if name not in HIGHER_IS_BETTER]
    if unknown or not names:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(HIGHER_IS_BETTER)}")
    return names


def evaluate_pairs(
    pairs: Sequence[tuple[Path, Path]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    crop_border: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> EvalResult:
    """Compute ``metrics`` for each (sr, hr) pair; results are keyed by the HR file name."""
    functions = metric_functions(crop_border)
    result = EvalResult(metrics=tuple(metrics))
    for sr_path, hr_path in tqdm(pairs, desc="eval", unit="img", disable=not progress):
        sr, hr = load_image(sr_path).to(device), load_image(hr_path).to(device)
        if sr.shape != hr.shape:
            raise ValueError(
                f"size mismatch for {hr_path.name}: SR {tuple(sr.shape[-2:])} "
                f"vs HR {tuple(hr.shape[-2:])}"
            )
        result.per_image[hr_path.name] = {
            name: float(functions[name](sr, hr)[0]) for name in metrics
        }
    return result


def evaluate_dirs(
    sr_dir: Path,
    hr_dir: Path,
    metrics: Sequence[str] = DEFAULT_METRICS,
    crop_border: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[EvalResult, list[Path]]:
    """Pair the images of two folders (see :func:`pair_images`) and evaluate them.

    Returns the result and the SR files that matched no HR file.
    """
    pairs, unmatched = pair_images(list_images(sr_dir), list_images(hr_dir))
    if not pairs:
        raise ValueError(f"no images found in {hr_dir}")
    return evaluate_pairs(pairs, metrics, crop_border, device, progress), unmatched


def markdown_table(result: EvalResult) -> str:
    """Markdown table of per-metric means, with the better direction of each metric."""
    lines = [
        f"| metric | mean over {len(result.per_image)} images |",
        "|---|---|",
    ]
    for metric, value in result.means().items():
        arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
        digits = 2 if metric in ("psnr", "niqe") else 4
        lines.append(f"| {metric.upper()} {arrow} | {value:.{digits}f} |")
    return "\n".join(lines)


def json_ready(result: EvalResult) -> dict[str, object]:
    """JSON-serialisable summary; non-finite values (PSNR of identical images) become null."""

    def clean(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "count": len(result.per_image),
        "mean": {k: clean(v) for k, v in result.means().items()},
        "per_image": {
            name: {k: clean(v) for k, v in values.items()}
            for name, values in result.per_image.items()
        },
    }
