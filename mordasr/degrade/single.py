"""Single-factor degradations: bicubic downscaling, then one blur, noise or JPEG step.

Each isolates one factor of the second-order model at a fixed range of levels (presets
``bicubic``, ``blur-only``, ``noise-only``, ``jpeg-only``; table in :mod:`mordasr.degrade.config`),
e.g. to train on or test per degradation group. :func:`degrade_image` degrades one image from an
int seed (the mixed test set's script seeds each image so); :func:`degrade_single` degrades a
batch, each image with its own level and seed drawn from the batch's seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from mordasr.degrade.codec import jpeg
from mordasr.degrade.config import SingleFactorConfig
from mordasr.degrade.filters import filter2d
from mordasr.degrade.kernels import isotropic_gaussian_kernel
from mordasr.degrade.noise import add_gaussian_noise
from mordasr.degrade.resampling import resize


def quantise(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8-bit levels."""
    return (x.clamp(0, 1) * 255).round() / 255


def bicubic_down(hr: Tensor, scale: int) -> Tensor:
    """Bicubic downscaling by ``scale`` (no antialiasing, as in the degradation pipeline),
    quantised."""
    return quantise(resize(hr, (hr.shape[-2] // scale, hr.shape[-1] // scale), "bicubic"))


def degrade_image(
    hr: Tensor, config: SingleFactorConfig, scale: int, seed: int
) -> tuple[Tensor, dict[str, Any]]:
    """Degrade ``hr`` ``(1, 3, H, W)`` (a larger batch shares one level) with one draw from the
    int ``seed``; returns the LR image in 8-bit levels and the parameters drawn.

    The level is drawn with ``numpy.random.default_rng(seed)``, the noise field with a torch
    generator seeded with ``seed`` on ``hr``'s device.
    """
    lr = bicubic_down(hr, scale)
    low, high = config.level
    rng = np.random.default_rng(seed)
    if config.factor == "blur":
        sigma = float(rng.uniform(low, high))
        kernel = isotropic_gaussian_kernel(config.kernel_size, sigma).to(hr.device)
        lr = quantise(filter2d(lr, kernel))
        return lr, {"resize": "bicubic", "blur_sigma": sigma, "kernel_size": config.kernel_size}
    if config.factor == "noise":
        sigma = float(rng.uniform(low, high))
        generator = torch.Generator(device=hr.device).manual_seed(seed)
        lr = quantise(add_gaussian_noise(lr, sigma, generator=generator))
        return lr, {"resize": "bicubic", "noise_sigma": sigma, "gray": False}
    if config.factor == "jpeg":
        quality = int(rng.integers(int(low), int(high) + 1))
        return jpeg(lr, quality), {"resize": "bicubic", "jpeg_quality": quality}
    return lr, {"resize": "bicubic"}


def image_seeds(seed: int | torch.Generator, count: int) -> list[int]:
    """``count`` int seeds drawn from an int seed or a generator (on its own device)."""
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    drawn = torch.randint(0, 2**62, (count,), generator=generator, device=generator.device)
    return [int(s) for s in drawn.tolist()]


def degrade_single(
    hr: Tensor, config: SingleFactorConfig, scale: int, seed: int | torch.Generator
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Degrade every image of ``hr`` ``(B, 3, H, W)`` with :func:`degrade_image`, image ``i``
    with the ``i``-th of :func:`image_seeds`; returns the LR batch and one parameter dict per
    image (``scale``, ``hr_size``, ``factor``, ``seed``, then those of :func:`degrade_image`)."""
    lrs, params = [], []
    for image, image_seed in zip(hr.split(1), image_seeds(seed, hr.shape[0]), strict=True):
        lr, drawn = degrade_image(image, config, scale, image_seed)
        lrs.append(lr)
        params.append(
            {
                "scale": scale,
                "hr_size": list(hr.shape[-2:]),
                "factor": config.factor,
                "seed": image_seed,
                **drawn,
            }
        )
    return torch.cat(lrs), params
