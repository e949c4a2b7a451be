"""PSNR / SSIM on the BT.601 luma channel, checked against closed forms and an independent
numpy/scipy SSIM written from the definition in Wang et al. (2004)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mordasr.metrics.color import rgb_to_y
from mordasr.metrics.functional import psnr, shave_border, ssim

LUMA_GAIN = 65.481 + 128.553 + 24.966  # Y change for a unit change of all of R, G, B


def _image(seed: int, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 + 0.8 * torch.rand(1, 3, size, size, generator=generator, dtype=torch.float64)


def test_luma_of_black_and_white_spans_the_studio_range() -> None:
    black, white = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    assert torch.allclose(rgb_to_y(black), torch.full((1, 1, 2, 2), 16.0))
    assert torch.allclose(rgb_to_y(white), torch.full((1, 1, 2, 2), 235.0))


def test_luma_uses_bt601_weights() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert rgb_to_y(red).item() == pytest.approx(16.0 + 65.481)


def test_psnr_of_a_uniform_offset_matches_the_closed_form() -> None:
    hr = _image(0)
    sr = hr + 0.01
    expected = 10 * math.log10(255.0**2 / (0.01 * LUMA_GAIN) ** 2)
    assert psnr(sr, hr).item() == pytest.approx(expected, abs=1e-4)


def test_psnr_on_rgb_uses_a_255_peak() -> None:
    hr = _image(1)
    assert psnr(hr + 0.01, hr, y_channel=False).item() == pytest.approx(40.0, abs=1e-4)


def test_psnr_of_identical_images_is_infinite() -> None:
    hr = _image(2)
    assert math.isinf(psnr(hr, hr).item())


def test_crop_border_ignores_differences_near_the_edges() -> None:
    hr = _image(3)
    sr = hr.clone()
    sr[..., :2, :] = 0.0
    assert math.isfinite(psnr(sr, hr).item())
    assert math.isinf(psnr(sr, hr, crop_border=2).item())


def test_shave_border_rejects_crops_that_remove_everything() -> None:
    with pytest.raises(ValueError, match="leaves nothing"):
        shave_border(torch.zeros(1, 3, 8, 8), 4)


def test_psnr_is_computed_per_image_in_a_batch() -> None:
    hr = torch.cat([_image(4), _image(5)])
    sr = hr + torch.tensor([0.01, 0.02], dtype=hr.dtype).view(2, 1, 1, 1)
    values = psnr(sr, hr)
    assert values.shape == (2,)
    assert values[0] - values[1] == pytest.approx(20 * math.log10(2), abs=1e-4)


def test_ssim_of_identical_images_is_one() -> None:
    hr = _image(6)
    assert ssim(hr, hr).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_flat_images_reduces_to_the_luminance_term() -> None:
    """With zero variance everywhere SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)."""
    a, b = torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), 0.6)
    mu_a, mu_b = 16 + 0.2 * LUMA_GAIN, 16 + 0.6 * LUMA_GAIN
    c1 = (0.01 * 255) ** 2
    expected = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    assert ssim(a, b).item() == pytest.approx(expected, rel=1e-6)


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two 2-D arrays in [0, 255] from the paper's definition, with scipy filtering."""
    ndimage = pytest.importorskip("scipy.ndimage")
    offsets = np.arange(11) - 5
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def local_mean(x: np.ndarray) -> np.ndarray:
        return ndimage.correlate(x, window, mode="constant")[5:-5, 5:-5]

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map.mean())


def test_ssim_matches_an_independent_scipy_implementation() -> None:
    hr = _image(7, size=40)
    generator = torch.Generator().manual_seed(8)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=generator, dtype=hr.dtype)).clamp(0, 1)
    y_sr, y_hr = rgb_to_y(sr)[0, 0].numpy(), rgb_to_y(hr)[0, 0].numpy()
    assert ssim(sr, hr).item() == pytest.approx(_reference_ssim(y_sr, y_hr), abs=1e-6)


def test_ssim_on_rgb_averages_the_channels() -> None:
    hr = _image(9, size=24)
    sr = hr.clone()
    sr[:, 0] = sr[:, 0].flip(-1)
    per_channel = [
        _reference_ssim(sr[0, c].numpy() * 255, hr[0, c].numpy() * 255) for c in range(3)
    ]
    assert ssim(sr, hr, y_channel=False).item() == pytest.approx(np.mean(per_channel), abs=1e-6)


def test_ssim_is_symmetric() -> None:
    a, b = _image(10), _image(11)
    assert ssim(a, b).item() == pytest.approx(ssim(b, a).item(), abs=1e-12)


def test_ssim_rejects_images_smaller_than_the_window() -> None:
    with pytest.raises(ValueError, match="at least 11px"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 18))
