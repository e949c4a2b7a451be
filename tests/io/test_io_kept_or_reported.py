"""No silent change of data: float and 16-bit colour TIFFs, colour profiles, EXIF sizes and
animation frames are either kept or reported with a DataDroppedWarning."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms

from mordasr.io.image import (
    DataDroppedWarning,
    ImageReadError,
    read_image,
    save_image,
    save_like,
)

RNG = np.random.default_rng(1)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
CMYK_PROFILE = SRGB[:16] + b"CMYK" + SRGB[20:]  # a valid header naming the CMYK colour space


def _dropped(caught: list[warnings.WarningMessage]) -> set[str]:
    return {w.message.what for w in caught if isinstance(w.message, DataDroppedWarning)}


def test_float_tiff_in_0_255_is_scaled_by_its_range_and_written_back_in_it(
    tmp_path: Path,
) -> None:
    samples = (RNG.random((6, 7, 3)) * 255).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", samples, photometric="rgb")
    image = read_image(tmp_path / "f.tif")
    assert image.value_scale == 255.0 and image.bit_depth == 32
    torch.testing.assert_close(image.tensor, torch.from_numpy(samples / 255).permute(2, 0, 1))
    save_like(tmp_path / "out.tif", image.tensor, image)
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, samples, rtol=1e-6, atol=1e-4)


def test_gray_float_tiff_in_unit_range_stays_in_unit_range(tmp_path: Path) -> None:
    samples = RNG.random((5, 4)).astype(np.float32)
    Image.fromarray(samples, "F").save(tmp_path / "g.tif")
    image = read_image(tmp_path / "g.tif")
    assert image.value_scale == 1.0 and image.is_gray
    save_like(tmp_path / "out.tif", image.tensor, image)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out.tif"), samples, atol=1e-6)


@pytest.mark.parametrize(("low", "high"), [(-3.0, 200.0), (0.0, 1e6)])
def test_float_samples_out_of_any_display_range_are_refused_with_the_range(
    tmp_path: Path, low: float, high: float
) -> None:
    samples = np.linspace(low, high, 20, dtype=np.float32).reshape(4, 5)
    Image.fromarray(samples, "F").save(tmp_path / "hdr.tif")
    with pytest.raises(ImageReadError, match="tone-map"):
        read_image(tmp_path / "hdr.tif")


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_tiff_keeps_all_sixteen_bits(tmp_path: Path, channels: int) -> None:
    samples = RNG.integers(0, 65536, (6, 5, channels), dtype=np.uint16)
    extra = ("unassalpha",) if channels == 4 else None
    tifffile.imwrite(tmp_path / "d.tif", samples, photometric="rgb", extrasamples=extra)
    image = read_image(tmp_path / "d.tif")
    assert image.bit_depth == 16 and (image.alpha is not None) == (channels == 4)
    save_like(tmp_path / "out.tif", image.tensor, image, alpha=image.alpha)
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, samples)


def test_sixteen_bit_tiff_that_cannot_be_decoded_deep_is_read_with_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = RNG.integers(0, 65536, (4, 4, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "d.tif", samples, photometric="rgb")

    def missing_codec(*args: object, **kwargs: object) -> np.ndarray:
        raise KeyError("requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", missing_codec)
    with pytest.warns(DataDroppedWarning, match="8 bits"):
        image = read_image(tmp_path / "d.tif")
    assert image.tensor.shape == (3, 4, 4)


def test_cmyk_profile_is_not_copied_into_rgb_output(tmp_path: Path) -> None:
    cmyk = Image.fromarray(RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8), "CMYK")
    cmyk.save(tmp_path / "c.jpg", icc_profile=CMYK_PROFILE)
    image = read_image(tmp_path / "c.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_like(tmp_path / "out.png", image.tensor, image)
    assert _dropped(caught) == {"colour profile"}
    assert "icc_profile" not in Image.open(tmp_path / "out.png").info


def test_rgb_profile_is_not_copied_into_gray_output(tmp_path: Path) -> None:
    with pytest.warns(DataDroppedWarning, match="RGB colour profile does not describe gray"):
        save_image(tmp_path / "g.png", torch.rand(1, 4, 4), icc_profile=SRGB)
    assert "icc_profile" not in Image.open(tmp_path / "g.png").info


def test_exif_pixel_dimensions_follow_the_new_size(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    exif.get_ifd(0x8769).update({0xA002: 10, 0xA003: 8})
    Image.fromarray(RNG.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(
        tmp_path / "e.jpg", exif=exif.tobytes()
    )
    image = read_image(tmp_path / "e.jpg")
    bigger = torch.nn.functional.interpolate(image.tensor[None], scale_factor=4)[0]
    save_like(tmp_path / "out.jpg", bigger, image)
    kept = Image.open(tmp_path / "out.jpg").getexif()
    assert dict(kept.get_ifd(0x8769)) == {0xA002: 40, 0xA003: 32}
    assert kept[0x010F] == "camera maker"


def test_animation_frames_beyond_the_first_are_reported(tmp_path: Path) -> None:
    frames = [Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(DataDroppedWarning, match="first of 3 frames") as caught:
        read_image(tmp_path / "a.gif")
    assert _dropped(caught.list) == {"animation frames"}


def test_a_still_image_reports_nothing(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "s.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(tmp_path / "s.png")
        save_like(tmp_path / "out.png", image.tensor, image)
