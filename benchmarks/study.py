"""A controlled study of the paper's Table 2 variants: same budget, data and seeds for each.

Two modes share the training side: every (variant, seed) trains ``--config`` with
``model.variant=VARIANT``, ``seed=SEED`` and ``total_steps=--steps`` (plus any ``--set``
overrides, the same for every run). Every run lives in ``OUT/VARIANT/seedS``; training resumes
from its newest checkpoint, a run with an exported model is never retrained and a run with
``results.json`` is never re-evaluated. ``OUT/study.json`` pins the settings: rerunning into the
same folder with another budget is refused.

**The mixed-set study** (``--mixed DIR``, a set of ``benchmarks/make_mixed_set.py``; default
recipe ``configs/study_mixed.yaml``). The crops of ``--validation-folder`` (default
``Set14-HR``) are the validation split, all others (BSD100) the test split. Every run is scored
on every group of the test split, image by image (``--metrics``, by default LPIPS, PSNR-Y,
DISTS and NIQE of the 8-bit output of the model's own float32 forward, the same code for
every variant); with ``--realsr``, the runs a call works on are also scored on the
``--lr``/``--hr`` pairs (each run's ``realsr.json``, made once, so RealSR can be added to a
finished study for just the runs that need it). Routed variants add the
real experts kept per layer in each group and the score-swap change: each ``mild`` test image
upscaled routed by its ``severe`` version's router input instead of its own, mean and 99th
percentile of ``|difference|`` in 8-bit levels.

* ``--lr-grid 1 4 16``: ``lora`` is first trained at seed 0 with ``optim.lr`` times each
  multiplier (``OUT/lora-lrM/seed0``), scored by LPIPS on the validation split (all groups
  pooled); the best multiplier (``OUT/lr_grid.json``) trains every ``lora`` seed (seed 0 *is*
  the grid's run) and every other plain LoRA (``lora-16``: it reuses ``lora``'s multiplier,
  not tuned on its own) and the specialists. Routed variants keep their recipe's rates.
* ``mor-frozen`` (evaluation only): the ``mor`` run of each seed with every image routed by one
  vector, the mean router input over that run's training pool (``OUT/pools/seedS``; without a
  pool, ``data.pool_size: 0``, over the validation split's LR images): what the per-image
  routing contributes.
* ``mor-spatial``: ``mor`` trained with ``model.router_scores_from=windows`` (every training
  pair routed by the region scores of its crop, as region routing scores a tile) and with
  ``mordasr-halves`` crops beside the recipe's presets (:data:`ADDED_PRESETS`: a mild and a
  severe side split at a random column, so that crops hold a degradation border as regions of
  unevenly degraded photos do; its own pools, ``OUT/pools/mor-spatial-seedS``), scored with
  region routing (``Upscaler(routing="region")`` on :data:`REGION_GRID`: 32-px regions, 48-px
  tiles with 16 px of context, every tile routed by the regions its core covers). A 64-px LR
  image of the development set is then 2 x 2 regions and 2 x 2 tiles, and a ``mixed-halves``
  image's border lies between its regions, so each half is routed mostly by its own scores.
  ``mor-region`` (evaluation only): the ``mor`` run of each seed scored the same way, so that
  the table separates routing per region from training for it; ``mor-tiled`` (evaluation
  only): the ``mor`` run routed per image but cut into the same tiles, so that it separates
  routing per region from the tiling it needs (48-px tiles with 16 px of context change a 64-px
  image's output beside the whole image at once). The region-routed variants are compared with
  both. Their real experts are the mean over the regions of each image, and they have no swap
  change (no one router input per image to swap).
* ``lora-bf16``: ``lora`` trained under bfloat16 autocast (``mixed_precision: bf16``; AMX
  on CPUs that have it), on the same pool and at the same rate: paired with ``lora`` seed by
  seed, it says whether the faster training gives the same model.
* ``default`` and ``backbone`` (evaluation only, fixed models): the shipped model
  (``--shipped``, default ``default``) as users run it, and the same at ``--strength 0`` (its
  plain backbone, exactly), each scored once (``OUT/VARIANT/seed0``) and paired with every seed
  of the others. With ``default`` in the study every variant is also compared with it, and the
  table ends with issue 25's shipping rule: pooled LPIPS not worse than ``default`` (paired
  interval), no group worse by more than the margin, RealSR PSNR-Y within 0.1 dB of
  ``backbone``'s; the eligible variant with the lowest pooled LPIPS wins.
* ``--ceilings``: per group a specialist, ``lora`` trained on that group's preset only
  (``SPECIALIST_PRESETS``; seeds 0 .. ``--specialist-seeds``-1, default seed 0), scored on its
  group against ``lora``; run first. ``--strength-ceiling DIR`` appends what
  ``benchmarks/strength_ceiling.py`` wrote in ``DIR`` (its ``summary.md``).
* The table (printed, ``OUT/table.md``, everything in ``OUT/summary.json``): per variant, pooled
  and per group, the mean paired LPIPS difference to ``lora`` with the hierarchical bootstrap
  95% interval (seeds, then images; ``mordasr.eval.stats``), Holm-adjusted across the groups,
  the verdict with a +-0.002 margin, the other metrics' means and the real experts; per variant
  the swap change and the train and eval minutes per run; the grid; the ceilings.
* Two processes share one ``OUT``: a run is locked (``.lock``) while one process works on it,
  the other takes the next free one and, with nothing free, waits (``--poll``) for the runs it
  needs. ``--only-seeds``/``--only-variants`` split the work by hand instead. Pools are shared
  per seed (``data.pool_cache``). The full study on the 2 cores of a CPU, the same command in
  two processes (and once more at the end, or either, to print the table)::

      mkdir -p runs
      for i in 1 2; do
        OMP_NUM_THREADS=1 python benchmarks/study.py --mixed /work/data/mixed_dev \\
          --config configs/study_mixed.yaml --variants lora lora-16 mor mor-no-zero mor-frozen \\
          mor-spatial mor-region mor-tiled lora-bf16 default backbone \\
          --seeds 3 --steps 400 --lr-grid 1 4 16 --ceilings --realsr --out runs/study_mixed \\
          --quiet > runs/study_mixed_$i.log 2>&1 &
      done; wait

**The RealSR study** (without ``--mixed``; default recipe ``configs/realesrgan_mor.yaml``):
every run is scored on RealSR (``mordasr benchmark``'s code: PSNR-Y, SSIM-Y, LPIPS, DISTS, NIQE
per image) and, for routed variants, on Set14 HR crops degraded by ``mordasr-mild`` and
``mordasr-severe`` (image ``i`` with seed ``i``): the real experts kept per layer for the mild
and the severe images (``mordasr analyze``), and the swap change as above. It prints per variant
the mean and the spread (sample standard deviation) over seeds of every metric, and against
``lora`` the paired per-image LPIPS difference (each image's LPIPS averaged over seeds first)
with a seeded bootstrap 95% CI over images and a Wilcoxon signed-rank p-value. Data:
``../shared/data/{RealSR,Set14}`` (not part of the project). The full-budget study (3 seeds, the
CPU recipe's 400 steps)::

    OMP_NUM_THREADS=2 python benchmarks/study.py --variants lora mor-no-zero mor --seeds 3 \\
        --steps 400 --out runs/study

and the one of BENCHMARKS.md section 16 (100 steps, the first 20 RealSR pairs), split over the two
cores of a CPU by ``--only-seeds`` (the final call, without it, only prints the table)::

    OMP_NUM_THREADS=1 python benchmarks/study.py --config configs/realesrgan_mor_routed.yaml \\
        --variants lora mor-no-zero mor --seeds 3 --only-seeds 0 1 --steps 100 --eval-limit 20 \\
        --analysis-limit 4 --out runs/study_v2 --quiet
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from common import bootstrap_ci, pin_study, resolved_digest, run_train_config, train_once
from safetensors import safe_open
from scipy.stats import wilcoxon

from mordasr.eval import analysis
from mordasr.eval.benchmark import pair_lr_hr, run_benchmark
from mordasr.eval.evaluate import DEFAULT_METRICS, parse_metrics
from mordasr.eval.io import list_images, load_image
from mordasr.eval.stats import POOLED, compare_groups, hierarchical_bootstrap, verdict
from mordasr.infer.pipeline import Upscaler
from mordasr.io.cliargs import add_set_option
from mordasr.metrics.functional import metric_functions
from mordasr.mor import VARIANTS, mor_layers
from mordasr.sr.mor_sr import MoRSuperResolver
from mordasr.sr.regions import RoutingMode
from mordasr.train.cli import apply_overrides
from mordasr.train.config import TrainConfig
from mordasr.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BASELINE = "lora"


@dataclass(frozen=True)
class PinnedSettings:
    """The recipe and budget every run of one study shares (``study.json`` pins them)."""

    config: str
    config_digest: str
    steps: int
    overrides: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


@dataclass(frozen=True)
class StudySettings(PinnedSettings):
    """What every run of one RealSR study shares; a study folder holds one set of these."""

    lr_dir: str
    hr_dir: str
    eval_limit: int | None
    metrics: tuple[str, ...]
    analysis_dir: str
    analysis_limit: int | None
    analysis_crop: int


DIGEST_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("model", "router_scores_from"): "image",
    ("model", "full_finetune"): False,
    ("model", "allocate", "scorer"): "gradient",
    ("model", "allocate", "stability_batches"): 0,
    ("optim", "milestones"): [],
    ("optim", "gamma"): 0.5,
}
"""Config keys (paths into the resolved config) added after study folders were first pinned,
with the value that means what a config without them meant: left out of the digest at that
value, so a folder pinned before the key existed still takes calls."""


def config_digest(path: Path) -> str:
    """The config's digest (:func:`common.resolved_digest`), the :data:`DIGEST_DEFAULTS` left
    out at their defaults."""
    return resolved_digest(path, DIGEST_DEFAULTS)


RETIRED_SETTINGS: dict[str, Any] = {"realsr": None}
"""Settings once pinned that no longer are, with the value that means what leaving them out
means now: a folder pinned with them at that value still takes calls (RealSR is now scored per
run, into ``realsr.json``, whenever ``--realsr`` is given)."""


def pin_settings(out: Path, settings: PinnedSettings) -> None:
    """Write ``out/study.json``, or check that the study already there used ``settings``
    (:func:`common.pin_study`, accepting the :data:`RETIRED_SETTINGS`)."""
    pin_study(out, settings.to_dict(), RETIRED_SETTINGS)


def run_config(
    settings: Any,
    variant: str,
    seed: int,
    run_dir: Path,
    pool_dir: Path | None = None,
    extra: tuple[str, ...] = (),
) -> TrainConfig:
    """The training config of one run (:func:`common.run_train_config`) of ``variant``, then
    ``extra`` overrides."""
    return run_train_config(settings, seed, run_dir, pool_dir, (f"model.variant={variant}", *extra))


def with_presets(config: TrainConfig, added: Sequence[str]) -> TrainConfig:
    """``config`` training on ``added`` degradation presets besides its own."""
    if not added:
        return config
    presets = [*config.degradation.presets, *added]
    return replace(config, degradation=replace(config.degradation, preset=presets))


def train_run(config: TrainConfig, run_dir: Path, progress: bool) -> Path:
    """Train ``config`` unless its model exists (:func:`common.train_once`); returns the
    exported model folder."""
    return train_once(train, config, run_dir, progress, marker="model.json")


def train_seconds(run_dir: Path) -> float | None:
    """The training seconds of a run (all sittings), if it was trained."""
    record = run_dir / "train.json"
    if not record.is_file():
        return None
    found = json.loads(record.read_text())
    return float(found.get("seconds", found["seconds_last_sitting"]))


def _center_crop(image: torch.Tensor, crop: int, multiple: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    side_h = min(crop, height) // multiple * multiple
    side_w = min(crop, width) // multiple * multiple
    top, left = (height - side_h) // 2, (width - side_w) // 2
    return image[..., top : top + side_h, left : left + side_w]


def routing_effects(model: MoRSuperResolver, images: list[tuple[str, torch.Tensor]]) -> dict:
    """Real experts kept for mild vs severe images, and the output change of every mild image
    routed with its severe version's scores (``|diff|`` in 8-bit levels over all pixels)."""
    route = analysis.model_router(model)
    scale = model.spec.scale
    mild_fn = analysis.preset_degradation("mordasr-mild", scale)
    severe_fn = analysis.preset_degradation("mordasr-severe", scale)
    mild = analysis.analyse_set("mordasr-mild", images, mild_fn, route)
    severe = analysis.analyse_set("mordasr-severe", images, severe_fn, route)
    comparison = analysis.compare_sets(mild, severe)
    change = analysis.swap_change(model, images, mild_fn, severe_fn)
    return {
        "real_experts": comparison["mean_real_experts"],
        "mean_severity": comparison["mean_severity"],
        "score_cosine": comparison["score_cosine"],
        "swap_change_mean": change["mean"],
        "swap_change_p99": change["p99"],
    }


