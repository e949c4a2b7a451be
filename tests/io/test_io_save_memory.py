"""Saving a large result converts it chunk by chunk: exact values, no whole-image float copies."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from mordasr.io import image
from mordasr.io.image import save_image


def _edge_values(channels: int, height: int, width: int) -> torch.Tensor:
    """Random samples plus the values where rounding is decided (k + 0.5 levels, 0, 1, outside)."""
    values = torch.rand(channels, height, width, generator=torch.Generator().manual_seed(0))
    levels = torch.arange(256, dtype=torch.float32)
    halves = ((levels + 0.5) / 255).repeat(channels, 1)
    values[:, 0, : halves.shape[1]] = halves[:, :width]
    values[:, 1, :4] = torch.tensor([0.0, 1.0, -0.5, 1.5])
    return values


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_chunked_quantisation_equals_the_whole_image_formula(
    bit_depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image, "CHUNK_VALUES", 1000)
    tensor = _edge_values(3, 40, 300)
    pixels = image._to_hwc(tensor, None)
    peak, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    reference = tensor.clamp(0, 1).numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(pixels, reference)
    expected = np.round(reference * peak).astype(dtype)
    np.testing.assert_array_equal(image._quantise(pixels, bit_depth), expected)


def test_saving_keeps_at_most_one_float_copy_of_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image, "CHUNK_VALUES", 1 << 14)
    tensor = torch.full((3, 512, 512), 0.5)
    float_bytes = tensor.numel() * 4
    tracemalloc.start()
    try:
        save_image(tmp_path / "out.png", tensor)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * float_bytes
