"""Perceptual (VGG feature) loss, as Real-ESRGAN uses, on the offline ImageNet VGG16."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mordasr.nets.vgg import VGG16Features, imagenet_normalize

DEFAULT_LAYER_WEIGHTS: dict[str, float] = {
    "relu1_2": 0.1,
    "relu2_2": 0.1,
    "relu3_3": 1.0,
    "relu4_3": 1.0,
    "relu5_3": 1.0,
}
"""Real-ESRGAN's weights for its five VGG19 stages, mapped onto the matching VGG16 stages."""


class PerceptualLoss(nn.Module):
    """Weighted L1 distance between VGG16 activations of two images in [0, 1].

    Real-ESRGAN uses VGG19 (not available offline here); VGG16's five stages play the same role.
    The network stays frozen and in eval mode.
    """

    def __init__(self, layer_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.layer_weights = dict(layer_weights or DEFAULT_LAYER_WEIGHTS)
        self.vgg = VGG16Features.from_pretrained()

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Stay in eval mode: the feature extractor is fixed."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scalar loss between prediction ``x`` and target ``y``."""
        batch = x.shape[0]
        both = self.vgg(imagenet_normalize(torch.cat([x, y.detach()])), self.layer_weights)
        total = x.new_zeros(())
        for name, features in both.items():
            total = total + self.layer_weights[name] * F.l1_loss(features[:batch], features[batch:])
        return total
