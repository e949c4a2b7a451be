from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from mordasr.io.image import (
    ImageReadError,
    UnsupportedFormatError,
    read_image,
    save_image,
    save_like,
)
from mordasr.io.png16 import write_png16

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
ORIENTATION = 0x0112


def _save(array: np.ndarray, path: Path, mode: str | None = None, **options: object) -> Path:
    Image.fromarray(array, mode).save(path, **options)
    return path


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "BMP"])
def test_formats_are_detected_from_content_not_extension(tmp_path: Path, fmt: str) -> None:
    path = _save(RGB, tmp_path / "misnamed.dat", format=fmt)
    image = read_image(path)
    assert image.format == fmt
    assert image.tensor.shape == (3, 12, 10) and image.tensor.dtype == torch.float32
    assert image.alpha is None and image.bit_depth == 8


def test_lossless_rgb_values_are_scaled_to_unit_range(tmp_path: Path) -> None:
    image = read_image(_save(RGB, tmp_path / "a.png"))
    expected = torch.from_numpy(RGB).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(image.tensor, expected)


def test_gray_image_has_one_channel(tmp_path: Path) -> None:
    image = read_image(_save(RGB[..., 0], tmp_path / "g.png", "L"))
    assert image.is_gray and image.tensor.shape == (1, 12, 10) and image.mode == "L"


def test_rgba_alpha_is_separated(tmp_path: Path) -> None:
    rgba = np.concatenate([RGB, RGB[..., :1]], axis=2)
    image = read_image(_save(rgba, tmp_path / "a.png", "RGBA"))
    assert image.tensor.shape == (3, 12, 10)
    assert image.alpha is not None and image.alpha.shape == (1, 12, 10)
    torch.testing.assert_close(image.alpha[0], torch.from_numpy(RGB[..., 0]).float() / 255)


def test_gray_with_alpha_is_separated(tmp_path: Path) -> None:
    la = np.stack([RGB[..., 0], RGB[..., 1]], axis=2)
    image = read_image(_save(la, tmp_path / "la.png", "LA"))
    assert image.tensor.shape == (1, 12, 10) and image.alpha is not None


def test_palette_transparency_becomes_alpha(tmp_path: Path) -> None:
    palette = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(tmp_path / "p.png", transparency=0)
    image = read_image(tmp_path / "p.png")
    assert image.mode == "P" and image.tensor.shape[0] == 3
    assert image.alpha is not None and float(image.alpha.min()) == 0.0


def test_sixteen_bit_gray_round_trips_exactly(tmp_path: Path) -> None:
    samples = RNG.integers(0, 65536, (9, 7), dtype=np.uint16)
    image = read_image(_save(samples, tmp_path / "g16.png"))
    assert image.bit_depth == 16 and image.is_gray
    save_like(tmp_path / "out.png", image.tensor, image)
    again = read_image(tmp_path / "out.png")
    assert again.bit_depth == 16
    assert np.array_equal(np.round(again.tensor[0].numpy() * 65535).astype(np.uint16), samples)


def test_sixteen_bit_rgba_keeps_all_sixteen_bits(tmp_path: Path) -> None:
    samples = RNG.integers(0, 65536, (8, 6, 4), dtype=np.uint16)
    write_png16(tmp_path / "c16.png", samples)
    image = read_image(tmp_path / "c16.png")
    assert image.bit_depth == 16 and image.alpha is not None
    assert image.tensor.dtype == torch.float32
    save_like(tmp_path / "out.png", image.tensor, image, alpha=image.alpha)
    again = read_image(tmp_path / "out.png")
    planes = torch.cat([again.tensor, again.alpha]).permute(1, 2, 0).numpy()
    assert np.array_equal(np.round(planes * 65535).astype(np.uint16), samples)


def test_sixteen_bit_gray_tiff_is_written_with_sixteen_bits(tmp_path: Path) -> None:
    samples = RNG.integers(0, 65536, (5, 6), dtype=np.uint16)
    save_image(tmp_path / "g.tif", torch.from_numpy(samples / 65535.0)[None], bit_depth=16)
    image = read_image(tmp_path / "g.tif")
    assert image.bit_depth == 16
    assert np.array_equal(np.round(image.tensor[0].numpy() * 65535).astype(np.uint16), samples)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path: Path, orientation: int) -> None:
    source = Image.fromarray(RGB)
    exif = source.getexif()
    exif[ORIENTATION] = orientation
    source.save(tmp_path / "o.png", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    assert expected.shape == ((10, 12, 3) if orientation >= 5 else (12, 10, 3))
    image = read_image(tmp_path / "o.png")
    actual = np.round(image.tensor.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(actual, expected)


def test_kept_exif_no_longer_rotates(tmp_path: Path) -> None:
    source = Image.fromarray(RGB)
    exif = source.getexif()
    exif[ORIENTATION] = 6
    exif[0x010F] = "camera maker"
    source.save(tmp_path / "o.jpg", exif=exif.tobytes())
    image = read_image(tmp_path / "o.jpg")
    save_like(tmp_path / "out.jpg", image.tensor, image)
    kept = Image.open(tmp_path / "out.jpg").getexif()
    assert ORIENTATION not in kept and kept[0x010F] == "camera maker"


def test_icc_profile_is_preserved(tmp_path: Path) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _save(RGB, tmp_path / "icc.png", icc_profile=srgb)
    image = read_image(tmp_path / "icc.png")
    save_like(tmp_path / "out.png", image.tensor, image)
    assert Image.open(tmp_path / "out.png").info["icc_profile"] == srgb


@pytest.mark.parametrize(
    "content", [b"", b"plain text, not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40]
)
def test_unreadable_content_raises_image_read_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert caught.value.path == path


def test_truncated_file_raises_image_read_error(tmp_path: Path) -> None:
    path = _save(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8), tmp_path / "t.jpg")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageReadError):
        read_image(path)


def test_missing_file_raises_image_read_error(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"absent\.png"):
        read_image(tmp_path / "absent.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_save_format_follows_the_extension(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    save_image(path, torch.rand(3, 8, 9))
    assert read_image(path).tensor.shape == (3, 8, 9)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_eight_bit_png_save_is_lossless_after_quantisation(tmp_path: Path) -> None:
    tensor = torch.from_numpy(RGB).permute(2, 0, 1).float() / 255
    save_image(tmp_path / "x.png", tensor)
    torch.testing.assert_close(read_image(tmp_path / "x.png").tensor, tensor)


def test_unknown_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match=r"\.gif"):
        save_image(tmp_path / "out.gif", torch.rand(3, 4, 4))


def test_jpeg_output_drops_alpha_with_a_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_image(tmp_path / "a.jpg", torch.rand(3, 8, 8), alpha=torch.rand(1, 8, 8))
    assert any("alpha" in str(w.message) for w in caught)
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"


def test_sixteen_bit_jpeg_falls_back_to_eight_bits_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="8 bits"):
        save_image(tmp_path / "a.jpg", torch.rand(3, 8, 8), bit_depth=16)
