"""SRVGGNetCompact: Real-ESRGAN's compact generator (``realesr-animevideov3``, ``realesr-general``).

A 3x3 convolution and a PReLU, ``num_conv`` more convolution + PReLU pairs, a last convolution to
``3 * upscale**2`` channels and a pixel shuffle, added to the nearest-neighbour enlarged input.
The module and parameter names follow the official release (``body.N.weight`` / ``body.N.bias``
for the convolutions at even N, ``body.N.weight`` for the PReLU slopes at odd N), so official
``.pth`` state dicts load without renaming and the architecture is detected from the keys as
spandrel does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mordasr.nets.rrdbnet import UnknownArchitectureError

_BODY_KEY = re.compile(r"^body\.(\d+)\.(weight|bias)$")


@dataclass(frozen=True)
class SRVGGNetConfig:
    """Hyper-parameters that fully determine an SRVGGNetCompact's parameter shapes."""

    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_conv: int = 16
    upscale: int = 4


class SRVGGNetCompact(nn.Module):
    """The Real-ESRGAN compact network (PReLU activations, as every official release)."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
    ) -> None:
        super().__init__()
        self.config = SRVGGNetConfig(num_in_ch, num_out_ch, num_feat, num_conv, upscale)
        self.scale = upscale
        self.multiple_of = 1
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    @classmethod
    def from_config(cls, config: SRVGGNetConfig) -> SRVGGNetCompact:
        """Build an (untrained) network with the given hyper-parameters."""
        return cls(
            config.num_in_ch, config.num_out_ch, config.num_feat, config.num_conv, config.upscale
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a (B, C, H, W) image in [0, 1] to (B, C_out, H*scale, W*scale)."""
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=float(self.scale), mode="nearest")
        return self.upsampler(out) + base


class ResizedOutput(nn.Module):
    """A network followed by a bicubic resize of its output to ``scale`` times the input: how
    the ncnn ``realesr-animevideov3-x2``/``-x3`` files run the x4 network for x2 and x3."""

    def __init__(self, network: nn.Module, scale: int) -> None:
        super().__init__()
        self.network = network
        self.scale = scale
        self.multiple_of = int(getattr(network, "multiple_of", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        return F.interpolate(self.network(x), size=size, mode="bicubic", align_corners=False)


def is_srvgg_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the keys are an SRVGGNetCompact's (spandrel's test: ``body.0.weight`` and the
    first PReLU's ``body.1.weight``)."""
    return "body.0.weight" in state_dict and "body.1.weight" in state_dict


def detect_srvgg_config(state_dict: Mapping[str, torch.Tensor]) -> SRVGGNetConfig:
    """Infer an SRVGGNetCompact's hyper-parameters from its keys and shapes: features and input
    channels from the first convolution, ``num_conv`` from the highest body index, the scale from
    the last convolution's output channels (``num_out_ch * scale**2``, ``num_out_ch`` taken equal
    to the input channels)."""
    if not is_srvgg_state_dict(state_dict):
        raise UnknownArchitectureError("not an SRVGGNetCompact state dict: no body.0/body.1")
    indices = {int(match.group(1)) for key in state_dict if (match := _BODY_KEY.match(key))}
    highest = max(indices)
    if indices != set(range(highest + 1)) or highest % 2:
        raise UnknownArchitectureError(f"body layers are not numbered 0..2N+2: {sorted(indices)}")
    first = state_dict["body.0.weight"]
    num_in_ch = int(first.shape[1])
    out_channels = int(state_dict[f"body.{highest}.weight"].shape[0])
    scale = math.isqrt(out_channels // num_in_ch)
    if scale < 1 or scale * scale * num_in_ch != out_channels:
        raise UnknownArchitectureError(
            f"cannot infer the scale: the last convolution gives {out_channels} channels for "
            f"{num_in_ch} input channels"
        )
    return SRVGGNetConfig(
        num_in_ch=num_in_ch,
        num_out_ch=num_in_ch,
        num_feat=int(first.shape[0]),
        num_conv=(highest - 2) // 2,
        upscale=scale,
    )


def srvgg_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> SRVGGNetCompact:
    """Build the SRVGGNetCompact a state dict describes and load it strictly."""
    model = SRVGGNetCompact.from_config(detect_srvgg_config(state_dict))
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as error:
        raise UnknownArchitectureError(
            f"state dict does not fit SRVGGNetCompact: {error}"
        ) from error
    return model
