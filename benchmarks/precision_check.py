"""The quality criterion for reduced precision: every configuration against eager float32.

On RealSR pairs (all 100 by default; ``../shared/data/RealSR``) the default model upscales each
LR image with eager torch in float32 (the reference) and with every candidate configuration
(backend and precision). Each output is rounded to 8 bits, as a saved PNG is, then scored
against the HR image. A configuration meets the criterion when, in paired means over the
images, PSNR-Y is at least ``-0.02`` dB and LPIPS and DISTS at most ``+0.001`` from the
reference's; the table also gives 95 % bootstrap intervals of those differences, the largest
and the 99.9th-percentile pixel difference from the reference output (8-bit levels) and how
many images were routed to other experts than float32 chose (the graph backends are fed the
float32 plan; torch in bfloat16 routes itself).

Each configuration's results are kept in ``OUT/<name>.json`` (the reference's outputs as PNGs in
``OUT/reference``): a finished configuration is never redone.

    OMP_NUM_THREADS=2 python benchmarks/precision_check.py -o runs/precision
        [--lr ../shared/data/RealSR/LR --hr ../shared/data/RealSR/HR] [--limit N]
        [--configs openvino-bfloat16 openvino-float32 ...]

``torch-bfloat16-float32-ends`` runs the first convolution and the upsampling tail in float32
inside a bfloat16 network: where the largest pixel differences come from.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import bootstrap_ci
from PIL import Image

from mordasr.eval.io import load_image
from mordasr.infer.cpu import cpu_features
from mordasr.infer.pipeline import Upscaler
from mordasr.metrics.functional import metric_functions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "RealSR"
METRICS = ("psnr", "lpips", "dists")
CRITERION = {"psnr": -0.02, "lpips": 0.001, "dists": 0.001}
"""Worst allowed paired mean difference from float32 (PSNR-Y in dB: at least; others: at most)."""
CONFIGS: dict[str, dict[str, object]] = {
    "openvino-bfloat16": {"backend": "openvino", "dtype": torch.bfloat16},
    "openvino-float16": {"backend": "openvino", "dtype": torch.float16},
    "openvino-float32": {"backend": "openvino", "dtype": torch.float32},
    "onnxruntime-float32": {"backend": "onnxruntime", "dtype": torch.float32},
    "torch-bfloat16": {"backend": "torch", "dtype": torch.bfloat16},
    "torch-bfloat16-float32-ends": {"backend": "torch", "dtype": torch.bfloat16},
}
KEPT_FLOAT32 = {
    "torch-bfloat16-float32-ends": ("conv_first", "conv_up1", "conv_up2", "conv_hr", "conv_last")
}
"""Configurations that run these top-level layers of the backbone in float32 (the mixed-precision
question: does the error come from the ends of the network?)."""
REFERENCE = {"backend": "torch", "dtype": torch.float32}


def keep_float32(upscaler: Upscaler, names: tuple[str, ...]) -> None:
    """Run ``names`` (children of the backbone) in float32 inside a lower-precision network:
    their weights cast up, their input cast up and their output cast back down."""
    backbone = upscaler.model.backbone  # type: ignore[attr-defined]
    for name in names:
        module = backbone.get_submodule(name).float()
        dtype = upscaler.dtype
        module.register_forward_pre_hook(lambda _m, args: tuple(a.float() for a in args))
        module.register_forward_hook(lambda _m, _a, out, dtype=dtype: out.to(dtype))


def pairs(lr_dir: Path, hr_dir: Path, limit: int | None) -> list[tuple[Path, Path]]:
    """(LR, HR) paths with the same file name, sorted."""
    found = [(p, hr_dir / p.name) for p in sorted(lr_dir.iterdir()) if (hr_dir / p.name).is_file()]
    return found[:limit] if limit else found


def as_levels(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8, as written to a PNG."""
    return image[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def kept_slots(upscaler: Upscaler, lr: torch.Tensor) -> list[torch.Tensor]:
    """Every routed layer's kept slots for ``lr`` under ``upscaler``'s model."""
    plan = upscaler.model.prepare(lr).plan
    return [e.routing.indices for e in plan.layers.values() if e.routing is not None]


def run_config(
    name: str,
    upscaler: Upscaler,
    items: list[tuple[Path, Path]],
    reference: Upscaler,
    out: Path,
) -> dict[str, object]:
    """Score ``upscaler`` on ``items``; for candidates, compare with the saved reference."""
    functions = metric_functions(0)
    per_image: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for lr_path, hr_path in items:
        lr, hr = load_image(lr_path), load_image(hr_path)
        levels = as_levels(upscaler.upscale_tensor(lr))
        sr = torch.from_numpy(levels).permute(2, 0, 1)[None].float() / 255
        row = {m: float(functions[m](sr, hr)[0]) for m in METRICS}
        saved = out / "reference" / f"{lr_path.stem}.png"
        if upscaler is reference:
            saved.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(levels).save(saved)
        else:
            diff = np.abs(levels.astype(np.int16) - np.asarray(Image.open(saved), np.int16))
            row["max_levels"] = float(diff.max())
            row["p999_levels"] = float(np.percentile(diff, 99.9))
            same = all(
                torch.equal(a, b)
                for a, b in zip(kept_slots(upscaler, lr), kept_slots(reference, lr), strict=True)
            )
            row["same_experts"] = float(same)
        per_image[lr_path.name] = row
    seconds = time.perf_counter() - started
    kept = KEPT_FLOAT32.get(name)
    described = upscaler.configuration.describe() + (
        f", float32: {', '.join(kept)}" if kept else ""
    )
    return {"name": name, "configuration": described, "seconds": seconds, "per_image": per_image}


def summarise(result: dict[str, object], reference: dict[str, object]) -> dict[str, object]:
    """Paired means, intervals and the verdict of a candidate against the reference."""
    rows = result["per_image"]
    base = reference["per_image"]
    assert isinstance(rows, dict) and isinstance(base, dict)
    names = sorted(rows)
    summary: dict[str, object] = {"name": result["name"], "configuration": result["configuration"]}
    meets = True
    for metric in METRICS:
        diffs = np.array([rows[n][metric] - base[n][metric] for n in names])
        mean = float(diffs.mean())
        low, high = bootstrap_ci(diffs)
        summary[metric] = {"mean": mean, "ci": [low, high]}
        bound = CRITERION[metric]
        meets &= mean >= bound if metric == "psnr" else mean <= bound
    summary["max_levels"] = max(rows[n]["max_levels"] for n in names)
    summary["p999_levels"] = float(np.mean([rows[n]["p999_levels"] for n in names]))
    summary["p999_levels_worst"] = max(rows[n]["p999_levels"] for n in names)
    summary["other_experts"] = int(sum(1 - rows[n]["same_experts"] for n in names))
    summary["meets"] = bool(meets)
    summary["images"] = len(names)
    return summary


def table(summaries: list[dict[str, object]]) -> str:
    """The markdown table of the summaries."""
    lines = [
        "| configuration | PSNR-Y diff (dB) [95% CI] | LPIPS diff [95% CI] | DISTS diff [95% CI] "
        "| max diff (levels) | p99.9 diff (mean / worst) | images routed otherwise | meets |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for s in summaries:
        cells = []
        for metric, digits in (("psnr", 4), ("lpips", 5), ("dists", 5)):
            entry = s[metric]
            assert isinstance(entry, dict)
            low, high = entry["ci"]
            cells.append(f"{entry['mean']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]")
        lines.append(
            f"| {s['configuration']} | {' | '.join(cells)} | {s['max_levels']:.0f} "
            f"| {s['p999_levels']:.1f} / {s['p999_levels_worst']:.0f} | {s['other_experts']} "
            f"| {'yes' if s['meets'] else 'no'} |"
        )
    return "\n".join(lines)


def cached(path: Path, compute: Callable[[], dict[str, object]]) -> dict[str, object]:
    """``path``'s JSON, or ``compute()`` written there."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--lr", type=Path, default=DATA / "LR")
    parser.add_argument("--hr", type=Path, default=DATA / "HR")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs")
    parser.add_argument("--model", default="default")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    items = pairs(args.lr, args.hr, args.limit)
    reference = Upscaler(args.model, device="cpu", **REFERENCE)  # type: ignore[arg-type]
    base = cached(
        args.out / "float32.json",
        lambda: run_config("torch-float32", reference, items, reference, args.out),
    )
    summaries = []
    for name in args.configs:
        upscaler = Upscaler(args.model, device="cpu", **CONFIGS[name])  # type: ignore[arg-type]
        keep_float32(upscaler, KEPT_FLOAT32.get(name, ()))
        result = cached(
            args.out / f"{name}.json",
            lambda: run_config(name, upscaler, items, reference, args.out),  # noqa: B023
        )
        summaries.append(summarise(result, base))
        print(f"{name}: {result['seconds']:.0f} s", flush=True)
    features = cpu_features()
    report = {
        "cpu": features.isa,
        "flags": sorted(
            features.flags
            & {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8"}
        ),
        "pairs": len(items),
        "summaries": summaries,
    }
    (args.out / "summary.json").write_text(json.dumps(report, indent=1))
    print(table(summaries))


if __name__ == "__main__":
    main()
