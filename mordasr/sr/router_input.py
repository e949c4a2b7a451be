"""What the MoR routers see: the estimator's degradation scores, two of them, or LR features.

The paper's Table 8 routes by LR image features, by MM-RealSR's noise and blur scores, and by its
own seven degradation-aware scores; Table 10 compares blur-and-noise prompts with all seven.

- ``scores`` — all seven estimator scores (the paper's method; the default).
- ``blur-noise`` — only the blurriness and noise scores (Table 8's MM-RealSR row; with the CLIP
  estimator, Table 10's "blur and noise" prompts).
- ``lr-features`` — the learned estimator's standardised VGG16 statistics of the LR image
  (1920 values): the features its heads read, without the degradation-aware heads.

Whatever the routers see, the degradation-aware balance loss takes its severity from the full
seven scores, so an ablation row changes the router input only.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor

from mordasr.estimate.base import DIMENSIONS, DegradationEstimator
from mordasr.estimate.learned import LearnedEstimator

RouterInput = Literal["scores", "blur-noise", "lr-features"]
ROUTER_INPUTS: tuple[str, ...] = get_args(RouterInput)
BLUR_NOISE: tuple[int, int] = (DIMENSIONS.index("blurriness"), DIMENSIONS.index("noise"))
"""Columns of the score vector kept by ``blur-noise``."""


def router_input_dim(kind: RouterInput, estimator: DegradationEstimator) -> int:
    """Length of the vectors the routers receive: the ``score_dim`` of the MoR layers."""
    if kind == "scores":
        return len(estimator.DIMENSIONS)
    if kind == "blur-noise":
        return len(BLUR_NOISE)
    return _feature_estimator(kind, estimator).feature_dim


def router_input(
    kind: RouterInput,
    estimator: DegradationEstimator,
    images: Tensor,
    scores: Tensor | None = None,
) -> Tensor:
    """(B, router_input_dim) routing vectors of ``images``; ``scores`` are the estimator's
    (B, 7) scores of the same images when the caller has them already."""
    if kind == "lr-features":
        return _feature_estimator(kind, estimator).embed(images)
    if kind not in ROUTER_INPUTS:
        raise ValueError(f"unknown router_input {kind!r}; choose one of {list(ROUTER_INPUTS)}")
    if scores is None:
        scores = estimator(images)
    return scores if kind == "scores" else scores[:, list(BLUR_NOISE)]


def _feature_estimator(kind: str, estimator: DegradationEstimator) -> LearnedEstimator:
    if kind not in ROUTER_INPUTS:
        raise ValueError(f"unknown router_input {kind!r}; choose one of {list(ROUTER_INPUTS)}")
    if not isinstance(estimator, LearnedEstimator):
        raise ValueError("router_input 'lr-features' needs the learned estimator's features")
    return estimator
