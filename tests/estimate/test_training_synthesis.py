"""Synthetic training images of the learned estimator and the degradation summaries they carry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mordasr.estimate.training.labels import Degradation
from mordasr.estimate.training.synthesis import (
    PRESET_NAMES,
    build_dataset,
    clean_crop,
    down_up,
    gaussian_blur,
    gaussian_noise,
    image_paths,
    jpeg,
    synthetic_sample,
)


def _image(height: int = 96, width: int = 96, seed: int = 0) -> torch.Tensor:
    """A smooth ``(3, height, width)`` image in [0, 1]."""
    coarse = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(height, width), mode="bicubic").clamp(0, 1)[0]


def test_an_anisotropic_blur_is_summarised_by_its_mean_square_sigma() -> None:
    out, summary = gaussian_blur(_image()[None], 3.0, 1.0, theta=0.5)
    assert out.shape == (1, 3, 96, 96)
    assert summary == Degradation(blur_sigma=math.sqrt(5.0))


def test_noise_is_summarised_by_the_sigma_it_added() -> None:
    generator = torch.Generator().manual_seed(0)
    _, summary = gaussian_noise(torch.full((1, 3, 64, 64), 0.5), 10.0, False, generator)
    assert summary.noise_sigma == pytest.approx(10.0, rel=0.05)
    assert (summary.blur_sigma, summary.jpeg_quality, summary.downscale) == (0.0, 100.0, 1.0)


def test_jpeg_and_resampling_keep_the_size_and_record_their_strength() -> None:
    x = _image()[None]
    compressed, quality = jpeg(x, 30)
    resampled, resolution = down_up(x, 3.0, down_mode="area")
    assert compressed.shape == resampled.shape == x.shape
    assert quality == Degradation(jpeg_quality=30.0)
    assert resolution == Degradation(downscale=3.0)


def test_a_clean_crop_is_a_square_of_the_asked_size() -> None:
    crop = clean_crop(_image(120, 200), 96, 2.0, torch.Generator().manual_seed(0))
    assert crop.shape == (1, 3, 96, 96)
    assert float(crop.min()) >= 0.0 and float(crop.max()) <= 1.0


def test_a_clean_sample_carries_no_degradation() -> None:
    _, summary = synthetic_sample(_image(200, 200), "clean", torch.Generator().manual_seed(0))
    assert summary == Degradation()


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_a_preset_sample_is_the_x4_output_of_its_pipeline(preset: str) -> None:
    image = _image(256, 256)
    sample, summary = synthetic_sample(image, preset, torch.Generator().manual_seed(0))
    assert sample.shape[-1] in (64, 80) and sample.shape[-2] == sample.shape[-1]
    assert summary != Degradation()


def test_the_dataset_is_fixed_by_its_generator(tmp_path: Path) -> None:
    for i in range(2):
        pixels = (255 * _image(200, 200, seed=i).permute(1, 2, 0).numpy()).astype("uint8")
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    paths = image_paths((tmp_path,))
    first = build_dataset(paths, 6, torch.Generator().manual_seed(3))
    second = build_dataset(paths, 6, torch.Generator().manual_seed(3))
    assert first[1:] == second[1:]
    assert all(torch.equal(a, b) for a, b in zip(first[0], second[0], strict=True))


def test_missing_photos_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no images"):
        image_paths((tmp_path,))
