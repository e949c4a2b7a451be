"""Gaussian and Poisson noise: strength, colour vs gray, per-image parameters."""

from __future__ import annotations

import math

import pytest
import torch

from mordasr.degrade import add_gaussian_noise, add_poisson_noise


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_has_each_images_sigma() -> None:
    flat = torch.full((3, 3, 128, 128), 0.5)
    sigmas = torch.tensor([2.0, 10.0, 30.0])
    noisy = add_gaussian_noise(flat, sigmas, generator=_gen())
    measured = (noisy - flat).flatten(1).std(dim=1) * 255
    torch.testing.assert_close(measured, sigmas, rtol=0.03, atol=0)


def test_gray_gaussian_noise_is_shared_by_channels() -> None:
    flat = torch.full((2, 3, 32, 32), 0.5)
    noisy = add_gaussian_noise(flat, 10.0, gray=torch.tensor([True, False]), generator=_gen())
    assert torch.equal(noisy[0, 0], noisy[0, 1]) and torch.equal(noisy[0, 0], noisy[0, 2])
    assert not torch.equal(noisy[1, 0], noisy[1, 1])


def test_noise_output_is_clipped_to_unit_range() -> None:
    x = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 3, 16, 16)
    noisy = add_gaussian_noise(x, 50.0, generator=_gen())
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_gaussian_noise_is_reproducible_from_a_generator() -> None:
    x = torch.full((1, 3, 8, 8), 0.5)
    assert torch.equal(
        add_gaussian_noise(x, 5.0, generator=_gen(3)), add_gaussian_noise(x, 5.0, generator=_gen(3))
    )


def _with_all_levels(value: float) -> torch.Tensor:
    """Flat image plus a strip holding all 256 levels (so the photon scale is 256)."""
    x = torch.full((1, 3, 64, 256), value)
    x[:, :, :4] = torch.arange(256).float().div(255).view(1, 1, 1, -1)
    return x


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_poisson_noise_variance_follows_intensity_and_scale(scale: float) -> None:
    x = _with_all_levels(0.5)
    noisy = add_poisson_noise(x, scale, generator=_gen())
    residual = (noisy - x)[:, :, 8:]
    expected_std = scale * math.sqrt(round(0.5 * 255) / 255 / 256)
    assert residual.std().item() == pytest.approx(expected_std, rel=0.05)


def test_poisson_noise_grows_with_brightness() -> None:
    dark = add_poisson_noise(_with_all_levels(0.1), 1.0, generator=_gen())
    bright = add_poisson_noise(_with_all_levels(0.8), 1.0, generator=_gen())
    assert (bright - _with_all_levels(0.8))[:, :, 8:].std() > 2 * (dark - _with_all_levels(0.1))[
        :, :, 8:
    ].std()


def test_gray_poisson_noise_is_shared_by_channels() -> None:
    noisy = add_poisson_noise(_with_all_levels(0.5), 1.0, gray=True, generator=_gen())
    residual = noisy - _with_all_levels(0.5)
    assert torch.equal(residual[0, 0, 8:], residual[0, 1, 8:])
    assert residual[0, 0, 8:].abs().sum() > 0


def test_level_count_ignores_the_canvas_outside_each_image() -> None:
    from mordasr.degrade.noise import count_levels

    canvas = torch.rand(2, 3, 16, 16)
    canvas[0, :, :8, :8] = 0.5
    canvas[1, :, :4, :16] = torch.tensor([0.0, 1.0]).repeat(8)
    counts = count_levels(canvas, torch.tensor([8, 4]), torch.tensor([8, 16]))
    assert counts.tolist() == [1, 2]
