"""Fit the heads of the learned estimator on synthetic degradations and write its weights.

Frozen VGG16 statistics of every sample are computed once (optionally cached in a file, so that
retraining the heads with another label scheme takes seconds); only the small heads are trained,
with a soft binary cross-entropy on each dimension's negative-prompt probability. The weights go
to a safetensors file with a JSON record beside it (settings and synthetic validation figures).
"""

from __future__ import annotations

import datetime
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mordasr.estimate.base import DIMENSIONS
from mordasr.estimate.learned import LearnedEstimator
from mordasr.estimate.training.labels import (
    DEFAULT_SCHEME,
    LABEL_SCHEMES,
    Degradation,
    dimension_labels,
)
from mordasr.estimate.training.synthesis import KIND_WEIGHTS, build_dataset

CACHE_VERSION = 2
"""Bump when the synthesis changes, so that an old feature cache is not reused."""


def targets_of(summaries: list[Degradation], scheme: str) -> torch.Tensor:
    """``(count, 7)`` training targets of the summaries under label ``scheme``."""
    return torch.stack([dimension_labels(summary, scheme) for summary in summaries])


@torch.no_grad()
def extract_features(model: LearnedEstimator, samples: list[torch.Tensor]) -> torch.Tensor:
    """Frozen VGG statistics of every sample, batched by image size."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
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
    heads.get_buffer("feature_mean").copy_(features.mean(dim=0))
    heads.get_buffer("feature_std").copy_(features.std(dim=0).clamp_min(1e-4))
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


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..n`` of a 1-D tensor in float64, tied values sharing their mean rank."""
    ordered, order = values.double().sort()
    starts = torch.ones(len(ordered), dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group = starts.cumsum(0) - 1
    positions = torch.arange(1, len(ordered) + 1, dtype=torch.float64)
    sums = torch.zeros(int(group[-1]) + 1, dtype=torch.float64).index_add_(0, group, positions)
    ranks = torch.empty_like(positions)
    ranks[order] = (sums / torch.bincount(group).double())[group]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (Pearson correlation of their average
    ranks, as ``scipy.stats.spearmanr``; NaN when either is constant)."""
    x, y = _average_ranks(a), _average_ranks(b)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()))


@torch.no_grad()
def validation_metrics(
    model: LearnedEstimator, features: torch.Tensor, targets: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Mean absolute error and Spearman correlation of scores vs targets, per dimension."""
    scores = model.heads(features)
    out = {}
    for i, name in enumerate(DIMENSIONS):
        out[name] = {
            "mae": round(float((scores[:, i] - targets[:, i]).abs().mean()), 4),
            "spearman": round(spearman(scores[:, i], targets[:, i]), 4),
        }
    return out


def split_paths(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Split training photos (not samples) into train / validation by a seeded permutation."""
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(fraction * len(paths)))
    return [paths[i] for i in order[held:]], [paths[i] for i in order[:held]]


def train_estimator(
    photos: list[Path],
    out: Path,
    *,
    samples: int = 1200,
    val_fraction: float = 0.15,
    epochs: int = 60,
    hidden: int = 128,
    dropout: float = 0.3,
    seed: int = 0,
    labels: str = DEFAULT_SCHEME,
    cache: Path | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the estimator's heads on samples synthesised from the clean ``photos`` and write
    them to ``out`` (safetensors) with their record ``out.with_suffix(".json")``; returns the
    record.

    A ``val_fraction`` of the photos (not of the samples) gives the validation samples (at least
    64). ``labels`` is the label scheme (:data:`~mordasr.estimate.training.labels.LABEL_SCHEMES`);
    ``cache`` keeps the frozen features and degradation summaries, reused on a rerun with the
    same ``samples``, ``val_fraction`` and ``seed``; ``command`` is stored in the record as what
    made the weights; ``log`` gets the progress lines. The global torch RNG is seeded with
    ``seed`` inside (heads initialisation, dropout) and restored afterwards.
    """
    if labels not in LABEL_SCHEMES:
        raise ValueError(f"unknown label scheme {labels!r}; choose one of {list(LABEL_SCHEMES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        started = time.time()
        train_paths, val_paths = split_paths(photos, val_fraction, seed)
        val_count = max(64, round(samples * val_fraction / (1 - val_fraction)))
        model = LearnedEstimator.build(hidden=hidden, dropout=dropout)

        generator = torch.Generator().manual_seed(seed)
        key = {"samples": samples, "val_fraction": val_fraction, "seed": seed, "v": CACHE_VERSION}
        data = torch.load(cache, weights_only=False) if cache and cache.is_file() else {}
        cached = data.get("key") == key
        if cached:
            log(f"features read from {cache}")
        else:
            train_x, train_s, _ = build_dataset(train_paths, samples, generator)
            val_x, val_s, _ = build_dataset(val_paths, val_count, generator)
            elapsed = time.time() - started
            log(f"synthesised {len(train_x)} + {len(val_x)} samples in {elapsed:.0f}s")
            data = {
                "key": key,
                "train": (extract_features(model, train_x), train_s),
                "validation": (extract_features(model, val_x), val_s),
            }
            log(f"features done at {time.time() - started:.0f}s")
            if cache:
                torch.save(data, cache)
        (train_f, train_summaries), (val_f, val_summaries) = data["train"], data["validation"]
        train_y, val_y = targets_of(train_summaries, labels), targets_of(val_summaries, labels)

        train_heads(model, train_f, train_y, epochs, torch.Generator().manual_seed(seed + 1))
    metrics = {
        "train": validation_metrics(model, train_f, train_y),
        "validation": validation_metrics(model, val_f, val_y),
    }
    for split, values in metrics.items():
        line = "  ".join(
            f"{k}: mae {v['mae']:.3f} rho {v['spearman']:.3f}" for k, v in values.items()
        )
        log(f"{split}: {line}")

    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_heads(out)
    record = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "seed": seed,
        "labels": labels,
        "samples": {"train": len(train_f), "validation": len(val_f)},
        "photos": {"train": len(train_paths), "validation": len(val_paths)},
        "kind_weights": KIND_WEIGHTS,
        "epochs": epochs,
        "hidden": hidden,
        "dropout": dropout,
        "wall_seconds": round(time.time() - started),
        "features_from_cache": cached,
        "synthetic_validation": metrics["validation"],
    }
    record_path = out.with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {out} and {record_path} in {time.time() - started:.0f}s")
    return record
