"""Paired per-image differences between two models of one ``mordasr benchmark -o`` run.

For every metric of ``results.json``: the mean of ``A - B`` over the images both models were
scored on, its seeded 95% bootstrap interval (``common.bootstrap_ci``, as ``study.py``) and on
how many images ``A`` is better. The RealSR comparison of BENCHMARKS.md section 16::

    python benchmarks/paired_diff.py runs/realsr_new/results.json runs/mor_v2b/final <default copy>

``A`` and ``B`` are the model names as ``--models`` gave them (the keys of ``results.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import bootstrap_ci

from mordasr.metrics.functional import HIGHER_IS_BETTER


def paired_rows(results: dict[str, Any], a: str, b: str) -> list[dict[str, Any]]:
    """One row per metric both models have: mean ``a - b``, its 95% CI, images where a wins."""
    for name in (a, b):
        if name not in results:
            raise ValueError(f"no model {name!r} in the results; they hold {', '.join(results)}")
    if results[a]["images"] != results[b]["images"]:
        raise ValueError(f"{a!r} and {b!r} were scored on different images")
    rows = []
    for metric, values in results[a]["per_image"].items():
        if metric not in results[b]["per_image"]:
            continue
        diff = np.asarray(values, dtype=float) - np.asarray(results[b]["per_image"][metric])
        low, high = bootstrap_ci(diff)
        wins = diff > 0 if HIGHER_IS_BETTER[metric] else diff < 0
        rows.append(
            {
                "metric": metric,
                "mean": float(diff.mean()),
                "ci": (low, high),
                "a_better": int(wins.sum()),
                "images": len(diff),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = ["| metric | A - B [95% CI] | images where A is better |", "|---|---|---:|"]
    for r in rows:
        low, high = r["ci"]
        lines.append(
            f"| {r['metric']} | {r['mean']:+.4f} [{low:+.4f}, {high:+.4f}] "
            f"| {r['a_better']} / {r['images']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="results.json of `mordasr benchmark -o`")
    parser.add_argument("a", help="model A (as given to --models)")
    parser.add_argument("b", help="model B")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
        rows = paired_rows(results, args.a, args.b)
    except (OSError, ValueError, KeyError) as error:
        print(f"paired_diff: {args.results}: {error}", file=sys.stderr)
        return 2
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
