"""Per-image convolution (batched FFT products) and unsharp masking."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mordasr.degrade.canvas import full_sizes, map_chunks, reflect_pad


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


def _separable_blur(x: Tensor, g: Tensor) -> Tensor:
    b, c, h, w = x.shape
    k = g.numel()
    hs, ws = full_sizes(x)
    x = reflect_pad(x, hs, ws, k // 2).reshape(1, b * c, h + k - 1, w + k - 1)
    g = g.to(x)
    weight = g.view(1, 1, 1, k).expand(b * c, 1, 1, k).contiguous()
    # Both passes run along rows: depthwise convolutions are much faster that way on CPU.
    x = F.conv2d(x, weight, groups=b * c).transpose(2, 3).contiguous()
    return F.conv2d(x, weight, groups=b * c).transpose(2, 3).reshape(b, c, h, w)


def usm_sharpen(
    x: Tensor, weight: float = 0.5, threshold: float = 10.0, radius: int = 50, sigma: float = 0.0
) -> Tensor:
    """Unsharp masking as Real-ESRGAN sharpens its ground truth.

    Adds ``weight`` times the high-pass residual (image minus a Gaussian blur of window
    ``radius`` made odd, sigma by OpenCV's rule when 0, i.e. 8 for 50) where the residual exceeds
    ``threshold`` 8-bit levels, blended by a blurred mask so edges of the mask stay soft.
    """
    g = _gaussian_1d(radius, sigma)

    def sharpen(part: Tensor) -> Tensor:
        residual = part - _separable_blur(part, g)
        soft = _separable_blur((residual.abs() > threshold / 255).to(part.dtype), g)
        sharp = torch.add(part, residual, alpha=weight).clamp_(0, 1)
        return torch.lerp(part, sharp, soft)

    return map_chunks(sharpen, x)
