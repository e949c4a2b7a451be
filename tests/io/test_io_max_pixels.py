"""Every reader checks the size its header declares before decoding: a file of a few hundred
bytes that claims a huge image is refused in one line, without the memory it claims."""

from __future__ import annotations

import io
import logging
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hostile_helpers import BOMBS, float_tiff_declaring
from PIL import Image

from mordasr.io.image import ImageReadError, read_image
from mordasr.io.png16 import encode_png16

WIDTH, HEIGHT = 40, 30


def _pillow(image_format: str) -> Callable[[np.ndarray], bytes]:
    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, image_format)
        return buffer.getvalue()

    return encode


def _float_tiff(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels.astype(np.float32) / 255, photometric="rgb")
    return buffer.getvalue()


ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {
    "PNG": _pillow("PNG"),
    "PNG 16-bit": lambda pixels: encode_png16(pixels.astype(np.uint16) * 257),
    "JPEG": _pillow("JPEG"),
    "TIFF": _pillow("TIFF"),
    "TIFF float": _float_tiff,
    "WebP": _pillow("WEBP"),
    "GIF": _pillow("GIF"),
    "BMP": _pillow("BMP"),
}


@pytest.mark.parametrize("kind", ENCODERS)
def test_a_real_image_over_the_limit_is_refused_and_one_at_it_is_read(
    tmp_path: Path, kind: str
) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    path = tmp_path / "image"
    path.write_bytes(ENCODERS[kind](pixels))
    with pytest.raises(ImageReadError, match=r"40x30 is more than the 1,199 pixel limit"):
        read_image(path, max_pixels=WIDTH * HEIGHT - 1)
    assert read_image(path, max_pixels=WIDTH * HEIGHT).tensor.shape[-2:] == (HEIGHT, WIDTH)


@pytest.mark.parametrize("name", BOMBS)
def test_a_tiny_file_declaring_a_huge_image_is_refused_unread(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BOMBS[name]())
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match="pixel limit") as error:
            read_image(path, max_pixels=100_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(error.value)
    assert peak < 8 * 2**20


def test_a_malformed_tiff_is_one_error_without_tifffile_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "malformed.tif"
    path.write_bytes(float_tiff_declaring(60000, 60000, strips=False))
    with caplog.at_level(logging.WARNING), pytest.raises(ImageReadError, match="pixel limit"):
        read_image(path, max_pixels=100_000_000)
    assert caplog.records == []
    assert logging.getLogger("tifffile").level == logging.NOTSET  # left as it was
