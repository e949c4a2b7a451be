"""What the routers see: seven scores, blur and noise only, or LR features."""

from __future__ import annotations

import pytest
import torch

from mordasr.estimate import DegradationEstimator, LearnedEstimator
from mordasr.sr.router_input import router_input, router_input_dim


class FixedEstimator(DegradationEstimator):
    """Scores 0.0, 0.1, ..., 0.6 for every image (not a learned estimator)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.arange(7.0).div(10).expand(images.shape[0], 7)


@pytest.fixture(scope="module")
def learned() -> LearnedEstimator:
    return LearnedEstimator.from_pretrained()


def test_scores_are_passed_through_and_blur_noise_keeps_two_columns() -> None:
    estimator, images = FixedEstimator(), torch.rand(2, 3, 32, 32)
    assert torch.equal(router_input("scores", estimator, images), estimator(images))
    blur_noise = router_input("blur-noise", estimator, images)
    torch.testing.assert_close(blur_noise, torch.tensor([[0.1, 0.2]] * 2))
    assert router_input_dim("scores", estimator) == 7
    assert router_input_dim("blur-noise", estimator) == 2


def test_lr_features_are_the_standardised_statistics_the_heads_read(
    learned: LearnedEstimator,
) -> None:
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = router_input("lr-features", learned, images)
        assert features.shape == (2, router_input_dim("lr-features", learned)) == (2, 1920)
        heads = learned.heads
        scores = heads.heads(heads.trunk(features)).view(2, 7, 2).softmax(-1)[..., 1]
        torch.testing.assert_close(scores, learned(images))


def test_lr_features_need_the_learned_estimator() -> None:
    with pytest.raises(ValueError, match="learned estimator"):
        router_input_dim("lr-features", FixedEstimator())


def test_unknown_router_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown router_input"):
        router_input("pixels", FixedEstimator(), torch.rand(1, 3, 32, 32))
