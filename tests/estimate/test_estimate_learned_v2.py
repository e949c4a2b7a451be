"""The v2 learned estimator: seven scores that carry distinct information, not one severity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mordasr.degrade import add_gaussian_noise, filter2d, isotropic_gaussian_kernel, jpeg
from mordasr.estimate import DIMENSIONS, LearnedEstimator
from mordasr.estimate.learned import shipped_weights_path

SINGLE_FACTOR = ("blurriness", "noise", "resolution", "details")


@pytest.fixture(scope="module")
def v2() -> LearnedEstimator:
    return LearnedEstimator.from_pretrained(shipped_weights_path("v2"))


def _card(seed: int, size: int = 96) -> torch.Tensor:
    """Colour blocks with smooth shading: clean, with plenty of edges."""
    generator = torch.Generator().manual_seed(seed)
    blocks = F.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=size, mode="nearest")
    shade = F.interpolate(torch.rand(1, 3, 12, 12, generator=generator), size=size, mode="bicubic")
    return (0.7 * blocks + 0.3 * shade).clamp(0, 1)


def _down_up(x: torch.Tensor, factor: int) -> torch.Tensor:
    small = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True)
    return F.interpolate(small, size=x.shape[-2:], mode="bicubic").clamp(0, 1)


def _synthetic_set() -> torch.Tensor:
    """Three cards, each clean and under one factor at two strengths (27 images)."""
    images = []
    for seed in range(3):
        card = _card(seed)
        noise = torch.Generator().manual_seed(seed)
        images += [
            card,
            filter2d(card, isotropic_gaussian_kernel(21, 1.5)),
            filter2d(card, isotropic_gaussian_kernel(21, 3.0)),
            add_gaussian_noise(card, 10.0, False, noise).clamp(0, 1),
            add_gaussian_noise(card, 30.0, False, noise).clamp(0, 1),
            jpeg(card, 40),
            jpeg(card, 15),
            _down_up(card, 2),
            _down_up(card, 4),
        ]
    return torch.cat(images)


def test_v2_ships_inside_the_package() -> None:
    assert shipped_weights_path("v2").is_file()
    assert shipped_weights_path("v2").with_suffix(".json").is_file()


def test_v2_dimensions_are_not_collinear_on_a_small_synthetic_set(v2: LearnedEstimator) -> None:
    with torch.no_grad():
        scores = v2(_synthetic_set()).double()
    correlation = torch.corrcoef(scores.T)
    # v1 (one severity in seven columns): smallest eigenvalue 0.007, blurriness vs resolution 0.96
    assert float(torch.linalg.eigvalsh(correlation).min()) > 0.015
    columns = [DIMENSIONS.index(name) for name in SINGLE_FACTOR]
    single = correlation[columns][:, columns]
    assert float(single[~torch.eye(len(columns), dtype=torch.bool)].abs().max()) < 0.85
