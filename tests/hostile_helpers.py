"""Tiny files whose headers declare huge images (or that inflate hugely), for the tests that
readers check sizes before decoding. Each is a small real file with its size fields patched."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import tifffile
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
BIG = (12000, 10000)
"""120 MP: over the CLI's 100 MP default, under Pillow's own 179 MP bomb check."""


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _small(image_format: str, **options: object) -> bytes:
    pixels = (np.arange(8 * 8 * 3) % 251).astype(np.uint8).reshape(8, 8, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int, depth: int = 8) -> bytes:
    """A PNG whose header says ``width`` x ``height`` RGB, with one empty row of data."""
    header = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * (1 + 3 * depth // 8))
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def tall_paeth_png16(height: int) -> bytes:
    """A real 16-bit RGB PNG of 1 x ``height`` pixels, every row Paeth-filtered (a few KB):
    a decoder that undoes Paeth along whole diagonals needs memory quadratic in the height."""
    rows = np.zeros((height, 1 + 6), np.uint8)
    rows[:, 0] = 4
    header = struct.pack(">IIBBBBB", 1, height, 16, 2, 0, 0, 0)
    idat = zlib.compress(rows.tobytes(), 9)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(_small("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(_small("GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen
    frame = data.index(b"\x2c")  # the image descriptor
    data[frame + 5 : frame + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(_small("BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header says ``width`` x ``height`` (up to 16384 a side)."""
    data = bytearray(_small("WEBP", lossless=True))
    start = data.index(b"VP8L") + 8
    assert data[start] == 0x2F
    (bits,) = struct.unpack("<I", data[start + 1 : start + 5])
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    data[start + 1 : start + 5] = struct.pack("<I", bits)
    return bytes(data)


def _patched_tiff(data: bytes, width: int, height: int, strips: bool = True) -> bytes:
    """``data`` with its size tags patched, and its rows per strip too where ``strips`` (else
    the strip tables no longer match the size: tifffile warns about a malformed file)."""
    patched = bytearray(data)
    tags = ((256, width), (257, height), (278, height))  # 278: rows per strip
    for tag, value in tags if strips else tags[:2]:
        for kind in (3, 4):  # SHORT or LONG
            entry = struct.pack("<HHI", tag, kind, 1)
            at = patched.find(entry)
            if at >= 0:
                field = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
                patched[at + 8 : at + 12] = field
                break
        else:
            raise AssertionError(f"no TIFF tag {tag}")
    return bytes(patched)


def float_tiff_declaring(width: int, height: int, strips: bool = True) -> bytes:
    """A float32 RGB TIFF (read by tifffile, not Pillow) declaring ``width`` x ``height``
    (``strips=False``: with strip tables that do not match, a malformed file)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((4, 4, 3), np.float32), photometric="rgb")
    return _patched_tiff(buffer.getvalue(), width, height, strips)


def tiff_declaring(width: int, height: int) -> bytes:
    """An 8-bit RGB TIFF (read by Pillow) declaring ``width`` x ``height``."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((4, 4, 3), np.uint8), photometric="rgb")
    return _patched_tiff(buffer.getvalue(), width, height)


BOMBS: dict[str, Callable[[], bytes]] = {
    "png8.png": lambda: png_declaring(*BIG),
    "png16.png": lambda: png_declaring(*BIG, depth=16),
    "jpeg.jpg": lambda: jpeg_declaring(*BIG),
    "tiff.tif": lambda: tiff_declaring(*BIG),
    "float.tif": lambda: float_tiff_declaring(60000, 60000),
    "webp.webp": lambda: webp_declaring(*BIG),
    "gif.gif": lambda: gif_declaring(*BIG),
    "bmp.bmp": lambda: bmp_declaring(*BIG),
}
"""File name -> a few hundred bytes declaring over 100 MP (the float TIFF: 3.6 GP)."""
