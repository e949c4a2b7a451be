"""The degradation-estimator interface shared by every implementation.

An estimator maps images ``(B, 3, H, W)`` in ``[0, 1]`` to scores ``(B, 7)`` in ``[0, 1]``, one
per evaluation dimension of the paper's Table 3, higher meaning more degraded. Each score is the
probability of the dimension's *negative* prompt against its positive one (eq. 8).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

DIMENSIONS: tuple[str, ...] = (
    "overall_quality",
    "blurriness",
    "noise",
    "resolution",
    "edge_clarity",
    "clarity",
    "details",
)
"""Table 3's evaluation dimensions, in order: column ``i`` of every score is ``DIMENSIONS[i]``."""

TABLE3_PROMPTS: dict[str, tuple[str, str]] = {
    "overall_quality": ("Good Image", "Bad Image"),
    "blurriness": ("Sharp Image", "Blurry Image"),
    "noise": ("Noise-free image", "Noisy Image"),
    "resolution": ("High-Resolution", "Low-Resolution"),
    "edge_clarity": ("Sharp Edge", "Blurry Edge"),
    "clarity": ("Clear image", "Vague Image"),
    "details": ("Fine Details", "Coarse Details"),
}
"""(positive, negative) prompt of each dimension, as printed in the paper's Table 3."""


class DegradationEstimator(nn.Module, ABC):
    """Scores how degraded images are along :data:`DIMENSIONS` (higher = more degraded)."""

    DIMENSIONS: tuple[str, ...] = DIMENSIONS

    @abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(B, 7)`` scores in ``[0, 1]`` for ``(B, 3, H, W)`` images in ``[0, 1]``."""

    def score_dict(self, images: torch.Tensor) -> list[dict[str, float]]:
        """Score a batch and name each column, one ``{dimension: score}`` dict per image."""
        with torch.no_grad():
            scores = self(images).float().cpu()
        return [dict(zip(self.DIMENSIONS, row.tolist(), strict=True)) for row in scores]


def check_images(images: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a float ``(B, 3, H, W)`` batch."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected floating-point images in [0, 1], got dtype {images.dtype}")


def prompt_pair_scores(
    image_embeds: torch.Tensor,
    positive_embeds: torch.Tensor,
    negative_embeds: torch.Tensor,
    logit_scale: float = 1.0,
) -> torch.Tensor:
    """Degradation scores from embeddings, eq. 7-8 of the paper.

    ``d_p`` and ``d_n`` are the cosine similarities of each image embedding ``(B, D)`` with the
    positive and negative prompt embeddings ``(K, D)`` of the ``K`` dimensions (eq. 7); the score is
    ``exp(t * d_n) / (exp(t * d_p) + exp(t * d_n))`` (eq. 8), ``(B, K)``. The paper uses ``t = 1``
    (plain exponentials of cosines), which keeps scores close to 0.5 because cosines of CLIP
    embeddings differ by a few hundredths; passing CLIP's learnt logit scale (about 100) as ``t``
    spreads them like CLIP's own zero-shot probabilities.
    """
    image = nn.functional.normalize(image_embeds.float(), dim=-1)
    positive = nn.functional.normalize(positive_embeds.float(), dim=-1)
    negative = nn.functional.normalize(negative_embeds.float(), dim=-1)
    d_p = image @ positive.T
    d_n = image @ negative.T
    logits = torch.stack([d_p, d_n], dim=-1) * logit_scale
    return logits.softmax(dim=-1)[..., 1]
