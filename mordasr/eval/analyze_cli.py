"""`mordasr analyze`: degrade images at several severities, route them, plot and tabulate.

Writes into the output folder: ``zero_experts_per_layer.png/.csv`` (paper Figure 6),
``expert_frequency_<layer>.png/.csv`` (Figure 7, per degradation type),
``real_experts_vs_score.png/.csv``, ``summary.json`` and ``report.md``, which says plainly
whether the most severe preset keeps more real experts than the mildest. With ``--spatial
IMAGE`` it instead draws, for that one image, the real experts kept per region under region
routing and the uncertainty map (:mod:`mordasr.eval.spatial`).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mordasr.degrade import PRESETS
from mordasr.eval import analysis
from mordasr.eval.analysis import SetRouting
from mordasr.eval.io import list_images, load_image
from mordasr.eval.plots import (
    MissingMatplotlibError,
    plot_expert_frequency,
    plot_real_experts_vs_score,
    plot_zero_experts_per_layer,
    pyplot,
)
from mordasr.eval.spatial import EXPERTS_FILE, UNCERTAINTY_FILE, write_spatial
from mordasr.io.cliargs import add_subcommand
from mordasr.io.image import ImageReadError
from mordasr.mor import mor_layers
from mordasr.sr.manifest import ModelLoadError
from mordasr.sr.mor_sr import MoRSuperResolver
from mordasr.sr.zoo import load_sr_model

# The sub-command's help line and description.
SUMMARY = (
    "plot which experts a MoR model activates for which degradations",
    "Degrade HR images with two or more presets (mildest first) and with single "
    "factors (blur, noise, JPEG), route them through a MoR model, and write per-layer "
    "zero-expert counts, per-expert activation frequencies of one layer and real experts "
    "vs severity as PNG + CSV, with summary.json and report.md. With --spatial IMAGE: the "
    "real experts kept per region of one image (region routing) and its uncertainty map.",
)

DEFAULT_PRESETS = ("mordasr-mild", "mordasr-severe")


def center_crop(image: torch.Tensor, crop: int, multiple: int) -> torch.Tensor:
    """The central ``crop`` x ``crop`` window (smaller sides kept), sides a multiple of
    ``multiple``."""
    height, width = (min(s, crop) // multiple * multiple for s in image.shape[-2:])
    top, left = (image.shape[-2] - height) // 2, (image.shape[-1] - width) // 2
    return image[..., top : top + height, left : left + width]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows of one table as CSV, columns in the first row's order, floats to 4 decimals."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def _file_part(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", layer)


NO_BIAS_NOTE = (
    " A router without bias keeps the top-k of `s W_g`, and scaling `s` scales those logits"
    " without reordering them: which experts an image keeps depends on the direction of its"
    " scores, not on their size."
)


def report_text(summary: dict[str, Any], command: str) -> str:
    """The human-readable report: the verdict first, with its numbers, then the per-set table."""
    cmp = summary["comparison"]
    mild, severe = cmp["mild"], cmp["severe"]
    real = cmp["mean_real_experts"]
    verdict = (
        f"**Yes.** `{severe}` images keep more real experts than `{mild}` images"
        if cmp["severe_keeps_more"]
        else f"**No.** `{severe}` images do not keep more real experts than `{mild}` images "
        "(the paper's claim does not hold for this model on these images)"
    )
    lines = [
        f"# Expert activations of `{summary['model']}`",
        "",
        f"`{command}`",
        "",
        f"{summary['images']} images from `{summary['images_dir']}`, central crops of at most "
        f"{summary['crop']} px, degradation seed {summary['seed']} (image i uses seed + i); "
        f"{summary['routed_layers']} routed layers, top-{summary['top_k']} of each.",
        "",
        "## Does the severe set keep more real experts?",
        "",
        f"{verdict}: {real[severe]:.3f} vs {real[mild]:.3f} real experts kept per layer on "
        f"average (difference {cmp['difference']:+.3f} of {summary['top_k']} routed slots). "
        f"Image by image, the `{severe}` version keeps more on {cmp['images_severe_more']} of "
        f"{cmp['images']} images and fewer on {cmp['images_severe_fewer']}. Mean estimator "
        f"severity: {cmp['mean_severity'][mild]:.3f} (`{mild}`) vs "
        f"{cmp['mean_severity'][severe]:.3f} (`{severe}`); cosine of their mean score vectors "
        f"{cmp['score_cosine']:.3f}.{'' if summary['router_bias'] else NO_BIAS_NOTE}",
        "",
        *swap_lines(summary),
        f"Correlation of severity and real experts kept, over all {summary['points']} routed "
        f"images of every set: Pearson r = {summary['pearson_severity_real_experts']:.3f}.",
        "",
        "## Per set",
        "",
        "| set | images | mean severity | real experts / layer | zero experts / layer |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in summary["sets"].items():
        lines.append(
            f"| {name} | {s['images']} | {s['mean_severity']:.3f} | "
            f"{s['mean_real_experts_per_layer']:.3f} | {s['mean_zero_experts_per_layer']:.3f} |"
        )
    names = list(summary["kept_overlap"])
    lines += [
        "",
        "## Which experts: the same image under two degradations",
        "",
        "Jaccard overlap of the real experts kept by the same image under the row's and the "
        "column's degradation (averaged over images and layers; 1: the same experts). On the "
        "diagonal: different images under the same degradation, for comparison.",
        "",
        "| set | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for name, row in summary["kept_overlap"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    layer = summary["frequency_layer"]
    lines += [
        "",
        "## Figures",
        "",
        "![zero experts per layer](zero_experts_per_layer.png)",
        "",
        f"![expert frequency in {layer}]({summary['frequency_file']}.png)",
        "",
        f"Layer of the frequency figure: `{layer}` ({summary['frequency_layer_reason']}).",
        "",
        "![real experts vs severity](real_experts_vs_score.png)",
        "",
    ]
    return "\n".join(lines)


def swap_lines(summary: dict[str, Any]) -> list[str]:
    """The report's paragraph on how much routing moves the output (empty when not measured)."""
    swap = summary.get("swap_change")
    if swap is None:
        return []
    cmp = summary["comparison"]
    return [
        f"Routing each `{cmp['mild']}` image with its `{cmp['severe']}` version's scores instead "
        f"of its own changes its output by {swap['mean']:.2f}/255 on average and "
        f"{swap['p99']:.2f}/255 at the 99th percentile of all pixels.",
        "",
    ]


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this analysis, every option spelled out."""
    presets = " ".join(f"--preset {p}" for p in args.preset or DEFAULT_PRESETS)
    parts = [
        f"mordasr analyze --model {args.model} --images {args.images} {presets}",
        f"--types {' '.join(args.types)}" if args.types else "--types",
        f"--layer {args.layer}" if args.layer else "",
        f"--max-images {args.max_images}" if args.max_images else "",
        f"--crop {args.crop} --seed {args.seed} -o {args.output}",
    ]
    return " ".join(p for p in parts if p)


def analyse(
    args: argparse.Namespace,
    route: analysis.RouteFn,
    scale: int,
    router_bias: bool = False,
    model: analysis.Rerouting | None = None,
) -> dict[str, Any]:
    """Route every set, write the tables, figures, summary and report; returns the summary.
    ``router_bias``: whether the model's routers have a bias (the report explains a missing
    severity effect differently then). With ``model``, also measure how much the mildest set's
    outputs change when routed with the most severe set's inputs (:func:`analysis.swap_change`)."""
    files = list_images(args.images)[: args.max_images]
    if not files:
        raise ValueError(f"no images in {args.images}")
    images = [(p.name, center_crop(load_image(p), args.crop, scale)) for p in files]
    presets = args.preset or list(DEFAULT_PRESETS)
    degradations = {p: analysis.preset_degradation(p, scale) for p in presets}
    degradations.update({t: analysis.TYPE_DEGRADATIONS[t] for t in args.types})
    sets: dict[str, SetRouting] = {
        name: analysis.analyse_set(name, images, fn, route, args.seed, progress=True)
        for name, fn in degradations.items()
    }
    severity_sets = [sets[p] for p in presets]
    layer = args.layer or analysis.most_varied_layer(list(sets.values()))
    if layer not in severity_sets[0].layers:
        known = ", ".join(severity_sets[0].layers)
        raise ValueError(f"unknown layer {layer!r}; routed layers: {known}")
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    top_k = next(iter(severity_sets[0].layers.values())).indices.shape[1]

    zero_rows = analysis.zero_experts_per_layer(severity_sets)
    write_csv(out / "zero_experts_per_layer.csv", zero_rows)
    plot_zero_experts_per_layer(zero_rows, presets, top_k, out / "zero_experts_per_layer.png")

    frequency_sets = [sets[t] for t in args.types] + severity_sets
    frequency_file = f"expert_frequency_{_file_part(layer)}"
    freq_rows = analysis.expert_frequency(frequency_sets, layer)
    write_csv(out / f"{frequency_file}.csv", freq_rows)
    names = [s.name for s in frequency_sets]
    plot_expert_frequency(freq_rows, names, layer, out / f"{frequency_file}.png")

    score_rows = analysis.real_experts_vs_score(list(sets.values()))
    write_csv(out / "real_experts_vs_score.csv", score_rows)
    plot_real_experts_vs_score(score_rows, out / "real_experts_vs_score.png")

    summary = {
        "model": args.model,
        "images_dir": str(args.images),
        "images": len(images),
        "crop": args.crop,
        "seed": args.seed,
        "routed_layers": len(severity_sets[0].layers),
        "router_bias": router_bias,
        "top_k": top_k,
        "points": len(score_rows),
        "frequency_layer": layer,
        "frequency_layer_reason": "given" if args.layer else "most routing variance",
        "frequency_file": frequency_file,
        "sets": {name: analysis.set_summary(s) for name, s in sets.items()},
        "comparison": analysis.compare_sets(severity_sets[0], severity_sets[-1]),
        "pearson_severity_real_experts": analysis.severity_correlation(list(sets.values())),
        "kept_overlap": analysis.overlap_table(list(sets.values())),
    }
    if model is not None:
        summary["swap_change"] = analysis.swap_change(
            model, images, degradations[presets[0]], degradations[presets[-1]], args.seed, True
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report_text(summary, command_line(args)))
    return summary


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` sub-command."""
    parser = add_subcommand(subparsers, "analyze", SUMMARY)
    parser.add_argument(
        "--model",
        default="mor-dasr",
        help="a routed MoR model name or folder (default: mor-dasr; the default model is a plain "
        "LoRA with nothing to route)",
    )
    parser.add_argument("--images", type=Path, help="folder of HR images")
    parser.add_argument(
        "--spatial",
        type=Path,
        metavar="IMAGE",
        help="instead: one LR image; draw the real experts kept per region under region "
        f"routing ({EXPERTS_FILE}) and the uncertainty map ({UNCERTAINTY_FILE})",
    )
    parser.add_argument(
        "--preset",
        action="append",
        choices=sorted(PRESETS),
        help="degradation preset, repeatable, mildest first "
        f"(default: {' '.join(DEFAULT_PRESETS)}); the report compares the last with the first",
    )
    parser.add_argument(
        "--types",
        nargs="*",
        choices=list(analysis.TYPE_DEGRADATIONS),
        default=list(analysis.TYPE_DEGRADATIONS),
        help="single-factor degradations of the frequency figure (default: all)",
    )
    parser.add_argument("--layer", help="layer of the frequency figure (default: most varied)")
    parser.add_argument("--max-images", type=int, help="use only the first N images")
    parser.add_argument("--crop", type=int, default=256, help="HR central crop side (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="degradation seed of the first image")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mordasr analyze``."""

    def fail(message: object) -> int:
        print(f"mordasr analyze: {message}", file=sys.stderr)
        return 1

    if args.spatial is not None:
        return _run_spatial(args, fail)
    if args.images is None:
        return fail("give --images (a folder of HR images) or --spatial IMAGE")
    if args.preset is not None and len(args.preset) < 2:
        return fail("give two or more --preset values (mildest first) to compare severities")
    try:
        pyplot()
    except MissingMatplotlibError as error:
        return fail(error)
    try:
        model = load_sr_model(args.model)
    except (FileNotFoundError, ModelLoadError) as error:
        return fail(error)
    if not isinstance(model, analysis.Rerouting):
        return fail(f"{args.model} is not a MoR model (nothing is routed)")
    start = time.perf_counter()
    try:
        # every SRModel is an nn.Module (model_router checks that it is one)
        network = cast(nn.Module, getattr(model, "backbone", model))
        route = analysis.model_router(model, network)
        biased = any(
            layer.router is not None and layer.router.gate.bias is not None
            for _, layer in mor_layers(network)
        )
        summary = analyse(args, route, int(model.scale), router_bias=biased, model=model)
    except (ValueError, NotADirectoryError) as error:
        return fail(error)
    cmp = summary["comparison"]
    real = cmp["mean_real_experts"]
    swap = summary["swap_change"]
    print(
        f"{cmp['severe']}: {real[cmp['severe']]:.3f} real experts per layer, "
        f"{cmp['mild']}: {real[cmp['mild']]:.3f} (difference {cmp['difference']:+.3f}); "
        f"{cmp['mild']} routed as {cmp['severe']}: output change p99 {swap['p99']:.2f}/255; "
        f"wrote {args.output} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _run_spatial(args: argparse.Namespace, fail: Callable[[object], int]) -> int:
    """``mordasr analyze --spatial IMAGE``: the per-region expert map and the uncertainty map."""
    try:
        pyplot()
        model = load_sr_model(args.model)
        if not isinstance(model, MoRSuperResolver):
            return fail(f"{args.model} is not a feed-forward MoR model (nothing is routed)")
        args.output.mkdir(parents=True, exist_ok=True)
        maps = write_spatial(model, load_image(args.spatial), args.output, args.spatial.name)
    except (MissingMatplotlibError, OSError, ImageReadError, ModelLoadError, ValueError) as error:
        return fail(error)
    real = maps.real_experts
    print(
        f"{args.spatial.name}: {real.numel()} regions keep {float(real.min()):.2f} to "
        f"{float(real.max()):.2f} real experts per layer; wrote {args.output / EXPERTS_FILE} "
        f"and {args.output / UNCERTAINTY_FILE}"
    )
    return 0
