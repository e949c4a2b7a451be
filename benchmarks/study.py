"""A controlled study of the paper's Table 2 variants: same budget, data and seeds for each.

For every (variant, seed) this trains ``--config`` (default ``configs/realesrgan_mor.yaml``) with
``model.variant=VARIANT``, ``seed=SEED`` and ``total_steps=--steps`` (plus any ``--set``
overrides, the same for every run), evaluates the exported model on RealSR (``mordasr
benchmark``'s code: PSNR-Y, SSIM-Y, LPIPS, DISTS, NIQE per image) and, for routed variants, on
Set14 HR crops degraded by ``mordasr-mild`` and ``mordasr-severe`` (image ``i`` with seed ``i``):

* the real experts kept per layer for the mild and the severe images (``mordasr analyze``);
* how much the output of each mild image changes when it is routed with the severe version's
  scores instead of its own: mean and 99th percentile of ``|SR_swapped - SR_own|`` over all pixels
  of all images, in 8-bit levels.

It then prints one table: per variant the mean and the spread (sample standard deviation) over
seeds of every metric, and against ``lora`` the paired per-image LPIPS difference (each image's
LPIPS averaged over seeds first) with a seeded bootstrap 95% CI over images and a Wilcoxon
signed-rank p-value. Data: ``../shared/data/{RealSR,Set14}`` (not part of the project).

Resumable: every run lives in ``OUT/VARIANT/seedS``; training resumes from its newest checkpoint,
a run with an exported model is never retrained and a run with ``results.json`` is never
re-evaluated. ``OUT/study.json`` pins the settings: rerunning into the same folder with another
budget is refused. The full-budget study (3 seeds, the CPU recipe's 400 steps)::

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
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from common import bootstrap_ci
from scipy.stats import wilcoxon

from mordasr.eval import analysis
from mordasr.eval.benchmark import pair_lr_hr, run_benchmark
from mordasr.eval.evaluate import DEFAULT_METRICS, parse_metrics
from mordasr.eval.io import list_images, load_image
from mordasr.io.cliargs import add_set_option
from mordasr.mor import VARIANTS
from mordasr.sr.mor_sr import MoRSuperResolver
from mordasr.train.cli import apply_overrides
from mordasr.train.config import TrainConfig
from mordasr.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BASELINE = "lora"


@dataclass(frozen=True)
class StudySettings:
    """What every run of one study shares; a study folder holds one set of these."""

    config: str
    config_digest: str
    steps: int
    overrides: tuple[str, ...]
    lr_dir: str
    hr_dir: str
    eval_limit: int | None
    metrics: tuple[str, ...]
    analysis_dir: str
    analysis_limit: int | None
    analysis_crop: int

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


def config_digest(path: Path) -> str:
    """A digest of the config as resolved (its ``base`` files merged in): editing the recipe
    between two calls into one study folder would otherwise mix two recipes in one table."""
    text = json.dumps(TrainConfig.from_yaml(path).to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pin_settings(out: Path, settings: StudySettings) -> None:
    """Write ``out/study.json``, or check that the study already there used ``settings``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "study.json"
    wanted = settings.to_dict()
    if path.is_file():
        found = json.loads(path.read_text())
        if found != wanted:
            changed = sorted(k for k in wanted if found.get(k) != wanted[k])
            raise ValueError(f"{out} holds a study with other settings ({', '.join(changed)})")
        return
    path.write_text(json.dumps(wanted, indent=2) + "\n")


def run_config(settings: StudySettings, variant: str, seed: int, run_dir: Path) -> TrainConfig:
    """The training config of one run: the study's config with its variant, seed and budget.
    Runs of the same seed share one synthesised pool (``OUT/pools``, ``data.pool_cache``)."""
    base = TrainConfig.from_yaml(settings.config)
    every = max(1, min(base.checkpoint_every, settings.steps))
    overrides = [
        f"data.pool_cache={run_dir.parent.parent / 'pools'}",
        *settings.overrides,
        f"output_dir={run_dir / 'train'}",
        f"seed={seed}",
        f"total_steps={settings.steps}",
        f"checkpoint_every={every}",
        f"model.variant={variant}",
    ]
    return apply_overrides(base, overrides)


def train_run(
    settings: StudySettings, variant: str, seed: int, run_dir: Path, progress: bool
) -> Path:
    """Train one run unless its model exists; returns the exported model folder."""
    final = run_dir / "train" / "final"
    if (final / "model.json").is_file():
        return final
    started = time.time()
    train(run_config(settings, variant, seed, run_dir), resume=True, progress=progress)
    (run_dir / "train.json").write_text(
        json.dumps({"seconds_last_sitting": round(time.time() - started, 1)}) + "\n"
    )
    return final


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
    model_dir = train_run(settings, variant, seed, run_dir, progress)
    result = {"seed": seed, **evaluate_run(settings, variant, model_dir, progress)}
    train_record = run_dir / "train.json"
    if train_record.is_file():
        result["train_seconds"] = json.loads(train_record.read_text())["seconds_last_sitting"]
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
    digits = {"psnr": 2, "niqe": 2}
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
            d = digits.get(metric, 4)
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "realesrgan_mor.yaml")
    parser.add_argument("--variants", nargs="+", default=["lora", "mor-no-zero", "mor"])
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
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    parser.add_argument("--analysis-images", type=Path, default=DATA / "Set14" / "HR")
    parser.add_argument("--analysis-limit", type=int, default=None, help="first N images")
    parser.add_argument("--analysis-crop", type=int, default=256, help="HR center crop side")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
        metrics = parse_metrics(args.metrics)
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
