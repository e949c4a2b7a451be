"""A mixed-degradation test set from clean photos: fixed crops, each degraded several ways.

Usage::

    python benchmarks/make_mixed_set.py HR_DIR [HR_DIR ...] -o OUT --seed 0 [--crop 256]
        [--per-image 1] [--scale 4] [--overwrite]

Every image of the ``HR_DIR`` folders (format read from content; other files are skipped with a
message) gives ``--per-image`` square crops of ``--crop`` pixels at seeded positions; a photo
smaller than the crop is skipped with a message. Each crop is degraded into every group:

========================  =================================================================
group                     LR image
========================  =================================================================
``clean``                 the ``bicubic`` preset: bicubic downscaling by ``--scale`` only
                          (``mordasr.degrade.resize``, no antialiasing, as in the degradation
                          pipeline)
``blur``                  the ``blur-only`` preset: ``clean``, then an isotropic Gaussian blur,
                          sigma ~ U``BLUR_SIGMA`` LR pixels
``noise``                 the ``noise-only`` preset: ``clean``, then colour Gaussian noise,
                          sigma ~ U``NOISE_SIGMA`` 8-bit levels
``jpeg``                  the ``jpeg-only`` preset: ``clean``, then JPEG at a quality
                          ~ U``JPEG_QUALITY`` (integer; the ranges are constants of
                          ``mordasr.degrade.config``)
``mild``                  the ``mordasr-mild`` preset of ``mordasr.degrade.degrade``
``severe``                the ``mordasr-severe`` preset
``mixed-halves``          the ``mild`` and ``severe`` LR images of the crop side by side: one
                          half (columns split at LR width / 2) from each; which half is severe
                          is drawn per crop and recorded (``severe_side``)
========================  =================================================================

The first four are ``mordasr.degrade.degrade_image`` with the group's own seed (the training
presets of the same names draw one such seed per image). Every LR image is quantised to 8-bit
levels. Layout of ``OUT``::

    OUT/HR/<id>.png            the clean crop (--crop x --crop)
    OUT/LR/<group>/<id>.png    its LR image in each group (--crop / --scale square)
    OUT/params.jsonl           one JSON line per (crop, group), in id then group order
    OUT/set.json               the settings, the groups, the ids and the skipped files

so ``mordasr benchmark --lr OUT/LR/<group> --hr OUT/HR`` scores one group. A line of
``params.jsonl`` holds ``id``, ``group``, ``source`` (``<folder label>/<file name>``),
``source_sha256`` (of the file's bytes), ``crop`` (``[top, left, height, width]`` in the source
image), ``scale``, ``seed`` (the seed of that group's draws) and ``params`` (the group's
parameters; for the presets the full sampled parameters of ``degrade``).

Ids are ``<folder label>-<file stem>-<k>`` with ``k`` the crop number; the folder label is the
folder's name when one folder is given, else its path below the folders' common parent with
``/`` written ``-`` (``../shared/data/Set14/HR`` beside ``../shared/data/BSD100/HR`` is
``Set14-HR``).

Determinism: every crop position and every group's draws come from a seed derived from
``--seed``, the SHA-256 of the photo file, the crop number and the group name, so the same seed
gives the same bytes, and a crop's images do not depend on the other photos of the folders or on
their order. The development set of BENCHMARKS.md (Set14 + BSD100 HR, never used in training)::

    python benchmarks/make_mixed_set.py ../shared/data/Set14/HR ../shared/data/BSD100/HR \\
        -o /work/data/mixed_dev --seed 0 --crop 256 --per-image 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mordasr.degrade import PRESETS, SingleFactorConfig, degrade, degrade_image
from mordasr.degrade.single import quantise
from mordasr.eval.io import is_image
from mordasr.io.image import read_rgb, save_image

GROUPS = ("clean", "blur", "noise", "jpeg", "mild", "severe", "mixed-halves")
"""The groups, in the order of ``params.jsonl``."""
PARAMS_FILE = "params.jsonl"
SET_FILE = "set.json"

Degraded = tuple[Tensor, dict[str, Any]]


@dataclass(frozen=True)
class Photo:
    """One input photo: where it is, its label for ids, and the digest that seeds its draws."""

    path: Path
    label: str
    sha256: str

    @property
    def source(self) -> str:
        return f"{self.label}/{self.path.name}"


def derived_seed(*parts: object) -> int:
    """A 62-bit seed from the SHA-256 of the parts (stable across runs and platforms)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def single(name: str) -> Callable[[Tensor, int, int], Degraded]:
    """A single-factor preset of ``mordasr.degrade`` applied to one crop with its seed."""
    config = PRESETS[name]
    assert isinstance(config, SingleFactorConfig)

    def apply(hr: Tensor, scale: int, seed: int) -> Degraded:
        return degrade_image(hr, config, scale, seed)

    return apply


def preset(name: str) -> Callable[[Tensor, int, int], Degraded]:
    """The full second-order chain of a ``mordasr.degrade`` preset."""

    def apply(hr: Tensor, scale: int, seed: int) -> Degraded:
        result = degrade(hr, name, scale=scale, seed=seed)
        return result.lr, {"preset": name, **result.params[0]}

    return apply


SINGLE_GROUPS: dict[str, Callable[[Tensor, int, int], Degraded]] = {
    "clean": single("bicubic"),
    "blur": single("blur-only"),
    "noise": single("noise-only"),
    "jpeg": single("jpeg-only"),
    "mild": preset("mordasr-mild"),
    "severe": preset("mordasr-severe"),
}
"""Every group made from the HR crop alone (``mixed-halves`` is made from two of them)."""


