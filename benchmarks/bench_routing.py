"""How many zero experts a routed model (``mor-dasr`` unless ``--model``) keeps for mildly vs
severely degraded images.

Set14 HR crops (``../shared/data``, not part of the project) are degraded with each preset,
scored by the model's estimator and routed; the script prints, per preset, the mean number of
zero experts kept per layer and the mean estimator severity.

    python benchmarks/bench_routing.py [--model mor-dasr] [--crop 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mordasr.degrade import degrade
from mordasr.io.image import read_rgb
from mordasr.mor import route
from mordasr.sr.mor_sr import MoRSuperResolver

SET14 = Path(__file__).resolve().parents[2] / "shared" / "data" / "Set14" / "HR"
PRESETS = ("mordasr-mild", "mordasr-severe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mor-dasr")
    parser.add_argument("--crop", type=int, default=256, help="HR crop side (multiple of 4)")
    args = parser.parse_args()
    model = MoRSuperResolver.from_pretrained(args.model)
    files = sorted(p for p in SET14.iterdir() if p.is_file())
    print(f"{len(files)} Set14 images, {args.crop}px HR crops, model {args.model}")
    print("| preset | zero experts kept per layer | mean severity |")
    print("|---|---:|---:|")
    for preset in PRESETS:
        zeros, severity = [], []
        for seed, path in enumerate(files):
            hr = read_rgb(path)[None]
            height, width = (min(s, args.crop) // 4 * 4 for s in hr.shape[-2:])
            lr = degrade(hr[..., :height, :width], preset, scale=4, seed=seed).lr
            scores = model.estimate(lr)
            stats = route(model.backbone, scores).stats().values()
            zeros.append(sum(float(s.num_zero.float().mean()) for s in stats) / len(stats))
            severity.append(float(scores.mean()))
        print(f"| {preset} | {sum(zeros) / len(zeros):.3f} | {sum(severity) / len(severity):.3f} |")


if __name__ == "__main__":
    main()
