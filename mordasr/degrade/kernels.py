"""Blur kernels of the Real-ESRGAN degradation model, built for a whole batch at once.

Every builder takes a grid ``size`` (odd) and per-image parameters (a float or a ``(B,)`` tensor)
and returns ``(B, size, size)`` kernels that sum to one. ``support`` optionally restricts each
kernel to a smaller odd window centred in the grid (zero outside), which is how kernels of
different sizes share one tensor and one batched filtering call.

Conventions (as BasicSR): ``x`` is the column offset, ``y`` the row offset from the centre; the
covariance is ``R diag(sigma_x², sigma_y²) Rᵀ`` with ``R`` the rotation by ``theta`` radians.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Param = float | Tensor

KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
"""Names accepted in ``kernel_list`` (the BasicSR names)."""


def _as_batch(value: Param, batch: int) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    return t.expand(batch) if t.numel() == 1 else t


def _batch_size(*values: Param) -> int:
    sizes = {torch.as_tensor(v).numel() for v in values} - {1}
    if len(sizes) > 1:
        raise ValueError(f"per-image parameters have different lengths: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def _grid(size: int) -> tuple[Tensor, Tensor]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _support_mask(size: int, support: Param | None, batch: int) -> Tensor:
    xx, yy = _grid(size)
    if support is None:
        return torch.ones(batch, size, size, dtype=torch.float64)
    half = (_as_batch(support, batch).view(-1, 1, 1) - 1) / 2
    return ((xx.abs() <= half) & (yy.abs() <= half)).to(torch.float64)


def _normalise(kernel: Tensor, mask: Tensor) -> Tensor:
    kernel = kernel * mask
    return (kernel / kernel.sum(dim=(-2, -1), keepdim=True)).to(torch.float32)


def quadratic_form(size: int, sigma_x: Param, sigma_y: Param, theta: Param) -> Tensor:
    """``vᵀ Σ⁻¹ v`` on the kernel grid for each image: ``(B, size, size)`` float64."""
    batch = _batch_size(sigma_x, sigma_y, theta)
    sx = _as_batch(sigma_x, batch).view(-1, 1, 1)
    sy = _as_batch(sigma_y, batch).view(-1, 1, 1)
    th = _as_batch(theta, batch).view(-1, 1, 1)
    c, s = torch.cos(th), torch.sin(th)
    a = c**2 / sx**2 + s**2 / sy**2
    b = c * s * (1 / sx**2 - 1 / sy**2)
    d = s**2 / sx**2 + c**2 / sy**2
    xx, yy = _grid(size)
    return a * xx**2 + 2 * b * xx * yy + d * yy**2


def anisotropic_gaussian_kernel(
    size: int, sigma_x: Param, sigma_y: Param, theta: Param, support: Param | None = None
) -> Tensor:
    """Rotated bivariate Gaussian ``exp(-q/2)``."""
    q = quadratic_form(size, sigma_x, sigma_y, theta)
    return _normalise(torch.exp(-0.5 * q), _support_mask(size, support, q.shape[0]))


def isotropic_gaussian_kernel(size: int, sigma: Param, support: Param | None = None) -> Tensor:
    """Isotropic Gaussian with standard deviation ``sigma`` pixels."""
    return anisotropic_gaussian_kernel(size, sigma, sigma, 0.0, support)


def generalized_gaussian_kernel(
    size: int,
    sigma_x: Param,
    sigma_y: Param,
    theta: Param,
    beta: Param,
    support: Param | None = None,
) -> Tensor:
    """Generalized Gaussian ``exp(-q^beta / 2)``: beta < 1 heavy tails, beta > 1 flat top."""
    q = quadratic_form(size, sigma_x, sigma_y, theta)
    be = _as_batch(beta, q.shape[0]).view(-1, 1, 1)
    return _normalise(torch.exp(-0.5 * q.pow(be)), _support_mask(size, support, q.shape[0]))


def plateau_kernel(
    size: int,
    sigma_x: Param,
    sigma_y: Param,
    theta: Param,
    beta: Param,
    support: Param | None = None,
) -> Tensor:
    """Plateau-shaped kernel ``1 / (q^beta + 1)``."""
    q = quadratic_form(size, sigma_x, sigma_y, theta)
    be = _as_batch(beta, q.shape[0]).view(-1, 1, 1)
    return _normalise(1.0 / (q.pow(be) + 1.0), _support_mask(size, support, q.shape[0]))


def sinc_kernel(size: int, omega_c: Param, support: Param | None = None) -> Tensor:
    """Circular low-pass (2-D sinc) kernel with cutoff ``omega_c`` radians per pixel.

    Models ringing and overshoot; the centre takes the analytic limit ``omega_c² / (4π)``.
    """
    batch = _batch_size(omega_c)
    w = _as_batch(omega_c, batch).view(-1, 1, 1)
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2).expand(batch, size, size)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    kernel = w * torch.special.bessel_j1(w * safe_r) / (2 * math.pi * safe_r)
    kernel = torch.where(r > 0, kernel, (w**2 / (4 * math.pi)).expand_as(kernel))
    return _normalise(kernel, _support_mask(size, support, batch))


def delta_kernel(size: int, batch: int = 1) -> Tensor:
    """Identity kernel (a single one at the centre), for images a blur stage skips."""
    kernel = torch.zeros(batch, size, size)
    kernel[:, size // 2, size // 2] = 1.0
    return kernel


def mixed_kernel(
    size: int,
    kind: Tensor,
    sigma_x: Tensor,
    sigma_y: Tensor,
    theta: Tensor,
    beta: Tensor,
    support: Tensor | None = None,
) -> Tensor:
    """Per-image kernel of type ``KERNEL_TYPES[kind[i]]`` (isotropic types ignore sigma_y/theta)."""
    kind = kind.cpu()
    iso = (kind % 2 == 0).to(torch.float64)
    sx = sigma_x.double().cpu()
    sy = iso * sx + (1 - iso) * sigma_y.double().cpu()
    th = (1 - iso) * theta.double().cpu()
    q = quadratic_form(size, sx, sy, th)
    be = beta.double().cpu().view(-1, 1, 1)
    family = (kind // 2).view(-1, 1, 1)
    kernel = torch.where(
        family == 0,
        torch.exp(-0.5 * q),
        torch.where(family == 1, torch.exp(-0.5 * q.pow(be)), 1.0 / (q.pow(be) + 1.0)),
    )
    return _normalise(kernel, _support_mask(size, support, q.shape[0]))
