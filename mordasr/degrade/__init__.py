"""Synthesis of low-quality training images: the Real-ESRGAN second-order degradation model.

Batched on any device, every random choice drawn per image, reproducible for a seed::

    from mordasr.degrade import degrade, PRESETS
    res = degrade(hr, "realesrgan", scale=4, seed=0)   # hr: (B, 3, H, W) float in [0, 1]
    res.lr      # (B, 3, H // 4, W // 4), 8-bit levels in [0, 1]
    res.gt      # (B, 3, H, W), unsharp-masked when the config says so
    res.params  # one JSON-serialisable dict per image

Presets (tables in :mod:`mordasr.degrade.config`): the two-stage ``realesrgan``,
``mordasr-mild``, ``mordasr-severe``, and the single-factor ``bicubic`` (downscaling only),
``blur-only``, ``noise-only``, ``jpeg-only`` (downscaling, then one factor at a level drawn per
image; :mod:`mordasr.degrade.single`, whose ``degrade_image`` degrades one image from an int
seed), and the composite ``mordasr-halves`` (a :class:`SplitConfig`: ``mordasr-mild`` and
``mordasr-severe`` side by side, split at a column drawn per image). The stages are also
plain functions usable alone, e.g. a single factor at a fixed severity:
``filter2d(x, isotropic_gaussian_kernel(21, 2.0))`` (also anisotropic, generalized, plateau and
sinc kernels), ``resize(x, size, mode)`` and
``random_resize``, ``add_gaussian_noise(x, sigma=15)``, ``add_poisson_noise(x, scale=1.0)``
(each with ``gray=``), ``jpeg(x, quality=30)`` (bit-exact with Pillow's libjpeg-turbo) and
``usm_sharpen``. Per-image values may be given as ``(B,)`` tensors.

Schema of ``res.params[i]`` for the two-stage presets (``None`` where a value does not apply)::

    scale: int, hr_size: [H, W], gt_usm: bool, degrade_usm: bool
    stage1 / stage2:
        blur:   applied: bool, kernel: "iso" | "aniso" | "generalized_iso" |
                "generalized_aniso" | "plateau_iso" | "plateau_aniso" | "sinc" | None,
                kernel_size: int (odd support), sigma_x, sigma_y: float (pixels; equal for
                isotropic), theta: float (radians, 0 for isotropic), beta: float (generalized /
                plateau shape), omega_c: float (sinc cutoff, radians per pixel)
        resize: direction: "up" | "down" | "keep", factor: float, mode: "area" | "bilinear" |
                "bicubic", size: [h, w] after the resize (stage 1: HR size x factor, stage 2:
                HR size / scale x factor)
        noise:  type: "gaussian" | "poisson", gray: bool, sigma: float (8-bit levels, Gaussian),
                poisson_scale: float (Poisson)
        jpeg_quality: int (stage 2: the final JPEG)
    final:
        order: "sinc_then_jpeg" (resize to LR -> sinc -> JPEG) | "jpeg_then_sinc"
        resize_mode: "area" | "bilinear" | "bicubic" (resize to the LR size)
        sinc: applied: bool, kernel_size: int, omega_c: float

and for the single-factor presets::

    scale: int, hr_size: [H, W], factor: "none" | "blur" | "noise" | "jpeg",
    seed: int (the image's seed for ``degrade_image``), resize: "bicubic",
    blur: blur_sigma: float (LR pixels), kernel_size: int
    noise: noise_sigma: float (8-bit levels), gray: false
    jpeg: jpeg_quality: int

and for a split (``mordasr-halves``)::

    scale: int, hr_size: [H, W],
    split: column: int (LR), first_side: "left" | "right", first: str, second: str
    first / second: the two presets' own parameters of the image
"""

from __future__ import annotations

from mordasr.degrade.codec import jpeg, quant_tables
from mordasr.degrade.config import (
    PRESETS,
    RESIZE_MODES,
    Config,
    DegradationConfig,
    SingleFactorConfig,
    SplitConfig,
    StageConfig,
    resolve_config,
)
from mordasr.degrade.filters import filter2d, usm_sharpen
from mordasr.degrade.kernels import (
    KERNEL_TYPES,
    anisotropic_gaussian_kernel,
    delta_kernel,
    generalized_gaussian_kernel,
    isotropic_gaussian_kernel,
    mixed_kernel,
    plateau_kernel,
    sinc_kernel,
)
from mordasr.degrade.noise import add_gaussian_noise, add_poisson_noise, rgb_to_gray
from mordasr.degrade.pipeline import DegradeResult, degrade, random_resize
from mordasr.degrade.resampling import resize
from mordasr.degrade.single import degrade_image

__all__ = [
    "KERNEL_TYPES",
    "PRESETS",
    "RESIZE_MODES",
    "Config",
    "DegradationConfig",
    "DegradeResult",
    "SingleFactorConfig",
    "SplitConfig",
    "StageConfig",
    "add_gaussian_noise",
    "add_poisson_noise",
    "anisotropic_gaussian_kernel",
    "degrade",
    "degrade_image",
    "delta_kernel",
    "filter2d",
    "generalized_gaussian_kernel",
    "isotropic_gaussian_kernel",
    "jpeg",
    "mixed_kernel",
    "plateau_kernel",
    "quant_tables",
    "random_resize",
    "resize",
    "resolve_config",
    "rgb_to_gray",
    "sinc_kernel",
    "usm_sharpen",
]
