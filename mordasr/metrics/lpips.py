"""LPIPS v0.1 perceptual distance (Zhang et al. 2018) as a frozen ``nn.Module``.

Usable both as an evaluation metric and as a training loss (gradients flow to the inputs; the
network itself is frozen). Backbones and linear layers are the published ImageNet / LPIPS v0.1
weights, read offline through :mod:`mordasr.nets.pretrained`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mordasr.nets.alexnet import AlexNetFeatures
from mordasr.nets.pretrained import lpips_linear_weights
from mordasr.nets.vgg import VGG16Features

# LPIPS' input standardisation, expressed for images scaled to [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

LpipsNetName = Literal["alex", "vgg"]


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale each spatial feature vector to unit L2 norm over channels."""
    norm = features.pow(2).sum(dim=1, keepdim=True).sqrt()
    return features / (norm + eps)


class LPIPS(nn.Module):
    """LPIPS distance between (B, 3, H, W) images in [0, 1]; returns shape (B,).

    ``net='alex'`` is the variant reported by SR papers; ``net='vgg'`` is the one usually used
    as a training loss.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, net: LpipsNetName = "alex") -> None:
        super().__init__()
        if net == "alex":
            self.backbone: nn.Module = AlexNetFeatures.from_pretrained()
            weights = lpips_linear_weights("alexnet")
        elif net == "vgg":
            self.backbone = VGG16Features.from_pretrained()
            weights = lpips_linear_weights("vgg16")
        else:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.lins = nn.ModuleList()
        for weight in weights:
            lin = nn.Conv2d(weight.shape[1], 1, kernel_size=1, bias=False)
            lin.weight.data.copy_(weight)
            self.lins.append(lin)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode: LPIPS is a fixed metric even inside a training loop."""
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (2.0 * x - 1.0 - self.shift) / self.scale
        return list(self.backbone(x).values())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image, shape (B,)."""
        if x.shape != y.shape:
            raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
        batch = x.shape[0]
        total = x.new_zeros(batch)
        for lin, both in zip(self.lins, self._features(torch.cat([x, y])), strict=True):
            fx, fy = both[:batch], both[batch:]
            diff = (unit_normalize(fx) - unit_normalize(fy)).pow(2)
            total = total + lin(diff).mean(dim=(1, 2, 3))
        return total
