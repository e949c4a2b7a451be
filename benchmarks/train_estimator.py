"""Train the heads of the learned degradation estimator on synthetic degradations.

Uses the clean training photos of ``../shared/data/train`` (SunHays80 + BSDS200; never the Set14 /
BSD100 test images). Each sample is a clean crop (shrunk by 1-2x to suppress the source's own
artefacts) that is left clean, degraded by a single factor at a random strength, by a random
combination of factors (blur -> loss of resolution -> noise -> JPEG), or -- from a 4x larger crop
-- by one of the full second-order pipelines (``realesrgan``, ``mordasr-mild``,
``mordasr-severe``). Its targets come from the known parameters through
:mod:`mordasr.estimate.labels`. Frozen VGG16 statistics are computed once; only the small heads
are trained (soft binary cross-entropy on each dimension's negative-prompt probability).

``--labels`` picks the label scheme (:data:`mordasr.estimate.labels.LABEL_SCHEMES`): ``v1`` made
the shipped ``learned_estimator.safetensors``, ``v2`` (one driving factor per dimension) makes
``learned_estimator_v2.safetensors``.

Example (13 minutes on 2 busy shared CPU cores, nearly all of it synthesis and VGG features;
``--cache FILE`` keeps the features and degradation summaries so that retraining the heads, with
any label scheme, takes seconds)::

    OMP_NUM_THREADS=2 python benchmarks/train_estimator.py --samples 1200 --seed 0 --labels v2 \
        --out mordasr/weights/learned_estimator_v2.safetensors
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from estimator_common import (
    TRAIN_DIRS,
    clean_crop,
    down_up,
    gaussian_blur,
    gaussian_noise,
    image_paths,
    jpeg,
    poisson_noise,
)
from scipy.stats import spearmanr

from mordasr.degrade import degrade
from mordasr.estimate.base import DIMENSIONS
from mordasr.estimate.labels import (
    DEFAULT_SCHEME,
    LABEL_SCHEMES,
    Degradation,
    dimension_labels,
    pipeline_degradation,
)
from mordasr.estimate.learned import LearnedEstimator
from mordasr.io.image import read_rgb

PRESET_NAMES = ("realesrgan", "mordasr-mild", "mordasr-severe")
CROP_SIZES = (96, 128, 160)
PRESET_LR_SIZES = (64, 80)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _log_uniform(generator: torch.Generator, low: float, high: float) -> float:
    return math.exp(_uniform(generator, math.log(low), math.log(high)))


def _choice(generator: torch.Generator, options: tuple) -> object:
    return options[int(torch.randint(len(options), (), generator=generator))]


def _merge(a: Degradation, b: Degradation) -> Degradation:
    """Combine two summaries on the same grid: blurs add in quadrature, noise too, the worst
    JPEG quality and resolution loss win."""
    return Degradation(
        blur_sigma=math.hypot(a.blur_sigma, b.blur_sigma),
        noise_sigma=math.hypot(a.noise_sigma, b.noise_sigma),
        jpeg_quality=min(a.jpeg_quality, b.jpeg_quality),
        downscale=max(a.downscale, b.downscale),
    )


def random_factor(
    x: torch.Tensor, factor: str, generator: torch.Generator
) -> tuple[torch.Tensor, Degradation]:
    """Apply one degradation factor at a random strength."""
    if factor == "blur":
        sigma = _uniform(generator, 0.3, 4.0)
        if float(torch.rand((), generator=generator)) < 0.3:
            ratio = _uniform(generator, 0.3, 1.0)
            theta = _uniform(generator, 0.0, math.pi)
            return gaussian_blur(x, sigma, sigma * ratio, theta)
        return gaussian_blur(x, sigma)
    if factor == "noise":
        gray = float(torch.rand((), generator=generator)) < 0.4
        if float(torch.rand((), generator=generator)) < 0.6:
            return gaussian_noise(x, _log_uniform(generator, 1.0, 40.0), gray, generator)
        return poisson_noise(x, _log_uniform(generator, 0.05, 3.0), gray, generator)
    if factor == "jpeg":
        return jpeg(x, round(_uniform(generator, 10.0, 95.0)))
    if factor == "resolution":
        modes = ("area", "bilinear", "bicubic")
        down = str(_choice(generator, modes))
        up = str(_choice(generator, ("bilinear", "bicubic")))
        return down_up(x, _log_uniform(generator, 1.1, 6.0), down, up)
    raise ValueError(factor)


FACTOR_ORDER = ("blur", "resolution", "noise", "jpeg")


def synthetic_sample(
    image: torch.Tensor, kind: str, generator: torch.Generator
) -> tuple[torch.Tensor, Degradation]:
    """One training image of ``kind`` (clean / single / combo / a preset name) and its summary."""
    if kind in PRESET_NAMES:
        size = min(int(_choice(generator, PRESET_LR_SIZES)), min(image.shape[-2:]) // 4)
        hr = clean_crop(image, 4 * size, _uniform(generator, 1.0, 1.5), generator)
        seed = int(torch.randint(2**31 - 1, (), generator=generator))
        result = degrade(hr, kind, scale=4, seed=seed)
        summary = pipeline_degradation(result.params[0], mean_intensity=float(hr.mean()))
        return result.lr.clamp(0, 1), summary
    size = int(_choice(generator, CROP_SIZES))
    x = clean_crop(image, size, _uniform(generator, 1.0, 2.0), generator)
    summary = Degradation()
    if kind == "single":
        factors = (str(_choice(generator, FACTOR_ORDER)),)
    elif kind == "combo":
        chosen = torch.rand(len(FACTOR_ORDER), generator=generator) < 0.5
        chosen[int(torch.randint(len(FACTOR_ORDER), (), generator=generator))] = True
        factors = tuple(f for f, c in zip(FACTOR_ORDER, chosen.tolist(), strict=True) if c)
    else:
        factors = ()
    for factor in factors:
        x, part = random_factor(x, factor, generator)
        summary = _merge(summary, part)
    return x, summary


KIND_WEIGHTS = {
    "clean": 0.12,
    "single": 0.40,
    "combo": 0.30,
    "realesrgan": 0.04,
    "mordasr-mild": 0.07,
    "mordasr-severe": 0.07,
}


def build_dataset(
    paths: list[Path], count: int, generator: torch.Generator
) -> tuple[list[torch.Tensor], list[Degradation], list[str]]:
    """``count`` samples: images, their degradation summaries and the kind of each sample."""
    kinds = list(KIND_WEIGHTS)
    weights = torch.tensor([KIND_WEIGHTS[k] for k in kinds])
    images = [read_rgb(p) for p in paths]
    samples, summaries, sample_kinds = [], [], []
    for _ in range(count):
        kind = kinds[int(torch.multinomial(weights, 1, generator=generator))]
        source = images[int(torch.randint(len(images), (), generator=generator))]
        x, summary = synthetic_sample(source, kind, generator)
        samples.append(x)
        summaries.append(summary)
        sample_kinds.append(kind)
    return samples, summaries, sample_kinds


def targets_of(summaries: list[Degradation], scheme: str) -> torch.Tensor:
    """``(count, 7)`` training targets of the summaries under label ``scheme``."""
    return torch.stack([dimension_labels(summary, scheme) for summary in summaries])


@torch.no_grad()
def extract_features(model: LearnedEstimator, samples: list[torch.Tensor]) -> torch.Tensor:
    """Frozen VGG statistics of every sample, batched by image size."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        groups[tuple(sample.shape[-2:])].append(index)
    features = torch.zeros(len(samples), model.features.dim)
    for indices in groups.values():
        for start in range(0, len(indices), 32):
            chunk = indices[start : start + 32]
            features[chunk] = model.features(torch.cat([samples[i] for i in chunk]))
    return features


