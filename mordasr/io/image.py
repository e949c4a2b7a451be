"""Read and write images for inference, keeping what the input had: gray or colour, alpha,
16-bit or float samples, ICC profile and EXIF, and saying when something cannot be kept.

Files are recognised by content (Pillow's format detection), never by extension. A decoded
image becomes a float tensor (C, H, W) in [0, 1] with C = 1 (gray) or 3 (RGB); an alpha channel
is returned separately so the caller can upscale it on its own. EXIF orientation is applied on
reading so pixels are upright, and the orientation tag is reset in the EXIF kept for saving.
16-bit PNGs with colour or alpha, which Pillow reduces to 8 bits, are decoded and written by
:mod:`mordasr.io.png16` to keep all 16 bits; TIFFs with 16-bit colour or float samples, which
Pillow cannot hold either, are read and written with ``tifffile``. Float samples are scaled by
the range they were stored in (``[0, 1]``, ``[0, 255]`` or ``[0, 65535]``; anything else is
refused with the range found) and written back in it.

Whatever cannot be carried over (animation frames beyond the first, alpha or depth a format
cannot store, a colour profile that no longer describes the pixels) is reported with a
:class:`DataDroppedWarning`, so a command line can list it.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import tifffile
import torch
from PIL import Image, UnidentifiedImageError

from mordasr.io.png16 import Png16Error, encode_png16, png_header, read_png16

CHUNK_VALUES = 1 << 22
"""Samples per chunk of the whole-image conversions on save (16 MiB of float32)."""
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
# Pillow modes read as 16 bits per sample (I is scaled from the 16-bit range, F by its range).
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_TIFF_MAGIC = (b"II*\0", b"MM\0*")
_ICC_TAG = 34675
_EXIF_IFD = 0x8769
# EXIF tags holding the pixel size: ImageWidth/ImageLength (IFD0), PixelX/YDimension (Exif IFD).
_IFD0_SIZE_TAGS = (0x0100, 0x0101)
_EXIF_SIZE_TAGS = (0xA002, 0xA003)
_FLOAT_RANGES = (1.0, 255.0, 65535.0)
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
"""What ``os.link`` raises on a file system without hard links (FAT, some network shares)."""


class ImageReadError(Exception):
    """A file cannot be read as an image (missing, unreadable, corrupt or unsupported)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ImageTooLargeError(ValueError):
    """An image's header declares more pixels than the reader was allowed to decode."""


def format_of_suffix(path: str | Path) -> str | None:
    """The format :func:`save_image` writes for ``path``'s extension (``"PNG"``, ``"JPEG"``,
    ...), or None when it writes none for it."""
    return _EXTENSION_FORMATS.get(Path(path).suffix.lower())


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """Raise :class:`ImageTooLargeError` when ``width`` x ``height`` is over ``max_pixels``
    (``None``: no limit); called with the size from a header, before any decoding."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} is more than the {max_pixels:,} pixel limit "
            "(checked before decoding)"
        )


class UnsupportedFormatError(ValueError):
    """The output file name's extension names no image format this module writes."""


