"""Validate the learned degradation estimator on held-out clean photos (Set14 + BSD100 HR).

Data: ``../shared/data/{Set14,BSD100}/HR`` (not used in training). For every photo, a 96-px
center crop is degraded by one factor at five fixed severity levels:

* blur: isotropic Gaussian sigma 0.5, 1, 1.5, 2.5, 4 px -> ``blurriness``
* noise: colour Gaussian sigma 3, 6, 12, 24, 40 (8-bit levels) -> ``noise``
* JPEG: quality 90, 70, 50, 30, 10 -> ``details``
* downscaling: shrink by 1.25, 1.5, 2, 3, 4 (bicubic) then enlarge back (bicubic) -> ``resolution``

and the Spearman correlation between level and the matching dimension's score is computed per
photo (then averaged) and over all (photo, level) pairs pooled. Separately, a 256-px center crop
is run through the ``mordasr-severe`` pipeline (x4, seed = photo index) and the fraction of photos
whose clean 96-px crop scores lower than that 64-px degraded output is reported, using the
``overall_quality`` score (and, for reference, the mean of the seven scores); for a comparison at
equal size, the 256-px crop shrunk x4 (bicubic, antialiased) is also scored.

What the router sees (issue 11): the same 256-px crops are also degraded by ``mordasr-mild``
(seed = photo index) and, with their clean x4 shrinks, give the 7x7 Pearson correlation matrix of
the scores over the mixed degraded set (mild + severe), the cosine of the mild and severe mean
score vectors (also centred at 0.5: what a router with ``router_scores: centred`` compares), and
the mean severity (mean of the seven scores) of clean, mild and severe images.

Example (``--record`` stores the figures in ``mordasr/weights/learned_estimator.json``)::

    OMP_NUM_THREADS=2 python benchmarks/bench_estimator.py --record
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from mordasr.degrade import degrade
from mordasr.estimate import DIMENSIONS, LearnedEstimator
from mordasr.estimate.learned import shipped_weights_path
from mordasr.estimate.training.synthesis import (
    down_up,
    gaussian_blur,
    gaussian_noise,
    image_paths,
    jpeg,
)
from mordasr.io.image import read_rgb

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HELD_OUT_DIRS = (DATA / "Set14" / "HR", DATA / "BSD100" / "HR")

Degrader = Callable[[torch.Tensor, float], torch.Tensor]


def _noise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(sigma * 1000))
    return gaussian_noise(x, sigma, False, generator)[0]


FACTORS: dict[str, tuple[str, tuple[float, ...], Degrader]] = {
    "blur": ("blurriness", (0.5, 1.0, 1.5, 2.5, 4.0), lambda x, s: gaussian_blur(x, s)[0]),
    "noise": ("noise", (3.0, 6.0, 12.0, 24.0, 40.0), _noise),
    "jpeg": ("details", (90, 70, 50, 30, 10), lambda x, q: jpeg(x, int(q))[0]),
    "downscale": ("resolution", (1.25, 1.5, 2.0, 3.0, 4.0), lambda x, f: down_up(x, f)[0]),
}


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(1, 3, s, s)`` center crop with ``s = min(size, shorter side)`` rounded down to 4."""
    height, width = image.shape[-2:]
    side = min(size, height, width) // 4 * 4
    top, left = (height - side) // 2, (width - side) // 2
    return image[None, :, top : top + side, left : left + side]


@torch.no_grad()
def evaluate(
    model: LearnedEstimator, paths: list[Path], crop: int, severe_crop: int
) -> dict[str, object]:
    """All benchmark figures for the photos ``paths``."""
    levels: dict[str, list[np.ndarray]] = {name: [] for name in FACTORS}
    overall_wins, mean_wins, small_wins = [], [], []
    routed: dict[str, list[torch.Tensor]] = {"clean": [], "mild": [], "severe": []}
    for index, path in enumerate(paths):
        x = center_crop(read_rgb(path), crop)
        for name, (dimension, values, fn) in FACTORS.items():
            batch = torch.cat([fn(x, v) for v in values])
            levels[name].append(model(batch)[:, DIMENSIONS.index(dimension)].numpy())
        hr = center_crop(read_rgb(path), severe_crop)
        severe = degrade(hr, "mordasr-severe", scale=4, seed=index).lr.clamp(0, 1)
        small = F.interpolate(hr, size=severe.shape[-2:], mode="bicubic", antialias=True)
        small = small.clamp(0, 1)
        mild = degrade(hr, "mordasr-mild", scale=4, seed=index).lr.clamp(0, 1)
        clean_s, severe_s, small_s = model(x)[0], model(severe)[0], model(small)[0]
        routed["clean"].append(small_s)
        routed["mild"].append(model(mild)[0])
        routed["severe"].append(severe_s)
        overall_wins.append(bool(clean_s[0] < severe_s[0]))
        mean_wins.append(bool(clean_s.mean() < severe_s.mean()))
        small_wins.append(bool(small_s[0] < severe_s[0]))
    factors = {}
    for name, (dimension, values, _) in FACTORS.items():
        scores = np.stack(levels[name])
        ranks = np.arange(len(values))
        per_image = [spearmanr(ranks, row).statistic for row in scores]
        pooled = spearmanr(np.tile(ranks, len(scores)), scores.ravel()).statistic
        factors[name] = {
            "dimension": dimension,
            "levels": list(values),
            "mean_score_per_level": [round(float(v), 4) for v in scores.mean(axis=0)],
            "spearman_per_image_mean": round(float(np.nanmean(per_image)), 4),
            "spearman_pooled": round(float(pooled), 4),
        }
    return {
        "photos": len(paths),
        "crop": crop,
        "severe_crop": severe_crop,
        "factors": factors,
        "clean_below_severe_overall": round(float(np.mean(overall_wins)), 4),
        "clean_below_severe_mean7": round(float(np.mean(mean_wins)), 4),
        "clean_x4_below_severe_overall": round(float(np.mean(small_wins)), 4),
        **router_view({name: torch.stack(rows) for name, rows in routed.items()}),
    }


