"""`mordasr export MODEL -o model.onnx`: an ONNX file other tools can run (one fixed routing)."""

from __future__ import annotations

import argparse
import sys

from mordasr.infer.export import export_model, parse_scores
from mordasr.io.cliargs import add_subcommand
from mordasr.io.image import ImageReadError
from mordasr.sr.zoo import load_sr_model

# The sub-command's help line and description.
SUMMARY = (
    "write a model as ONNX (input (1,3,H,W) in [0,1], dynamic size)",
    "Export a feed-forward model as an ONNX file with dynamic height and width "
    "that ONNX Runtime and tools reading Real-ESRGAN ONNX models load: input 'input' "
    "(N,3,H,W) float32 RGB in [0,1], output 'output' clamped to [0,1]. A MoR model's "
    "routing is fixed for the --scores given, one routing for the whole image (region "
    "routing, `upscale --routing region`, needs mordasr itself).",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    parser = add_subcommand(subparsers, "export", SUMMARY)
    parser.add_argument("model", help="'default', a model folder, or a backbone name or file")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--scores",
        nargs="+",
        default=["auto"],
        metavar="S",
        help="routing of a MoR model: 'auto' (mid severity, 0.5 each), an IMAGE to route for, "
        "or the router's numbers (7 degradation scores for the default model)",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help="scale of the adapter's weight change (0: the plain backbone, 1: as trained)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mordasr export``; exit status 2 on a bad model, scores or file."""
    try:
        model = load_sr_model(args.model)
        scores = parse_scores(model, args.scores)
        path = export_model(model, args.output, scores, args.strength)
    except (FileNotFoundError, ValueError, ImageReadError, OSError) as error:
        print(f"mordasr export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
