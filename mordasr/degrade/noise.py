"""Additive Gaussian and signal-dependent Poisson noise, colour or gray, drawn per image.

Gray noise is one noise field shared by the three channels (luminance-only noise); colour noise
is independent per channel. Results are clipped to [0, 1], without rounding (Real-ESRGAN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mordasr.degrade.canvas import full_sizes

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _per_image(value: float | bool | Tensor, batch: int, x: Tensor) -> Tensor:
    t = torch.as_tensor(value, device=x.device).reshape(-1)
    t = t.expand(batch) if t.numel() == 1 else t
    return t.view(batch, 1, 1, 1)


def rgb_to_gray(x: Tensor) -> Tensor:
    """Luma ``(B, 1, H, W)`` of an RGB batch (ITU-R 601 weights)."""
    w = torch.tensor(_GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def add_gaussian_noise(
    x: Tensor,
    sigma: float | Tensor,
    gray: bool | Tensor = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` (8-bit levels) per image."""
    b = x.shape[0]
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    is_gray = _per_image(gray, b, x).bool()
    noise = torch.where(is_gray, noise[:, :1].expand_as(noise), noise)
    std = _per_image(sigma, b, x).to(x.dtype) / 255.0
    return torch.clamp(x + noise * std, 0, 1)


def count_levels(x: Tensor, hs: Tensor, ws: Tensor) -> Tensor:
    """Number of distinct 8-bit levels inside each image's valid area, ``(B,)``."""
    b, _, h, w = x.shape
    levels = (x * 255).round_().clamp_(0, 255).to(torch.int32)
    levels += 256 * torch.arange(b, device=x.device, dtype=torch.int32).view(-1, 1, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, 1, -1, 1) < hs.view(-1, 1, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, -1) < ws.view(-1, 1, 1, 1)
    key = torch.where(rows & cols, levels, 256 * b)
    seen = torch.bincount(key.flatten(), minlength=256 * b + 1)[: 256 * b].view(b, 256)
    return (seen > 0).sum(dim=1)


def poisson_noise(
    x: Tensor, hs: Tensor, ws: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Shot-noise field of an image, scaled like BasicSR.

    The image is quantised to 8 bits; the photon count per unit intensity is the number of
    distinct levels rounded up to a power of two.
    """
    quantised = torch.clamp((x * 255).round(), 0, 255) / 255
    vals = torch.exp2(torch.ceil(torch.log2(count_levels(x, hs, ws).to(x.dtype))))
    vals = vals.view(-1, 1, 1, 1)
    return torch.poisson(quantised * vals, generator=generator) / vals - quantised


def add_poisson_noise_canvas(
    x: Tensor,
    hs: Tensor,
    ws: Tensor,
    scale: Tensor,
    gray: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Poisson noise on a canvas; ``scale`` and ``gray`` are per image."""
    noise = torch.zeros_like(x)
    gray = gray.to(x.device).bool()
    colour_idx = (~gray).nonzero().flatten()
    gray_idx = gray.nonzero().flatten()
    if colour_idx.numel():
        noise[colour_idx] = poisson_noise(x[colour_idx], hs[colour_idx], ws[colour_idx], generator)
    if gray_idx.numel():
        luma = rgb_to_gray(x[gray_idx])
        field = poisson_noise(luma, hs[gray_idx], ws[gray_idx], generator)
        noise[gray_idx] = field.expand(-1, x.shape[1], -1, -1)
    amount = _per_image(scale, x.shape[0], x).to(x.dtype)
    return torch.clamp(x + noise * amount, 0, 1)


def add_poisson_noise(
    x: Tensor,
    scale: float | Tensor,
    gray: bool | Tensor = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Add Poisson (shot) noise multiplied by ``scale`` per image."""
    b = x.shape[0]
    hs, ws = full_sizes(x)
    is_gray = _per_image(gray, b, x).flatten()
    return add_poisson_noise_canvas(x, hs, ws, torch.as_tensor(scale), is_gray, generator)
