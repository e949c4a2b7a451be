"""The `mordasr` command line: one sub-command per capability.

Each capability module exposes ``register(subparsers)`` which adds its sub-command and sets
``func`` on the parser; this module only assembles them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from mordasr import __version__
from mordasr.degrade.cli import register as degrade_register
from mordasr.estimate.cli import register as estimate_register
from mordasr.eval.analyze_cli import register as analyze_register
from mordasr.eval.benchmark import register as benchmark_register
from mordasr.eval.cli import register as eval_register
from mordasr.infer.cli import register as upscale_register
from mordasr.infer.export_cli import register as export_register
from mordasr.nets.weights_cli import register as weights_register
from mordasr.serve.cli import register as serve_register
from mordasr.train.cli import register as train_register

Register = Callable[[argparse._SubParsersAction], None]


def _registrars() -> list[Register]:

    return [
        upscale_register,
        export_register,
        degrade_register,
        estimate_register,
        train_register,
        eval_register,
        benchmark_register,
        analyze_register,
        serve_register,
        weights_register,
    ]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="mordasr",
        description="Real-world image super-resolution with Mixture-of-Ranks adapters.",
    )
    parser.add_argument("--version", action="version", version=f"mordasr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _registrars():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mordasr`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
