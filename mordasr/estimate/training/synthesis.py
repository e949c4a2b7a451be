"""Synthetic training images of the learned estimator and the degradation summaries behind them.

Each single-factor degradation returns the degraded batch and the :class:`Degradation` its
targets are built from (:mod:`mordasr.estimate.training.labels`); :func:`synthetic_sample`
draws one training image: a clean crop (shrunk by 1-2x to suppress the source's own artefacts)
left clean, degraded by a single factor at a random strength, by a random combination of
factors (blur -> loss of resolution -> noise -> JPEG), or -- from a 4x larger crop -- by one of
the full second-order pipelines of :func:`mordasr.degrade.degrade`.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mordasr.degrade import (
    add_gaussian_noise,
    add_poisson_noise,
    anisotropic_gaussian_kernel,
    degrade,
    filter2d,
)
from mordasr.estimate.training.labels import Degradation, pipeline_degradation
from mordasr.io.image import read_rgb

T = TypeVar("T")

PRESET_NAMES = ("realesrgan", "mordasr-mild", "mordasr-severe")
CROP_SIZES = (96, 128, 160)
PRESET_LR_SIZES = (64, 80)
FACTOR_ORDER = ("blur", "resolution", "noise", "jpeg")
"""The factors, in the order a combination applies them."""

KIND_WEIGHTS = {
    "clean": 0.12,
    "single": 0.40,
    "combo": 0.30,
    "realesrgan": 0.04,
    "mordasr-mild": 0.07,
    "mordasr-severe": 0.07,
}
"""Probability of each kind of training sample (clean, one factor, a combination, a preset)."""


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


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _log_uniform(generator: torch.Generator, low: float, high: float) -> float:
    return math.exp(_uniform(generator, math.log(low), math.log(high)))


def _choice(generator: torch.Generator, options: tuple[T, ...]) -> T:
    return options[int(torch.randint(len(options), (), generator=generator))]


def _merge(a: Degradation, b: Degradation) -> Degradation:
    """Combine two summaries on the same grid: blurs add in quadrature, noise too, the worst
    JPEG quality and resolution loss win."""
    return Degradation(
        blur_sigma=math.hypot(a.blur_sigma, b.blur_sigma),
        noise_sigma=math.hypot(a.noise_sigma, b.noise_sigma),
        jpeg_quality=min(a.jpeg_quality, b.jpeg_quality),
        downscale=max(a.downscale, b.downscale),
    )


def random_factor(
    x: torch.Tensor, factor: str, generator: torch.Generator
) -> tuple[torch.Tensor, Degradation]:
    """Apply one degradation factor at a random strength."""
    if factor == "blur":
        sigma = _uniform(generator, 0.3, 4.0)
        if float(torch.rand((), generator=generator)) < 0.3:
            ratio = _uniform(generator, 0.3, 1.0)
            theta = _uniform(generator, 0.0, math.pi)
            return gaussian_blur(x, sigma, sigma * ratio, theta)
        return gaussian_blur(x, sigma)
    if factor == "noise":
        gray = float(torch.rand((), generator=generator)) < 0.4
        if float(torch.rand((), generator=generator)) < 0.6:
            return gaussian_noise(x, _log_uniform(generator, 1.0, 40.0), gray, generator)
        return poisson_noise(x, _log_uniform(generator, 0.05, 3.0), gray, generator)
    if factor == "jpeg":
        return jpeg(x, round(_uniform(generator, 10.0, 95.0)))
    if factor == "resolution":
        modes = ("area", "bilinear", "bicubic")
        down = str(_choice(generator, modes))
        up = str(_choice(generator, ("bilinear", "bicubic")))
        return down_up(x, _log_uniform(generator, 1.1, 6.0), down, up)
    raise ValueError(factor)


def synthetic_sample(
    image: torch.Tensor, kind: str, generator: torch.Generator
) -> tuple[torch.Tensor, Degradation]:
    """One training image of ``kind`` (clean / single / combo / a preset name) and its summary."""
    if kind in PRESET_NAMES:
        size = min(int(_choice(generator, PRESET_LR_SIZES)), min(image.shape[-2:]) // 4)
        hr = clean_crop(image, 4 * size, _uniform(generator, 1.0, 1.5), generator)
        seed = int(torch.randint(2**31 - 1, (), generator=generator))
        result = degrade(hr, kind, scale=4, seed=seed)
        summary = pipeline_degradation(result.params[0], mean_intensity=float(hr.mean()))
        return result.lr.clamp(0, 1), summary
    size = int(_choice(generator, CROP_SIZES))
    x = clean_crop(image, size, _uniform(generator, 1.0, 2.0), generator)
    summary = Degradation()
    factors: tuple[str, ...]
    if kind == "single":
        factors = (str(_choice(generator, FACTOR_ORDER)),)
    elif kind == "combo":
        chosen = torch.rand(len(FACTOR_ORDER), generator=generator) < 0.5
        chosen[int(torch.randint(len(FACTOR_ORDER), (), generator=generator))] = True
        factors = tuple(f for f, c in zip(FACTOR_ORDER, chosen.tolist(), strict=True) if c)
    else:
        factors = ()
    for factor in factors:
        x, part = random_factor(x, factor, generator)
        summary = _merge(summary, part)
    return x, summary


def build_dataset(
    paths: list[Path], count: int, generator: torch.Generator
) -> tuple[list[torch.Tensor], list[Degradation], list[str]]:
    """``count`` samples: images, their degradation summaries and the kind of each sample."""
    kinds = list(KIND_WEIGHTS)
    weights = torch.tensor([KIND_WEIGHTS[k] for k in kinds])
    images = [read_rgb(p) for p in paths]
    samples, summaries, sample_kinds = [], [], []
    for _ in range(count):
        kind = kinds[int(torch.multinomial(weights, 1, generator=generator))]
        source = images[int(torch.randint(len(images), (), generator=generator))]
        x, summary = synthetic_sample(source, kind, generator)
        samples.append(x)
        summaries.append(summary)
        sample_kinds.append(kind)
    return samples, summaries, sample_kinds
