from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from mordasr.io import png16
from mordasr.io.image import read_image
from mordasr.io.png16 import SIGNATURE, Png16Error, decode_png16, encode_png16, write_png16


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _filter_row(kind: int, row: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    """PNG filter of one row of bytes (the encoder side, computed independently)."""
    raw, up = row.astype(np.int32), prior.astype(np.int32)
    left = np.concatenate([np.zeros(bpp, np.int32), raw[:-bpp]])
    upper_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
    if kind == 0:
        predictor = np.zeros_like(raw)
    elif kind == 1:
        predictor = left
    elif kind == 2:
        predictor = up
    elif kind == 3:
        predictor = (left + up) // 2
    else:
        p = left + up - upper_left
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upper_left)
        predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upper_left))
    return ((raw - predictor) % 256).astype(np.uint8)


def _png_with_every_filter(pixels: np.ndarray) -> bytes:
    height, width, channels = pixels.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = pixels.astype(">u2").view(np.uint8).reshape(height, -1)
    body, prior = [], np.zeros(rows.shape[1], np.uint8)
    for y, row in enumerate(rows):
        kind = y % 5
        body.append(bytes([kind]) + _filter_row(kind, row, prior, 2 * channels).tobytes())
        prior = row
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(body)))
        + _chunk(b"IEND", b"")
    )


def _reference_unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """The previous byte-by-byte reader's unfiltering (PNG spec, section 9), kept as the
    reference the vectorised reader must equal bit for bit."""
    out, previous = bytearray(), bytearray(stride)
    for y in range(height):
        kind, row = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 0:
                predictor = 0
            elif kind == 1:
                predictor = a
            elif kind == 2:
                predictor = b
            elif kind == 3:
                predictor = (a + b) >> 1
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            row[i] = (row[i] + predictor) & 0xFF
        out += row
        previous = row
    return np.frombuffer(bytes(out), np.uint8).reshape(height, stride)


def _png_of_filtered_bytes(raw: bytes, height: int, width: int, channels: int) -> bytes:
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize(("height", "width"), [(1, 9), (13, 5), (6, 21), (17, 17)])
@pytest.mark.parametrize("filters", [(0, 1, 2, 3, 4), (0, 1, 2), (3,), (4,)])
def test_decoder_equals_the_byte_by_byte_reference_on_random_data(
    channels: int, height: int, width: int, filters: tuple[int, ...]
) -> None:
    rng = np.random.default_rng([channels, height, width, len(filters)])
    stride = width * 2 * channels
    body = rng.integers(0, 256, (height, stride + 1), dtype=np.uint8)
    body[:, 0] = rng.choice(filters, height)
    raw = body.tobytes()
    expected = _reference_unfilter(raw, height, stride, 2 * channels)
    samples = expected.view(">u2").reshape(height, width, channels).astype(np.uint16)
    decoded = decode_png16(_png_of_filtered_bytes(raw, height, width, channels))
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, samples)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize(("height", "width"), [(23, 5), (40, 1), (9, 17)])
def test_decoding_in_bands_of_rows_equals_the_reference(
    monkeypatch: pytest.MonkeyPatch, channels: int, height: int, width: int
) -> None:
    bpp = 2 * channels
    monkeypatch.setattr(png16, "BAND_BYTES", 4 * bpp * (width + 4) * 4)  # bands of 4 rows
    assert png16.band_rows(width, bpp, png16.BAND_BYTES) == 4
    rng = np.random.default_rng([channels, height, width])
    body = rng.integers(0, 256, (height, width * bpp + 1), dtype=np.uint8)
    body[:, 0] = rng.integers(0, 5, height)
    raw = body.tobytes()
    expected = _reference_unfilter(raw, height, width * bpp, bpp)
    samples = expected.view(">u2").reshape(height, width, channels).astype(np.uint16)
    assert np.array_equal(
        decode_png16(_png_of_filtered_bytes(raw, height, width, channels)), samples
    )


