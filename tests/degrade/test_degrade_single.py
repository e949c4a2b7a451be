"""Single-factor presets: bicubic downscaling, then one blur, noise or JPEG step per image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mordasr.degrade import PRESETS, SingleFactorConfig, degrade, degrade_image, resize
from mordasr.degrade.config import BLUR_SIGMA, JPEG_QUALITY, NOISE_SIGMA

SINGLE = ("bicubic", "blur-only", "noise-only", "jpeg-only")
LEVEL_KEYS = {"blur-only": "blur_sigma", "noise-only": "noise_sigma", "jpeg-only": "jpeg_quality"}


def _hr(b: int = 6, size: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, size // 8, size // 8, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


def _config(name: str) -> SingleFactorConfig:
    config = PRESETS[name]
    assert isinstance(config, SingleFactorConfig)
    return config


@pytest.mark.parametrize("name", SINGLE)
def test_same_seed_gives_the_same_images_and_parameters(name: str) -> None:
    a = degrade(_hr(), name, scale=4, seed=3)
    b = degrade(_hr(), name, scale=4, seed=torch.Generator().manual_seed(3))
    assert torch.equal(a.lr, b.lr) and a.params == b.params


@pytest.mark.parametrize("name", SINGLE)
def test_each_image_of_a_batch_is_the_per_image_function_with_its_seed(name: str) -> None:
    hr = _hr()
    result = degrade(hr, name, scale=4, seed=5)
    for i, params in enumerate(result.params):
        lr, drawn = degrade_image(hr[i : i + 1], _config(name), 4, params["seed"])
        assert torch.equal(result.lr[i : i + 1], lr)
        assert params == {
            "scale": 4,
            "hr_size": [64, 64],
            "factor": _config(name).factor,
            "seed": params["seed"],
            **drawn,
        }


@pytest.mark.parametrize("name", LEVEL_KEYS)
def test_levels_differ_within_a_batch_and_stay_in_range(name: str) -> None:
    levels = [p[LEVEL_KEYS[name]] for p in degrade(_hr(), name, scale=4, seed=0).params]
    low, high = {"blur-only": BLUR_SIGMA, "noise-only": NOISE_SIGMA, "jpeg-only": JPEG_QUALITY}[
        name
    ]
    assert len(set(levels)) > 1
    assert all(low <= level <= high for level in levels)


def test_bicubic_is_the_quantised_bicubic_downscale_and_gt_is_the_hr() -> None:
    hr = _hr()
    result = degrade(hr, "bicubic", scale=4, seed=0)
    expected = (resize(hr, (16, 16), "bicubic").clamp(0, 1) * 255).round() / 255
    assert torch.equal(result.lr, expected) and torch.equal(result.gt, hr)


@pytest.mark.parametrize("name", ("blur-only", "noise-only", "jpeg-only"))
def test_each_factor_changes_the_bicubic_image(name: str) -> None:
    clean = degrade(_hr(), "bicubic", scale=4, seed=0).lr
    assert (degrade(_hr(), name, scale=4, seed=0).lr - clean).abs().mean() > 1 / 255


def test_an_unknown_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown factor"):
        SingleFactorConfig("sharpen")  # type: ignore[arg-type]
