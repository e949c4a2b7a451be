"""The torch JPEG codec against Pillow's encoder/decoder at the same quality."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, features

from mordasr.degrade import canvas as canvas_module
from mordasr.degrade import jpeg, quant_tables

# Pillow's wheels bundle libjpeg-turbo, which this codec reproduces bit for bit; another libjpeg
# build may round differently, so the bound is only loosened there.
EXACT = bool(features.check_feature("libjpeg_turbo"))


def _photo_like(h: int, w: int, seed: int) -> torch.Tensor:
    """Smooth colour field plus fine noise, in 8-bit levels: edges, gradients and texture."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=gen)
    x = F.interpolate(coarse, size=(h, w), mode="bicubic") + 0.05 * torch.randn(
        1, 3, h, w, generator=gen
    )
    return (x.clamp(0, 1) * 255).round() / 255


def _pillow_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    arr = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(decoded).permute(2, 0, 1)[None]


@pytest.mark.parametrize("quality", [10, 30, 50, 75, 95, 100])
@pytest.mark.parametrize("size", [(64, 64), (37, 53), (100, 77), (16, 66)])
def test_jpeg_matches_pillow(quality: int, size: tuple[int, int]) -> None:
    x = _photo_like(*size, seed=quality)
    diff = (jpeg(x, quality) - _pillow_round_trip(x, quality)).abs() * 255
    if EXACT:
        assert diff.max() == 0
    else:
        assert diff.mean() < 0.5


def test_jpeg_changes_the_image_more_at_lower_quality() -> None:
    x = _photo_like(64, 64, seed=1)
    errors = [(jpeg(x, q) - x).abs().mean().item() for q in (95, 60, 20)]
    assert errors[0] < errors[1] < errors[2]


def test_jpeg_quality_is_per_image() -> None:
    x = torch.cat([_photo_like(40, 48, seed=s) for s in range(3)])
    qualities = torch.tensor([20, 60, 95])
    batched = jpeg(x, qualities)
    for i, q in enumerate(qualities.tolist()):
        torch.testing.assert_close(batched[i : i + 1], jpeg(x[i : i + 1], q), atol=0, rtol=0)


def test_jpeg_output_is_in_8_bit_levels() -> None:
    out = jpeg(_photo_like(24, 24, seed=2), 50) * 255
    torch.testing.assert_close(out, out.round(), atol=1e-4, rtol=0)


def test_quant_tables_follow_the_ijg_quality_rule() -> None:
    luma, chroma = quant_tables(torch.tensor([50, 75, 100, 10]))
    assert luma[0, 0, 0] == 16 and chroma[0, 7, 7] == 99
    assert luma[1, 0, 0] == 8 and luma[1, 7, 7] == 50
    assert luma[2].eq(1).all() and chroma[2].eq(1).all()
    assert luma[3].max() == 255


def test_jpeg_on_a_canvas_only_sees_each_images_valid_area() -> None:
    from mordasr.degrade.codec import jpeg_canvas

    a, b = _photo_like(37, 53, seed=3), _photo_like(21, 30, seed=4)
    canvas = torch.rand(2, 3, 40, 60)
    canvas[0, :, :37, :53] = a[0]
    canvas[1, :, :21, :30] = b[0]
    out = jpeg_canvas(
        canvas, torch.tensor([37, 21]), torch.tensor([53, 30]), torch.tensor([40, 80])
    )
    assert torch.equal(out[0:1, :, :37, :53], jpeg(a, 40))
    assert torch.equal(out[1:2, :, :21, :30], jpeg(b, 80))


@pytest.mark.parametrize("quality", [5, 100])
def test_jpeg_handles_extreme_contrast_like_pillow(quality: int) -> None:
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(48), indexing="ij")
    checker = ((yy + xx) % 2).float()
    x = torch.stack([checker, 1 - checker, (yy // 4 % 2).float()])[None]
    diff = (jpeg(x, quality) - _pillow_round_trip(x, quality)).abs() * 255
    assert diff.max() == 0 if EXACT else diff.mean() < 0.5


def test_jpeg_gives_the_same_bytes_image_by_image_as_on_the_whole_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.cat([_photo_like(40, 56, seed=s) for s in range(3)])
    quality = torch.tensor([20, 50, 90])
    whole = jpeg(x, quality)
    monkeypatch.setattr(canvas_module, "CHUNK_VALUES", 1)
    assert torch.equal(jpeg(x, quality), whole)
