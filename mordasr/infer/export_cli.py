"""`mordasr export MODEL -o FILE`: an ONNX, safetensors or .pth file other tools load (one fixed
routing)."""

from __future__ import annotations

import argparse
import sys

from mordasr.infer.export import EXPORT_FORMATS, export_format, export_model, parse_scores
from mordasr.io.cliargs import add_subcommand
from mordasr.io.image import ImageReadError
from mordasr.sr.zoo import load_sr_model

# The sub-command's help line and description.
SUMMARY = (
    "write a model as ONNX (input (N,3,H,W) in [0,1], dynamic size), .safetensors or .pth",
    "Export a feed-forward model with its routing fixed for the --scores given, one routing "
    "for the whole image (region routing, `upscale --routing region`, needs mordasr itself). "
    ".onnx: dynamic batch, height and width, input 'input' (N,3,H,W) float32 RGB in [0,1], "
    "output 'output' clamped to [0,1], for ONNX Runtime and tools reading Real-ESRGAN ONNX "
    "models. .safetensors/.pth: the folded network as a plain state dict with the official "
    "Real-ESRGAN key layout of its architecture (RRDBNet or SRVGGNetCompact), which ComfyUI, "
    "chaiNNer and spandrel load like RealESRGAN_x4plus.pth; the safetensors header records "
    "the architecture, scale and routing.",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    parser = add_subcommand(subparsers, "export", SUMMARY)
    parser.add_argument("model", help="'default', a model folder, or a backbone name or file")
    parser.add_argument(
        "-o", "--output", required=True, help="the file to write (.onnx, .safetensors or .pth)"
    )
    parser.add_argument(
        "--format",
        choices=("auto", *EXPORT_FORMATS),
        default="auto",
        help="file format (default auto: from the -o file's extension)",
    )
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
        fmt = export_format(args.output, args.format)
        model = load_sr_model(args.model)
        scores = parse_scores(model, args.scores)
        path = export_model(model, args.output, scores, args.strength, fmt, source=args.model)
    except (FileNotFoundError, ValueError, ImageReadError, OSError) as error:
        print(f"mordasr export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