class DataDroppedWarning(UserWarning):
    """Part of an image could not be kept (``what``: e.g. "animation frames", "alpha")."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(detail)
        self.what = what


def _dropped(what: str, detail: str) -> None:
    warnings.warn(DataDroppedWarning(what, detail), stacklevel=3)


@dataclass
class DecodedImage:
    """An image ready for a network, plus what is needed to save a result like it."""

    tensor: torch.Tensor  # (C, H, W) float32 in [0, 1]; C = 1 (gray) or 3 (RGB)
    alpha: torch.Tensor | None  # (1, H, W) float32 in [0, 1], or None when opaque
    bit_depth: int  # bits per sample of the source: 8, 16, or 32 (float samples)
    mode: str  # the source's Pillow mode, e.g. "RGBA", "I;16", "P"
    format: str  # the detected file format, e.g. "PNG"
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation reset: pixels are already upright
    value_scale: float = 1.0  # float sources: the peak their samples were stored against

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


def unit_float(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Float samples scaled to [0, 1] by the range they were stored in, and that range's peak.

    The range is the smallest of [0, 1], [0, 255] and [0, 65535] holding every sample (a very
    dark [0, 255] image whose samples all lie in [0, 1] is therefore taken as [0, 1]). Negative,
    non-finite or larger samples (HDR) are refused: no scaling would be right for them.
    """
    if not np.isfinite(values).all():
        raise ValueError("float samples include NaN or infinity; tone-map to [0, 1] first")
    low, high = float(values.min()), float(values.max())
    if low < 0.0:
        raise ValueError(
            f"float samples span [{low:.4g}, {high:.4g}]; negative values have no display "
            "meaning: tone-map to [0, 1] first"
        )
    for peak in _FLOAT_RANGES:
        if high <= peak:
            return (values / peak).astype(np.float32), peak
    raise ValueError(
        f"float samples reach {high:.4g}, beyond the 16-bit range (HDR?); tone-map to [0, 1] first"
    )


def _normalised(image: Image.Image) -> tuple[np.ndarray, int, float]:
    """Pixels as float32 (H, W, C) in [0, 1] with C in {1, 2, 3, 4}, the source bit depth and,
    for float samples, the peak of their range."""
    mode = image.mode
    if mode == "F":
        values, peak = unit_float(np.asarray(image, dtype=np.float64))
        return values[..., None], 32, peak
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        return (np.clip(values / 65535.0, 0.0, 1.0)[..., None]).astype(np.float32), 16, 1.0
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
    return (values[..., None] if values.ndim == 2 else values), 8, 1.0


