"""How far a code change moves the default model's output: save, then compare.

Run ``save`` in two checkouts (the old one through ``PYTHONPATH``), then ``compare`` the files::

    git worktree add /tmp/old OLD_COMMIT
    PYTHONPATH=/tmp/old python benchmarks/output_drift.py save /tmp/old.npz
    python benchmarks/output_drift.py save /tmp/new.npz
    python benchmarks/output_drift.py compare /tmp/old.npz /tmp/new.npz

``save`` upscales crops of ``assets/0014.jpg`` (64 and 120 px, tiles of 128, and a 96 px crop at
``--strength`` 0.5) with the default model on each CPU backend, in float32, and stores the
results; ``compare`` prints the largest pixel difference of each, in 8-bit levels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import mordasr
from mordasr.infer.pipeline import Upscaler
from mordasr.io.image import read_image

ASSET = Path(__file__).resolve().parents[1] / "assets" / "0014.jpg"
BACKENDS = ("torch", "onnxruntime")


def save(path: Path) -> None:
    """Upscale the fixed crops with every backend into ``path`` (.npz)."""
    torch.set_grad_enabled(False)
    image = read_image(ASSET).tensor
    outputs: dict[str, np.ndarray] = {}
    for backend in BACKENDS:
        tiled = Upscaler("default", device="cpu", backend=backend, tile=128)
        for side in (64, 120):
            top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
            crop = image[:, top : top + side, left : left + side]
            outputs[f"{backend}-{side}"] = tiled.upscale_tensor(crop).numpy()
        half = Upscaler("default", device="cpu", backend=backend, strength=0.5)
        outputs[f"{backend}-strength0.5"] = half.upscale_tensor(image[:, :96, :96]).numpy()
    np.savez(path, **outputs)
    print(f"wrote {path} (mordasr from {Path(mordasr.__file__).parent})")


def compare(old: Path, new: Path) -> None:
    """Print the largest difference of every stored output, in 8-bit levels."""
    a, b = np.load(old), np.load(new)
    print("| output | max difference (/255) |")
    print("|---|---:|")
    for key in a.files:
        print(f"| {key} | {np.abs(a[key] - b[key]).max() * 255:.6f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("save").add_argument("path", type=Path)
    both = sub.add_parser("compare")
    both.add_argument("old", type=Path)
    both.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    if args.command == "save":
        save(args.path)
    else:
        compare(args.old, args.new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
