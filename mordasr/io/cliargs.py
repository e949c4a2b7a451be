"""Argparse pieces the ``mordasr`` sub-commands share (low, so every layer may import them)."""

from __future__ import annotations

import argparse


def add_subcommand(
    subparsers: argparse._SubParsersAction, name: str, summary: tuple[str, str]
) -> argparse.ArgumentParser:
    """Add sub-command ``name`` with ``summary`` = (one-line help, longer description)."""
    help_text, description = summary
    return subparsers.add_parser(name, help=help_text, description=description)


def add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add the repeatable ``--set KEY=VALUE`` config override (into ``args.overrides``)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help_text,
    )
