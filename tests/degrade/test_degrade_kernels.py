"""Blur kernels: shape, normalisation, support and the blur they describe."""

from __future__ import annotations

import math

import pytest
import torch

from mordasr.degrade import kernels as kern

BUILDERS = {
    "iso": lambda: kern.isotropic_gaussian_kernel(21, torch.tensor([0.5, 2.0, 3.0])),
    "aniso": lambda: kern.anisotropic_gaussian_kernel(21, 3.0, 1.0, torch.tensor([0.0, 0.7, -2.0])),
    "generalized": lambda: kern.generalized_gaussian_kernel(
        21, 2.0, 1.0, 0.3, torch.tensor([0.5, 4.0])
    ),
    "plateau": lambda: kern.plateau_kernel(21, 2.0, 1.5, 0.3, torch.tensor([1.0, 2.0])),
    "sinc": lambda: kern.sinc_kernel(21, torch.tensor([math.pi / 5, math.pi / 2, math.pi])),
}


def _moments(kernel: torch.Tensor) -> tuple[float, float, float]:
    """Variance along columns (x), rows (y) and the x-y covariance of a normalised kernel."""
    k = kernel.double()
    ax = torch.arange(k.shape[-1], dtype=torch.float64) - (k.shape[-1] - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return float((k * xx**2).sum()), float((k * yy**2).sum()), float((k * xx * yy).sum())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_kernels_are_batched_square_and_sum_to_one(name: str) -> None:
    kernels = BUILDERS[name]()
    assert kernels.dim() == 3 and kernels.shape[1:] == (21, 21)
    torch.testing.assert_close(kernels.sum(dim=(1, 2)), torch.ones(kernels.shape[0]))


@pytest.mark.parametrize("name", ["iso", "aniso", "generalized", "plateau"])
def test_positive_kernels_are_symmetric_about_the_centre(name: str) -> None:
    kernels = BUILDERS[name]()
    assert (kernels >= 0).all()
    torch.testing.assert_close(kernels, kernels.flip(-1, -2))


def test_isotropic_gaussian_has_the_requested_variance() -> None:
    kernel = kern.isotropic_gaussian_kernel(41, 2.5)[0]
    var_x, var_y, cov = _moments(kernel)
    assert var_x == pytest.approx(2.5**2, rel=1e-3)
    assert var_y == pytest.approx(2.5**2, rel=1e-3)
    assert abs(cov) < 1e-6


def test_anisotropic_gaussian_covariance_follows_rotation() -> None:
    sx, sy, theta = 3.0, 1.0, math.pi / 6
    var_x, var_y, cov = _moments(kern.anisotropic_gaussian_kernel(41, sx, sy, theta)[0])
    c, s = math.cos(theta), math.sin(theta)
    assert var_x == pytest.approx(c**2 * sx**2 + s**2 * sy**2, rel=1e-3)
    assert var_y == pytest.approx(s**2 * sx**2 + c**2 * sy**2, rel=1e-3)
    assert cov == pytest.approx(c * s * (sx**2 - sy**2), rel=1e-3)


def test_generalized_beta_one_is_the_gaussian() -> None:
    torch.testing.assert_close(
        kern.generalized_gaussian_kernel(21, 2.0, 1.0, 0.4, 1.0),
        kern.anisotropic_gaussian_kernel(21, 2.0, 1.0, 0.4),
    )


def test_generalized_shape_parameter_controls_tails() -> None:
    heavy, flat = kern.generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, torch.tensor([0.5, 4.0]))
    assert heavy[10, 0] > flat[10, 0]
    assert heavy[10, 0] / heavy[10, 10] > flat[10, 0] / flat[10, 10]


def test_plateau_kernel_is_flatter_at_the_top_for_larger_beta() -> None:
    low, high = kern.plateau_kernel(21, 2.0, 2.0, 0.0, torch.tensor([1.0, 2.0]))
    assert high[10, 11] / high[10, 10] > low[10, 11] / low[10, 10]


def test_sinc_kernel_rings_and_narrows_with_cutoff() -> None:
    narrow, wide = kern.sinc_kernel(21, torch.tensor([math.pi / 5, math.pi]))
    assert (narrow < 0).any()
    assert wide[10, 10] > narrow[10, 10]


def test_support_zeroes_taps_outside_each_images_window() -> None:
    kernels = kern.isotropic_gaussian_kernel(
        21, torch.tensor([3.0, 3.0]), support=torch.tensor([7, 21])
    )
    assert kernels[0, :7].abs().sum() == 0 and kernels[0, :, 14:].abs().sum() == 0
    assert kernels[1, 0, 10] > 0
    torch.testing.assert_close(kernels.sum(dim=(1, 2)), torch.ones(2))


def test_mixed_kernel_picks_the_family_per_image() -> None:
    kind = torch.tensor([0, 3, 5])
    sx, sy = torch.tensor([2.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 1.0])
    theta, beta = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1.5, 1.5, 1.5])
    mixed = kern.mixed_kernel(21, kind, sx, sy, theta, beta)
    torch.testing.assert_close(mixed[0], kern.isotropic_gaussian_kernel(21, 2.0)[0])
    torch.testing.assert_close(
        mixed[1], kern.generalized_gaussian_kernel(21, 2.0, 1.0, 0.5, 1.5)[0]
    )
    torch.testing.assert_close(mixed[2], kern.plateau_kernel(21, 2.0, 1.0, 0.5, 1.5)[0])


def test_delta_kernel_is_identity_tap() -> None:
    kernel = kern.delta_kernel(5, batch=2)
    assert kernel.shape == (2, 5, 5) and kernel[:, 2, 2].eq(1).all() and kernel.sum() == 2


def test_even_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="odd"):
        kern.isotropic_gaussian_kernel(20, 1.0)
