"""Resizing with per-image modes and sizes, per-image convolution and unsharp masking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mordasr.degrade import RESIZE_MODES, filter2d, isotropic_gaussian_kernel, resize, usm_sharpen
from mordasr.degrade import canvas as canvas_module
from mordasr.degrade.canvas import full_sizes
from mordasr.degrade.filters import fft_size, filter2d_canvas
from mordasr.degrade.resampling import mode_codes, resize_canvas


def _images(b: int = 3, h: int = 37, w: int = 53) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("size", [(20, 11), (80, 61), (5, 100)])
def test_resize_matches_torch_interpolate(mode: str, size: tuple[int, int]) -> None:
    x = _images()
    expected = F.interpolate(x, size=size, mode=mode)
    torch.testing.assert_close(resize(x, size, mode), expected, atol=1e-5, rtol=0)


def test_resize_applies_each_images_own_mode() -> None:
    x = _images()
    mixed = resize(x, (30, 20), ["area", "bilinear", "bicubic"])
    for i, mode in enumerate(RESIZE_MODES):
        torch.testing.assert_close(mixed[i], resize(x[i : i + 1], (30, 20), mode)[0])


def test_canvas_resize_gives_each_image_its_own_size() -> None:
    x = _images()
    hs, ws = full_sizes(x)
    out_h, out_w = torch.tensor([10, 74, 37]), torch.tensor([60, 9, 53])
    canvas = resize_canvas(x, hs, ws, out_h, out_w, mode_codes("bicubic", 3))
    assert canvas.shape[-2:] == (74, 60)
    for i in range(3):
        alone = F.interpolate(x[i : i + 1], size=(int(out_h[i]), int(out_w[i])), mode="bicubic")
        got = canvas[i : i + 1, :, : out_h[i], : out_w[i]]
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=0)


def test_canvas_resize_reads_only_the_valid_area() -> None:
    x = _images(1)
    canvas = torch.full((1, 3, 50, 70), 9.0)
    canvas[..., :37, :53] = x
    hs, ws = torch.tensor([37]), torch.tensor([53])
    out = resize_canvas(
        canvas, hs, ws, torch.tensor([20]), torch.tensor([30]), mode_codes("area", 1)
    )
    torch.testing.assert_close(out, resize(x, (20, 30), "area"))


def test_filter2d_matches_reflect_padded_convolution() -> None:
    x = _images()
    kernels = isotropic_gaussian_kernel(7, torch.tensor([0.8, 1.5, 2.5]))
    expected = torch.cat(
        [
            F.conv2d(
                F.pad(x[i : i + 1], (3, 3, 3, 3), mode="reflect"),
                kernels[i].expand(3, 1, 7, 7),
                groups=3,
            )
            for i in range(3)
        ]
    )
    torch.testing.assert_close(filter2d(x, kernels), expected, atol=1e-5, rtol=0)


def test_canvas_filter_mirrors_about_each_images_own_border() -> None:
    x = _images(2)
    canvas = torch.zeros(2, 3, 40, 60)
    canvas[0, :, :37, :53] = x[0]
    canvas[1, :, :30, :41] = x[1, :, :30, :41]
    hs, ws = torch.tensor([37, 30]), torch.tensor([53, 41])
    kernel = isotropic_gaussian_kernel(9, 2.0).expand(2, 9, 9)
    out = filter2d_canvas(canvas, hs, ws, kernel)
    torch.testing.assert_close(
        out[0:1, :, :37, :53], filter2d(x[0:1], kernel[0]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        out[1:2, :, :30, :41], filter2d(x[1:2, :, :30, :41], kernel[0]), atol=1e-5, rtol=0
    )


def test_blur_removes_high_frequencies() -> None:
    x = _images()
    blurred = filter2d(x, isotropic_gaussian_kernel(21, 3.0)[0])
    assert blurred.diff(dim=-1).abs().mean() < 0.2 * x.diff(dim=-1).abs().mean()


def test_usm_sharpens_edges_and_leaves_flat_areas() -> None:
    x = torch.full((1, 3, 64, 64), 0.3)
    x[..., 32:, :] = 0.7
    sharp = usm_sharpen(x)
    assert sharp[0, 0, 33, 10] > 0.7 and sharp[0, 0, 30, 10] < 0.3
    torch.testing.assert_close(sharp[..., :5, :], x[..., :5, :])
    torch.testing.assert_close(
        usm_sharpen(torch.full((1, 3, 32, 32), 0.5)), torch.full((1, 3, 32, 32), 0.5)
    )


def test_usm_equals_real_esrgan_with_a_reflect_padded_separable_convolution() -> None:
    """Banded matrix-product blur vs ``F.conv2d``: equal within 1e-5 (float32 summation order)."""
    x = _images(2, 64, 80)
    ax = torch.arange(51, dtype=torch.float64) - 25
    g = torch.exp(-(ax**2) / (2 * 8.0**2))
    g = (g / g.sum()).float()

    def blur(img: torch.Tensor) -> torch.Tensor:
        padded = F.pad(img, (25, 25, 25, 25), mode="reflect")
        rows = F.conv2d(padded, g.view(1, 1, 1, 51).expand(3, 1, 1, 51), groups=3)
        return F.conv2d(rows, g.view(1, 1, 51, 1).expand(3, 1, 51, 1), groups=3)

    residual = x - blur(x)
    soft = blur((residual.abs() > 10 / 255).float())
    expected = torch.lerp(x, (x + 0.5 * residual).clamp(0, 1), soft)
    torch.testing.assert_close(usm_sharpen(x), expected, atol=1e-5, rtol=0)


def test_filter2d_accepts_one_kernel_for_the_whole_batch() -> None:
    x = _images()
    kernel = isotropic_gaussian_kernel(9, 1.5)
    torch.testing.assert_close(filter2d(x, kernel), filter2d(x, kernel[0]))
    torch.testing.assert_close(filter2d(x, kernel)[1:2], filter2d(x[1:2], kernel))


def test_fft_filter_equals_direct_convolution_for_every_kernel_size() -> None:
    """FFT filtering vs ``F.conv2d`` on the reflect-padded image, 1e-5 (float32 FFT rounding).

    Images of different valid sizes share a canvas; kernels of supports 3..21 share one grid,
    one of them random (not symmetric), so orientation errors would show.
    """
    gen = torch.Generator().manual_seed(1)
    sizes = [(37, 53), (30, 41), (25, 25), (40, 60)]
    canvas = torch.zeros(4, 3, 40, 60)
    for i, (h, w) in enumerate(sizes):
        canvas[i, :, :h, :w] = torch.rand(3, h, w, generator=gen)
    hs, ws = (torch.tensor(v) for v in zip(*sizes, strict=True))
    kernels = isotropic_gaussian_kernel(21, torch.tensor([0.5, 1.0, 2.0, 3.0]), [3, 7, 13, 21])
    random_kernel = torch.rand(21, 21, generator=gen)
    kernels[3] = random_kernel / random_kernel.sum()
    out = filter2d_canvas(canvas, hs, ws, kernels)
    for i, ((h, w), radius) in enumerate(zip(sizes, (1, 3, 6, 10), strict=True)):
        window = kernels[i, 10 - radius : 11 + radius, 10 - radius : 11 + radius]
        padded = F.pad(canvas[i : i + 1, :, :h, :w], (radius,) * 4, mode="reflect")
        expected = F.conv2d(padded, window.expand(3, 1, -1, -1), groups=3)
        torch.testing.assert_close(out[i : i + 1, :, :h, :w], expected, atol=1e-5, rtol=0)


def test_fft_lengths_have_only_small_prime_factors() -> None:
    assert [fft_size(n) for n in (1, 7, 23, 97, 276)] == [1, 8, 24, 100, 288]


def test_filters_give_the_same_result_image_by_image_as_on_the_whole_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = _images(4)
    kernels = isotropic_gaussian_kernel(21, torch.tensor([0.5, 1.0, 2.0, 3.0]), [3, 7, 13, 21])
    whole_filter, whole_usm = filter2d(x, kernels), usm_sharpen(x)
    monkeypatch.setattr(canvas_module, "CHUNK_VALUES", 1)
    torch.testing.assert_close(filter2d(x, kernels), whole_filter, atol=1e-6, rtol=0)
    torch.testing.assert_close(usm_sharpen(x), whole_usm, atol=1e-6, rtol=0)