def mixed_halves(mild: Tensor, severe: Tensor, seed: int) -> Degraded:
    """Half of ``mild`` beside half of ``severe``, split at the middle column; the severe side
    is drawn from ``seed``."""
    split = mild.shape[-1] // 2
    severe_side = "left" if np.random.default_rng(seed).random() < 0.5 else "right"
    left, right = (severe, mild) if severe_side == "left" else (mild, severe)
    lr = torch.cat([left[..., :split], right[..., split:]], dim=-1)
    return lr, {"severe_side": severe_side, "split_column": split, "from": ["mild", "severe"]}


def folder_labels(folders: list[Path]) -> list[str]:
    """Each folder's label for ids (see the module docstring)."""
    if len(folders) == 1:
        return [folders[0].resolve().name]
    resolved = [f.resolve() for f in folders]
    common = Path(os.path.commonpath(resolved))
    return [str(f.relative_to(common)).replace(os.sep, "-") for f in resolved]


def find_photos(folders: list[Path]) -> tuple[list[Photo], list[str]]:
    """The readable images of the folders (sorted by name within each), and the files skipped."""
    photos, skipped = [], []
    for folder, label in zip(folders, folder_labels(folders), strict=True):
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name[0] != "."):
            if is_image(path):
                photos.append(Photo(path, label, hashlib.sha256(path.read_bytes()).hexdigest()))
            else:
                skipped.append(f"{label}/{path.name} (not an image)")
    return photos, skipped


def crop_box(height: int, width: int, crop: int, seed: int) -> tuple[int, int]:
    """Top-left corner of a ``crop`` square inside ``height x width``, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))


def build(
    folders: list[Path], out: Path, seed: int, crop: int, per_image: int, scale: int
) -> dict[str, Any]:
    """Write the set into ``out`` (which must hold none of its outputs); returns ``set.json``."""
    photos, skipped = find_photos(folders)
    records: list[dict[str, Any]] = []
    ids: list[str] = []
    (out / "HR").mkdir(parents=True, exist_ok=True)
    for group in GROUPS:
        (out / "LR" / group).mkdir(parents=True, exist_ok=True)
    for photo in photos:
        image = read_rgb(photo.path)
        height, width = image.shape[-2:]
        if min(height, width) < crop:
            skipped.append(f"{photo.source} ({width}x{height}, smaller than the crop)")
            continue
        for k in range(per_image):
            image_id = f"{photo.label}-{photo.path.stem}-{k}"
            if image_id in ids:
                raise ValueError(f"two crops would be called {image_id}")
            ids.append(image_id)
            top, left = crop_box(height, width, crop, derived_seed(seed, photo.sha256, k, "crop"))
            hr = quantise(image[:, top : top + crop, left : left + crop]).unsqueeze(0)
            save_image(out / "HR" / f"{image_id}.png", hr[0])
            made: dict[str, Tensor] = {}
            for group in GROUPS:
                group_seed = derived_seed(seed, photo.sha256, k, group)
                if group == "mixed-halves":
                    lr, params = mixed_halves(made["mild"], made["severe"], group_seed)
                else:
                    lr, params = SINGLE_GROUPS[group](hr, scale, group_seed)
                made[group] = lr
                save_image(out / "LR" / group / f"{image_id}.png", lr[0])
                records.append(
                    {
                        "id": image_id,
                        "group": group,
                        "source": photo.source,
                        "source_sha256": photo.sha256,
                        "crop": [top, left, crop, crop],
                        "scale": scale,
                        "seed": group_seed,
                        "params": params,
                    }
                )
    with open(out / PARAMS_FILE, "w", encoding="utf-8") as log:
        for record in records:
            log.write(json.dumps(record) + "\n")
    summary = {
        "seed": seed,
        "crop": crop,
        "per_image": per_image,
        "scale": scale,
        "groups": list(GROUPS),
        "folders": folder_labels(folders),
        "ids": ids,
        "skipped": skipped,
    }
    (out / SET_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hr_dirs", nargs="+", type=Path, metavar="HR_DIR")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", type=int, default=256, help="HR crop size (default 256)")
    parser.add_argument("--per-image", type=int, default=1, help="crops per photo (default 1)")
    parser.add_argument("--scale", type=int, default=4, help="downscaling factor (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier set in OUT")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for folder in args.hr_dirs:
        if not folder.is_dir():
            print(f"make_mixed_set: {folder} is not a directory", file=sys.stderr)
            return 2
    if args.per_image < 1 or args.scale < 1 or args.crop % (2 * args.scale):
        print(
            "make_mixed_set: --per-image and --scale must be positive and --crop a multiple of "
            "2 x --scale (the halves split the LR image at an integer column)",
            file=sys.stderr,
        )
        return 2
    out: Path = args.output
    earlier = [out / n for n in ("HR", "LR", PARAMS_FILE, SET_FILE) if (out / n).exists()]
    if earlier and not args.overwrite:
        print(f"make_mixed_set: {out} holds a set already; pass --overwrite", file=sys.stderr)
        return 1
    for path in earlier:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    summary = build(args.hr_dirs, out, args.seed, args.crop, args.per_image, args.scale)
    for entry in summary["skipped"]:
        print(f"make_mixed_set: skipped {entry}", file=sys.stderr)
    print(
        f"make_mixed_set: {len(summary['ids'])} crop(s) x {len(GROUPS)} groups "
        f"({', '.join(GROUPS)}) in {out}"
    )
    return 0 if summary["ids"] else 1


if __name__ == "__main__":
    sys.exit(main())
