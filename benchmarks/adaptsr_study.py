"""AdaptSR's comparison (issue 31) on the compact Real-ESRGAN network, as a resumable study.

Every variant adapts ``realesr-animevideov3`` (x4, trained for anime video) to real photos with
the recipe ``configs/adaptsr_compact.yaml`` and the same steps, data and seeds; only what the
variant names changes (:data:`VARIANTS`):

* ``uniform-R`` (R in 1, 4, 8, 16): LoRA of rank R on every convolution;
* ``rank-aware``: the recipe itself, AdaptSR's gradient-importance allocation at the parameter
  cost of uniform rank 8 (``rank-aware-taylor`` and ``rank-aware-weight``: the other scorers);
* ``full-finetune``: every weight of the backbone trained, at ``--finetune-lr``.

Every run is scored on the RealSR pairs (``--lr``/``--hr``, by default all 100 of
``../shared/data/RealSR``; ``mordasr benchmark``'s code, so merged LoRA runs as a plain network)
and so are two references, the unadapted backbone and bicubic. The table (printed,
``OUT/table.md``; everything in ``OUT/summary.json``) gives per variant the trainable
parameters, the metric means over seeds, the paired LPIPS difference to ``uniform-8``
(``differences[s, i]``: variant seed ``s`` minus ``uniform-8`` seed ``s`` on image ``i``; a
reference against every seed) with the hierarchical bootstrap 95% interval (seeds, then images;
:mod:`mordasr.eval.stats`), the training minutes per run and the inference milliseconds per
image. ``OUT/rank_heatmap.png`` shows the rank of every layer in every allocated run, and the
table the Spearman stability of the importance ranking across batches.

Resumable: every run lives in ``OUT/VARIANT/seedS``; training resumes from its newest
checkpoint, a run with an exported model is never retrained and one with ``results.json`` never
re-evaluated. ``OUT/study.json`` pins the recipe, steps and evaluation set. The runs of one seed
share one synthesised pool (``OUT/pools``). The full study on one CPU core::

    OMP_NUM_THREADS=1 python benchmarks/adaptsr_study.py --seeds 3 --steps 400 \\
        --out runs/adaptsr_study --quiet > runs/adaptsr_study.log 2>&1

(``--only-seeds 0`` and ``--only-seeds 1 2`` in two processes split it over two cores,
``--only-references`` scores the references meanwhile; a last call without either prints the
table.) Data: ``../shared/data`` (not part of the
project).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import pin_study, resolved_digest, run_train_config, train_once
from safetensors.torch import load_file

from mordasr.eval.benchmark import pair_lr_hr, run_benchmark
from mordasr.eval.evaluate import parse_metrics
from mordasr.eval.plots import pyplot
from mordasr.eval.stats import hierarchical_bootstrap
from mordasr.io.cliargs import add_set_option
from mordasr.sr.manifest import MANIFEST_FILE
from mordasr.train.config import TrainConfig
from mordasr.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RECIPE = ROOT / "configs" / "adaptsr_compact.yaml"
BASELINE = "uniform-8"
UNIFORM = ("model.allocate=null",)
VARIANTS: dict[str, tuple[str, ...]] = {
    "uniform-1": (*UNIFORM, "model.mor.num_shared=1"),
    "uniform-4": (*UNIFORM, "model.mor.num_shared=4"),
    "uniform-8": (*UNIFORM, "model.mor.num_shared=8"),
    "uniform-16": (*UNIFORM, "model.mor.num_shared=16"),
    "rank-aware": (),
    "rank-aware-taylor": ("model.allocate.scorer=taylor",),
    "rank-aware-weight": ("model.allocate.scorer=weight",),
    "full-finetune": (*UNIFORM, "model.full_finetune=true"),
}
"""The overrides of the recipe that make each variant (full fine-tuning adds its rate)."""
DEFAULT_VARIANTS = (
    "uniform-1",
    "uniform-4",
    "uniform-8",
    "uniform-16",
    "rank-aware",
    "full-finetune",
)
REFERENCES = {"backbone": "realesr-animevideov3", "bicubic": "bicubic"}
"""Models scored as they are (no training), by their ``load_sr_model`` names."""


@dataclass(frozen=True)
class Settings:
    """What every run of one study shares (``OUT/study.json`` pins it)."""

    config: str
    config_digest: str
    steps: int
    finetune_lr: float
    overrides: tuple[str, ...]
    lr_dir: str
    hr_dir: str
    eval_limit: int | None
    metrics: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def run_config(settings: Settings, variant: str, seed: int, run_dir: Path) -> TrainConfig:
    """The training config of one run (:func:`common.run_train_config`) with the variant's
    overrides."""
    extra = [f"optim.lr={settings.finetune_lr}"] if variant == "full-finetune" else []
    return run_train_config(settings, seed, run_dir, extra=(*VARIANTS[variant], *extra))


def trainable_parameters(model_dir: Path) -> int:
    """What a run trained: its adapter tensors or, fine-tuned in full, the whole backbone."""
    files = [model_dir / "mor_adapter.safetensors", model_dir / "backbone.safetensors"]
    found = next(f for f in files if f.is_file())
    return sum(tensor.numel() for tensor in load_file(str(found)).values())


def evaluate(settings: Settings, model: str) -> dict[str, Any]:
    """Per-image metrics, mean network seconds per image (the model as ``mordasr upscale`` runs
    it: LoRA merged) and the seconds the scoring took, of one model on the pairs."""
    started = time.time()
    pairs = pair_lr_hr(Path(settings.lr_dir), Path(settings.hr_dir))[: settings.eval_limit]
    (run,) = run_benchmark(pairs, [model], settings.metrics, progress=False)
    return {
        "images": [hr.name for _, hr in pairs],
        "per_image": run.metrics,
        "means": run.means(),
        "seconds_per_image": float(np.mean(run.seconds)),
        "eval_seconds": round(time.time() - started, 1),
    }


def study_run(settings: Settings, variant: str, seed: int, out: Path, progress: bool) -> dict:
    """Train and evaluate one (variant, seed) unless already done; its ``results.json``."""
    run_dir = out / variant / f"seed{seed}"
    results_path = run_dir / "results.json"
    if results_path.is_file():
        return json.loads(results_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_config(settings, variant, seed, run_dir)
    model_dir = train_once(train, config, run_dir, progress, marker=MANIFEST_FILE)
    result: dict[str, Any] = {
        "variant": variant,
        "seed": seed,
        **evaluate(settings, str(model_dir)),
    }
    result["trainable_parameters"] = trainable_parameters(model_dir)
    result["train_seconds"] = json.loads((run_dir / "train.json").read_text())["seconds"]
    allocation = run_dir / "train" / "allocation.json"
    if allocation.is_file():
        result["allocation"] = json.loads(allocation.read_text())
    results_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def reference_run(settings: Settings, name: str, out: Path) -> dict[str, Any]:
    """Score a reference model once (``OUT/NAME/results.json``)."""
    path = out / name / "results.json"
    if path.is_file():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"variant": name, "trainable_parameters": 0, **evaluate(settings, REFERENCES[name])}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def lpips_grid(runs: list[dict[str, Any]], seeds: int) -> np.ndarray:
    """(seeds, images) LPIPS of a variant's runs in seed order; a reference's one run repeated."""
    rows = [
        np.asarray(r["per_image"]["lpips"]) for r in sorted(runs, key=lambda r: r.get("seed", 0))
    ]
    return np.stack(rows if len(rows) == seeds else rows[:1] * seeds)


def summarise(
    results: dict[str, list[dict[str, Any]]],
    metrics: tuple[str, ...],
    baseline_name: str = BASELINE,
) -> dict:
    """Per variant: means over seeds, parameters, times, stability, and the paired LPIPS
    difference to ``baseline_name`` (when it and LPIPS were scored)."""
    baseline = results.get(baseline_name)
    scored = {tuple(r["images"]) for runs in results.values() for r in runs}
    if len(scored) > 1:
        raise ValueError("the runs were scored on different images")
    summary: dict[str, Any] = {}
    for variant, runs in results.items():
        row: dict[str, Any] = {
            "runs": len(runs),
            "trainable_parameters": runs[0]["trainable_parameters"],
            "means": {m: float(np.mean([r["means"][m] for r in runs])) for m in metrics},
            "inference_ms": 1000 * float(np.mean([r["seconds_per_image"] for r in runs])),
        }
        trained = [r["train_seconds"] for r in runs if "train_seconds" in r]
        if trained:
            row["train_minutes"] = float(np.mean(trained)) / 60
        stability = [r["allocation"].get("stability") for r in runs if "allocation" in r]
        stability = [s for s in stability if s is not None]
        if stability:
            row["spearman_mean"] = float(np.mean([s["spearman_mean"] for s in stability]))
        if baseline is not None and "lpips" in metrics:
            seeds = len(baseline)
            variant_grid = lpips_grid(runs, seeds) if len(runs) in (1, seeds) else None
            if variant_grid is not None:
                estimate = hierarchical_bootstrap(variant_grid - lpips_grid(baseline, seeds))
                row["lpips_vs_baseline"] = asdict(estimate)
        summary[variant] = row
    return summary


def table(summary: dict[str, Any], metrics: tuple[str, ...], baseline_name: str = BASELINE) -> str:
    """The markdown table of :func:`summarise`."""
    head = ["variant", "runs", "trainable params", *metrics, f"LPIPS vs {baseline_name} [95% CI]"]
    head += ["train min/run", "infer ms/img", "Spearman"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, row in summary.items():
        paired = row.get("lpips_vs_baseline")
        diff = (
            ""
            if paired is None
            else (f"{paired['mean']:+.4f} [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}]")
        )
        minutes = f"{row['train_minutes']:.1f}" if "train_minutes" in row else ""
        rho = f"{row['spearman_mean']:.2f}" if "spearman_mean" in row else ""
        cells = [variant, str(row["runs"]), f"{row['trainable_parameters']:,}"]
        cells += [f"{row['means'][m]:.4f}" for m in metrics]
        cells += [diff, minutes, f"{row['inference_ms']:.1f}", rho]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rank_heatmap(results: dict[str, list[dict[str, Any]]], path: Path) -> Path | None:
    """Ranks per layer (columns) of every allocated run (rows) as a heat map; None when no run
    allocated its ranks."""
    rows = [
        (f"{r['variant']} s{r['seed']}", r["allocation"]["layers"])
        for runs in results.values()
        for r in runs
        if "allocation" in r
    ]
    if not rows:
        return None
    plt = pyplot()
    layers = list(rows[0][1])
    ranks = np.array([[found[name]["rank"] for name in layers] for _, found in rows])
    fig, ax = plt.subplots(figsize=(0.45 * len(layers) + 2, 0.4 * len(rows) + 1.5))
    image = ax.imshow(ranks, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    for (i, j), value in np.ndenumerate(ranks):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(image, ax=ax, label="LoRA rank")
    ax.set_title("Rank-aware allocation: rank per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=RECIPE)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--references", nargs="*", default=list(REFERENCES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only-seeds", type=int, nargs="+", help="train only these seeds")
    parser.add_argument(
        "--only-references",
        action="store_true",
        help="score only the references (while other processes train the seeds)",
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--finetune-lr", type=float, default=1e-4, help="full fine-tuning's rate")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "adaptsr_study")
    parser.add_argument("--lr", type=Path, default=DATA / "RealSR" / "LR")
    parser.add_argument("--hr", type=Path, default=DATA / "RealSR" / "HR")
    parser.add_argument("--eval-limit", type=int, help="score only the first N pairs")
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        help=f"the variant every other is paired with in the table (default {BASELINE})",
    )
    parser.add_argument("--metrics", default="psnr,ssim,lpips,dists")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_set_option(parser, "override a recipe value for every run, e.g. data.patch_size=192")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS)) + sorted(
        set(args.references) - set(REFERENCES)
    )
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {[*VARIANTS, *REFERENCES]}")
    if args.only_seeds and not set(args.only_seeds) <= set(range(args.seeds)):
        parser.error(f"--only-seeds must lie in 0..{args.seeds - 1}")
    if args.baseline not in [*args.variants, *args.references]:
        parser.error(f"--baseline {args.baseline} must be one of --variants or --references")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as error:
        return int(error.code or 0)
    metrics = parse_metrics(args.metrics)
    settings = Settings(
        config=str(args.config.resolve()),
        config_digest=resolved_digest(args.config),
        steps=args.steps,
        finetune_lr=args.finetune_lr,
        overrides=tuple(args.overrides),
        lr_dir=str(args.lr.resolve()),
        hr_dir=str(args.hr.resolve()),
        eval_limit=args.eval_limit,
        metrics=metrics,
    )
    pin_study(args.out, settings.to_dict())
    seeds = [] if args.only_references else args.only_seeds or list(range(args.seeds))
    results: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        for variant in args.variants:
            result = study_run(settings, variant, seed, args.out, not args.quiet)
            results.setdefault(variant, []).append(result)
    if args.only_seeds:
        return 0
    for name in args.references:
        results[name] = [reference_run(settings, name, args.out)]
    if args.only_references:
        return 0
    summary = summarise(results, metrics, args.baseline)
    text = table(summary, metrics, args.baseline)
    suffix = "" if args.baseline == BASELINE else f"_vs_{args.baseline}"
    (args.out / f"table{suffix}.md").write_text(text)
    heatmap = rank_heatmap(results, args.out / "rank_heatmap.png")
    payload = {"settings": settings.to_dict(), "variants": summary, "heatmap": str(heatmap)}
    (args.out / f"summary{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
