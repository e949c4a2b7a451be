"""RRDBNet: the Residual-in-Residual Dense Block generator of ESRGAN / Real-ESRGAN.

The module and parameter names follow the official Real-ESRGAN release (``conv_first``,
``body.N.rdbK.convM``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) so
that official ``.pth`` state dicts load without renaming. The network always upsamples its
features by 4 with two nearest-neighbour x2 steps; scales 2 and 1 are obtained as Real-ESRGAN does,
by pixel-unshuffling the input by 2 or 4 first (so the input side must be divisible by that factor).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_SCALES = (1, 2, 4)
_UNSHUFFLE = {4: 1, 2: 2, 1: 4}
_LRELU_SLOPE = 0.2
_RESIDUAL_SCALE = 0.2


class UnknownArchitectureError(ValueError):
    """A state dict does not describe an RRDBNet this module can build."""


@dataclass(frozen=True)
class RRDBNetConfig:
    """Hyper-parameters that fully determine an RRDBNet's parameter shapes."""

    num_in_ch: int = 3
    num_out_ch: int = 3
    scale: int = 4
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a scaled residual connection."""

    # Registered by ``add_module`` in ``__init__``; declared here for the type checker.
    conv1: nn.Conv2d
    conv2: nn.Conv2d
    conv3: nn.Conv2d
    conv4: nn.Conv2d

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        for index in range(1, 5):
            conv = nn.Conv2d(num_feat + (index - 1) * num_grow_ch, num_grow_ch, 3, 1, 1)
            self.add_module(f"conv{index}", conv)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), _LRELU_SLOPE))
        return self.conv5(torch.cat(features, 1)) * _RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Three residual dense blocks wrapped in another scaled residual connection."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * _RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """The Real-ESRGAN generator; ``RRDBNet()`` is the RealESRGAN_x4plus architecture."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        if scale not in SUPPORTED_SCALES:
            raise ValueError(f"RRDBNet scale must be one of {SUPPORTED_SCALES}, got {scale}")
        self.config = RRDBNetConfig(num_in_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)
        self.scale = scale
        self.unshuffle = _UNSHUFFLE[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    @property
    def multiple_of(self) -> int:
        """Side multiple the input needs: x2 and x1 networks pixel-unshuffle by 2 and 4."""
        return self.unshuffle

    @classmethod
    def from_config(cls, config: RRDBNetConfig) -> RRDBNet:
        """Build an (untrained) network with the given hyper-parameters."""
        return cls(
            config.num_in_ch,
            config.num_out_ch,
            config.scale,
            config.num_feat,
            config.num_block,
            config.num_grow_ch,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a (B, C, H, W) image in [0, 1] to (B, C_out, H*scale, W*scale)."""
        feat = self.head(x)
        return self.reconstruct(feat, self.run_body(feat))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Shallow features: pixel-unshuffle (scales 1 and 2) and ``conv_first``."""
        if self.unshuffle > 1:
            height, width = x.shape[-2:]
            if height % self.unshuffle or width % self.unshuffle:
                raise ValueError(
                    f"a x{self.scale} RRDBNet needs height and width divisible by "
                    f"{self.unshuffle}, got {height}x{width}"
                )
            x = F.pixel_unshuffle(x, self.unshuffle)
        return self.conv_first(x)

    def run_body(self, feat: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """RRDB blocks ``start`` to ``stop`` (exclusive); split runs let a trainer cache the
        output of frozen leading blocks."""
        for block in list(self.body)[start:stop]:
            feat = block(feat)
        return feat

    def reconstruct(self, feat: torch.Tensor, body_out: torch.Tensor) -> torch.Tensor:
        """``conv_body`` with the long skip from ``feat``, then the x4 upsampling tail."""
        feat = feat + self.conv_body(body_out)
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2.0)), _LRELU_SLOPE)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2.0)), _LRELU_SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), _LRELU_SLOPE))


