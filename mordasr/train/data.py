"""Training data: clean HR photos cut into random patches, with per-step reproducible randomness."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mordasr.io.image import read_rgb

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def step_seed(seed: int, step: int, process: int = 0) -> int:
    """A 63-bit seed for step ``step`` of process ``process``; no global RNG is involved, so a
    resumed run draws exactly what an uninterrupted one would."""
    state = np.random.SeedSequence([seed, step, process]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


def step_generator(seed: int, step: int, process: int = 0) -> torch.Generator:
    """A CPU generator for one step's random choices (crops, flips, degradations)."""
    return torch.Generator().manual_seed(step_seed(seed, step, process))


def find_images(dirs: Sequence[str | Path], max_images: int | None = None) -> list[Path]:
    """Image files under ``dirs`` (recursively), sorted, optionally truncated."""
    files = sorted(
        p for d in dirs for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise FileNotFoundError(f"no images found under {list(map(str, dirs))}")
    return files[:max_images] if max_images else files


class PatchSampler:
    """Random square HR patches from a fixed list of images, decoded once and kept as uint8.

    Images smaller than a patch are reflect-padded. Every draw takes an explicit generator, so the
    sequence of batches depends only on the seeds given.
    """

    def __init__(self, files: Sequence[Path], patch_size: int, augment: bool = True) -> None:
        self.files = list(files)
        self.patch_size = patch_size
        self.augment = augment
        self._cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> Tensor:
        """(3, H, W) uint8 RGB of image ``index``, at least one patch in each side."""
        if index not in self._cache:
            tensor = read_rgb(self.files[index]).mul(255.0).round().to(torch.uint8)
            pad_h = max(0, self.patch_size - tensor.shape[1])
            pad_w = max(0, self.patch_size - tensor.shape[2])
            if pad_h or pad_w:
                padded = torch.nn.functional.pad(
                    tensor[None].float(), (0, pad_w, 0, pad_h), mode="reflect"
                )
                tensor = padded[0].to(torch.uint8)
            self._cache[index] = tensor
        return self._cache[index]

    def sample(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """(B, 3, P, P) float patches in [0, 1]."""
        p = self.patch_size
        picks = torch.randint(len(self.files), (batch_size,), generator=generator).tolist()
        patches = []
        for index in picks:
            img = self.image(index)
            top = int(torch.randint(img.shape[1] - p + 1, (1,), generator=generator))
            left = int(torch.randint(img.shape[2] - p + 1, (1,), generator=generator))
            patch = img[:, top : top + p, left : left + p]
            if self.augment:
                flip, rot = (
                    torch.randint(2, (1,), generator=generator),
                    torch.randint(4, (1,), generator=generator),
                )
                if int(flip):
                    patch = patch.flip(-1)
                patch = torch.rot90(patch, int(rot), dims=(1, 2))
            patches.append(patch)
        return torch.stack(patches).float().div_(255.0)