def evaluate_run(
    settings: StudySettings, variant: str, model_dir: Path, progress: bool
) -> dict[str, Any]:
    """RealSR metrics per image and, for routed variants, the routing effects."""
    started = time.time()
    pairs = pair_lr_hr(Path(settings.lr_dir), Path(settings.hr_dir))[: settings.eval_limit]
    (run,) = run_benchmark(pairs, [str(model_dir)], settings.metrics, progress=progress)
    result: dict[str, Any] = {
        "variant": variant,
        "images": [hr.name for _, hr in pairs],
        "per_image": run.metrics,
        "means": run.means(),
        "seconds_per_image": float(np.mean(run.seconds)),
    }
    if variant != BASELINE:
        model = MoRSuperResolver.from_pretrained(model_dir)
        files = list_images(Path(settings.analysis_dir))[: settings.analysis_limit]
        images = [
            (p.name, _center_crop(load_image(p), settings.analysis_crop, model.spec.scale))
            for p in files
        ]
        result["routing"] = routing_effects(model, images)
    result["eval_seconds"] = round(time.time() - started, 1)
    return result


def study_run(
    settings: StudySettings, variant: str, seed: int, out: Path, progress: bool
) -> dict[str, Any]:
    """Train and evaluate one (variant, seed) unless already done; its ``results.json``."""
    run_dir = out / variant / f"seed{seed}"
    results_path = run_dir / "results.json"
    if results_path.is_file():
        return json.loads(results_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = train_run(run_config(settings, variant, seed, run_dir), run_dir, progress)
    result = {"seed": seed, **evaluate_run(settings, variant, model_dir, progress)}
    seconds = train_seconds(run_dir)
    if seconds is not None:
        result["train_seconds"] = seconds
    results_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (1.0 when every difference is zero)."""
    if not np.any(differences):
        return 1.0
    return float(wilcoxon(differences).pvalue)


def per_image_mean(runs: list[dict[str, Any]], metric: str) -> np.ndarray:
    """Each image's ``metric`` averaged over the runs (seeds) of one variant."""
    return np.mean([np.asarray(r["per_image"][metric]) for r in runs], axis=0)


def paired_lpips(runs: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> dict[str, float]:
    """Per-image LPIPS of a variant minus the baseline's (both averaged over their seeds)."""
    if runs[0]["images"] != baseline[0]["images"]:
        raise ValueError("variants were evaluated on different images")
    differences = per_image_mean(runs, "lpips") - per_image_mean(baseline, "lpips")
    low, high = bootstrap_ci(differences)
    return {
        "mean": float(differences.mean()),
        "ci_low": low,
        "ci_high": high,
        "wilcoxon_p": wilcoxon_p(differences),
    }


def _spread(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(results: dict[str, list[dict[str, Any]]], metrics: tuple[str, ...]) -> dict:
    """Per variant: mean and spread over seeds of every metric, the paired LPIPS test against
    the baseline, the routing effects (means over seeds) and the wall times."""
    summary: dict[str, Any] = {}
    for variant, runs in results.items():
        row: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
        for metric in metrics:
            values = [float(r["means"][metric]) for r in runs]
            row[metric] = {"mean": float(np.mean(values)), "spread": _spread(values)}
        if variant != BASELINE and BASELINE in results:
            row["lpips_vs_lora"] = paired_lpips(runs, results[BASELINE])
        routed = [r["routing"] for r in runs if "routing" in r]
        if routed:
            row["routing"] = {
                "real_experts_mild": float(
                    np.mean([r["real_experts"]["mordasr-mild"] for r in routed])
                ),
                "real_experts_severe": float(
                    np.mean([r["real_experts"]["mordasr-severe"] for r in routed])
                ),
                "swap_change_mean": float(np.mean([r["swap_change_mean"] for r in routed])),
                "swap_change_p99": float(np.mean([r["swap_change_p99"] for r in routed])),
            }
        train_seconds = [r["train_seconds"] for r in runs if "train_seconds" in r]
        row["train_minutes"] = float(np.mean(train_seconds)) / 60 if train_seconds else math.nan
        row["eval_minutes"] = float(np.mean([r["eval_seconds"] for r in runs])) / 60
        summary[variant] = row
    return summary


def table(summary: dict[str, Any], metrics: tuple[str, ...]) -> str:
    """The study's one markdown table."""
    header = [
        "variant",
        "seeds",
        *(m.upper() for m in metrics),
        "ΔLPIPS vs lora [95% CI]",
        "Wilcoxon p",
        "real experts mild / severe",
        "swap change mean / p99 (/255)",
        "train min/run",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, row in summary.items():
        cells = [variant, str(len(row["seeds"]))]
        for metric in metrics:
            d = METRIC_DIGITS.get(metric, 4)
            cells.append(f"{row[metric]['mean']:.{d}f} ± {row[metric]['spread']:.{d}f}")
        test = row.get("lpips_vs_lora")
        if test is None:
            cells += ["—", "—"]
        else:
            cells.append(f"{test['mean']:+.4f} [{test['ci_low']:+.4f}, {test['ci_high']:+.4f}]")
            cells.append(f"{test['wilcoxon_p']:.3g}")
        routing = row.get("routing")
        if routing is None:
            cells += ["—", "—"]
        else:
            cells.append(
                f"{routing['real_experts_mild']:.2f} / {routing['real_experts_severe']:.2f}"
            )
            cells.append(f"{routing['swap_change_mean']:.2f} / {routing['swap_change_p99']:.2f}")
        cells.append(f"{row['train_minutes']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The mixed-degradation study ----------------------------------------------------------------

FROZEN = "mor-frozen"
"""The evaluation-only variant: each ``mor`` run with every image routed by one fixed vector."""
FROZEN_FROM = "mor"
SPATIAL = "mor-spatial"
"""``mor`` trained on the region scores of its crops, scored with region routing."""
REGION = "mor-region"
"""The evaluation-only variant: each ``mor`` run scored with region routing."""
TILED = "mor-tiled"
"""The evaluation-only variant: each ``mor`` run routed per image, tiled as region routing is."""
EVALUATED_FROM = {FROZEN: FROZEN_FROM, REGION: "mor", TILED: "mor"}
"""The evaluation-only variants and the variant whose runs each scores."""
BFLOAT16 = "lora-bf16"
"""``lora`` trained under bfloat16 autocast: whether the faster training gives the same model."""
TRAINED_AS = {
    SPATIAL: ("mor", ("model.router_scores_from=windows",)),
    BFLOAT16: ("lora", ("mixed_precision=bf16",)),
}
"""Study variants that train a model variant with overrides of their own."""
OWN_POOLS = (SPATIAL,)
"""Study variants whose training data differ: their pools are their own (``OUT/pools/
VARIANT-seedS``); every other variant of a seed trains on the same pool."""
ADDED_PRESETS = {SPATIAL: ("mordasr-halves",)}
"""Degradation presets a study variant trains on beside the recipe's own (``mordasr-halves``:
crops that hold a mild and a severe side, :class:`mordasr.degrade.SplitConfig`)."""
REGION_GRID = {"region_window": 32, "tile": 48, "tile_overlap": 16}
"""How the region-routed variants are scored: 32-px regions (the estimator's smallest side;
a 64-px LR image of the mixed set is 2 x 2 regions and its ``mixed-halves`` border lies between
them), 48-px tiles keeping 16 px of context (a 64-px image is 2 x 2 tiles, each routed by the
region its core covers). A training crop of the CPU recipe (32 LR px) is one such region."""
REGION_ROUTED = (SPATIAL, REGION)
"""The variants scored with region routing (every other one per image)."""
ON_REGION_GRID = (*REGION_ROUTED, TILED)
"""The variants scored on :data:`REGION_GRID`'s tiles (every other one whole)."""
PER_IMAGE = "mor"
"""The per-image routed model the region-routed variants are also compared with."""
SPECIALIST = "specialist"
SPECIALIST_PRESETS = {
    "clean": "bicubic",
    "blur": "blur-only",
    "noise": "noise-only",
    "jpeg": "jpeg-only",
    "mild": "mordasr-mild",
    "severe": "mordasr-severe",
}
"""The training preset of each group's specialist (``mixed-halves`` has none)."""
SWAP_OWN, SWAP_OTHER = "mild", "severe"
REALSR = "RealSR"
MARGIN = 0.002
"""The equivalence margin of the LPIPS verdicts."""
MIXED_METRICS = ("lpips", "psnr", "dists", "niqe")
"""LPIPS (primary), then the secondary columns."""
SHIPPED = "default"
"""Evaluation only: the shipped model (``--shipped``) as users run it."""
BACKBONE = "backbone"
"""Evaluation only: the shipped model at strength 0, which is its plain backbone."""
FIXED_STRENGTH = {SHIPPED: 1.0, BACKBONE: 0.0}
"""The fixed models and the strength each runs at: nothing is trained, so each is scored once
(``OUT/VARIANT/seed0``) and stands for every seed (no seed spread of its own)."""
REALSR_FILE = "realsr.json"
"""A run's RealSR scores (``--realsr``), beside its ``results.json``."""
RULE_PSNR_DROP = 0.1
"""The shipping rule: RealSR PSNR-Y at most this far (dB) below the plain backbone's."""
VALIDATION_FILE = "validation.json"
"""A run's validation-split LPIPS, beside its ``results.json`` (how the seed to ship is chosen)."""


class Busy(Exception):
    """Another live process is working on this run folder (or one it needs): try later."""


class Skipped(Exception):
    """A run needs one that nobody is doing (e.g. ``mor-frozen`` without its ``mor`` run)."""


def _holder(lock: Path) -> int | None:
    """The id of the live process that holds ``lock``, else None."""
    try:
        owner = int(lock.read_text() or 0)
        os.kill(owner, 0)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return owner


@contextlib.contextmanager
def claimed(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` (this process's id) while the block runs, so two processes
    sharing one study folder never train or evaluate one run at the same time; a lock left by
    a process that is gone is taken over. Raises :class:`Busy` when a live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".lock"
    try:
        handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = _holder(lock)
        if owner is None:
            lock.unlink(missing_ok=True)
            with claimed(run_dir):
                yield
            return
        raise Busy(f"{run_dir} is being run by process {owner}") from None
    os.write(handle, str(os.getpid()).encode())
    os.close(handle)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


@dataclass(frozen=True)
class MixedSet:
    """A mixed-degradation set (``benchmarks/make_mixed_set.py``): its groups, and its ids split
    into validation (the crops of one source folder) and test (all others)."""

    root: Path
    groups: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def pairs(self, group: str, ids: tuple[str, ...]) -> list[tuple[Path, Path]]:
        """(LR, HR) files of ``ids`` in ``group``."""
        return [(self.root / "LR" / group / f"{i}.png", self.root / "HR" / f"{i}.png") for i in ids]


def load_mixed_set(root: Path, validation_folder: str, limit: int | None = None) -> MixedSet:
    """Read ``set.json`` and ``params.jsonl``: a crop belongs to the folder label its
    ``source`` starts with; ``limit`` keeps the first test ids."""
    manifest = json.loads((root / "set.json").read_text())
    folder_of = {}
    for line in (root / "params.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            folder_of[record["id"]] = record["source"].split("/", 1)[0]
    ids = manifest["ids"]
    validation = tuple(i for i in ids if folder_of[i] == validation_folder)
    test = tuple(i for i in ids if folder_of[i] != validation_folder)[:limit]
    if not validation or not test:
        raise ValueError(
            f"{root}: the validation folder {validation_folder!r} must hold some but not all "
            f"crops (folders: {', '.join(manifest['folders'])})"
        )
    groups = tuple(g for g in manifest["groups"] if (root / "LR" / g).is_dir())
    return MixedSet(root, groups, validation, test)


@dataclass(frozen=True)
class MixedSettings(PinnedSettings):
    """What every run of one mixed-set study shares; a study folder holds one set of these."""

    mixed_dir: str
    validation_folder: str
    eval_limit: int | None
    metrics: tuple[str, ...]
    lr_grid: tuple[float, ...]


def host() -> dict[str, Any]:
    """Where a run was made: CPU model, cores, torch threads (its wall times depend on them)."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
        if line.startswith("model name")
    ]
    return {
        "cpu": names[0] if names else platform.processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def is_routed(model: MoRSuperResolver) -> bool:
    return any(layer.router is not None for _, layer in mor_layers(model.backbone))


def real_experts(network: torch.nn.Module, route_input: torch.Tensor) -> float:
    """Real experts kept per routed layer (mean over layers) for one image's router input."""
    layers = analysis.route_scores(network, route_input).values()
    return float(np.mean([float(r.indices.shape[1] - r.num_zero.float().mean()) for r in layers]))


@torch.no_grad()
def score_group(
    model: MoRSuperResolver,
    pairs: list[tuple[Path, Path]],
    metrics: tuple[str, ...],
    scores: torch.Tensor | None = None,
    keep: dict[str, torch.Tensor] | None = None,
    routing: RoutingMode = "image",
    strength: float = 1.0,
    tiled: bool = False,
) -> dict[str, Any]:
    """Per image: ``metrics`` of the 8-bit SR output and, for a routed model, the real experts
    kept; every image routed by ``scores`` if given, else by its own router input, or with
    ``routing="region"`` upscaled by :class:`~mordasr.infer.pipeline.Upscaler` under region
    routing on :data:`REGION_GRID` (the real experts then averaged over the image's regions).
    ``tiled`` cuts an image routed per image into the same tiles; a ``strength`` other than 1
    runs through the ``Upscaler`` too (0: the plain backbone, no real experts). The float
    outputs are kept in ``keep`` (by id) when given."""
    through_upscaler = routing == "region" or tiled or strength != 1.0
    if through_upscaler and scores is not None:
        raise ValueError("region routing, tiles and strength route every image itself: no scores")
    functions = metric_functions()
    routed = is_routed(model) and strength != 0.0
    upscaler = None
    if through_upscaler:
        device = next(model.parameters()).device
        grid: dict[str, Any] = {"tile": None}
        if routing == "region":
            grid = REGION_GRID
        elif tiled:
            grid = {"tile": REGION_GRID["tile"], "tile_overlap": REGION_GRID["tile_overlap"]}
        upscaler = Upscaler(
            model,
            device=device,
            backend="torch",
            routing=routing,
            strength=strength,
            precision="exact",
            **grid,
        )
    per_image: dict[str, list[float]] = {m: [] for m in metrics}
    experts = []
    for lr_path, hr_path in pairs:
        lr, hr = load_image(lr_path), load_image(hr_path)
        if upscaler is None:
            route_input = scores if scores is not None else model.route_input(lr)
            sr = model(lr, route_input).clamp(0, 1)
        else:
            if routing == "region":
                window = REGION_GRID["region_window"]
                route_input = model.region_scores(lr, window=window, stride=window).per_region()
            elif routed:
                route_input = model.route_input(lr)
            sr = upscaler.upscale_tensor(lr).clamp(0, 1)
        if keep is not None:
            keep[hr_path.stem] = sr
        sr = sr.mul(255).round().div(255)
        for metric in metrics:
            per_image[metric].append(float(functions[metric](sr, hr)[0]))
        if routed:
            experts.append(real_experts(model.backbone, route_input))
    result: dict[str, Any] = {
        "per_image": per_image,
        "means": {m: float(np.mean(v)) for m, v in per_image.items()},
    }
    if routed:
        result["real_experts"] = float(np.mean(experts))
    return result


@torch.no_grad()
def swap_change(
    model: MoRSuperResolver, own: dict[str, torch.Tensor], lrs: list[tuple[Path, Path]]
) -> dict[str, float]:
    """Every image of ``own`` (id -> its SR output under its own routing) upscaled again from
    its LR routed by the router input of its other version (``lrs``: (own LR, other LR) of the
    same ids in order): mean and 99th percentile of ``|difference|`` over all pixels, in 8-bit
    levels."""
    changes = []
    for (image_id, mine), (lr_own, lr_other) in zip(own.items(), lrs, strict=True):
        if lr_own.stem != image_id or lr_other.stem != image_id:
            raise ValueError(f"swap pairs {image_id} with {lr_own.stem} and {lr_other.stem}")
        swapped = model(load_image(lr_own), model.route_input(load_image(lr_other)))
        changes.append(((swapped.clamp(0, 1) - mine).abs() * 255).flatten().numpy())
    change = np.concatenate(changes).astype(np.float64)
    return {"mean": float(change.mean()), "p99": float(np.percentile(change, 99))}


def evaluate_mixed(
    settings: MixedSettings,
    mixed: MixedSet,
    model_dir: Path | str,
    groups: tuple[str, ...] | None = None,
    scores: torch.Tensor | None = None,
    routing: RoutingMode = "image",
    strength: float = 1.0,
    tiled: bool = False,
) -> dict[str, Any]:
    """Every group (or ``groups``) of the test split, routed as ``routing`` says, tiled as
    ``tiled`` says and run at ``strength`` (:func:`score_group`); for a routed model routed per
    image by its own inputs, whole, the score-swap output change."""
    started = time.time()
    model = MoRSuperResolver.from_pretrained(model_dir)
    swap = (
        scores is None
        and routing == "image"
        and not tiled
        and strength == 1.0
        and is_routed(model)
        and {SWAP_OWN, SWAP_OTHER} <= set(mixed.groups)
    )
    kept: dict[str, torch.Tensor] = {}
    result: dict[str, Any] = {"model_dir": str(model_dir), "images": list(mixed.test)}
    result["groups"] = {
        group: score_group(
            model,
            mixed.pairs(group, mixed.test),
            settings.metrics,
            scores,
            kept if swap and group == SWAP_OWN else None,
            routing,
            strength,
            tiled,
        )
        for group in groups or mixed.groups
    }
    if swap and kept:
        lrs = [
            (own, other)
            for (own, _), (other, _) in zip(
                mixed.pairs(SWAP_OWN, mixed.test), mixed.pairs(SWAP_OTHER, mixed.test), strict=True
            )
        ]
        result["swap_change"] = swap_change(model, kept, lrs)
    result["eval_seconds"] = round(time.time() - started, 1)
    return result


def evaluate_realsr(
    metrics: tuple[str, ...],
    pairs: list[tuple[Path, Path]],
    model_dir: Path | str,
    scores: torch.Tensor | None = None,
    routing: RoutingMode = "image",
    strength: float = 1.0,
    tiled: bool = False,
) -> dict[str, Any]:
    """``metrics`` per RealSR pair, the model run as in its mixed-set scoring."""
    started = time.time()
    model = MoRSuperResolver.from_pretrained(model_dir)
    result = score_group(
        model, pairs, metrics, scores, routing=routing, strength=strength, tiled=tiled
    )
    return {
        "model_dir": str(model_dir),
        "images": [hr.name for _, hr in pairs],
        **result,
        "eval_seconds": round(time.time() - started, 1),
    }


def validation_lpips(model_dir: Path, mixed: MixedSet) -> float:
    """Mean LPIPS of a model over the validation split, all groups pooled."""
    model = MoRSuperResolver.from_pretrained(model_dir)
    values = [
        value
        for group in mixed.groups
        for value in score_group(model, mixed.pairs(group, mixed.validation), ("lpips",))[
            "per_image"
        ]["lpips"]
    ]
    return float(np.mean(values))


def lr_run_name(variant: str, multiplier: float) -> str:
    return f"{variant}-lr{multiplier:g}"


def plain_lora(variant: str) -> bool:
    """Whether ``variant`` is a plain LoRA (``lora``, ``lora-16``): it takes the tuned rate."""
    return variant == BASELINE or (variant.startswith("lora-") and variant[5:].isdigit())


class MixedStudy:
    """The runs of one mixed-set study in ``out``; every step is skipped when its files exist.

    Layout: ``OUT/VARIANT/seedS/{train,train.json,results.json}``; the learning-rate grid in
    ``OUT/lora-lrM/seed0`` (``validation.json``) and ``OUT/lr_grid.json``; specialists in
    ``OUT/specialist-GROUP/seedS``; pools in ``OUT/pools/seedS`` (``OUT/pools/GROUP-seedS``
    for the specialists, whose data differ).
    """

    def __init__(
        self,
        settings: MixedSettings,
        mixed: MixedSet,
        out: Path,
        progress: bool,
        realsr: list[tuple[Path, Path]] | None = None,
        shipped: str = SHIPPED,
    ) -> None:
        self.settings = settings
        self.mixed = mixed
        self.out = out
        self.progress = progress
        self.realsr = realsr
        """(LR, HR) RealSR pairs every run asked for is also scored on, or None."""
        self.shipped = shipped
        """The model the fixed variants (:data:`FIXED_STRENGTH`) score."""

    def _config(
        self, variant: str, seed: int, run_dir: Path, pool: str, extra: tuple[str, ...] = ()
    ) -> TrainConfig:
        return run_config(self.settings, variant, seed, run_dir, self.out / "pools" / pool, extra)

    def _lr_override(self, multiplier: float) -> tuple[str, ...]:
        """The override setting the study's learning rate times ``multiplier`` (none for 1)."""
        if multiplier == 1.0:
            return ()
        base = apply_overrides(
            TrainConfig.from_yaml(self.settings.config), list(self.settings.overrides)
        )
        return (f"optim.lr={base.optim.lr * multiplier!r}",)

    def tune_lr(self, variant: str = BASELINE) -> float:
        """Train ``variant`` at seed 0 with the learning rate times every multiplier of the
        grid, score each on the validation split and keep the best (lowest LPIPS); recorded in
        ``OUT/lr_grid.json``."""
        record_path = self.out / "lr_grid.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if variant in record:
            return float(record[variant]["best"])
        scores, busy = {}, []
        for multiplier in self.settings.lr_grid:
            run_dir = self.out / lr_run_name(variant, multiplier) / "seed0"
            path = run_dir / "validation.json"
            if not path.is_file():
                try:
                    with claimed(run_dir):
                        self._grid_run(variant, multiplier, run_dir)
                except Busy as error:
                    busy.append(str(error))
                    continue
            scores[f"{multiplier:g}"] = json.loads(path.read_text())["lpips"]
        if busy:
            raise Busy(f"the {variant} learning-rate grid waits for: {'; '.join(busy)}")
        best = min(self.settings.lr_grid, key=lambda m: scores[f"{m:g}"])
        record[variant] = {"validation_lpips": scores, "best": best}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        return best

    def _grid_run(self, variant: str, multiplier: float, run_dir: Path) -> None:
        """Train one run of the grid and write its validation LPIPS (unless another process
        did before this one held the run)."""
        if (run_dir / VALIDATION_FILE).is_file():
            return
        print(f"study: {variant} seed 0, lr x{multiplier:g}", flush=True)
        config = self._config(variant, 0, run_dir, "seed0", self._lr_override(multiplier))
        self._validated(run_dir, train_run(config, run_dir, self.progress))

    def multiplier(self, variant: str) -> float:
        """The learning-rate multiplier of ``variant``: plain LoRA variants (``lora-bf16``
        included) take ``lora``'s tuned one (tuned on ``lora`` only), the others their recipe's
        rate (1)."""
        if not self.settings.lr_grid or not plain_lora(TRAINED_AS.get(variant, (variant,))[0]):
            return 1.0
        return self.tune_lr(BASELINE)

    def _once(
        self,
        run_dir: Path,
        label: str,
        make: Callable[[], dict[str, Any]],
        name: str = "results.json",
    ) -> dict:
        """``run_dir/name``, made by ``make`` (holding the run's lock) unless there."""
        path = run_dir / name
        if path.is_file():
            return json.loads(path.read_text())
        with claimed(run_dir):
            if path.is_file():  # finished by another process meanwhile
                return json.loads(path.read_text())
            print(f"study: {label}", flush=True)
            result = {**make(), "host": host()}
            path.write_text(json.dumps(result, indent=2) + "\n")
        return result

    def run(self, variant: str, seed: int) -> dict[str, Any]:
        """Train (unless done) and evaluate one (variant, seed); its ``results.json``, with its
        RealSR scores (``realsr``) when the study asks for them (made unless there)."""
        result = (
            self._fixed(variant, seed) if variant in FIXED_STRENGTH else self._run(variant, seed)
        )
        if self.realsr is None:
            return result
        return {**result, "realsr": self._realsr(variant, seed, result, self.realsr)}

    def _realsr(
        self, variant: str, seed: int, result: dict[str, Any], pairs: list[tuple[Path, Path]]
    ) -> dict[str, Any]:
        """The RealSR scores of a finished run, routed and run as its mixed-set scoring was."""
        scores = result.get("frozen_scores")

        def make() -> dict[str, Any]:
            return evaluate_realsr(
                self.settings.metrics,
                pairs,
                result["model_dir"],
                None if scores is None else torch.tensor([scores]),
                result.get("routing", "image"),
                FIXED_STRENGTH.get(variant, 1.0),
                result.get("tiled", False),
            )

        run_dir = self.out / variant / f"seed{0 if variant in FIXED_STRENGTH else seed}"
        return self._once(run_dir, f"{variant} seed {seed} on RealSR", make, REALSR_FILE)

    def _fixed(self, variant: str, seed: int) -> dict[str, Any]:
        """The shipped model (at its variant's strength) scored once, standing for ``seed``."""

        def make() -> dict[str, Any]:
            strength = FIXED_STRENGTH[variant]
            return {
                "variant": variant,
                "seed": 0,
                "strength": strength,
                **evaluate_mixed(self.settings, self.mixed, self.shipped, strength=strength),
                "train_seconds": 0.0,
            }

        result = self._once(self.out / variant / "seed0", f"{variant} (fixed model)", make)
        return {**result, "seed": seed}

    def _run(self, variant: str, seed: int) -> dict[str, Any]:
        """Train (unless done) and evaluate one (variant, seed); its ``results.json``. The
        tuned ``lora`` of seed 0 is the grid's run of the chosen rate (not trained again)."""
        run_dir = self.out / variant / f"seed{seed}"
        if (run_dir / "results.json").is_file():
            return json.loads((run_dir / "results.json").read_text())
        if variant == FROZEN:
            return self._frozen(seed)
        if variant in (REGION, TILED):
            return self._on_region_grid(variant, seed)
        multiplier = self.multiplier(variant)
        model_variant, overrides = TRAINED_AS.get(variant, (variant, ()))
        pool = f"{variant}-seed{seed}" if variant in OWN_POOLS else f"seed{seed}"
        routing: RoutingMode = "region" if variant in REGION_ROUTED else "image"

        def make() -> dict[str, Any]:
            trained = run_dir
            if variant == BASELINE and self.settings.lr_grid and seed == 0:
                trained = self.out / lr_run_name(variant, multiplier) / "seed0"
            extra = (*overrides, *self._lr_override(multiplier))
            config = with_presets(
                self._config(model_variant, seed, trained, pool, extra),
                ADDED_PRESETS.get(variant, ()),
            )
            model_dir = train_run(config, trained, self.progress)
            return {
                "variant": variant,
                "seed": seed,
                "lr_multiplier": multiplier,
                "routing": routing,
                **({"region_grid": REGION_GRID} if routing == "region" else {}),
                **evaluate_mixed(self.settings, self.mixed, model_dir, routing=routing),
                "train_seconds": train_seconds(trained),
            }

        return self._once(run_dir, f"{variant} seed {seed}", make)

    def frozen_scores(self, seed: int, model_dir: Path) -> tuple[torch.Tensor, str]:
        """The mean router input of the ``mor`` run of ``seed`` over its training pool (the
        ``route`` or ``scores`` of ``OUT/pools/seedS``); without a pool file (no
        ``data.pool_size``), over the validation split's LR images, all groups."""
        pools = sorted((self.out / "pools" / f"seed{seed}").glob("pool-*.safetensors"))
        if pools:
            with safe_open(str(pools[0]), "pt") as pool:
                names = set(pool.keys())
                key = "route" if "route" in names else "scores"
                inputs = pool.get_tensor(key).float()
            return inputs.mean(dim=0, keepdim=True), f"training pool {pools[0].name} ({key})"
        model = MoRSuperResolver.from_pretrained(model_dir)
        inputs = torch.cat(
            [
                model.route_input(load_image(lr)).float()
                for group in self.mixed.groups
                for lr, _ in self.mixed.pairs(group, self.mixed.validation)
            ]
        )
        return inputs.mean(dim=0, keepdim=True), "validation split, all groups"

    def _evaluated_model(self, variant: str, seed: int) -> Path:
        """The model folder an evaluation-only ``variant`` scores at ``seed``: raises
        :class:`Busy` while its run is made, :class:`Skipped` when nobody makes it."""
        source_run = self.out / EVALUATED_FROM[variant] / f"seed{seed}"
        if not (source_run / "results.json").is_file():
            message = f"{variant} seed {seed} needs the {EVALUATED_FROM[variant]} run of that seed"
            if _holder(source_run / ".lock") is None:
                raise Skipped(message)
            raise Busy(message)
        return source_run / "train" / "final"

    def _on_region_grid(self, variant: str, seed: int) -> dict[str, Any]:
        """The ``mor`` run of ``seed`` scored on :data:`REGION_GRID`'s tiles: routed per region
        (``mor-region``) or per image (``mor-tiled``)."""
        model_dir = self._evaluated_model(variant, seed)
        routing: RoutingMode = "region" if variant == REGION else "image"
        tiled = variant == TILED

        def make() -> dict[str, Any]:
            return {
                "variant": variant,
                "seed": seed,
                "routing": routing,
                **({"tiled": True} if tiled else {}),
                "region_grid": REGION_GRID,
                **evaluate_mixed(
                    self.settings, self.mixed, model_dir, routing=routing, tiled=tiled
                ),
                "train_seconds": 0.0,
            }

        return self._once(self.out / variant / f"seed{seed}", f"{variant} seed {seed}", make)

    def _frozen(self, seed: int) -> dict[str, Any]:
        """The ``mor`` run of ``seed`` scored with every image routed by :meth:`frozen_scores`."""
        model_dir = self._evaluated_model(FROZEN, seed)

        def make() -> dict[str, Any]:
            scores, source = self.frozen_scores(seed, model_dir)
            return {
                "variant": FROZEN,
                "seed": seed,
                "frozen_scores": scores[0].tolist(),
                "frozen_source": source,
                **evaluate_mixed(self.settings, self.mixed, model_dir, scores=scores),
                "train_seconds": 0.0,
            }

        return self._once(self.out / FROZEN / f"seed{seed}", f"{FROZEN} seed {seed}", make)

    def specialist(self, group: str, seed: int) -> dict[str, Any]:
        """``lora`` trained on ``group``'s preset only (at the tuned rate), scored on that
        group."""
        run_dir = self.out / f"{SPECIALIST}-{group}" / f"seed{seed}"
        if (run_dir / "results.json").is_file():
            return json.loads((run_dir / "results.json").read_text())
        multiplier = self.multiplier(BASELINE)

        def make() -> dict[str, Any]:
            preset = SPECIALIST_PRESETS[group]
            extra = (f"degradation.preset=[{preset}]", *self._lr_override(multiplier))
            config = self._config(BASELINE, seed, run_dir, f"{group}-seed{seed}", extra)
            model_dir = train_run(config, run_dir, self.progress)
            return {
                "variant": f"{SPECIALIST}-{group}",
                "seed": seed,
                "lr_multiplier": multiplier,
                "preset": preset,
                **evaluate_mixed(self.settings, self.mixed, model_dir, groups=(group,)),
                "train_seconds": train_seconds(run_dir),
            }

        return self._once(run_dir, f"{SPECIALIST} {group} seed {seed}", make)

    def collect(self, name: str, seeds: int) -> list[dict[str, Any]]:
        """The finished runs of ``name`` (a variant or ``specialist-GROUP``), by seed, with
        their RealSR scores where made; a fixed model's one run stands for every seed."""
        fixed = name in FIXED_STRENGTH
        runs = []
        for seed in range(seeds):
            run_dir = self.out / name / f"seed{0 if fixed else seed}"
            if not (run_dir / "results.json").is_file():
                continue
            run = {**json.loads((run_dir / "results.json").read_text()), "seed": seed}
            if (run_dir / REALSR_FILE).is_file():
                run["realsr"] = json.loads((run_dir / REALSR_FILE).read_text())
            runs.append(run)
        return runs

    def validation(self, variant: str, seed: int) -> float:
        """Validation-split LPIPS of a finished run, cached in its folder: the seed to ship is
        chosen by it, never by the test split."""
        run_dir = self.out / variant / f"seed{seed}"
        results = json.loads((run_dir / "results.json").read_text())
        return self._validated(run_dir, Path(results["model_dir"]))

    def _validated(self, run_dir: Path, model_dir: Path) -> float:
        """The validation LPIPS of ``model_dir``, scored once into ``run_dir``'s
        :data:`VALIDATION_FILE`."""
        path = run_dir / VALIDATION_FILE
        if not path.is_file():
            path.write_text(json.dumps({"lpips": validation_lpips(model_dir, self.mixed)}) + "\n")
        return float(json.loads(path.read_text())["lpips"])


def _by_seed(runs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(r["seed"]): r for r in runs}


def _images(run: dict[str, Any], group: str) -> dict[str, Any]:
    return run["realsr"] if group == REALSR else run["groups"][group]


def paired_grid(
    runs: list[dict[str, Any]], baseline: list[dict[str, Any]], group: str, metric: str = "lpips"
) -> np.ndarray:
    """(seeds, images) differences of ``metric`` in ``group``, variant seed s minus baseline
    seed s, over the seeds both have (empty rows when none)."""
    mine, theirs = _by_seed(runs), _by_seed(baseline)
    seeds = sorted(set(mine) & set(theirs))
    rows = []
    for seed in seeds:
        a, b = _images(mine[seed], group), _images(theirs[seed], group)
        if mine[seed].get("images") != theirs[seed].get("images"):
            raise ValueError(f"seed {seed} of two variants scored different images")
        rows.append(np.asarray(a["per_image"][metric]) - np.asarray(b["per_image"][metric]))
    return np.asarray(rows)


def _estimate(estimate: Any, p_adjusted: float, verdict_: str) -> dict[str, Any]:
    return {
        "mean": estimate.mean,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "p": estimate.p_value,
        "p_holm": p_adjusted,
        "verdict": verdict_,
        "seeds": estimate.seeds,
        "images": estimate.images,
    }


def versus_baseline(
    runs: list[dict[str, Any]], baseline: list[dict[str, Any]], groups: tuple[str, ...]
) -> dict[str, Any]:
    """Per group and pooled: the paired LPIPS difference to the baseline, hierarchical bootstrap
    over seeds then images, Holm across the groups, verdict with the ``MARGIN``; RealSR (if
    scored) on its own, outside the family."""
    grids = {g: paired_grid(runs, baseline, g) for g in groups}
    if any(grid.size == 0 for grid in grids.values()):
        return {}
    compared = compare_groups(grids, MARGIN)
    result = {name: _estimate(c.estimate, c.p_adjusted, c.verdict) for name, c in compared.items()}
    if all(REALSR.lower() in r for r in runs + baseline):
        estimate = hierarchical_bootstrap(paired_grid(runs, baseline, REALSR))
        result[REALSR] = _estimate(
            estimate, estimate.p_value, verdict(estimate.ci_low, estimate.ci_high, MARGIN)
        )
    return result


def _mean_over(runs: list[dict[str, Any]], pick: Any) -> float | None:
    values = [pick(r) for r in runs]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _mean_minutes(runs: list[dict[str, Any]], pick: Any) -> float | None:
    """:func:`_mean_over` of a time in seconds, in minutes."""
    seconds = _mean_over(runs, pick)
    return None if seconds is None else seconds / 60


def metric_means(
    runs: list[dict[str, Any]], groups: tuple[str, ...], metrics: tuple[str, ...]
) -> dict[str, Any]:
    """Per group, pooled (all groups' images) and RealSR: every metric's mean over images and
    seeds, and the real experts kept (routed variants)."""
    table: dict[str, Any] = {}
    for group in groups:
        table[group] = {
            m: _mean_over(runs, lambda r, m=m, g=group: r["groups"][g]["means"][m]) for m in metrics
        }
        table[group]["real_experts"] = _mean_over(
            runs, lambda r, g=group: r["groups"][g].get("real_experts")
        )
    table[POOLED] = {
        m: _mean_over([table[g] for g in groups], lambda t, m=m: t[m]) for m in metrics
    }
    table[POOLED]["real_experts"] = _mean_over(
        [table[g] for g in groups], lambda t: t["real_experts"]
    )
    if all("realsr" in r for r in runs):
        table[REALSR] = {
            m: _mean_over(runs, lambda r, m=m: r["realsr"]["means"][m]) for m in metrics
        }
        table[REALSR]["real_experts"] = _mean_over(runs, lambda r: r["realsr"].get("real_experts"))
    return table


def summarise_mixed(
    study: MixedStudy, variants: list[str], seeds: int, specialist_seeds: int
) -> dict[str, Any]:
    """Everything the table shows, from the finished runs in the study folder."""
    groups, metrics = study.mixed.groups, study.settings.metrics
    baseline = study.collect(BASELINE, seeds)
    shipped = study.collect(SHIPPED, seeds)
    on_grid = any(v in ON_REGION_GRID for v in variants)
    per_image = study.collect(PER_IMAGE, seeds) if on_grid else []
    tiled = study.collect(TILED, seeds) if TILED in variants else []
    summary: dict[str, Any] = {"groups": list(groups), "variants": {}, "specialists": {}}
    collected: dict[str, list[dict[str, Any]]] = {}
    for variant in variants:
        runs = collected[variant] = study.collect(variant, seeds)
        if not runs:
            continue
        row: dict[str, Any] = {
            "seeds": [r["seed"] for r in runs],
            "lr_multiplier": runs[0].get("lr_multiplier", 1.0),
            "metrics": metric_means(runs, groups, metrics),
            "swap_change": {
                k: _mean_over(runs, lambda r, k=k: r.get("swap_change", {}).get(k))
                for k in ("mean", "p99")
            },
            "train_minutes": _mean_minutes(runs, lambda r: r.get("train_seconds")),
            "eval_minutes": _mean_minutes(runs, lambda r: r["eval_seconds"]),
            "train_seconds": {r["seed"]: r.get("train_seconds") for r in runs},
            "eval_seconds": {r["seed"]: r["eval_seconds"] for r in runs},
        }
        if variant == FROZEN:
            row["frozen_source"] = runs[0]["frozen_source"]
        if variant in FIXED_STRENGTH:
            row["fixed"] = True
        if variant != BASELINE and baseline:
            row["vs_lora"] = versus_baseline(runs, baseline, groups)
        if variant != SHIPPED and shipped:
            row["vs_default"] = versus_baseline(runs, shipped, groups)
        if variant in ON_REGION_GRID:
            row["vs_mor"] = versus_baseline(runs, per_image, groups)
        if variant in REGION_ROUTED and tiled:
            row["vs_tiled"] = versus_baseline(runs, tiled, groups)
        summary["variants"][variant] = row
    if shipped:
        summary["shipping"] = shipping_rule(summary)
        winner = summary["shipping"]["winner"]
        if winner is not None and winner not in FIXED_STRENGTH:
            runs = collected[winner]
            summary["shipping"]["ship"] = seed_to_ship(
                runs,
                shipped,
                groups,
                {int(r["seed"]): study.validation(winner, int(r["seed"])) for r in runs},
                summary["shipping"]["backbone_realsr_psnr"],
                metrics,
            )
    for group in groups:
        runs = study.collect(f"{SPECIALIST}-{group}", specialist_seeds)
        if runs and baseline:
            grid = paired_grid(runs, baseline, group)
            if grid.size:
                estimate = hierarchical_bootstrap(grid)
                summary["specialists"][group] = {
                    "preset": runs[0]["preset"],
                    "seeds": [r["seed"] for r in runs],
                    "lpips": _mean_over(runs, lambda r, g=group: r["groups"][g]["means"]["lpips"]),
                    "lpips_lora": _mean_over(
                        [r for r in baseline if r["seed"] in {x["seed"] for x in runs}],
                        lambda r, g=group: r["groups"][g]["means"]["lpips"],
                    ),
                    "vs_lora": _estimate(
                        estimate,
                        estimate.p_value,
                        verdict(estimate.ci_low, estimate.ci_high, MARGIN),
                    ),
                    "train_minutes": _mean_minutes(runs, lambda r: r.get("train_seconds")),
                }
    grid_record = study.out / "lr_grid.json"
    if grid_record.is_file():
        summary["lr_grid"] = json.loads(grid_record.read_text())
    return summary


def rule_check(
    tests: dict[str, Any], groups: Sequence[str], psnr: float | None, backbone: float | None
) -> dict[str, Any]:
    """The shipping rule's conditions for one candidate, given its paired tests against the
    shipped ``default`` (none for ``default`` itself) and its and the backbone's RealSR PSNR-Y."""
    delta, group = max(((tests[g]["mean"], g) for g in groups if g in tests), default=(0.0, None))
    pooled = tests.get(POOLED)
    realsr_ok = None if psnr is None or backbone is None else psnr >= backbone - RULE_PSNR_DROP
    return {
        "pooled": pooled,
        "worst_group": group,
        "worst_group_delta": delta,
        "realsr_psnr": psnr,
        "eligible": bool(
            (pooled is None or pooled["verdict"] != "worse") and delta <= MARGIN and realsr_ok
        ),
        "realsr_checked": realsr_ok is not None,
    }


def shipping_rule(summary: dict[str, Any]) -> dict[str, Any]:
    """Issue 25's rule for the default model, per variant against the shipped ``default``:
    pooled LPIPS not worse (paired interval), no group worse by more than :data:`MARGIN` (mean
    paired difference), RealSR PSNR-Y at most :data:`RULE_PSNR_DROP` below the ``backbone``'s;
    the eligible variant with the lowest pooled LPIPS wins (``default`` itself when none beats
    it; none without RealSR scores of the backbone)."""
    rows = summary["variants"]
    backbone = rows.get(BACKBONE, {}).get("metrics", {}).get(REALSR, {}).get("psnr")
    verdicts: dict[str, Any] = {}
    for variant, row in rows.items():
        tests = row.get("vs_default", {})
        if variant != SHIPPED and POOLED not in tests:
            continue
        psnr = row["metrics"].get(REALSR, {}).get("psnr")
        verdicts[variant] = {
            "lpips": row["metrics"][POOLED]["lpips"],
            **rule_check(tests, summary["groups"], psnr, backbone),
        }
    eligible = [v for v, r in verdicts.items() if r["eligible"]]
    winner = min(eligible, key=lambda v: verdicts[v]["lpips"]) if eligible else None
    return {"backbone_realsr_psnr": backbone, "variants": verdicts, "winner": winner}


def seed_to_ship(
    runs: list[dict[str, Any]],
    shipped: list[dict[str, Any]],
    groups: tuple[str, ...],
    validation: dict[int, float],
    backbone_psnr: float | None,
    metrics: tuple[str, ...] = ("lpips",),
) -> dict[str, Any]:
    """The one model to ship of the rule's winner: its seed with the lowest validation LPIPS,
    and that run alone against the shipped ``default`` under the rule's conditions (a mean over
    seeds passing them does not make every seed pass)."""
    seed = min(validation, key=lambda s: validation[s])
    run = next(r for r in runs if int(r["seed"]) == seed)
    tests = versus_baseline([run], shipped, groups)
    check = rule_check(
        tests, groups, run.get("realsr", {}).get("means", {}).get("psnr"), backbone_psnr
    )
    return {
        "seed": seed,
        "model_dir": run["model_dir"],
        "metrics": metric_means([run], groups, metrics),
        "validation_lpips": validation,
        "vs_default": tests,
        "worst_group": check["worst_group"],
        "worst_group_delta": check["worst_group_delta"],
        "realsr_psnr": check["realsr_psnr"],
        "meets_rule": check["eligible"],
    }


def _number(value: float | None, digits: int, sign: str = "") -> str:
    return "—" if value is None else f"{value:{sign}.{digits}f}"


def _interval(e: dict[str, Any]) -> str:
    return f"{e['mean']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"


METRIC_NAMES = {"psnr": "PSNR-Y", "ssim": "SSIM-Y"}
METRIC_DIGITS = {"psnr": 2, "niqe": 2}
"""Decimals of a metric in the tables (others: 4)."""


def mixed_table(summary: dict[str, Any], metrics: tuple[str, ...]) -> str:
    """The study's markdown: variants x (pooled, groups, RealSR) against ``lora``; per variant
    the swap change and wall times; the learning-rate grid; the specialist ceilings."""
    secondary = [m for m in metrics if m != "lpips"]
    header = [
        "variant", "group", "seeds", "LPIPS", "ΔLPIPS vs lora [95% CI]", "p (Holm)",
        f"verdict (±{MARGIN})", *(METRIC_NAMES.get(m, m.upper()) for m in secondary),
        "real experts",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, row in summary["variants"].items():
        for group in [POOLED, *summary["groups"], REALSR]:
            means = row["metrics"].get(group)
            if means is None:
                continue
            test = row.get("vs_lora", {}).get(group)
            seeds = "fixed" if row.get("fixed") else str(len(row["seeds"]))
            cells = [variant, group, seeds, _number(means.get("lpips"), 4)]
            if test is None:
                cells += ["—", "—", "—"]
            else:
                cells += [_interval(test), f"{test['p_holm']:.3g}", test["verdict"]]
            cells += [_number(means[m], METRIC_DIGITS.get(m, 4)) for m in secondary]
            cells.append(_number(means["real_experts"], 2))
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "ΔLPIPS: variant minus lora, paired by seed and image; 95% hierarchical bootstrap "
        "interval (seeds, then images). p: bootstrap p-value, Holm-adjusted across the groups "
        "(pooled and RealSR unadjusted). Real experts: kept per routed layer and image. "
        f"fixed: one model scored once ({SHIPPED}: the shipped model; {BACKBONE}: it at "
        "strength 0), paired with every seed of lora.",
        "",
        "| variant | lr × | swap change mean / p99 (/255) | train min/run | eval min/run |",
        "|---|---|---|---|---|",
    ]
    for variant, row in summary["variants"].items():
        swap = row["swap_change"]
        change = "—" if swap["mean"] is None else f"{swap['mean']:.2f} / {swap['p99']:.2f}"
        lines.append(
            f"| {variant} | {row['lr_multiplier']:g} | {change} | "
            f"{_number(row['train_minutes'], 1)} | {_number(row['eval_minutes'], 1)} |"
        )
    if "frozen_source" in summary["variants"].get(FROZEN, {}):
        lines += ["", f"{FROZEN} routes by the mean router input of: "
                  f"{summary['variants'][FROZEN]['frozen_source']}."]  # fmt: skip
    region = [v for v in REGION_ROUTED if v in summary["variants"]]
    if region:
        lines += ["", f"{' and '.join(region)}: region routing (every tile routed by the "
                  "scores of the regions its core covers; real experts: mean over each image's "
                  "regions)."]  # fmt: skip
    if TILED in summary["variants"]:
        lines += ["", f"{TILED}: {PER_IMAGE} routed per image, cut into the region-routed "
                  f"variants' tiles ({REGION_GRID['tile']} px, {REGION_GRID['tile_overlap']} px "
                  "of context)."]  # fmt: skip
    on_grid = {v: summary["variants"][v] for v in ON_REGION_GRID if v in summary["variants"]}
    lines += versus_table(on_grid, summary["groups"], "vs_mor", PER_IMAGE)
    lines += versus_table(on_grid, summary["groups"], "vs_tiled", TILED)
    for variant, grid in summary.get("lr_grid", {}).items():
        lines += ["", f"| {variant} lr × | validation LPIPS |", "|---|---|"]
        for multiplier, value in grid["validation_lpips"].items():
            chosen = " (chosen)" if float(multiplier) == grid["best"] else ""
            lines.append(f"| {multiplier}{chosen} | {value:.4f} |")
    if summary["specialists"]:
        lines += [
            "",
            "| specialist (own group) | preset | seeds | LPIPS | lora LPIPS | "
            "Δ vs lora [95% CI] | verdict | train min |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for group, row in summary["specialists"].items():
            minutes = row["train_minutes"]
            lines.append(
                f"| {group} | {row['preset']} | {len(row['seeds'])} | {row['lpips']:.4f} | "
                f"{row['lpips_lora']:.4f} | {_interval(row['vs_lora'])} | "
                f"{row['vs_lora']['verdict']} | {'—' if minutes is None else f'{minutes:.1f}'} |"
            )
    if "shipping" in summary:
        lines += ["", *shipping_table(summary["shipping"])]
    return "\n".join(lines)


def versus_table(
    rows: dict[str, Any], groups: Sequence[str], key: str, reference: str
) -> list[str]:
    """The rows' comparisons ``key`` with ``reference`` (the region-routed variants against
    per-image ``mor``, whole or tiled), per group and pooled; nothing if no row has one."""
    if not any(row.get(key) for row in rows.values()):
        return []
    lines = [
        "",
        f"| variant | group | ΔLPIPS vs {reference} [95% CI] | p (Holm) | verdict (±{MARGIN}) |",
        "|---|---|---|---|---|",
    ]
    for variant, row in rows.items():
        for group in [POOLED, *groups, REALSR]:
            test = row.get(key, {}).get(group)
            if test is not None:
                lines.append(
                    f"| {variant} | {group} | {_interval(test)} | {test['p_holm']:.3g} | "
                    f"{test['verdict']} |"
                )
    return lines


def shipping_table(shipping: dict[str, Any]) -> list[str]:
    """The shipping rule's lines (:func:`shipping_rule`)."""
    backbone = _number(shipping["backbone_realsr_psnr"], 2)
    lines = [
        f"| variant | pooled LPIPS | ΔLPIPS vs {SHIPPED} [95% CI] | worst group Δ | "
        f"RealSR PSNR-Y (backbone {backbone}) | eligible |",
        "|---|---|---|---|---|---|",
    ]
    for variant, row in shipping["variants"].items():
        pooled = "—" if row["pooled"] is None else _interval(row["pooled"])
        worst = (
            "—"
            if row["worst_group"] is None
            else f"{row['worst_group_delta']:+.4f} ({row['worst_group']})"
        )
        eligible = "yes" if row["eligible"] else "no" if row["realsr_checked"] else "no RealSR"
        lines.append(
            f"| {variant} | {row['lpips']:.4f} | {pooled} | {worst} | "
            f"{_number(row['realsr_psnr'], 2)} | {eligible} |"
        )
    winner = shipping["winner"] or "none (RealSR of the candidates and the backbone needed)"
    lines += [
        "",
        f"Shipping rule (issue 25): pooled LPIPS not worse than {SHIPPED}, no group worse by more "
        f"than {MARGIN} (mean), RealSR PSNR-Y within {RULE_PSNR_DROP} dB of {BACKBONE}; lowest "
        f"pooled LPIPS wins: **{winner}**.",
    ]
    if "ship" in shipping:
        lines += ["", *ship_table(shipping["winner"], shipping["ship"])]
    return lines


def ship_table(winner: str, ship: dict[str, Any]) -> list[str]:
    """The lines of :func:`seed_to_ship`: which seed ships and how it alone meets the rule."""
    scores = ", ".join(f"seed {s}: {v:.4f}" for s, v in sorted(ship["validation_lpips"].items()))
    lines = [
        f"Seed to ship: **{winner} seed {ship['seed']}**, the lowest validation LPIPS ({scores}); "
        f"`{ship['model_dir']}`. That model alone against {SHIPPED}:",
        "",
        f"| group | ΔLPIPS vs {SHIPPED} [95% CI] | verdict (±{MARGIN}) |",
        "|---|---|---|",
    ]
    for group, test in ship["vs_default"].items():
        lines.append(f"| {group} | {_interval(test)} | {test['verdict']} |")
    meets = "yes" if ship["meets_rule"] else "no"
    own = [
        f"{name} "
        + ", ".join(
            f"{METRIC_NAMES.get(m, m.upper())} {v:.{METRIC_DIGITS.get(m, 4)}f}"
            for m, v in values.items()
            if v is not None
        )
        for name, values in ship["metrics"].items()
        if name in (POOLED, REALSR)
    ]
    lines += [
        "",
        f"Its own means: {'; '.join(own)}.",
        f"Worst group {ship['worst_group_delta']:+.4f} ({ship['worst_group']}); RealSR PSNR-Y "
        f"{_number(ship['realsr_psnr'], 2)}; meets the rule: **{meets}**.",
    ]
    return lines


def strength_ceiling(folder: Path) -> tuple[dict[str, Any], str]:
    """What ``benchmarks/strength_ceiling.py`` left in ``folder``: its report ``summary.md``
    (appended to the study's table) and its ``settings.json`` (kept in the study's summary)."""
    found: dict[str, Any] = {"dir": str(folder)}
    if (folder / "settings.json").is_file():
        found["settings"] = json.loads((folder / "settings.json").read_text())
    report = folder / "summary.md"
    text = report.read_text().strip() if report.is_file() else "no summary.md there yet"
    return found, f"Per-image best `--strength` ceiling ({folder}):\n\n{text}"


def mixed_main(args: argparse.Namespace) -> int:
    """The mixed-set study: the grid, the ceilings, then every (seed, variant) asked for."""
    variants = list(dict.fromkeys(args.variants))
    chosen = variants if args.only_variants is None else list(dict.fromkeys(args.only_variants))
    seeds = list(range(args.seeds)) if args.only_seeds is None else sorted(set(args.only_seeds))
    known = [*VARIANTS, *EVALUATED_FROM, *TRAINED_AS, *FIXED_STRENGTH]
    bad = [v for v in variants if v not in known] + [v for v in chosen if v not in variants]
    if bad or args.seeds < 1 or args.steps < 1 or not set(seeds) <= set(range(args.seeds)):
        print(
            f"study: variants must be among {known} and --only-variants among --variants (got "
            f"{bad}), seeds and steps >= 1, --only-seeds among 0 .. {args.seeds - 1}",
            file=sys.stderr,
        )
        return 2
    config = args.config or ROOT / "configs" / "study_mixed.yaml"
    try:
        metrics = parse_metrics(args.metrics or ",".join(MIXED_METRICS))
        mixed = load_mixed_set(args.mixed, args.validation_folder, args.eval_limit)
        settings = MixedSettings(
            config=str(config.resolve()),
            config_digest=config_digest(config),
            steps=args.steps,
            overrides=tuple(args.overrides),
            mixed_dir=str(args.mixed.resolve()),
            validation_folder=args.validation_folder,
            eval_limit=args.eval_limit,
            metrics=metrics,
            lr_grid=tuple(args.lr_grid or ()),
        )
        realsr = pair_lr_hr(args.lr, args.hr) if args.realsr else None
        pin_settings(args.out, settings)
    except ValueError as error:
        print(f"study: {error}", file=sys.stderr)
        return 2
    except (OSError, yaml.YAMLError) as error:
        reason = str(error).replace("\n", " ")
        print(f"study: cannot read {config} or {args.mixed}: {reason}", file=sys.stderr)
        return 2
    study = MixedStudy(settings, mixed, args.out, not args.quiet, realsr, args.shipped)
    work = []
    if args.ceilings:
        work += [
            (lambda g=g, s=s: study.specialist(g, s))
            for s in range(args.specialist_seeds)
            for g in mixed.groups
            if g in SPECIALIST_PRESETS
        ]
    in_order = sorted(chosen, key=lambda v: v in EVALUATED_FROM)  # after the runs they score
    work += [(lambda v=v, s=s: study.run(v, s)) for s in seeds for v in in_order]
    while work:
        waiting = []
        for step in work:
            try:
                step()
            except Busy as busy:
                waiting.append(step)
                reason = busy
            except Skipped as skipped:
                print(f"study: skipped: {skipped}", flush=True)
        if waiting and len(waiting) == len(work):
            print(f"study: waiting {args.poll:g} s for another process ({reason})", flush=True)
            time.sleep(args.poll)
        work = waiting
    summary = summarise_mixed(study, variants, args.seeds, args.specialist_seeds)
    text = mixed_table(summary, metrics)
    if args.strength_ceiling is not None:
        summary["strength_ceiling"], section = strength_ceiling(args.strength_ceiling)
        text += "\n\n" + section
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="training recipe (default configs/realesrgan_mor.yaml; with --mixed "
        "configs/study_mixed.yaml)",
    )
    parser.add_argument("--variants", nargs="+", default=["lora", "mor-no-zero", "mor"])
    parser.add_argument(
        "--only-variants",
        nargs="+",
        default=None,
        help="with --mixed: run just these of the variants (to split one study over processes)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 for every variant")
    parser.add_argument(
        "--only-seeds",
        type=int,
        nargs="+",
        default=None,
        help="run just these of the seeds (to split one study over processes sharing --out)",
    )
    parser.add_argument("--steps", type=int, default=400, help="training steps of every run")
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    add_set_option(parser, "config override applied to every run (as `mordasr train --set`)")
    parser.add_argument("--lr", type=Path, default=DATA / "RealSR" / "LR", help="RealSR LR dir")
    parser.add_argument("--hr", type=Path, default=DATA / "RealSR" / "HR", help="RealSR HR dir")
    parser.add_argument("--eval-limit", type=int, default=None, help="first N RealSR pairs")
    parser.add_argument(
        "--metrics",
        default=None,
        help=f"default {','.join(DEFAULT_METRICS)}; with --mixed {','.join(MIXED_METRICS)}",
    )
    parser.add_argument("--analysis-images", type=Path, default=DATA / "Set14" / "HR")
    parser.add_argument("--analysis-limit", type=int, default=None, help="first N images")
    parser.add_argument("--analysis-crop", type=int, default=256, help="HR center crop side")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    mixed = parser.add_argument_group("the mixed-set study")
    mixed.add_argument("--mixed", type=Path, help="a mixed set (benchmarks/make_mixed_set.py)")
    mixed.add_argument(
        "--validation-folder",
        default="Set14-HR",
        help="the source folder whose crops form the validation split (the others: test)",
    )
    mixed.add_argument(
        "--lr-grid",
        type=float,
        nargs="+",
        help="tune lora's learning rate: train seed 0 at lr x each, keep the best on validation",
    )
    mixed.add_argument("--ceilings", action="store_true", help="also train the specialists")
    mixed.add_argument("--specialist-seeds", type=int, default=1, help="seeds 0 .. N-1")
    mixed.add_argument(
        "--strength-ceiling", type=Path, help="results of benchmarks/strength_ceiling.py"
    )
    mixed.add_argument(
        "--realsr",
        action="store_true",
        help="also score the runs of this call on the --lr/--hr pairs (each run's realsr.json)",
    )
    mixed.add_argument(
        "--shipped",
        default=SHIPPED,
        help=f"the model the {SHIPPED} and {BACKBONE} variants score (default: the shipped one)",
    )
    mixed.add_argument(
        "--poll",
        type=float,
        default=60.0,
        help="seconds between looks at runs another process holds (default 60)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mixed is not None:
        return mixed_main(args)
    args.config = args.config or ROOT / "configs" / "realesrgan_mor.yaml"
    unknown = [v for v in args.variants if v not in VARIANTS]
    seeds = list(range(args.seeds)) if args.only_seeds is None else sorted(set(args.only_seeds))
    if unknown or args.seeds < 1 or args.steps < 1 or not set(seeds) <= set(range(args.seeds)):
        print(
            f"study: variants must be among {list(VARIANTS)} (got {unknown}), seeds and steps "
            f">= 1, --only-seeds among 0 .. {args.seeds - 1}",
            file=sys.stderr,
        )
        return 2
    try:
        metrics = parse_metrics(args.metrics or ",".join(DEFAULT_METRICS))
        settings = StudySettings(
            config=str(args.config.resolve()),
            config_digest=config_digest(args.config),
            steps=args.steps,
            overrides=tuple(args.overrides),
            lr_dir=str(args.lr.resolve()),
            hr_dir=str(args.hr.resolve()),
            eval_limit=args.eval_limit,
            metrics=metrics,
            analysis_dir=str(args.analysis_images.resolve()),
            analysis_limit=args.analysis_limit,
            analysis_crop=args.analysis_crop,
        )
        pin_settings(args.out, settings)
    except ValueError as error:
        print(f"study: {error}", file=sys.stderr)
        return 2
    except (OSError, yaml.YAMLError) as error:
        reason = str(error).replace("\n", " ")
        print(f"study: cannot read {args.config}: {reason}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        for variant in args.variants:
            print(f"study: {variant} seed {seed}", flush=True)
            run = study_run(settings, variant, seed, args.out, progress=not args.quiet)
            results.setdefault(variant, []).append(run)
    results = {v: results[v] for v in args.variants}
    summary = summarise(results, metrics)
    text = table(summary, metrics)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