_BODY_KEY = re.compile(r"^body\.(\d+)\.")
_LEGACY_RDB_KEY = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_LEGACY_TOP_KEY = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_LEGACY_TOP_NAMES = {0: "conv_first", 3: "conv_up1", 6: "conv_up2", 8: "conv_hr", 10: "conv_last"}


def convert_legacy_esrgan(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original-ESRGAN (``model.N...``) x4 state dict to RRDBNet's names.

    The first ESRGAN release stored the same network as one ``nn.Sequential``: ``model.0`` is
    ``conv_first``, ``model.1.sub.i.RDBk.convj.0`` the body, ``model.1.sub.<last>`` ``conv_body``
    and ``model.3/6/8/10`` the upsampling and output convolutions.
    """
    body_indices = {
        int(match.group(1)) for key in state_dict if (match := _LEGACY_RDB_KEY.match(key))
    }
    trunk = len(body_indices)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if match := _LEGACY_RDB_KEY.match(key):
            block, rdb, conv, kind = match.groups()
            renamed[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
        elif key in (f"model.1.sub.{trunk}.weight", f"model.1.sub.{trunk}.bias"):
            renamed[f"conv_body.{key.rsplit('.', 1)[1]}"] = value
        elif (match := _LEGACY_TOP_KEY.match(key)) and int(match.group(1)) in _LEGACY_TOP_NAMES:
            renamed[f"{_LEGACY_TOP_NAMES[int(match.group(1))]}.{match.group(2)}"] = value
        else:
            raise UnknownArchitectureError(f"unexpected key {key!r} in an old-style ESRGAN model")
    return renamed


def detect_rrdbnet_config(state_dict: Mapping[str, torch.Tensor]) -> RRDBNetConfig:
    """Infer an RRDBNet's hyper-parameters from the key names and tensor shapes of its weights.

    The scale follows from the ratio between the input channels of ``conv_first`` and the output
    channels of ``conv_last`` (1 for x4, 4 for a x2 pixel-unshuffle, 16 for x1), assuming the
    network maps an image to an image with the same number of channels.
    """
    required = ("conv_first.weight", "conv_last.weight", "body.0.rdb1.conv1.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise UnknownArchitectureError(f"not an RRDBNet state dict: missing {missing}")
    first = state_dict["conv_first.weight"]
    last = state_dict["conv_last.weight"]
    grow = state_dict["body.0.rdb1.conv1.weight"]
    num_feat = int(first.shape[0])
    num_out_ch = int(last.shape[0])
    in_channels = int(first.shape[1])
    ratio, remainder = divmod(in_channels, num_out_ch)
    scale = {1: 4, 4: 2, 16: 1}.get(ratio)
    if remainder or scale is None:
        raise UnknownArchitectureError(
            f"cannot infer the scale: conv_first takes {in_channels} channels and conv_last "
            f"gives {num_out_ch}"
        )
    blocks = {int(match.group(1)) for key in state_dict if (match := _BODY_KEY.match(key))}
    if blocks != set(range(len(blocks))):
        raise UnknownArchitectureError(f"body blocks are not numbered 0..N-1: {sorted(blocks)}")
    return RRDBNetConfig(
        num_in_ch=in_channels // _UNSHUFFLE[scale] ** 2,
        num_out_ch=num_out_ch,
        scale=scale,
        num_feat=num_feat,
        num_block=len(blocks),
        num_grow_ch=int(grow.shape[0]),
    )


def rrdbnet_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> RRDBNet:
    """Build the RRDBNet a state dict describes and load it strictly (every key must match).

    Both the Real-ESRGAN names and the original ESRGAN ``model.N`` names are accepted.
    """
    if "model.0.weight" in state_dict:
        state_dict = convert_legacy_esrgan(state_dict)
    model = RRDBNet.from_config(detect_rrdbnet_config(state_dict))
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as error:
        raise UnknownArchitectureError(f"state dict does not fit RRDBNet: {error}") from error
    return model