def test_a_tall_thin_paeth_png_decodes_in_bounded_memory() -> None:
    height = 4000  # decoded in one band, this would take 2 x 4000 x 4000 x 6 x 2 B = 384 MB
    body = np.zeros((height, 6 + 1), np.uint8)
    body[:, 0] = 4
    data = _png_of_filtered_bytes(body.tobytes(), height, 1, 3)
    tracemalloc.start()
    try:
        decoded = decode_png16(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded.shape == (height, 1, 3) and not decoded.any()
    assert peak < png16.BAND_BYTES + 16 * 2**20


def test_image_data_beyond_the_declared_size_is_not_inflated() -> None:
    bomb = zlib.compress(bytes(64 * 2**20))  # 64 MiB of zeros in about 64 KB
    data = _png_of_filtered_bytes(b"", 2, 2, 3)
    data = data.replace(_chunk(b"IDAT", zlib.compress(b"")), _chunk(b"IDAT", bomb))
    tracemalloc.start()
    try:
        with pytest.raises(Png16Error, match="expected 26"):
            decode_png16(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_unknown_filter_type_is_reported() -> None:
    raw = bytes([5]) + bytes(6)
    with pytest.raises(Png16Error, match="unknown filter type 5"):
        decode_png16(_png_of_filtered_bytes(raw, 1, 1, 3))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_decoder_undoes_all_five_filter_types(channels: int) -> None:
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 65536, (11, 7, channels), dtype=np.uint16)
    assert np.array_equal(decode_png16(_png_with_every_filter(pixels)), pixels)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_encoded_png_decodes_to_the_same_samples(channels: int) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (9, 13, channels), dtype=np.uint16)
    assert np.array_equal(decode_png16(encode_png16(pixels)), pixels)


def test_encoded_png_is_read_by_pillow() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (6, 5, 4), dtype=np.uint16)
    image = Image.open(io.BytesIO(encode_png16(pixels)))
    assert image.mode == "RGBA" and image.size == (5, 6)
    # Pillow keeps the high byte of each 16-bit sample when it reduces to 8 bits.
    assert np.array_equal(np.asarray(image), (pixels >> 8).astype(np.uint8))


def test_gray_encoding_matches_pillow_16_bit_reading() -> None:
    pixels = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16, 1)
    image = Image.open(io.BytesIO(encode_png16(pixels)))
    assert np.array_equal(np.asarray(image), pixels[..., 0])


def test_icc_profile_is_embedded() -> None:
    data = encode_png16(np.zeros((2, 2, 3), np.uint16), icc_profile=b"fake profile bytes")
    assert Image.open(io.BytesIO(data)).info["icc_profile"] == b"fake profile bytes"


def test_crc_mismatch_is_detected() -> None:
    data = bytearray(encode_png16(np.zeros((2, 2, 3), np.uint16)))
    data[45] ^= 0xFF  # inside the IDAT body
    with pytest.raises(Png16Error, match="CRC"):
        decode_png16(bytes(data))


def test_eight_bit_png_is_refused() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, "PNG")
    with pytest.raises(Png16Error, match="16-bit"):
        decode_png16(buffer.getvalue())


def test_sixteen_bit_colour_png_files_are_decoded_once_without_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (5, 7, 4), dtype=np.uint16)
    write_png16(tmp_path / "a.png", pixels)

    def refuse(self: object) -> None:
        raise AssertionError("Pillow decoded the pixels too")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", refuse)
    decoded = read_image(tmp_path / "a.png")
    assert decoded.bit_depth == 16 and decoded.alpha is not None
    assert torch.equal(
        decoded.tensor, torch.from_numpy(pixels[..., :3] / 65535.0).permute(2, 0, 1).float()
    )


def test_exif_orientation_of_a_sixteen_bit_png_is_applied(tmp_path: Path) -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 3000
    exif = Image.Exif()
    exif[0x0112] = 6
    write_png16(tmp_path / "a.png", pixels, exif=exif.tobytes())
    decoded = read_image(tmp_path / "a.png")
    assert decoded.tensor.shape == (3, 3, 2)
    upright = np.rot90(pixels, -1)  # orientation 6: rotate 90 degrees clockwise
    assert torch.equal(decoded.tensor[0], torch.from_numpy(upright[..., 0] / 65535.0).float())
