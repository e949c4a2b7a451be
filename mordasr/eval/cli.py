"""The ``mordasr eval`` sub-command: quality metrics of SR results against ground truth."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mordasr.eval.evaluate import (
    DEFAULT_METRICS,
    evaluate_dirs,
    json_ready,
    markdown_table,
    parse_metrics,
)
from mordasr.io.cliargs import add_subcommand
from mordasr.nets.pretrained import PretrainedWeightsMissingError

# The sub-command's help line and description.
SUMMARY = (
    "compute quality metrics of SR results",
    "Compare SR images with ground-truth HR images. Files pair by name: an SR file "
    "pairs with the HR file of the same stem, or whose stem is a prefix of the SR stem "
    "followed by '_', '-' or '.' (e.g. 0801_x4_out.png -> 0801.png); extensions and "
    "formats may differ (formats are read from content).",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command."""
    parser = add_subcommand(subparsers, "eval", SUMMARY)
    parser.add_argument("--sr", type=Path, required=True, help="folder of SR results")
    add_scoring_options(parser)
    parser.add_argument(
        "--json", action="store_true", help="print JSON with means and per-image values"
    )
    parser.set_defaults(func=run)


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--hr``, ``--metrics``, ``--crop-border`` and ``--device``: how ``eval`` and
    ``benchmark`` score images against the ground truth."""
    parser.add_argument("--hr", type=Path, required=True, help="folder of ground-truth images")
    parser.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help=f"comma-separated subset of {','.join(DEFAULT_METRICS)} (default: all)",
    )
    parser.add_argument(
        "--crop-border", type=int, default=0, help="pixels removed on every side (default 0)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print; returns the exit status."""
    try:
        metrics = parse_metrics(args.metrics)
        result, unmatched = evaluate_dirs(
            args.sr, args.hr, metrics, crop_border=args.crop_border, device=args.device
        )
    except (ValueError, NotADirectoryError, PretrainedWeightsMissingError) as error:
        print(f"mordasr eval: {error}", file=sys.stderr)
        return 1
    for path in unmatched:
        print(f"mordasr eval: ignoring {path.name} (no matching HR image)", file=sys.stderr)
    if args.json:
        print(json.dumps(json_ready(result), indent=2))
    else:
        print(markdown_table(result))
    return 0
