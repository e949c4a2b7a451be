"""Adversarial training pieces: the Real-ESRGAN U-Net discriminator and the GAN loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

GanType = Literal["vanilla", "lsgan", "hinge"]


class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator with spectral normalisation (Real-ESRGAN's design).

    Three stride-2 stages down, three bilinear stages up with skip connections, then two 3x3
    convolutions and a 1-channel head: one real/fake logit per pixel, which gives the generator
    local feedback on textures rather than one verdict per image.
    """

    def __init__(self, in_channels: int = 3, num_feat: int = 64, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        f = num_feat
        self.conv0 = nn.Conv2d(in_channels, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) image -> (B, 1, H, W) logits; H and W must be multiples of 8."""
        x0 = _act(self.conv0(x))
        x1 = _act(self.conv1(x0))
        x2 = _act(self.conv2(x1))
        x3 = _act(self.conv3(x2))
        x4 = _act(self.conv4(_up(x3)))
        if self.skip:
            x4 = x4 + x2
        x5 = _act(self.conv5(_up(x4)))
        if self.skip:
            x5 = x5 + x1
        x6 = _act(self.conv6(_up(x5)))
        if self.skip:
            x6 = x6 + x0
        out = _act(self.conv7(x6))
        out = _act(self.conv8(out))
        return self.conv9(out)


def _act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2, inplace=True)


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def gan_loss(
    logits: Tensor, target_is_real: bool, kind: GanType = "vanilla", for_discriminator: bool = True
) -> Tensor:
    """Adversarial loss of discriminator ``logits`` against a real/fake target.

    ``vanilla`` is binary cross-entropy on logits (Real-ESRGAN), ``lsgan`` least squares,
    ``hinge`` the hinge loss; the generator's hinge loss is ``-mean(logits)``.
    """
    if kind == "hinge" and not for_discriminator:
        return -logits.mean()
    if kind == "vanilla":
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)
    if kind == "lsgan":
        return F.mse_loss(logits, torch.full_like(logits, 1.0 if target_is_real else 0.0))
    if kind == "hinge":
        sign = 1.0 if target_is_real else -1.0
        return F.relu(1.0 - sign * logits).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")
