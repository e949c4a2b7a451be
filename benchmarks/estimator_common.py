"""Image lists and single-factor degradations shared by the estimator training and benchmark.

Each degradation returns the degraded batch and the :class:`Degradation` summary its labels and
severity levels are built from (see :mod:`mordasr.estimate.labels`). Data come from
``../shared/data`` (not part of the project; see its README).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mordasr.degrade import (
    add_gaussian_noise,
    add_poisson_noise,
    anisotropic_gaussian_kernel,
    filter2d,
)
from mordasr.estimate.labels import Degradation

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_DIRS = (DATA / "train" / "SunHays80_HR", DATA / "train" / "BSDS200")
HELD_OUT_DIRS = (DATA / "Set14" / "HR", DATA / "BSD100" / "HR")


def image_paths(directories: tuple[Path, ...]) -> list[Path]:
    """Sorted image files of ``directories`` (fails loudly when the data are missing)."""
    paths = sorted(p for d in directories for p in d.iterdir() if p.is_file())
    if not paths:
        raise FileNotFoundError(f"no images under {[str(d) for d in directories]}")
    return paths


def gaussian_blur(
    x: torch.Tensor, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> tuple[torch.Tensor, Degradation]:
    """Blur with a (possibly anisotropic, rotated) Gaussian from the degradation kernels."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    size = 2 * math.ceil(3 * max(sigma_x, sigma_y)) + 1
    kernel = anisotropic_gaussian_kernel(size, sigma_x, sigma_y, theta)[0]
    effective = math.sqrt((sigma_x**2 + sigma_y**2) / 2)
    return filter2d(x, kernel).clamp(0, 1), Degradation(blur_sigma=effective)


def gaussian_noise(
    x: torch.Tensor, sigma: float, gray: bool, generator: torch.Generator
) -> tuple[torch.Tensor, Degradation]:
    """Add Gaussian noise of ``sigma`` 8-bit levels (same in every channel if ``gray``)."""
    out = add_gaussian_noise(x, sigma, gray, generator)
    return out, Degradation(noise_sigma=_measured_sigma(out, x))


def poisson_noise(
    x: torch.Tensor, scale: float, gray: bool, generator: torch.Generator
) -> tuple[torch.Tensor, Degradation]:
    """Add Real-ESRGAN Poisson (shot) noise multiplied by ``scale``."""
    out = add_poisson_noise(x, scale, gray, generator)
    return out, Degradation(noise_sigma=_measured_sigma(out, x))


def _measured_sigma(noisy: torch.Tensor, clean: torch.Tensor) -> float:
    return float((noisy - clean).std() * 255.0)


def jpeg(x: torch.Tensor, quality: int) -> tuple[torch.Tensor, Degradation]:
    """Round-trip every image through baseline JPEG (4:2:0, libjpeg via Pillow)."""
    out = []
    for image in x:
        array = (image.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(decoded).permute(2, 0, 1))
    return torch.stack(out), Degradation(jpeg_quality=float(quality))


def down_up(
    x: torch.Tensor, factor: float, down_mode: str = "bicubic", up_mode: str = "bicubic"
) -> tuple[torch.Tensor, Degradation]:
    """Shrink by ``factor`` then enlarge back to the input size: a loss of resolution."""
    height, width = x.shape[-2:]
    small = (max(1, round(height / factor)), max(1, round(width / factor)))
    kwargs = {} if down_mode == "area" else {"align_corners": False}
    low = F.interpolate(x, size=small, mode=down_mode, **kwargs)
    out = F.interpolate(low, size=(height, width), mode=up_mode, align_corners=False)
    return out.clamp(0, 1), Degradation(downscale=factor)


def clean_crop(
    image: torch.Tensor, size: int, shrink: float, generator: torch.Generator
) -> torch.Tensor:
    """Random ``size``-square crop of ``image`` after shrinking it by ``shrink`` (antialiased),
    which suppresses the source's own noise and compression; ``(1, 3, size, size)``."""
    height, width = image.shape[-2:]
    shrink = min(shrink, height / size, width / size)
    window = max(size, int(size * shrink))
    top = int(torch.randint(0, height - window + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - window + 1, (1,), generator=generator))
    crop = image[None, :, top : top + window, left : left + window]
    if window == size:
        return crop.clone()
    return F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
