"""Image quality metrics on (B, 3, H, W) tensors in [0, 1]: PSNR, SSIM, LPIPS, DISTS and NIQE.

PSNR and SSIM follow the conventions of super-resolution papers (BasicSR / MATLAB): they are
computed on the BT.601 luma channel in the [0, 255] range, with an optional border crop. Every
function returns one value per image, shape (B,).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F

from mordasr.metrics.color import rgb_to_y
from mordasr.metrics.dists import DISTS
from mordasr.metrics.lpips import LPIPS, LpipsNetName
from mordasr.metrics.niqe import niqe


def _check_images(x: torch.Tensor, name: str = "image") -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")


def _check_pair(sr: torch.Tensor, hr: torch.Tensor) -> None:
    _check_images(sr, "sr")
    _check_images(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: sr {tuple(sr.shape)} vs hr {tuple(hr.shape)}")


def shave_border(x: torch.Tensor, border: int) -> torch.Tensor:
    """Remove ``border`` pixels from every side (the SR-benchmark convention)."""
    if border < 0:
        raise ValueError(f"crop border must be >= 0, got {border}")
    if border == 0:
        return x
    if 2 * border >= min(x.shape[-2:]):
        raise ValueError(f"crop border {border} leaves nothing of a {tuple(x.shape[-2:])} image")
    return x[..., border:-border, border:-border]


def _prepare(x: torch.Tensor, border: int, y_channel: bool) -> torch.Tensor:
    x = shave_border(x.to(torch.float64), border)
    return rgb_to_y(x) if y_channel else x * 255.0


def psnr(
    sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, y_channel: bool = True
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for a 255 peak; ``inf`` for identical images."""
    _check_pair(sr, hr)
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(255.0**2 / mse)).float()


@lru_cache(maxsize=4)
def _gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return taps / taps.sum()


def _gaussian_filter_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of (N, 1, H, W) maps, keeping only the 'valid' region."""
    x = F.conv2d(x, taps.view(1, 1, -1, 1))
    return F.conv2d(x, taps.view(1, 1, 1, -1))


def _ssim_map(a: torch.Tensor, b: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """SSIM map of single-channel (N, 1, H, W) images in [0, 255], 'valid' filtering."""
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    count = a.shape[0]
    stats = _gaussian_filter_valid(torch.cat([a, b, a * a, b * b, a * b]), taps)
    mu_a, mu_b, sq_a, sq_b, prod = stats.split(count)
    var_a, var_b, cov = sq_a - mu_a**2, sq_b - mu_b**2, prod - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return numerator / denominator


def ssim(
    sr: torch.Tensor,
    hr: torch.Tensor,
    crop_border: int = 0,
    y_channel: bool = True,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, constants
    for a 255 range, mean of the 'valid' SSIM map. Without ``y_channel`` the per-channel SSIMs
    of RGB are averaged."""
    _check_pair(sr, hr)
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    if min(a.shape[-2:]) < window_size:
        raise ValueError(f"images must be at least {window_size}px on each side for SSIM")
    batch, channels = a.shape[:2]
    taps = _gaussian_taps(window_size, sigma).to(a.device)
    flat_a, flat_b = (t.reshape(batch * channels, 1, *t.shape[-2:]) for t in (a, b))
    ssim_map = _ssim_map(flat_a, flat_b, taps)
    return ssim_map.reshape(batch, channels, -1).mean(dim=(1, 2)).float()


@lru_cache(maxsize=2)
def _lpips_model(net: LpipsNetName) -> LPIPS:
    return LPIPS(net=net)


@lru_cache(maxsize=1)
def _dists_model() -> DISTS:
    return DISTS()


def lpips(sr: torch.Tensor, hr: torch.Tensor, net: LpipsNetName = "alex") -> torch.Tensor:
    """LPIPS v0.1 distance (lower is more similar); the model is built once and cached."""
    _check_pair(sr, hr)
    model = _lpips_model(net).to(sr.device)
    with torch.no_grad():
        return model(sr.float(), hr.float())


def dists(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """DISTS distance (lower is more similar); the model is built once and cached."""
    _check_pair(sr, hr)
    model = _dists_model().to(sr.device)
    with torch.no_grad():
        return model(sr.float(), hr.float())


def niqe_score(sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
    """NIQE of ``sr`` on its Y channel (no reference needed; lower is more natural)."""
    _check_images(sr, "sr")
    return niqe(sr)


MetricFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

HIGHER_IS_BETTER: dict[str, bool] = {
    "psnr": True,
    "ssim": True,
    "lpips": False,
    "dists": False,
    "niqe": False,
}


def metric_functions(crop_border: int = 0) -> dict[str, MetricFn]:
    """Name -> ``fn(sr, hr) -> (B,)`` for every metric, with the border crop applied."""

    def cropped(fn: MetricFn) -> MetricFn:
        return lambda sr, hr: fn(shave_border(sr, crop_border), shave_border(hr, crop_border))

    return {
        "psnr": lambda sr, hr: psnr(sr, hr, crop_border=crop_border),
        "ssim": lambda sr, hr: ssim(sr, hr, crop_border=crop_border),
        "lpips": cropped(lpips),
        "dists": cropped(dists),
        "niqe": cropped(niqe_score),
    }
