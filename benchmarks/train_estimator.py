"""Train the heads of the learned degradation estimator on synthetic degradations.

The command line of :func:`mordasr.estimate.training.train_estimator` on the clean training
photos of ``../shared/data/train`` (SunHays80 + BSDS200; never the Set14 / BSD100 test images).
Each sample is a clean crop (shrunk by 1-2x to suppress the source's own artefacts) that is left
clean, degraded by a single factor at a random strength, by a random combination of factors
(blur -> loss of resolution -> noise -> JPEG), or -- from a 4x larger crop -- by one of the full
second-order pipelines (``realesrgan``, ``mordasr-mild``, ``mordasr-severe``). Its targets come
from the known parameters through :mod:`mordasr.estimate.training.labels`. Frozen VGG16
statistics are computed once; only the small heads are trained (soft binary cross-entropy on
each dimension's negative-prompt probability).

``--labels`` picks the label scheme (:data:`mordasr.estimate.training.labels.LABEL_SCHEMES`):
``v1`` made the shipped ``learned_estimator.safetensors``, ``v2`` (one driving factor per
dimension) makes ``learned_estimator_v2.safetensors``.

Example (13 minutes on 2 busy shared CPU cores, nearly all of it synthesis and VGG features;
``--cache FILE`` keeps the features and degradation summaries so that retraining the heads, with
any label scheme, takes seconds)::

    OMP_NUM_THREADS=2 python benchmarks/train_estimator.py --samples 1200 --seed 0 --labels v2 \
        --out mordasr/weights/learned_estimator_v2.safetensors
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mordasr.estimate.training import DEFAULT_SCHEME, LABEL_SCHEMES, train_estimator
from mordasr.estimate.training.synthesis import image_paths

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_DIRS = (DATA / "train" / "SunHays80_HR", DATA / "train" / "BSDS200")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1200, help="training samples")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="photos held out")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.3, help="input-feature dropout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--labels", choices=list(LABEL_SCHEMES), default=DEFAULT_SCHEME, help="label scheme"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="store the frozen features here and reuse them on a rerun with the same samples and "
        "seed (delete the file after changing the synthesis)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("mordasr/weights/learned_estimator_v2.safetensors")
    )
    args = parser.parse_args(argv)
    train_estimator(
        image_paths(TRAIN_DIRS),
        args.out,
        samples=args.samples,
        val_fraction=args.val_fraction,
        epochs=args.epochs,
        hidden=args.hidden,
        dropout=args.dropout,
        seed=args.seed,
        labels=args.labels,
        cache=args.cache,
        command="OMP_NUM_THREADS=2 python " + shlex.join(sys.argv),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
