"""Training speed in float32 against bfloat16 autocast (``mixed_precision: bf16``) on this machine.

Issue 25 asks whether bfloat16 autocast training is faster on a CPU with AMX. Each run is one
fresh ``mordasr train CONFIG`` process (with the ``--set`` overrides, then ``total_steps``,
``log_every``, ``output_dir`` and ``mixed_precision``), the two precisions alternating for
``--rounds`` rounds. A run's time per step is measured between its first and last logged
steps, so start-up (pool loading, rank allocation, the first step's allocations) is left out.
Printed per run and as the ratio of the median bfloat16 to the median float32 time; written to
``OUT/summary.json``. Whether the faster training gives the same model is the study's
``lora-bf16`` variant (``benchmarks/study.py``), paired with ``lora`` seed by seed. The run of
BENCHMARKS.md section 19 (the study's recipe, its pool of seed 0, one thread, others stopped)::

    OMP_NUM_THREADS=1 python benchmarks/train_precision.py configs/study_mixed.yaml \\
        --set model.variant=mor-no-zero \\
        --set data.pool_cache=/work/data/runs/study_mixed/pools/seed0 \\
        --steps 30 --rounds 2 -o /work/data/train_precision
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("no", "bf16")
"""``mixed_precision`` of the two runs of a round: float32, then bfloat16 autocast."""


def train_command(config: Path, settings: list[str]) -> list[str]:
    """``python -m mordasr.cli train CONFIG --no-resume --set ...``."""
    command = [sys.executable, "-m", "mordasr.cli", "train", str(config), "--no-resume"]
    for setting in settings:
        command += ["--set", setting]
    return command


def seconds_per_step(log_csv: Path) -> float:
    """Seconds per step between the first and the last row of a run's ``log.csv``."""
    with open(log_csv, newline="", encoding="utf-8") as handle:
        rows = [(int(row["step"]), float(row["seconds"])) for row in csv.DictReader(handle)]
    if len(rows) < 2:
        raise ValueError(f"{log_csv} logs {len(rows)} step(s); two are needed for a time per step")
    (first_step, first_s), (last_step, last_s) = rows[0], rows[-1]
    return (last_s - first_s) / (last_step - first_step)


def run_once(args: argparse.Namespace, precision: str, round_: int) -> dict[str, Any]:
    """One training run in ``precision``; its seconds per step."""
    out = args.output / f"{precision}-{round_}"
    shutil.rmtree(out, ignore_errors=True)
    settings = [
        *args.set,
        f"total_steps={args.steps}",
        f"checkpoint_every={args.steps}",
        f"log_every={args.log_every}",
        f"output_dir={out}",
        f"mixed_precision={precision}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        train_command(args.config, settings), env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"training failed ({done.returncode}): {done.stderr[-2000:]}")
    return {
        "precision": precision,
        "round": round_,
        "seconds_per_step": seconds_per_step(out / "log.csv"),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median seconds per step of each precision and their ratio (bfloat16 / float32)."""
    medians = {
        p: statistics.median(r["seconds_per_step"] for r in runs if r["precision"] == p)
        for p in PRECISIONS
    }
    return {"runs": runs, "median": medians, "ratio_bf16": medians["bf16"] / medians["no"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.steps < 2 * args.log_every:
        parser.error("--steps must log at least twice (steps >= 2 x --log-every)")
    runs = []
    for round_ in range(args.rounds):
        for precision in PRECISIONS:
            runs.append(run_once(args, precision, round_))
            print(f"round {round_} {precision}: {runs[-1]['seconds_per_step']:.3f} s/step")
    summary = summarise(runs)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    median = summary["median"]
    print(
        f"median s/step: float32 {median['no']:.3f}, bfloat16 {median['bf16']:.3f}; "
        f"ratio {summary['ratio_bf16']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
