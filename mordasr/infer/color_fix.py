"""Colour correction of a diffusion SR result towards its low-resolution input (StableSR's).

One-step diffusion can shift colours; both fixes keep the result's detail and take its colour
from ``source`` (the LR image, or its bicubic upscale), images (B, C, H, W) in [0, 1]:

- :func:`adain_color_fix` gives each channel of the result the mean and standard deviation of
  the same channel of ``source``;
- :func:`wavelet_color_fix` splits both images into a high-frequency part (the detail of a
  5-level à trous wavelet decomposition) and what remains after the 5 blurs, and adds the
  result's high frequencies to the source's low frequencies.

A ``source`` of another size is resized to the result's size first (bicubic, antialiased when
shrinking); outputs are clamped to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

WAVELET_LEVELS = 5
"""Levels of the wavelet decomposition, as StableSR: the low band keeps detail coarser than
about 2**5 pixels."""

ADAIN_EPS = 1e-5
"""Added to the variances so flat channels do not divide by zero."""

_BLUR = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


def _to_size(source: Tensor, image: Tensor) -> Tensor:
    if source.shape[-2:] == image.shape[-2:]:
        return source
    shrink = source.shape[-1] > image.shape[-1] or source.shape[-2] > image.shape[-2]
    resized = F.interpolate(
        source, size=image.shape[-2:], mode="bicubic", align_corners=False, antialias=shrink
    )
    return resized.clamp(0, 1)


def wavelet_blur(image: Tensor, dilation: int) -> Tensor:
    """One level of the à trous transform: a 3x3 binomial blur with taps ``dilation`` apart.

    Borders are replicated.
    """
    channels = image.shape[1]
    kernel = _BLUR.to(image.device, image.dtype).expand(channels, 1, 3, 3)
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=dilation)


def wavelet_decomposition(image: Tensor, levels: int = WAVELET_LEVELS) -> tuple[Tensor, Tensor]:
    """``(high, low)`` with ``high + low == image``: ``low`` is ``image`` after ``levels`` blurs
    of dilation 1, 2, 4, ..., ``high`` the detail they removed."""
    low = image
    for level in range(levels):
        low = wavelet_blur(low, 2**level)
    return image - low, low


def wavelet_color_fix(image: Tensor, source: Tensor) -> Tensor:
    """``image``'s high frequencies on ``source``'s low frequencies (StableSR's wavelet fix)."""
    high, _ = wavelet_decomposition(image)
    _, low = wavelet_decomposition(_to_size(source, image).to(image.dtype))
    return (high + low).clamp(0, 1)


def _mean_std(image: Tensor) -> tuple[Tensor, Tensor]:
    flat = image.flatten(2)
    var, mean = torch.var_mean(flat, dim=-1, keepdim=True)
    return mean[..., None], (var[..., None] + ADAIN_EPS).sqrt()


def adain_color_fix(image: Tensor, source: Tensor) -> Tensor:
    """``image`` with each channel's mean and standard deviation set to ``source``'s."""
    mean, std = _mean_std(image)
    source_mean, source_std = _mean_std(_to_size(source, image).to(image.dtype))
    return ((image - mean) / std * source_std + source_mean).clamp(0, 1)
