"""``mordasr estimate IMAGE... [--json] [--estimator learned|clip] [--clip-model ID_OR_PATH]``."""

from __future__ import annotations

import argparse
import json
import sys

from mordasr.estimate import DIMENSIONS, load_estimator
from mordasr.io.cliargs import add_subcommand
from mordasr.io.image import ImageReadError, read_rgb

# The sub-command's help line and description.
SUMMARY = (
    "score how degraded images are (7 Table 3 dimensions, higher = more degraded)",
    "Print per-image degradation scores in [0, 1] for the dimensions "
    + ", ".join(DIMENSIONS)
    + "; higher means more degraded.",
)


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
    failed = 0
    for path in args.images:
        try:
            image = read_rgb(path)[None].to(args.device)
        except ImageReadError as error:
            print(f"mordasr estimate: skipped {error}", file=sys.stderr)
            failed += 1
            continue
        (scores,) = estimator.score_dict(image)
        rows.append({"image": str(path), "scores": scores})
    print(json.dumps(rows, indent=2) if args.json else _format_table(rows))
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``estimate`` sub-command."""
    parser = add_subcommand(subparsers, "estimate", SUMMARY)
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
