"""The strength ceiling of issue 25: how much choosing ``--strength`` per image could gain.

Usage::

    python benchmarks/strength_ceiling.py MIXED_DIR -o OUT [--model default]
        [--strengths 0 0.5 1 1.5] [--limit N] [--groups G [G ...]]

``MIXED_DIR`` is a set written by ``make_mixed_set.py`` (``HR/<id>.png``, ``LR/<group>/<id>.png``,
``set.json``). Every LR image of the chosen groups (the first ``--limit`` ids of ``set.json`` per
group, if given) is upscaled by ``--model`` on the CPU at every strength (one
:class:`mordasr.Upscaler` per strength), rounded to 8 bits as a saved PNG would be, and scored
against its HR crop with the package's LPIPS and PSNR-Y (as ``mordasr benchmark`` scores them).
Each (group, id, strength) appends one line to ``OUT/results.jsonl``; a rerun scores only the
missing ones, so an interrupted run resumes and a finished one is never redone.
``OUT/settings.json`` pins the model: a rerun with another model is refused.

Then ``OUT/summary.md`` (also printed) reports, per group and pooled, on the crops scored in every
chosen group at every strength:

- mean LPIPS at each single strength, and PSNR-Y means;
- the best single strength ``s*``: the one with the lowest pooled mean LPIPS (the one knob value
  to ship), and each group's own best;
- the per-image oracle: every image at its own best strength (the minimum over strengths);
- the oracle gain (per-image oracle minus ``s*``) and the per-group oracle gain (each group at its
  own best strength minus ``s*``), with a seeded bootstrap 95% interval over images
  (:func:`mordasr.eval.stats.hierarchical_bootstrap` with one seed). The pooled interval
  resamples crops, each with its images of every group, since one crop's groups are not
  independent.

The oracle picks the strength knowing the HR image, and the per-group choice is made on the same
images it is scored on: both are upper bounds on what a per-image (or per-group) choice of this
one knob can gain here, which is the point of a ceiling.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mordasr import Upscaler
from mordasr.eval.io import load_image
from mordasr.eval.stats import hierarchical_bootstrap
from mordasr.metrics.functional import metric_functions

RESULTS = "results.jsonl"
SETTINGS = "settings.json"
SUMMARY = "summary.md"
POOLED = "pooled"
DEFAULT_STRENGTHS = (0.0, 0.5, 1.0, 1.5)
BOOTSTRAP_SEED = 0

Key = tuple[str, str, float]
"""(group, id, strength) of one result line."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mixed_dir", type=Path, help="a set written by make_mixed_set.py")
    parser.add_argument("-o", "--out", type=Path, required=True, help="results folder")
    parser.add_argument("--model", default="default", help="model name or folder")
    parser.add_argument("--strengths", type=float, nargs="+", default=list(DEFAULT_STRENGTHS))
    parser.add_argument("--limit", type=int, default=None, help="first N images per group")
    parser.add_argument("--groups", nargs="+", default=None, help="default: every group")
    args = parser.parse_args(argv)
    if len(set(args.strengths)) != len(args.strengths) or len(args.strengths) < 2:
        parser.error("--strengths needs at least two distinct values")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def load_set(
    mixed_dir: Path, groups: list[str] | None, limit: int | None
) -> tuple[list[str], list[str]]:
    """The chosen groups (in ``set.json`` order) and the ids (the first ``limit``) to score."""
    info = json.loads((mixed_dir / "set.json").read_text())
    unknown = sorted(set(groups or ()) - set(info["groups"]))
    if unknown:
        raise SystemExit(f"unknown groups {unknown}; the set has {info['groups']}")
    chosen = [g for g in info["groups"] if groups is None or g in groups]
    return chosen, info["ids"][:limit]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The result lines of ``path``; a last line cut short by an interrupted run is dropped
    (and removed from the file) so that it is scored again."""
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _key(row: dict[str, Any]) -> Key:
    return row["group"], row["id"], float(row["strength"])


def pin_model(out: Path, model: str) -> None:
    """Record the model in ``settings.json``; refuse a folder scored with another model."""
    path = out / SETTINGS
    if path.exists():
        pinned = json.loads(path.read_text())["model"]
        if pinned != model:
            raise SystemExit(f"{out} holds results of model {pinned!r}, not {model!r}")
    else:
        path.write_text(json.dumps({"model": model}, indent=1) + "\n")


def score_missing(
    mixed_dir: Path,
    out: Path,
    model: str,
    strengths: list[float],
    groups: list[str],
    ids: list[str],
) -> int:
    """Score every (group, id, strength) not yet in ``results.jsonl``; the number added.

    Crops are the outer loop, so an interrupted run leaves whole crops scored in every group.
    Upscalers are built only if something is missing.
    """
    path = out / RESULTS
    done = {_key(row) for row in read_rows(path)}
    todo = [
        (image_id, group)
        for image_id in ids
        for group in groups
        if any((group, image_id, s) not in done for s in strengths)
    ]
    if not todo:
        return 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="strength .* extrapolates")
        upscalers = {s: Upscaler(model, device="cpu", strength=s) for s in strengths}
    functions = metric_functions()
    added = 0
    started = time.perf_counter()
    with path.open("a") as results:
        for index, (image_id, group) in enumerate(todo, 1):
            hr = load_image(mixed_dir / "HR" / f"{image_id}.png")
            lr = load_image(mixed_dir / "LR" / group / f"{image_id}.png")[0]
            scores = []
            for strength in strengths:
                if (group, image_id, strength) in done:
                    continue
                sr = upscalers[strength].upscale_tensor(lr).mul(255).round().div(255)[None]
                row = {
                    "group": group,
                    "id": image_id,
                    "strength": strength,
                    "lpips": float(functions["lpips"](sr, hr)[0]),
                    "psnr_y": float(functions["psnr"](sr, hr)[0]),
                }
                results.write(json.dumps(row) + "\n")
                results.flush()
                scores.append(f"{strength:g}:{row['lpips']:.4f}")
                added += 1
            elapsed = time.perf_counter() - started
            print(
                f"[{index}/{len(todo)}] {group} {image_id} lpips {' '.join(scores)} "
                f"({elapsed:.0f}s, eta {elapsed / index * (len(todo) - index):.0f}s)",
                flush=True,
            )
    return added


@dataclass
class Scores:
    """LPIPS and PSNR-Y of the complete crops: ``[group]`` arrays of (crops, strengths)."""

    ids: list[str]
    strengths: list[float]
    lpips: dict[str, np.ndarray]
    psnr_y: dict[str, np.ndarray]


def complete_scores(
    rows: list[dict[str, Any]], groups: list[str], ids: list[str], strengths: list[float]
) -> Scores:
    """The crops scored in every group at every strength, in ``ids`` order."""
    table = {_key(row): row for row in rows}
    complete = [i for i in ids if all((g, i, s) in table for g in groups for s in strengths)]
    if not complete:
        raise SystemExit("no crop is scored in every group at every strength yet")

    def grid(group: str, metric: str) -> np.ndarray:
        return np.array([[table[group, i, s][metric] for s in strengths] for i in complete])

    return Scores(
        complete,
        strengths,
        {g: grid(g, "lpips") for g in groups},
        {g: grid(g, "psnr_y") for g in groups},
    )


def _interval(differences: np.ndarray) -> dict[str, float]:
    estimate = hierarchical_bootstrap(differences, seed=BOOTSTRAP_SEED)
    return {"mean": estimate.mean, "low": estimate.ci_low, "high": estimate.ci_high}


def summarise(scores: Scores) -> dict[str, Any]:
    """Per group and pooled: means per strength, best strengths, oracles and their gains."""
    strengths = scores.strengths
    groups = list(scores.lpips)
    pooled = np.stack([scores.lpips[g] for g in groups])  # (groups, crops, strengths)
    best = int(np.argmin(pooled.mean(axis=(0, 1))))
    group_best = {g: int(np.argmin(scores.lpips[g].mean(axis=0))) for g in groups}
    oracle_diff = {g: scores.lpips[g].min(axis=1) - scores.lpips[g][:, best] for g in groups}
    group_diff = {g: scores.lpips[g][:, group_best[g]] - scores.lpips[g][:, best] for g in groups}
    summary: dict[str, Any] = {
        "crops": len(scores.ids),
        "strengths": strengths,
        "best_single": strengths[best],
        "rows": {},
    }

    def row(
        lpips: np.ndarray, psnr_y: np.ndarray, own_best: int, oracle: np.ndarray, group: np.ndarray
    ) -> dict[str, Any]:
        picks = lpips.reshape(-1, len(strengths)).argmin(axis=1)
        flat_psnr = psnr_y.reshape(-1, len(strengths))
        return {
            "images": int(picks.size),
            "lpips": lpips.reshape(-1, len(strengths)).mean(axis=0).tolist(),
            "psnr_y": flat_psnr.mean(axis=0).tolist(),
            "own_best": strengths[own_best],
            "oracle_lpips": float(lpips.reshape(-1, len(strengths)).min(axis=1).mean()),
            "oracle_psnr_y": float(flat_psnr[np.arange(picks.size), picks].mean()),
            "oracle_gain": _interval(oracle),
            "group_gain": _interval(group),
            "best_share": (np.bincount(picks, minlength=len(strengths)) / picks.size).tolist(),
        }

    for g in groups:
        summary["rows"][g] = row(
            scores.lpips[g], scores.psnr_y[g], group_best[g], oracle_diff[g], group_diff[g]
        )
    summary["rows"][POOLED] = row(
        pooled,
        np.stack([scores.psnr_y[g] for g in groups]),
        best,
        np.mean([oracle_diff[g] for g in groups], axis=0),
        np.mean([group_diff[g] for g in groups], axis=0),
    )
    return summary


def _gain(estimate: dict[str, float]) -> str:
    return f"{estimate['mean']:+.4f} [{estimate['low']:+.4f}, {estimate['high']:+.4f}]"


def headroom(summary: dict[str, Any]) -> str:
    """The headroom in plain words."""
    strengths = summary["strengths"]
    pooled = summary["rows"][POOLED]
    best = summary["best_single"]
    oracle, group = pooled["oracle_gain"], pooled["group_gain"]
    text = (
        f"Headroom: choosing the strength per image (knowing the HR image) lowers pooled LPIPS "
        f"by {-oracle['mean']:.4f} (95% CI {-oracle['high']:.4f} to {-oracle['low']:.4f}) below "
        f"the best single strength {best:g} (LPIPS {pooled['lpips'][strengths.index(best)]:.4f}); "
        f"choosing it per group lowers it by {-group['mean']:.4f} "
        f"(95% CI {-group['high']:.4f} to {-group['low']:.4f})."
    )
    if 0.0 in strengths and 1.0 in strengths:
        effect = pooled["lpips"][strengths.index(1.0)] - pooled["lpips"][strengths.index(0.0)]
        text += (
            f" For scale, the adapter itself (strength 1 vs 0) moves pooled LPIPS by {effect:+.4f}."
        )
    return text


def markdown(summary: dict[str, Any]) -> str:
    """The summary tables (LPIPS, PSNR-Y, share of images best at each strength) and headroom."""
    strengths = summary["strengths"]
    names = [f"s={s:g}" for s in strengths]
    rows = summary["rows"]
    lines = [
        f"Strength ceiling on {summary['crops']} crops; best single strength (pooled LPIPS): "
        f"**{summary['best_single']:g}**. Gains are differences in mean LPIPS against it "
        "(negative = better), with a bootstrap 95% CI over images (pooled: over crops).",
        "",
        f"| group | n | {' | '.join(names)} | own best | per-image oracle | "
        "oracle gain | per-group oracle gain |",
        "|---|---|" + "---|" * (len(strengths) + 4),
    ]
    for name, row in rows.items():
        means = " | ".join(f"{v:.4f}" for v in row["lpips"])
        lines.append(
            f"| {name} | {row['images']} | {means} | {row['own_best']:g} | "
            f"{row['oracle_lpips']:.4f} | {_gain(row['oracle_gain'])} | "
            f"{_gain(row['group_gain'])} |"
        )
    lines += [
        "",
        "PSNR-Y (dB) at each strength and at the per-image LPIPS-oracle choice:",
        "",
        f"| group | {' | '.join(names)} | LPIPS oracle |",
        "|---|" + "---|" * (len(strengths) + 1),
    ]
    for name, row in rows.items():
        means = " | ".join(f"{v:.2f}" for v in row["psnr_y"])
        lines.append(f"| {name} | {means} | {row['oracle_psnr_y']:.2f} |")
    lines += [
        "",
        "Share of images whose LPIPS is lowest at each strength:",
        "",
        f"| group | {' | '.join(names)} |",
        "|---|" + "---|" * len(strengths),
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {' | '.join(f'{v:.0%}' for v in row['best_share'])} |")
    return "\n".join([*lines, "", headroom(summary), ""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    groups, ids = load_set(args.mixed_dir, args.groups, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    pin_model(args.out, args.model)
    strengths = [float(s) for s in args.strengths]
    added = score_missing(args.mixed_dir, args.out, args.model, strengths, groups, ids)
    print(f"scored {added} new (group, image, strength) results", flush=True)
    scores = complete_scores(read_rows(args.out / RESULTS), groups, ids, strengths)
    report = markdown(summarise(scores))
    (args.out / SUMMARY).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
