"""A minimal 16-bit PNG codec (numpy + zlib) for what Pillow cannot do.

Pillow keeps 16 bits per channel only for single-channel images; 16-bit RGB, RGBA and
gray+alpha PNGs are reduced to 8 bits on reading and cannot be written at all. This module reads
and writes exactly those: non-interlaced PNGs with 16-bit samples, as ``uint16`` arrays of shape
(H, W, C) with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS_BY_COLOR_TYPE = {0: 1, 4: 2, 2: 3, 6: 4}
_COLOR_TYPE_BY_CHANNELS = {c: t for t, c in _CHANNELS_BY_COLOR_TYPE.items()}
_SAMPLE_BYTES = 2


class Png16Error(ValueError):
    """The data is not a PNG this codec handles (or is corrupt)."""


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(SIGNATURE):
        raise Png16Error("not a PNG file")
    chunks, offset = [], len(SIGNATURE)
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        crc = data[offset + 8 + length : offset + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise Png16Error(f"chunk {kind!r} is truncated")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            raise Png16Error(f"chunk {kind!r} fails its CRC check")
        chunks.append((kind, body))
        offset += 12 + length
        if kind == b"IEND":
            return chunks
    raise Png16Error("PNG ends before its IEND chunk")


def png_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(width, height, bit depth, color type, interlace) from the IHDR of PNG bytes."""
    if not data.startswith(SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise Png16Error("not a PNG file")
    width, height, depth, color, _compression, _filter, interlace = struct.unpack(
        ">IIBBBBB", data[16:29]
    )
    return width, height, depth, color, interlace


def _paeth_row(filtered: bytes, previous: bytes, bpp: int) -> bytearray:
    row = bytearray(filtered)
    for i in range(len(row)):
        a = row[i - bpp] if i >= bpp else 0
        b = previous[i]
        c = previous[i - bpp] if i >= bpp else 0
        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
        predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        row[i] = (row[i] + predictor) & 0xFF
    return row


def _average_row(filtered: bytes, previous: bytes, bpp: int) -> bytearray:
    row = bytearray(filtered)
    for i in range(len(row)):
        a = row[i - bpp] if i >= bpp else 0
        row[i] = (row[i] + ((a + previous[i]) >> 1)) & 0xFF
    return row


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo the per-row PNG filters; Sub and Up are vectorised, Average and Paeth are not."""
    if len(raw) != height * (stride + 1):
        raise Png16Error(f"image data holds {len(raw)} bytes, expected {height * (stride + 1)}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    previous = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            current = line.copy()
        elif kind == 1:
            lanes = line.reshape(-1, bpp).astype(np.uint32)
            current = (np.cumsum(lanes, axis=0) & 0xFF).astype(np.uint8).ravel()
        elif kind == 2:
            current = line + previous
        elif kind == 3:
            current = np.frombuffer(_average_row(line.tobytes(), previous.tobytes(), bpp), np.uint8)
        elif kind == 4:
            current = np.frombuffer(_paeth_row(line.tobytes(), previous.tobytes(), bpp), np.uint8)
        else:
            raise Png16Error(f"row {y} uses unknown filter type {kind}")
        out[y] = current
        previous = out[y]
    return out


def decode_png16(data: bytes) -> np.ndarray:
    """Decode a non-interlaced 16-bit PNG into a (H, W, C) ``uint16`` array."""
    width, height, depth, color, interlace = png_header(data)
    if depth != 16 or color not in _CHANNELS_BY_COLOR_TYPE or interlace:
        raise Png16Error(f"not a non-interlaced 16-bit PNG (depth {depth}, color type {color})")
    channels = _CHANNELS_BY_COLOR_TYPE[color]
    compressed = b"".join(body for kind, body in _chunks(data) if kind == b"IDAT")
    try:
        raw = zlib.decompress(compressed)
    except zlib.error as error:
        raise Png16Error(f"corrupt image data: {error}") from error
    bpp = channels * _SAMPLE_BYTES
    rows = _unfilter(raw, height, width * bpp, bpp)
    return rows.view(">u2").reshape(height, width, channels).astype(np.uint16)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png16(
    pixels: np.ndarray, *, icc_profile: bytes | None = None, exif: bytes | None = None
) -> bytes:
    """Encode a (H, W, C) ``uint16`` array (C in 1..4) as a 16-bit PNG, Sub-filtered."""
    if pixels.ndim != 3 or pixels.shape[2] not in _COLOR_TYPE_BY_CHANNELS:
        raise ValueError(f"expected (H, W, C) with C in 1..4, got shape {pixels.shape}")
    height, width, channels = pixels.shape
    bpp = channels * _SAMPLE_BYTES
    rows = np.ascontiguousarray(pixels, ">u2").view(np.uint8).reshape(height, width * bpp)
    filtered = rows.copy()
    filtered[:, bpp:] = rows[:, bpp:] - rows[:, :-bpp]
    body = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, _COLOR_TYPE_BY_CHANNELS[channels], 0, 0, 0)
    parts = [SIGNATURE, _chunk(b"IHDR", header)]
    if icc_profile:
        parts.append(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    if exif:
        parts.append(_chunk(b"eXIf", exif.removeprefix(b"Exif\0\0")))
    parts += [_chunk(b"IDAT", zlib.compress(body.tobytes(), 6)), _chunk(b"IEND", b"")]
    return b"".join(parts)


def write_png16(path: str | Path, pixels: np.ndarray, **metadata: bytes | None) -> None:
    """Write :func:`encode_png16` output to ``path``."""
    Path(path).write_bytes(encode_png16(pixels, **metadata))
