"""Small stand-ins for the networks MoR is injected into (module names as in diffusers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Self-attention with diffusers' projection names (to_q, to_k, to_v, to_out.0)."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            proj(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, c)
        return self.to_out[1](self.to_out[0](out))


class FeedForward(nn.Module):
    """GEGLU feed-forward with diffusers' names (ff.net.0.proj, ff.net.2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([nn.Module(), nn.Dropout(0.0), nn.Linear(2 * dim, dim)])
        self.net[0].proj = nn.Linear(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.net[0].proj(x).chunk(2, dim=-1)
        return self.net[2](hidden * F.gelu(gate))


class ResnetBlock(nn.Module):
    """A diffusers-style ResnetBlock2D (norm1, conv1, norm2, conv2, conv_shortcut)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(2, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(2, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.conv_shortcut(x) + h


class TransformerBlock(nn.Module):
    """A spatial transformer: proj_in, attention, feed-forward, proj_out."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(2, dim)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.attn1 = Attention(dim)
        self.ff = FeedForward(dim)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        tokens = tokens + self.attn1(tokens)
        tokens = tokens + self.ff(tokens)
        return x + self.proj_out(tokens.transpose(1, 2).reshape(b, c, h, w))


class TinyUNetBlock(nn.Module):
    """conv_in -> resnet -> transformer -> conv_out, like one level of a diffusion UNet."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(4, channels, 3, padding=1)
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels)])
        self.attentions = nn.ModuleList([TransformerBlock(channels)])
        self.conv_out = nn.Conv2d(channels, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.resnets[0](self.conv_in(x))
        return self.conv_out(self.attentions[0](h))


def small_conv_net() -> nn.Sequential:
    """A three-layer conv net, the shape of a feed-forward SR body."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 3, 3, padding=1),
    )
