"""A minimal 16-bit PNG codec (numpy + zlib) for what Pillow cannot do.

Pillow keeps 16 bits per channel only for single-channel images; 16-bit RGB, RGBA and
gray+alpha PNGs are reduced to 8 bits on reading and cannot be written at all. This module reads
and writes exactly those: non-interlaced PNGs with 16-bit samples, as ``uint16`` arrays of shape
(H, W, C) with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS_BY_COLOR_TYPE = {0: 1, 4: 2, 2: 3, 6: 4}
_COLOR_TYPE_BY_CHANNELS = {c: t for t, c in _CHANNELS_BY_COLOR_TYPE.items()}
_SAMPLE_BYTES = 2
BAND_BYTES = 256 * 2**20
"""Working memory of the Average/Paeth decoder: it goes through bands of rows sized to fit,
so a file declaring a tall, thin image (1 x 100000) never needs memory quadratic in its
height; a band covers most photos whole (2000 x 1500 RGB: one band)."""


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


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo the per-row PNG filters, vectorised with numpy.

    Images filtered with None, Sub and Up only are undone row by row (whole rows at once).
    Average and Paeth make every byte depend on its reconstructed left neighbour, so those
    images are undone along anti-diagonals of pixels instead: pixel (y, x) needs only
    (y, x-1), (y-1, x) and (y-1, x-1), all on the previous two diagonals, so each diagonal is
    one vectorised step (height + width steps in all).
    """
    if len(raw) != height * (stride + 1):
        raise Png16Error(f"image data holds {len(raw)} bytes, expected {height * (stride + 1)}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    kinds, data = rows[:, 0], rows[:, 1:]
    unknown = np.flatnonzero(kinds > 4)
    if unknown.size:
        raise Png16Error(f"row {unknown[0]} uses unknown filter type {kinds[unknown[0]]}")
    if not bool((kinds >= 3).any()):
        return _unfilter_rows(kinds, data, bpp)
    return _unfilter_bands(kinds, data.reshape(height, stride // bpp, bpp))


def _unfilter_rows(kinds: np.ndarray, data: np.ndarray, bpp: int) -> np.ndarray:
    """None, Sub and Up rows: a copy, a running sum per byte lane, an addition."""
    out = np.empty_like(data)
    previous = np.zeros(data.shape[1], np.uint8)
    for y, kind in enumerate(kinds.tolist()):
        line = data[y]
        if kind == 0:
            out[y] = line
        elif kind == 1:
            out[y] = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).ravel()
        else:
            np.add(line, previous, out=out[y])
        previous = out[y]
    return out


def band_rows(width: int, bpp: int, budget: int = BAND_BYTES) -> int:
    """Rows per band of :func:`_unfilter_diagonals` that keep its two (rows + width) x rows
    int16 arrays within ``budget`` bytes."""
    per_cell = 4 * bpp  # two arrays of int16 samples
    return max(1, int((-width + math.sqrt(width * width + 4 * budget / per_cell)) / 2))


def _unfilter_bands(kinds: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Any filters, band after band of rows (:func:`band_rows`), each band predicted from
    the last row of the one before."""
    height, width, bpp = data.shape
    out = np.empty((height, width * bpp), np.uint8)
    prior = np.zeros((width, bpp), np.int16)
    step = band_rows(width, bpp, BAND_BYTES)  # read at call time: tests shrink it
    for top in range(0, height, step):
        rows = slice(top, min(height, top + step))
        band = _unfilter_diagonals(kinds[rows], data[rows], prior)
        out[rows] = band.reshape(band.shape[0], width * bpp)
        prior = band[-1].astype(np.int16)
    return out


def _unfilter_diagonals(kinds: np.ndarray, data: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Any filters on rows that follow the reconstructed row ``prior`` (zeros above the
    image), one anti-diagonal of pixels (y + x constant) per step.

    ``skewed[d + 2, y + 1]`` holds pixel (y, d - y), so a diagonal and its neighbours
    ((y, x-1) and (y-1, x) on the previous diagonal, (y-1, x-1) on the one before) are
    contiguous slices; the leading row holds ``prior`` and the two leading diagonals stay zero,
    which is what PNG predicts left of the image. Filters are selected per row by 0/1 masks,
    not branches, and only the filters the image uses are computed.
    """
    height, width, bpp = data.shape
    filtered = np.zeros((height + width - 1, height, bpp), np.int16)
    _skew(filtered, width)[...] = data
    skewed = np.zeros((height + width + 1, height + 1, bpp), np.int16)
    skewed[1 : width + 1, 0] = prior  # skewed[x + 1, 0]: pixel (-1, x)
    used = {k: (kinds == k).astype(np.int16)[:, None].repeat(bpp, 1) for k in range(1, 5)}
    used = {k: mask for k, mask in used.items() if mask.any()}
    for d in range(height + width - 1):
        lo, hi = max(0, d - width + 1), min(height, d + 1)
        a, b = skewed[d + 1, lo + 1 : hi + 1], skewed[d + 1, lo:hi]
        predictor = filtered[d, lo:hi].copy()
        if 1 in used:
            predictor += used[1][lo:hi] * a
        if 2 in used:
            predictor += used[2][lo:hi] * b
        if 3 in used:
            predictor += used[3][lo:hi] * ((a + b) // 2)
        if 4 in used:
            c = skewed[d, lo:hi]
            to_up, to_left = b - c, a - c
            pa, pb, pc = np.abs(to_up), np.abs(to_left), np.abs(to_up + to_left)
            take_a = (pa <= pb) & (pa <= pc)
            to_up *= (pb <= pc) > take_a
            to_left *= take_a
            to_up += to_left
            to_up += c
            to_up *= used[4][lo:hi]
            predictor += to_up
        np.bitwise_and(predictor, 0xFF, out=skewed[d + 2, lo + 1 : hi + 1])
    return _skew(skewed[2:, 1:], width).astype(np.uint8)


def _skew(diagonals: np.ndarray, width: int) -> np.ndarray:
    """The (rows, ``width``, bpp) view ``v[y, x] = diagonals[x + y, y]`` of a diagonal-major
    array (every entry it touches lies inside ``diagonals``)."""
    step_d, step_y, lane = diagonals.strides
    rows = diagonals.shape[1]
    return np.lib.stride_tricks.as_strided(
        diagonals, (rows, width, diagonals.shape[2]), (step_d + step_y, step_d, lane)
    )


def decode_png16(data: bytes) -> np.ndarray:
    """Decode a non-interlaced 16-bit PNG into a (H, W, C) ``uint16`` array."""
    return read_png16(data)[0]


def read_png16(data: bytes) -> tuple[np.ndarray, bytes | None]:
    """Decode a non-interlaced 16-bit PNG in one pass: the (H, W, C) ``uint16`` samples and
    the body of its ``eXIf`` chunk (None without one)."""
    width, height, depth, color, interlace = png_header(data)
    if depth != 16 or color not in _CHANNELS_BY_COLOR_TYPE or interlace:
        raise Png16Error(f"not a non-interlaced 16-bit PNG (depth {depth}, color type {color})")
    channels = _CHANNELS_BY_COLOR_TYPE[color]
    chunks = _chunks(data)
    compressed = b"".join(body for kind, body in chunks if kind == b"IDAT")
    exif = next((body for kind, body in chunks if kind == b"eXIf"), None)
    bpp = channels * _SAMPLE_BYTES
    expected = height * (width * bpp + 1)
    try:  # at most one byte more than the header promises: a zlib bomb stops there
        raw = zlib.decompressobj().decompress(compressed, expected + 1)
    except zlib.error as error:
        raise Png16Error(f"corrupt image data: {error}") from error
    rows = _unfilter(raw, height, width * bpp, bpp)
    return rows.view(">u2").reshape(height, width, channels).astype(np.uint16), exif


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
