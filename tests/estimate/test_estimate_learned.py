"""The learned estimator: shipped weights, output contract, and response to degradations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mordasr.degrade import add_gaussian_noise, filter2d, isotropic_gaussian_kernel
from mordasr.estimate import DIMENSIONS, LearnedEstimator, learned, load_estimator
from mordasr.estimate.learned import shipped_weights_path


@pytest.fixture(scope="module")
def estimator() -> LearnedEstimator:
    return LearnedEstimator.from_pretrained()


def _test_card(seed: int = 0, size: int = 96) -> torch.Tensor:
    """Sharp-edged colour blocks with smooth shading: clean, with plenty of edges."""
    generator = torch.Generator().manual_seed(seed)
    blocks = F.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=size, mode="nearest")
    shade = F.interpolate(torch.rand(1, 3, 12, 12, generator=generator), size=size, mode="bicubic")
    return (0.7 * blocks + 0.3 * shade).clamp(0, 1)


def _column(scores: torch.Tensor, name: str) -> list[float]:
    return scores[:, DIMENSIONS.index(name)].tolist()


def test_weights_ship_inside_the_package():
    assert shipped_weights_path().is_file()
    assert shipped_weights_path().with_suffix(".json").is_file()


def test_scores_have_seven_columns_in_unit_range(estimator):
    images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = estimator(images)
    assert scores.shape == (2, len(DIMENSIONS))
    assert torch.all((scores >= 0) & (scores <= 1))


def test_factory_default_is_the_frozen_learned_estimator():
    estimator = load_estimator()
    assert isinstance(estimator, LearnedEstimator)
    assert not estimator.training
    assert not any(p.requires_grad for p in estimator.parameters())


def test_gaussian_blur_raises_the_blurriness_score(estimator):
    card = _test_card()
    blurred = [card] + [filter2d(card, isotropic_gaussian_kernel(25, s)) for s in (1.0, 2.0, 4.0)]
    with torch.no_grad():
        scores = _column(estimator(torch.cat(blurred)), "blurriness")
    assert scores == sorted(scores)
    assert scores[-1] - scores[0] > 0.3


def test_gaussian_noise_raises_the_noise_score(estimator):
    card = _test_card(seed=1)
    generator = torch.Generator().manual_seed(0)
    noisy = [card] + [add_gaussian_noise(card, s, generator=generator) for s in (5.0, 15.0, 40.0)]
    with torch.no_grad():
        scores = _column(estimator(torch.cat(noisy)), "noise")
    assert scores == sorted(scores)
    assert scores[-1] - scores[0] > 0.3


def test_saved_heads_reload_to_identical_scores(tmp_path):
    torch.manual_seed(0)
    model = LearnedEstimator.build(hidden=16)
    model.save_heads(tmp_path / "heads.safetensors")
    reloaded = LearnedEstimator.from_pretrained(tmp_path / "heads.safetensors")
    images = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), model.eval()(images))


def test_images_smaller_than_the_backbone_needs_are_rejected(estimator):
    with pytest.raises(ValueError, match="32"):
        estimator(torch.rand(1, 3, 16, 64))


def test_large_images_are_center_cropped_not_resized(estimator, monkeypatch):
    monkeypatch.setattr(learned, "MAX_SIDE", 64)
    inner = _test_card(size=64)
    padded = F.pad(inner, (30, 30, 8, 8), mode="constant", value=0.0)
    with torch.no_grad():
        torch.testing.assert_close(estimator(padded), estimator(inner))