def _split_alpha(pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    channels = pixels.shape[2]
    color = pixels[..., : 1 if channels <= 2 else 3]
    tensor = torch.from_numpy(np.ascontiguousarray(color.transpose(2, 0, 1)))
    if channels in (2, 4):
        alpha = torch.from_numpy(np.ascontiguousarray(pixels[..., -1][None]))
        return tensor, alpha
    return tensor, None


def _report_frames(count: int) -> None:
    if count > 1:
        _dropped("animation frames", f"only the first of {count} frames is kept")


def _deep_tiff_page(data: bytes) -> tifffile.TiffPage | None:
    """The first page of a TIFF whose samples Pillow cannot hold (float, or 16-bit with more
    than one channel), or None when Pillow reads it fully."""
    if data[:4] not in _TIFF_MAGIC:
        return None
    try:
        tiff = tifffile.TiffFile(io.BytesIO(data))
    except (tifffile.TiffFileError, ValueError, OSError):
        return None
    page = cast(tifffile.TiffPage, tiff.pages[0])  # the first page is never a TiffFrame
    deep = page.dtype is not None and (
        page.dtype.kind == "f" or (page.dtype.itemsize == 2 and page.samplesperpixel > 1)
    )
    usable = page.photometric in (1, 2) and page.samplesperpixel in (1, 2, 3, 4)
    if not (deep and usable):
        tiff.close()
        return None
    _report_frames(len(tiff.pages))
    return page


def _decode_deep_tiff(page: tifffile.TiffPage) -> DecodedImage:
    values = page.asarray()
    if "S" not in page.axes:
        values = values[..., None]
    elif page.axes.index("S") == 0:
        values = np.moveaxis(values, 0, -1)
    if values.dtype.kind == "f":
        pixels, peak, bit_depth = *unit_float(values.astype(np.float64)), 32
    else:
        pixels, peak, bit_depth = values.astype(np.float32) / 65535.0, 1.0, 16
    orientation = page.tags.get(_ORIENTATION_TAG)
    icc = page.tags.get(_ICC_TAG)
    tensor, alpha = _split_alpha(orient(pixels, int(orientation.value) if orientation else 1))
    return DecodedImage(
        tensor=tensor,
        alpha=alpha,
        bit_depth=bit_depth,
        mode=f"{page.dtype}x{page.samplesperpixel}",
        format="TIFF",
        icc_profile=bytes(icc.value) if icc else None,
        value_scale=peak,
    )


@contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Keep tifffile's warnings about a malformed file (logged, one line each) off stderr:
    the file's failure is reported once, as one line, by the caller."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # it logs a malformed file at ERROR
    try:
        yield
    finally:
        logger.setLevel(level)


def _decode(data: bytes, max_pixels: int | None = None) -> DecodedImage:
    """Decode image bytes; every path checks the size its header declares against
    ``max_pixels`` first, so a tiny file that claims a huge image is refused unread."""
    with _quiet_tifffile():
        return _decode_any(data, max_pixels)


def _decode_any(data: bytes, max_pixels: int | None) -> DecodedImage:
    page = _deep_tiff_page(data)
    if page is not None:
        try:
            check_pixels(page.imagewidth, page.imagelength, max_pixels)
            return _decode_deep_tiff(page)
        except (KeyError, NotImplementedError, RuntimeError) as error:  # e.g. codec missing
            if page.dtype is not None and page.dtype.kind == "f":
                raise ValueError(f"float TIFF cannot be decoded: {error}") from error
            _dropped("16-bit depth", f"read with 8 bits per sample ({error})")
        finally:
            page.parent.close()
    with warnings.catch_warnings():
        if max_pixels is not None:  # the limit checked next replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))  # reads the header only
    check_pixels(*image.size, max_pixels)
    sixteen_bit_png = (
        image.format == "PNG" and png_header(data)[2] == 16 and image.mode not in _SIXTEEN_BIT_MODES
    )
    decoded = _decode_png16(data) if sixteen_bit_png else None
    if decoded is None:
        image.load()
        exif = image.getexif()
        pixels, bit_depth, peak = _normalised(image)
        bit_depth = 16 if sixteen_bit_png else bit_depth  # e.g. interlaced: 8-bit pixels
    else:
        (pixels, exif), bit_depth, peak = decoded, 16, 1.0
    _report_frames(getattr(image, "n_frames", 1))
    orientation = int(exif.get(_ORIENTATION_TAG, 1))
    if _ORIENTATION_TAG in exif:
        del exif[_ORIENTATION_TAG]
    tensor, alpha = _split_alpha(orient(pixels, orientation))
    return DecodedImage(
        tensor=tensor,
        alpha=alpha,
        bit_depth=bit_depth,
        mode=image.mode,
        format=image.format or "unknown",
        icc_profile=image.info.get("icc_profile") or None,
        exif=exif.tobytes() if len(exif) and image.format in _EXIF_FORMATS else None,
        value_scale=peak,
    )


def _decode_png16(data: bytes) -> tuple[np.ndarray, Image.Exif] | None:
    """16-bit colour or gray+alpha PNG pixels (which Pillow reduces to 8 bits) and the EXIF,
    decoded once by :mod:`mordasr.io.png16`; None where that codec cannot (interlaced)."""
    try:
        samples, exif_body = read_png16(data)
    except Png16Error:
        return None
    exif = Image.Exif()
    if exif_body:
        exif.load(exif_body)
    return samples.astype(np.float32) / 65535.0, exif


def sniff_format(path: str | Path) -> str | None:
    """The image format of a file from its header (e.g. "PNG"), or None if it is not one."""
    try:
        with Image.open(path) as image:
            return image.format
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        pass
    try:
        with open(path, "rb") as file:
            return "TIFF" if file.read(4) in _TIFF_MAGIC else None
    except OSError:
        return None


def read_image(path: str | Path, max_pixels: int | None = None) -> DecodedImage:
    """Read an image file by content; raises :class:`ImageReadError` if that is impossible,
    or if its header declares more than ``max_pixels`` pixels (``None``: no limit but
    Pillow's own decompression-bomb check), before a pixel is decoded."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImageReadError(path, error.strerror or str(error)) from error
    try:
        return _decode(data, max_pixels)
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
    planes = planes.detach()
    height, width = planes.shape[1:]
    pixels = np.empty((height, width, planes.shape[0]), np.float32)
    for rows in _row_chunks(height, width * planes.shape[0]):
        pixels[rows] = planes[:, rows].float().clamp(0, 1).cpu().permute(1, 2, 0).numpy()
    return pixels


def _row_chunks(height: int, row_values: int) -> list[slice]:
    """Row ranges of about :data:`CHUNK_VALUES` values each: whole-image conversions go chunk by
    chunk, so a 48 MP result never has more than one float copy alive beside its source."""
    step = max(1, CHUNK_VALUES // max(row_values, 1))
    return [slice(start, min(start + step, height)) for start in range(0, height, step)]


def _quantise(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """``round(pixels * peak)`` as 8- or 16-bit integers, computed in row chunks."""
    peak, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    result = np.empty(pixels.shape, dtype)
    for rows in _row_chunks(pixels.shape[0], math.prod(pixels.shape[1:])):
        chunk = pixels[rows] * np.float32(peak)
        result[rows] = np.round(chunk, out=chunk)
    return result


def _pillow_image(pixels: np.ndarray) -> Image.Image:
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16:
        return Image.fromarray(pixels[..., 0])  # single channel: Pillow mode I;16
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)


def profile_fits(icc_profile: bytes, channels: int) -> bool:
    """Whether an ICC profile describes gray (1 colour channel) or RGB (3) pixels: its header
    carries the ``acsp`` signature and the matching colour space (``GRAY`` or ``RGB``)."""
    if len(icc_profile) < 128 or icc_profile[36:40] != b"acsp":
        return False
    return icc_profile[16:20] == (b"GRAY" if channels == 1 else b"RGB ")


def resized_exif(exif: bytes, width: int, height: int) -> bytes:
    """EXIF with the pixel-size tags it has (ImageWidth/Length, PixelX/YDimension) set to the
    new size, so viewers and catalogues do not report the size of the original."""
    data = Image.Exif()
    data.load(exif)
    for tags, ifd in ((_IFD0_SIZE_TAGS, data), (_EXIF_SIZE_TAGS, data.get_ifd(_EXIF_IFD))):
        for tag, value in zip(tags, (width, height), strict=True):
            if tag in ifd:
                ifd[tag] = value
    return data.tobytes()


def _encode_tiff(
    pixels: np.ndarray, bit_depth: int, value_scale: float, icc_profile: bytes | None
) -> bytes:
    """A zlib-compressed TIFF with 16-bit or float32 samples (``value_scale`` times [0, 1])."""
    channels = pixels.shape[2]
    if bit_depth == 32:
        samples = (pixels * value_scale).astype(np.float32)
    else:
        samples = _quantise(pixels, 16)
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        samples[..., 0] if channels == 1 else samples,
        photometric="rgb" if channels >= 3 else "minisblack",
        extrasamples=("unassalpha",) if channels in (2, 4) else None,
        compression="zlib",
        iccprofile=icc_profile,
    )
    return buffer.getvalue()


def _encode(
    pixels: np.ndarray,
    image_format: str,
    bit_depth: int,
    icc_profile: bytes | None,
    exif: bytes | None,
    quality: int,
    value_scale: float = 1.0,
) -> bytes:
    channels = pixels.shape[2]
    if icc_profile and not profile_fits(icc_profile, 1 if channels <= 2 else 3):
        valid = len(icc_profile) >= 128 and icc_profile[36:40] == b"acsp"
        space = icc_profile[16:20].decode("latin-1").strip() if valid else "unrecognised"
        output = "gray" if channels <= 2 else "RGB"
        _dropped("colour profile", f"the {space} colour profile does not describe {output} output")
        icc_profile = None
    if exif:
        exif = resized_exif(exif, pixels.shape[1], pixels.shape[0])
    if image_format == "TIFF" and bit_depth > 8:
        return _encode_tiff(pixels, bit_depth, value_scale, icc_profile)
    if bit_depth == 32:
        bit_depth = 16
        if image_format == "PNG":
            _dropped("float samples", "PNG output is written with 16-bit integer samples")
    if bit_depth == 16 and image_format == "PNG":
        return encode_png16(_quantise(pixels, 16), icc_profile=icc_profile, exif=exif)
    if bit_depth == 16:
        _dropped("16-bit depth", f"{image_format} output is written with 8 bits per sample")
        bit_depth = 8
    if channels in (2, 4) and image_format not in _ALPHA_FORMATS:
        _dropped("alpha", f"{image_format} cannot store alpha; it is dropped")
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
    value_scale: float = 1.0,
    overwrite: bool = True,
) -> None:
    """Save a (C, H, W) tensor in [0, 1] (C = 1 or 3) with optional (1, H, W) alpha.

    The format follows the extension of ``path`` (png, jpg/jpeg, webp, tif/tiff, bmp).
    ``bit_depth`` 16 is kept by PNG and TIFF, 32 (float samples, written as ``value_scale``
    times [0, 1]) by TIFF; PNG keeps float as 16 bits, the others fall back to 8 bits. Alpha a
    format cannot store and a colour profile that does not describe the output (e.g. CMYK on
    RGB) are dropped; EXIF pixel sizes are set to the new size. Every drop is reported with a
    :class:`DataDroppedWarning`. The file is written to a temporary name and renamed, so an
    interrupted save never leaves a truncated image behind. With ``overwrite=False`` the
    rename fails (:class:`FileExistsError`, nothing changed) when ``path`` exists, even if
    another process created it a moment ago: two runs into one folder never replace each
    other's files.
    """
    path = Path(path)
    image_format = _EXTENSION_FORMATS.get(path.suffix.lower())
    if image_format is None:
        known = ", ".join(sorted(_EXTENSION_FORMATS))
        raise UnsupportedFormatError(f"cannot tell the image format of {path.name}; use {known}")
    if bit_depth not in (8, 16, 32):
        raise ValueError(f"bit_depth must be 8, 16 or 32, got {bit_depth}")
    pixels = _to_hwc(tensor, alpha)
    data = _encode(pixels, image_format, bit_depth, icc_profile, exif, quality, value_scale)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temp, "xb") as file:
            file.write(data)
        if overwrite:
            os.replace(temp, path)
        else:
            _publish_new(temp, path, data)
    finally:
        temp.unlink(missing_ok=True)


def _publish_new(temp: Path, path: Path, data: bytes) -> None:
    """Give the complete file ``temp`` the name ``path`` unless that name exists: a hard link
    is created atomically or not at all (:class:`FileExistsError`). Where the file system has
    no hard links, the name is created exclusively and written."""
    try:
        os.link(temp, path)
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise  # FileExistsError among them
        with open(path, "xb") as file:
            file.write(data)


def save_like(
    path: str | Path,
    tensor: torch.Tensor,
    source: DecodedImage,
    *,
    alpha: torch.Tensor | None = None,
    quality: int = 95,
    overwrite: bool = True,
) -> None:
    """Save a result with the source image's bit depth (and float range), ICC profile and EXIF
    (``overwrite``: as for :func:`save_image`)."""
    save_image(
        path,
        tensor,
        alpha=alpha,
        bit_depth=source.bit_depth,
        icc_profile=source.icc_profile,
        exif=source.exif,
        quality=quality,
        value_scale=source.value_scale,
        overwrite=overwrite,
    )
