"""Per-image convolution (batched FFT products) and unsharp masking."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from mordasr.degrade.canvas import full_sizes, map_chunks, reflect_index, reflect_pad


def fft_size(n: int) -> int:
    """Smallest ``m >= n`` whose only prime factors are 2, 3 and 5 (fast FFT lengths)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def support_radius(kernels: Tensor) -> Tensor:
    """Half-width of the smallest centred square holding each kernel's nonzero taps, ``(B,)``."""
    k = kernels.shape[-1]
    nonzero = kernels.detach().abs().cpu() > 0
    dist = (torch.arange(k) - k // 2).abs()
    rows = (nonzero.any(dim=2) * dist).amax(dim=1)
    cols = (nonzero.any(dim=1) * dist).amax(dim=1)
    return torch.maximum(rows, cols)


def _crop(kernels: Tensor, radius: int) -> Tensor:
    centre = kernels.shape[-1] // 2
    window = slice(centre - radius, centre + radius + 1)
    return kernels[:, window, window]


def _fft_filter(x: Tensor, hs: Tensor, ws: Tensor, kernels: Tensor) -> Tensor:
    radius = int(support_radius(kernels).max())
    if radius == 0:
        return x * _crop(kernels, 0).to(x).view(-1, 1, 1, 1)
    h, w = x.shape[-2:]
    padded = reflect_pad(x, hs, ws, radius)
    size = (fft_size(h + 2 * radius), fft_size(w + 2 * radius))
    spectrum = torch.fft.rfft2(padded, s=size)
    taps = _crop(kernels, radius).to(x).unsqueeze(1)
    spectrum *= torch.fft.rfft2(taps, s=size).conj()
    return torch.fft.irfft2(spectrum, s=size)[..., :h, :w].contiguous()


def filter2d_canvas(x: Tensor, hs: Tensor, ws: Tensor, kernels: Tensor) -> Tensor:
    """Convolve each valid image of a canvas with its own ``(k, k)`` kernel, mirrored borders.

    An FFT product per slice of the batch (``map_chunks``), whatever the kernels' sizes: its
    cost does not grow with the kernel, and unlike a grouped convolution (oneDNN's depthwise
    kernels vectorise over channels) it stays fast with few images. Kernels are cropped to the
    largest nonzero support of the slice. The FFT length needs no zero padding beyond the
    mirrored border because the wrapped-around terms fall outside the output.
    """
    return map_chunks(_fft_filter, x, hs, ws, kernels)


def filter2d(x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve ``(B, C, H, W)`` with one kernel (``(k, k)`` or ``(1, k, k)``) or one per image.

    Borders are mirrored without repeating the edge pixel (BasicSR ``filter2D``).
    """
    kernels = kernels.reshape(-1, *kernels.shape[-2:])
    if kernels.shape[0] == 1:
        kernels = kernels.expand(x.shape[0], -1, -1)
    hs, ws = full_sizes(x)
    return filter2d_canvas(x, hs, ws, kernels)


def _gaussian_1d(radius: int, sigma: float) -> Tensor:
    size = radius + 1 if radius % 2 == 0 else radius
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    return (g / g.sum()).float()


_BLUR_TILE = 64
"""Output rows (columns) per matrix product of the banded Gaussian blur."""


@functools.lru_cache(maxsize=8)
def _blur_matrix(n: int, radius: int, sigma: float) -> Tensor:
    """``(n, n)`` matrix of the mirrored-border 1-D Gaussian blur along an axis of length n."""
    g = _gaussian_1d(radius, sigma)
    k = g.numel()
    source = reflect_index(n + k - 1, torch.tensor([n]), -(k // 2))[0].unfold(0, k, 1)
    return torch.zeros(n, n).scatter_add_(1, source, g.expand(n, k))


def _band_tiles(n: int, reach: int) -> list[tuple[slice, slice]]:
    """Output tiles of an axis and the input window each reads (``reach`` taps either side)."""
    return [
        (slice(a, min(n, a + _BLUR_TILE)), slice(max(0, a - reach), min(n, a + _BLUR_TILE + reach)))
        for a in range(0, n, _BLUR_TILE)
    ]


def _gaussian_blur(x: Tensor, radius: int, sigma: float) -> Tensor:
    """Separable Gaussian blur with mirrored borders (BasicSR / OpenCV ``GaussianBlur``).

    Each axis is a product with the blur matrix restricted to its band, tile by tile: BLAS
    matrix products are several times faster than depthwise convolutions on CPU with few
    channels, and the band keeps the work close to the taps actually used.
    """
    h, w = x.shape[-2:]
    reach = _gaussian_1d(radius, sigma).numel() // 2
    rows = _blur_matrix(h, radius, sigma).to(x)
    cols = _blur_matrix(w, radius, sigma).to(x)
    across = torch.cat([x[..., win] @ cols[out, win].T for out, win in _band_tiles(w, reach)], -1)
    tiles = _band_tiles(h, reach)
    return torch.cat([rows[out, win] @ across[..., win, :] for out, win in tiles], -2)


def usm_sharpen(
    x: Tensor, weight: float = 0.5, threshold: float = 10.0, radius: int = 50, sigma: float = 0.0
) -> Tensor:
    """Unsharp masking as Real-ESRGAN sharpens its ground truth.

    Adds ``weight`` times the high-pass residual (image minus a Gaussian blur of window
    ``radius`` made odd, sigma by OpenCV's rule when 0, i.e. 8 for 50) where the residual exceeds
    ``threshold`` 8-bit levels, blended by a blurred mask so edges of the mask stay soft.
    """

    def sharpen(part: Tensor) -> Tensor:
        residual = part - _gaussian_blur(part, radius, sigma)
        soft = _gaussian_blur((residual.abs() > threshold / 255).to(part.dtype), radius, sigma)
        sharp = torch.add(part, residual, alpha=weight).clamp_(0, 1)
        return torch.lerp(part, sharp, soft)

    return map_chunks(sharpen, x)