def router_view(scores: dict[str, torch.Tensor]) -> dict[str, object]:
    """What a router can tell apart: correlation of the seven scores over the mild + severe
    images, cosine of the mild and severe mean vectors, mean severity of each set."""
    mixed = torch.cat([scores["mild"], scores["severe"]]).double()
    correlation = torch.corrcoef(mixed.T)
    off_diagonal = correlation[~torch.eye(len(DIMENSIONS), dtype=torch.bool)]
    mild_mean, severe_mean = scores["mild"].mean(dim=0), scores["severe"].mean(dim=0)
    return {
        "score_correlation": [[round(float(v), 3) for v in row] for row in correlation],
        "score_correlation_mean_abs_off_diagonal": round(float(off_diagonal.abs().mean()), 4),
        "mild_severe_mean_cosine": round(
            float(F.cosine_similarity(mild_mean, severe_mean, dim=0)), 4
        ),
        "mild_severe_mean_cosine_centred": round(
            float(F.cosine_similarity(mild_mean - 0.5, severe_mean - 0.5, dim=0)), 4
        ),
        "mean_severity": {name: round(float(values.mean()), 4) for name, values in scores.items()},
        "mean_scores": {
            name: [round(float(v), 4) for v in values.mean(dim=0)]
            for name, values in scores.items()
        },
    }


def print_table(results: dict[str, object]) -> None:
    print(
        f"held-out photos: {results['photos']} (Set14 + BSD100 HR), center crop {results['crop']}"
    )
    print(
        f"{'factor':<10} {'dimension':<11} {'rho/photo':>9} {'rho pooled':>10}  mean score by level"
    )
    factors = results["factors"]
    assert isinstance(factors, dict)
    for name, row in factors.items():
        means = " ".join(f"{v:.3f}" for v in row["mean_score_per_level"])
        print(
            f"{name:<10} {row['dimension']:<11} {row['spearman_per_image_mean']:>9.3f} "
            f"{row['spearman_pooled']:>10.3f}  {means}"
        )
    print(f"clean < mordasr-severe (overall_quality): {results['clean_below_severe_overall']:.1%}")
    print(f"clean < mordasr-severe (mean of 7):       {results['clean_below_severe_mean7']:.1%}")
    print(
        "clean shrunk x4 < mordasr-severe (overall_quality): "
        f"{results['clean_x4_below_severe_overall']:.1%}"
    )
    print("score correlation over mordasr-mild + mordasr-severe:")
    short = [name[:8] for name in DIMENSIONS]
    print(" " * 9 + " ".join(f"{name:>8}" for name in short))
    correlation = results["score_correlation"]
    assert isinstance(correlation, list)
    for name, row in zip(short, correlation, strict=True):
        print(f"{name:<8} " + " ".join(f"{v:>8.2f}" for v in row))
    print(f"mean |off-diagonal|: {results['score_correlation_mean_abs_off_diagonal']:.3f}")
    print(
        f"cosine of mild and severe mean scores: {results['mild_severe_mean_cosine']:.4f} "
        f"(centred at 0.5: {results['mild_severe_mean_cosine_centred']:.4f})"
    )
    severity = results["mean_severity"]
    assert isinstance(severity, dict)
    print("mean severity: " + "  ".join(f"{k} {v:.3f}" for k, v in severity.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="heads (default: shipped)")
    parser.add_argument("--crop", type=int, default=96, help="crop side for the levels")
    parser.add_argument("--severe-crop", type=int, default=256, help="HR crop for the pipeline")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--record",
        action="store_true",
        help="store the figures and this command in the weights' metadata json",
    )
    args = parser.parse_args(argv)

    started = time.time()
    model = LearnedEstimator.from_pretrained(args.weights)
    paths = image_paths(HELD_OUT_DIRS)[: args.limit]
    results = evaluate(model, paths, args.crop, args.severe_crop)
    print_table(results)
    print(f"({time.time() - started:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.record:
        record_path = (args.weights or shipped_weights_path()).with_suffix(".json")
        record = json.loads(record_path.read_text())
        command = "OMP_NUM_THREADS=2 python " + shlex.join(sys.argv)
        record["held_out_benchmark"] = {"command": command, **results}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
