"""``mordasr estimate IMAGE... [--json] [--estimator learned|clip] [--clip-model ID_OR_PATH]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mordasr.estimate import DIMENSIONS, load_estimator


def load_rgb(path: str | Path) -> torch.Tensor:
    """Read any PIL-readable image as a ``(1, 3, H, W)`` float tensor in ``[0, 1]``.

    Grayscale is replicated to three channels, alpha is dropped and 16-bit data keeps its
    precision; the format is detected from the content, not the extension.
    """
    with Image.open(path) as image:
        image.load()
        if image.mode.startswith("I;16") or image.mode in ("I", "F"):
            scale = 1.0 if image.mode == "F" else 65535.0
            gray = np.asarray(image, dtype=np.float32) / scale
            array = np.repeat(gray[..., None], 3, axis=2)
        else:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].clamp(0.0, 1.0)


def _format_table(rows: list[dict[str, object]]) -> str:
    header = ["image", *DIMENSIONS]
    lines = ["\t".join(header)]
    for row in rows:
        scores = row["scores"]
        assert isinstance(scores, dict)
        lines.append("\t".join([str(row["image"])] + [f"{scores[d]:.4f}" for d in DIMENSIONS]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Score every image and print a table (or JSON); returns the exit status."""
    if args.estimator == "clip" and not args.clip_model:
        print("mordasr estimate: --estimator clip needs --clip-model ID_OR_PATH", file=sys.stderr)
        return 2
    try:
        estimator = load_estimator(args.estimator, clip_model=args.clip_model, device=args.device)
    except (OSError, ImportError) as error:
        print(
            f"mordasr estimate: cannot load the {args.estimator} estimator: {error}",
            file=sys.stderr,
        )
        return 1
    rows: list[dict[str, object]] = []
    for path in args.images:
        image = load_rgb(path).to(args.device)
        (scores,) = estimator.score_dict(image)
        rows.append({"image": str(path), "scores": scores})
    print(json.dumps(rows, indent=2) if args.json else _format_table(rows))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``estimate`` sub-command."""
    parser = subparsers.add_parser(
        "estimate",
        help="score how degraded images are (7 Table 3 dimensions, higher = more degraded)",
        description=(
            "Print per-image degradation scores in [0, 1] for the dimensions "
            + ", ".join(DIMENSIONS)
            + "; higher means more degraded."
        ),
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to score")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--estimator",
        choices=("learned", "clip"),
        default="learned",
        help="learned (offline default, shipped weights) or clip (needs --clip-model)",
    )
    parser.add_argument(
        "--clip-model",
        metavar="ID_OR_PATH",
        default=None,
        help="transformers CLIP hub id (already cached) or local directory",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.set_defaults(func=run)
