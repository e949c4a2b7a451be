"""``mordasr degrade``: write degraded LR copies of a folder of HR images.

What it reads, writes and how it seeds is :data:`DESCRIPTION`, the text ``--help`` shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from mordasr.degrade.config import PRESETS
from mordasr.degrade.pipeline import degrade
from mordasr.io.image import read_rgb, save_image
from mordasr.io.paths import OutputPlanError, check_output_folder, check_plan

PARAMS_FILE = "params.jsonl"
DESCRIPTION = """\
Write degraded LR copies of a folder of HR images.

Every regular file of HR_DIR that Pillow can open (format detected from content, not from
the name) is read as RGB (grayscale is repeated, alpha dropped, 16-bit scaled to [0, 1]). Its LR
image is written to OUT_DIR as PNG under the same stem (photo.jpg -> photo.png), and one JSON
line per image goes to OUT_DIR/params.jsonl: input name, output name, seed, preset and the
sampled parameters. --save-gt also writes the ground truth (unsharp-masked when the preset says
so) to OUT_DIR/gt/. Existing outputs are never replaced without --overwrite; an input is never
replaced, and inputs whose outputs would share a name are refused.

Images are processed in name order, consecutive images of equal size sharing a batch; batch k
uses seed SEED + k, so results are reproducible for the same folder, --seed and --batch-size.
"""
"""The ``--help`` text (plain text: argparse shows it as written)."""


def _readable_images(hr_dir: Path) -> tuple[list[tuple[Path, tuple[int, int]]], list[str]]:
    """Image files of a folder with their sizes (headers only), and the names skipped."""
    images, skipped = [], []
    for path in sorted(p for p in hr_dir.iterdir() if p.is_file()):
        try:
            with Image.open(path) as im:
                images.append((path, im.size))
        except (UnidentifiedImageError, OSError):
            skipped.append(path.name)
    return images, skipped


def _batches(
    images: list[tuple[Path, tuple[int, int]]], batch_size: int
) -> list[list[tuple[Path, tuple[int, int]]]]:
    """Consecutive images of equal size, at most ``batch_size`` per batch."""
    batches: list[list[tuple[Path, tuple[int, int]]]] = []
    for item in images:
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and last[0][1] == item[1]:
            last.append(item)
        else:
            batches.append([item])
    return batches


def run(args: argparse.Namespace) -> int:
    """Execute ``mordasr degrade``; returns the exit status."""
    hr_dir, out_dir = Path(args.hr_dir), Path(args.output)
    if not hr_dir.is_dir():
        print(f"mordasr degrade: {hr_dir} is not a directory", file=sys.stderr)
        return 2
    images, skipped = _readable_images(hr_dir)
    for name in skipped:
        print(f"mordasr degrade: skipping {name} (not an image)", file=sys.stderr)
    if not images:
        print(f"mordasr degrade: no readable images in {hr_dir}", file=sys.stderr)
        return 1
    names = [path.stem + ".png" for path, _ in images]
    sources = [path for path, _ in images]
    try:
        check_plan({p: out_dir / n for p, n in zip(sources, names, strict=True)}, sources)
        if args.save_gt:
            check_plan(
                {p: out_dir / "gt" / n for p, n in zip(sources, names, strict=True)}, sources
            )
        check_output_folder(out_dir)
    except OutputPlanError as error:
        print(f"mordasr degrade: {error}", file=sys.stderr)
        return 2
    small = [p.name for p, size in images if min(size) < args.scale]
    if small:
        print(f"mordasr degrade: smaller than the scale: {small}", file=sys.stderr)
        return 2

    targets = [out_dir / n for n in names] + [out_dir / PARAMS_FILE]
    if args.save_gt:
        targets += [out_dir / "gt" / n for n in names]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        print(
            f"mordasr degrade: {len(existing)} output(s) exist, e.g. {existing[0]}; "
            "pass --overwrite to replace them",
            file=sys.stderr,
        )
        return 1
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.save_gt:
        (out_dir / "gt").mkdir(exist_ok=True)

    device = torch.device(args.device)
    with open(out_dir / PARAMS_FILE, "w", encoding="utf-8") as log:
        for k, batch in enumerate(_batches(images, args.batch_size)):
            hr = torch.stack([read_rgb(p) for p, _ in batch])
            seed = args.seed + k
            result = degrade(hr.to(device), args.preset, scale=args.scale, seed=seed)
            for i, (path, _) in enumerate(batch):
                out_name = path.stem + ".png"
                save_image(out_dir / out_name, result.lr[i].cpu())
                if args.save_gt:
                    save_image(out_dir / "gt" / out_name, result.gt[i].cpu())
                record = {
                    "input": path.name,
                    "output": out_name,
                    "preset": args.preset,
                    "seed": seed,
                    "index_in_batch": i,
                    "params": result.params[i],
                }
                log.write(json.dumps(record) + "\n")
    print(f"mordasr degrade: wrote {len(images)} LR image(s) to {out_dir}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``degrade`` sub-command."""
    parser = subparsers.add_parser(
        "degrade",
        help="synthesise low-quality images from clean ones",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("hr_dir", metavar="HR_DIR", help="folder of clean (HR) images")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder")
    parser.add_argument(
        "--preset",
        default="realesrgan",
        choices=sorted(PRESETS),
        help="the two-stage realesrgan (default), mordasr-mild, mordasr-severe, or a single "
        "factor after bicubic downscaling: bicubic, blur-only, noise-only, jpeg-only",
    )
    parser.add_argument("--scale", type=int, default=4, help="downscaling factor (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument(
        "--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N or mps"
    )
    parser.add_argument(
        "--save-gt", action="store_true", help="also write ground truth to gt/ (default: off)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: off)"
    )
    parser.set_defaults(func=run)
