"""Colour fixes: AdaIN moments; the wavelet fix's detail from the result, colour from the source."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mordasr.infer.color_fix import adain_color_fix, wavelet_color_fix, wavelet_decomposition

SIZE = 96

ColorFix = Callable[[Tensor, Tensor], Tensor]


def _ramps() -> tuple[Tensor, Tensor]:
    return torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")


def _checker() -> Tensor:
    """Fine detail: a +-0.08 checkerboard of 2-pixel squares."""
    wave = torch.sin(math.pi * (torch.arange(SIZE) + 0.5) / 2)
    return 0.08 * torch.sign(wave[:, None] * wave)


@pytest.fixture
def image() -> Tensor:
    """A result: smooth colours with fine detail, in [0, 1]."""
    yy, xx = _ramps()
    return torch.stack([0.3 + 0.2 * xx, 0.4 + 0 * xx, 0.5 - 0.2 * yy])[None] + _checker()


@pytest.fixture
def source() -> Tensor:
    """An LR-like reference: other smooth colours, no detail."""
    yy, xx = _ramps()
    return torch.stack([0.6 - 0.2 * yy, 0.3 + 0.3 * xx, 0.3 + 0.4 * xx * yy])[None]


def _rms(x: Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def test_adain_gives_each_channel_the_source_mean_and_std(image: Tensor, source: Tensor) -> None:
    fixed = adain_color_fix(image, source)
    torch.testing.assert_close(fixed.mean((-2, -1)), source.mean((-2, -1)), rtol=0, atol=1e-5)
    torch.testing.assert_close(fixed.std((-2, -1)), source.std((-2, -1)), rtol=1e-3, atol=0)


def test_adain_is_idempotent_up_to_its_epsilon(image: Tensor, source: Tensor) -> None:
    once = adain_color_fix(image, source)
    torch.testing.assert_close(adain_color_fix(once, source), once, rtol=0, atol=2e-3)
    torch.testing.assert_close(adain_color_fix(source, source), source, rtol=0, atol=1e-5)


def test_wavelet_bands_add_up_to_the_image(image: Tensor) -> None:
    high, low = wavelet_decomposition(image)
    torch.testing.assert_close(high + low, image, rtol=0, atol=1e-6)


def test_wavelet_fix_of_an_image_against_itself_is_the_image(image: Tensor) -> None:
    torch.testing.assert_close(wavelet_color_fix(image, image), image, rtol=0, atol=1e-6)


def test_wavelet_fix_keeps_the_image_detail(image: Tensor, source: Tensor) -> None:
    checker = _checker()

    def detail(x: Tensor) -> float:
        return float((x * checker).sum() / (checker * checker).sum() / 3)

    assert detail(source) == pytest.approx(0, abs=1e-3)
    assert detail(wavelet_color_fix(image, source)) == pytest.approx(detail(image), abs=0.01)


def test_wavelet_fix_takes_the_source_colours(image: Tensor, source: Tensor) -> None:
    """Colours compared on 8x8 means (the checker averages out) away from the borders, where the
    replicated border bends the blurred ramps (measured: 0.9% of the image-source difference)."""

    def colour(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 8)[..., 2:-2, 2:-2]

    fixed = colour(wavelet_color_fix(image, source))
    assert _rms(fixed - colour(source)) < 0.02 * _rms(colour(image) - colour(source))


@pytest.mark.parametrize("fix", [adain_color_fix, wavelet_color_fix])
def test_a_smaller_source_is_resized_bicubically(
    fix: ColorFix, image: Tensor, source: Tensor
) -> None:
    small = F.interpolate(source, scale_factor=0.25, mode="area")
    upsampled = F.interpolate(small, size=image.shape[-2:], mode="bicubic", align_corners=False)
    torch.testing.assert_close(fix(image, small), fix(image, upsampled.clamp(0, 1)))


@pytest.mark.parametrize("fix", [adain_color_fix, wavelet_color_fix])
def test_outputs_stay_in_the_unit_range(fix: ColorFix) -> None:
    torch.manual_seed(0)
    out = fix(torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40) ** 3)
    assert out.min() >= 0 and out.max() <= 1
