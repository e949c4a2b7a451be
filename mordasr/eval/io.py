"""Reading images by content and pairing SR outputs with their ground truth by file name."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from mordasr.io.image import read_rgb

SUFFIX_SEPARATORS = ("_", "-", ".")


def load_image(path: Path) -> torch.Tensor:
    """Read any supported image (format detected from content) as (1, 3, H, W) in [0, 1].

    Grayscale is replicated to RGB, alpha is dropped, 16-bit data keeps its precision.
    """
    return read_rgb(path).unsqueeze(0)


def is_image(path: Path) -> bool:
    """Whether Pillow recognises ``path`` as an image from its content (extension ignored)."""
    if not path.is_file() or path.name.startswith("."):
        return False
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError):
        return False


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name."""
    if not directory.is_dir():
        raise NotADirectoryError(f"not a directory: {directory}")
    return sorted(p for p in directory.iterdir() if is_image(p))


def _matches(sr_stem: str, hr_stem: str) -> bool:
    if sr_stem == hr_stem:
        return True
    return sr_stem.startswith(hr_stem) and sr_stem[len(hr_stem)] in SUFFIX_SEPARATORS


def pair_images(
    sr_files: list[Path], hr_files: list[Path]
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Pair each HR image with exactly one SR image by file name.

    An SR file belongs to the HR file whose stem (name without extension) equals its own stem,
    or else is the longest prefix of it followed by ``_``, ``-`` or ``.`` (so ``0801_out.png``
    and ``0801-x4.jpg`` pair with ``0801.png``, but ``08010.png`` does not). Extensions are
    ignored. Returns the (sr, hr) pairs in HR order and the SR files that matched no HR file;
    raises ``ValueError`` if an HR file has no SR file or several.
    """
    hr_stems = {hr.stem: hr for hr in hr_files}
    if len(hr_stems) != len(hr_files):
        raise ValueError("HR folder has several images with the same name stem")
    matched: dict[str, list[Path]] = {stem: [] for stem in hr_stems}
    unmatched: list[Path] = []
    for sr in sr_files:
        candidates = [stem for stem in hr_stems if _matches(sr.stem, stem)]
        if not candidates:
            unmatched.append(sr)
            continue
        matched[max(candidates, key=len)].append(sr)
    missing = [stem for stem, found in matched.items() if not found]
    if missing:
        raise ValueError(f"no SR image for {len(missing)} HR image(s): {', '.join(missing[:10])}")
    ambiguous = {stem: found for stem, found in matched.items() if len(found) > 1}
    if ambiguous:
        stem, found = next(iter(ambiguous.items()))
        names = ", ".join(p.name for p in found)
        raise ValueError(f"several SR images match HR '{stem}': {names}")
    pairs = [(matched[stem][0], hr) for stem, hr in hr_stems.items()]
    return pairs, unmatched
