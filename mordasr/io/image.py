"""Read and write images for inference, keeping what the input had: gray or colour, alpha,
16-bit depth, ICC profile and EXIF.

Files are recognised by content (Pillow's format detection), never by extension. A decoded
image becomes a float tensor (C, H, W) in [0, 1] with C = 1 (gray) or 3 (RGB); an alpha channel
is returned separately so the caller can upscale it on its own. EXIF orientation is applied on
reading so pixels are upright, and the orientation tag is reset in the EXIF kept for saving.
16-bit PNGs with colour or alpha, which Pillow reduces to 8 bits, are decoded and written by
:mod:`mordasr.io.png16` to keep all 16 bits.
"""

from __future__ import annotations

import io
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mordasr.io.png16 import Png16Error, decode_png16, encode_png16, png_header

_ORIENTATION_TAG = 0x0112
_EXTENSION_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
_EXIF_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
# Pillow modes read as 16 bits per sample (I is scaled from the 16-bit range, F taken as is).
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


class ImageReadError(Exception):
    """A file cannot be read as an image (missing, unreadable, corrupt or unsupported)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class UnsupportedFormatError(ValueError):
    """The output file name's extension names no image format this module writes."""


@dataclass
class DecodedImage:
    """An image ready for a network, plus what is needed to save a result like it."""

    tensor: torch.Tensor  # (C, H, W) float32 in [0, 1]; C = 1 (gray) or 3 (RGB)
    alpha: torch.Tensor | None  # (1, H, W) float32 in [0, 1], or None when opaque
    bit_depth: int  # bits per sample of the source: 8 or 16
    mode: str  # the source's Pillow mode, e.g. "RGBA", "I;16", "P"
    format: str  # the detected file format, e.g. "PNG"
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation reset: pixels are already upright

    @property
    def is_gray(self) -> bool:
        """Whether the colour part has a single channel."""
        return self.tensor.shape[0] == 1


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, ...) array so it displays upright."""
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: a.swapaxes(0, 1)[::-1],
    }
    return np.ascontiguousarray(transforms.get(orientation, transforms[1])(pixels))


def _normalised(image: Image.Image) -> tuple[np.ndarray, int]:
    """Pixels as float32 (H, W, C) in [0, 1] with C in {1, 2, 3, 4}, and the source bit depth."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        peak = 1.0 if mode == "F" else 65535.0
        return (np.clip(values / peak, 0.0, 1.0)[..., None]).astype(np.float32), 16
    if "transparency" in image.info and mode in ("P", "L", "RGB"):
        image = image.convert("LA" if mode == "L" else "RGBA")
    elif mode == "P":
        image = image.convert("RGB")
    elif mode in ("PA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGBA" if mode in ("PA", "RGBa") else "RGB")
    elif mode in ("1", "La"):
        image = image.convert("L" if mode == "1" else "LA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(f"unsupported image mode {mode}")
    values = np.asarray(image, dtype=np.float32) / 255.0
    return (values[..., None] if values.ndim == 2 else values), 8


def _split_alpha(pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    channels = pixels.shape[2]
    color = pixels[..., : 1 if channels <= 2 else 3]
    tensor = torch.from_numpy(np.ascontiguousarray(color.transpose(2, 0, 1)))
    if channels in (2, 4):
        alpha = torch.from_numpy(np.ascontiguousarray(pixels[..., -1][None]))
        return tensor, alpha
    return tensor, None


def _decode(data: bytes) -> DecodedImage:
    image = Image.open(io.BytesIO(data))
    image.load()
    exif = image.getexif()
    orientation = int(exif.get(_ORIENTATION_TAG, 1))
    if _ORIENTATION_TAG in exif:
        del exif[_ORIENTATION_TAG]
    pixels, bit_depth = _normalised(image)
    if image.format == "PNG" and png_header(data)[2] == 16 and image.mode not in _SIXTEEN_BIT_MODES:
        try:
            pixels, bit_depth = decode_png16(data).astype(np.float32) / 65535.0, 16
        except Png16Error:
            bit_depth = 16  # e.g. interlaced: keep Pillow's 8-bit pixels, still save 16-bit
    tensor, alpha = _split_alpha(orient(pixels, orientation))
    return DecodedImage(
        tensor=tensor,
        alpha=alpha,
        bit_depth=bit_depth,
        mode=image.mode,
        format=image.format or "unknown",
        icc_profile=image.info.get("icc_profile") or None,
        exif=exif.tobytes() if len(exif) and image.format in _EXIF_FORMATS else None,
    )


def read_image(path: str | Path) -> DecodedImage:
    """Read an image file by content; raises :class:`ImageReadError` if that is impossible."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImageReadError(path, error.strerror or str(error)) from error
    try:
        return _decode(data)
    except UnidentifiedImageError as error:
        raise ImageReadError(path, "not a recognised image format") from error
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise ImageReadError(path, str(error) or type(error).__name__) from error


def read_rgb(path: str | Path) -> torch.Tensor:
    """Read an image file as a (3, H, W) float RGB tensor in [0, 1], for code that needs colour
    only: gray is replicated, alpha dropped, 16-bit precision and EXIF orientation kept."""
    return read_image(path).tensor.expand(3, -1, -1).contiguous()


def _to_hwc(tensor: torch.Tensor, alpha: torch.Tensor | None) -> np.ndarray:
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"expected a (1|3, H, W) tensor, got shape {tuple(tensor.shape)}")
    planes = tensor if alpha is None else torch.cat([tensor, alpha.to(tensor)], 0)
    pixels = planes.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return np.ascontiguousarray(pixels)


def _quantise(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    peak, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    return np.round(pixels * peak).astype(dtype)


def _pillow_image(pixels: np.ndarray) -> Image.Image:
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16:
        return Image.fromarray(pixels[..., 0])  # single channel: Pillow mode I;16
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)


def _encode(
    pixels: np.ndarray,
    image_format: str,
    bit_depth: int,
    icc_profile: bytes | None,
    exif: bytes | None,
    quality: int,
) -> bytes:
    channels = pixels.shape[2]
    if bit_depth == 16 and image_format == "PNG":
        return encode_png16(_quantise(pixels, 16), icc_profile=icc_profile, exif=exif)
    if bit_depth == 16 and not (image_format == "TIFF" and channels == 1):
        warnings.warn(f"{image_format} output is written with 8 bits per sample", stacklevel=3)
        bit_depth = 8
    if channels in (2, 4) and image_format not in _ALPHA_FORMATS:
        warnings.warn(f"{image_format} cannot store alpha; it is dropped", stacklevel=3)
        pixels = pixels[..., : channels - 1]
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif and image_format in _EXIF_FORMATS:
        options["exif"] = exif
    if image_format in ("JPEG", "WEBP"):
        options["quality"] = quality
    buffer = io.BytesIO()
    _pillow_image(_quantise(pixels, bit_depth)).save(buffer, image_format, **options)
    return buffer.getvalue()


def save_image(
    path: str | Path,
    tensor: torch.Tensor,
    *,
    alpha: torch.Tensor | None = None,
    bit_depth: int = 8,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 95,
) -> None:
    """Save a (C, H, W) tensor in [0, 1] (C = 1 or 3) with optional (1, H, W) alpha.

    The format follows the extension of ``path`` (png, jpg/jpeg, webp, tif/tiff, bmp). 16-bit
    output is kept for PNG (any channels) and gray TIFF; other formats fall back to 8 bits with a
    warning, as does alpha for formats without it. The file is written to a temporary name and
    renamed, so an interrupted save never leaves a truncated image behind.
    """
    path = Path(path)
    image_format = _EXTENSION_FORMATS.get(path.suffix.lower())
    if image_format is None:
        known = ", ".join(sorted(_EXTENSION_FORMATS))
        raise UnsupportedFormatError(f"cannot tell the image format of {path.name}; use {known}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    data = _encode(_to_hwc(tensor, alpha), image_format, bit_depth, icc_profile, exif, quality)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temp, "xb") as file:
            file.write(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def save_like(
    path: str | Path,
    tensor: torch.Tensor,
    source: DecodedImage,
    *,
    alpha: torch.Tensor | None = None,
    quality: int = 95,
) -> None:
    """Save a result with the source image's bit depth, ICC profile and EXIF."""
    save_image(
        path,
        tensor,
        alpha=alpha,
        bit_depth=source.bit_depth,
        icc_profile=source.icc_profile,
        exif=source.exif,
        quality=quality,
    )