def train_heads(
    model: LearnedEstimator,
    features: torch.Tensor,
    targets: torch.Tensor,
    epochs: int,
    generator: torch.Generator,
) -> None:
    """Fit the heads with soft binary cross-entropy on every dimension (AdamW, minibatches)."""
    heads = model.heads
    heads.feature_mean.copy_(features.mean(dim=0))
    heads.feature_std.copy_(features.std(dim=0).clamp_min(1e-4))
    optimiser = torch.optim.AdamW(
        [p for p in heads.parameters() if p.requires_grad], lr=2e-3, weight_decay=1e-2
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    heads.train()
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator)
        for start in range(0, len(order), 128):
            batch = order[start : start + 128]
            log_probs = heads.logits(features[batch]).log_softmax(dim=-1)
            target = targets[batch]
            loss = -(target * log_probs[..., 1] + (1 - target) * log_probs[..., 0]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        schedule.step()
    heads.eval()


@torch.no_grad()
def validation_metrics(
    model: LearnedEstimator, features: torch.Tensor, targets: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Mean absolute error and Spearman correlation of scores vs targets, per dimension."""
    scores = model.heads(features)
    out = {}
    for i, name in enumerate(DIMENSIONS):
        rho = spearmanr(scores[:, i].numpy(), targets[:, i].numpy()).statistic
        out[name] = {
            "mae": round(float((scores[:, i] - targets[:, i]).abs().mean()), 4),
            "spearman": round(float(rho), 4),
        }
    return out


def split_paths(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Split training photos (not samples) into train / validation by a seeded permutation."""
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(fraction * len(paths)))
    return [paths[i] for i in order[held:]], [paths[i] for i in order[:held]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1200, help="training samples")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="photos held out")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.3, help="input-feature dropout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--labels", choices=list(LABEL_SCHEMES), default=DEFAULT_SCHEME, help="label scheme"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="store the frozen features here and reuse them on a rerun with the same samples and "
        "seed (delete the file after changing the synthesis)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("mordasr/weights/learned_estimator_v2.safetensors")
    )
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    started = time.time()
    train_paths, val_paths = split_paths(image_paths(TRAIN_DIRS), args.val_fraction, args.seed)
    val_count = max(64, round(args.samples * args.val_fraction / (1 - args.val_fraction)))
    model = LearnedEstimator.build(hidden=args.hidden, dropout=args.dropout)

    generator = torch.Generator().manual_seed(args.seed)
    key = {"samples": args.samples, "val_fraction": args.val_fraction, "seed": args.seed, "v": 2}
    data = torch.load(args.cache, weights_only=False) if args.cache and args.cache.is_file() else {}
    cached = data.get("key") == key
    if cached:
        print(f"features read from {args.cache}")
    else:
        train_x, train_y, _ = build_dataset(train_paths, args.samples, generator)
        val_x, val_y, _ = build_dataset(val_paths, val_count, generator)
        print(f"synthesised {len(train_x)} + {len(val_x)} samples in {time.time() - started:.0f}s")
        data = {
            "key": key,
            "train": (extract_features(model, train_x), train_y),
            "validation": (extract_features(model, val_x), val_y),
        }
        print(f"features done at {time.time() - started:.0f}s")
        if args.cache:
            torch.save(data, args.cache)
    (train_f, train_summaries), (val_f, val_summaries) = data["train"], data["validation"]
    train_y, val_y = (
        targets_of(train_summaries, args.labels),
        targets_of(val_summaries, args.labels),
    )

    train_heads(model, train_f, train_y, args.epochs, torch.Generator().manual_seed(args.seed + 1))
    metrics = {
        "train": validation_metrics(model, train_f, train_y),
        "validation": validation_metrics(model, val_f, val_y),
    }
    for split, values in metrics.items():
        line = "  ".join(
            f"{k}: mae {v['mae']:.3f} rho {v['spearman']:.3f}" for k, v in values.items()
        )
        print(f"{split}: {line}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save_heads(args.out)
    record = {
        "command": "OMP_NUM_THREADS=2 python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "seed": args.seed,
        "labels": args.labels,
        "samples": {"train": len(train_f), "validation": len(val_f)},
        "photos": {"train": len(train_paths), "validation": len(val_paths)},
        "kind_weights": KIND_WEIGHTS,
        "epochs": args.epochs,
        "hidden": args.hidden,
        "dropout": args.dropout,
        "wall_seconds": round(time.time() - started),
        "features_from_cache": cached,
        "synthetic_validation": metrics["validation"],
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {time.time() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
