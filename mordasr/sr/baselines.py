"""Models without adapters: a plain feed-forward backbone, and bicubic interpolation.

A plain model's folder holds the manifest (type ``plain``) and ``backbone.safetensors``; a
bicubic folder the manifest (type ``bicubic``) and ``bicubic.json`` (the scale).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, SupportsInt, cast

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from mordasr.mor import RoutingPlan
from mordasr.nets.loaders import PRETRAINED, load_network
from mordasr.sr.manifest import loading, read_json_dataclass, write_manifest
from mordasr.sr.protocol import ImageWork, Tiling
from mordasr.sr.regions import REGION_WINDOW, RoutingMode
from mordasr.sr.registry import check_model_type, register_model_type

BACKBONE_FILE = "backbone.safetensors"
BICUBIC_FILE = "bicubic.json"


class _FixedScaleSR(nn.Module):
    """What the models without adapters share: a scale and side multiple fixed at construction,
    and whole-image tiling."""

    tiling: ClassVar[Tiling] = "image"
    score_dim: ClassVar[None] = None
    """Nothing routes these models."""

    def __init__(self, scale: int, multiple_of: int) -> None:
        super().__init__()
        self._scale = scale
        self._multiple_of = multiple_of

    @property
    def scale(self) -> int:
        return self._scale

    @property
    def multiple_of(self) -> int:
        return self._multiple_of


@register_model_type()
class PlainSR(_FixedScaleSR):
    """A feed-forward backbone used as is (no adapters, no routing).

    Args:
        backbone: maps (B, 3, h, w) to (B, 3, scale*h, scale*w).
        scale: its upscaling factor.
        multiple_of: the side multiple it needs (2 and 4 for x2 and x1 RRDBNets).

    The backbone is any feed-forward network :func:`~mordasr.nets.loaders.load_network` loads:
    RRDBNet, SRVGGNetCompact, or another architecture through spandrel.
    """

    model_type: ClassVar[str] = "plain"
    feed_forward: ClassVar[bool] = True

    def __init__(
        self,
        backbone: nn.Module,
        scale: int,
        multiple_of: int = 1,
        description: str = "plain backbone",
    ) -> None:
        super().__init__(scale, multiple_of)
        self.backbone = backbone
        self.description = description
        """What reports call it (a merged LoRA model says so, not "plain backbone")."""

    def describe(self) -> str:
        return self.description

    def prepare(
        self,
        lr: Tensor,
        scores: Tensor | None = None,
        *,
        routing: RoutingMode = "image",
        region_window: int = REGION_WINDOW,
    ) -> ImageWork:
        """The backbone itself, with an empty plan: nothing is routed (whatever ``routing``)."""
        return ImageWork(self.backbone, RoutingPlan(None))

    def forward(self, lr: Tensor) -> Tensor:
        return self.backbone(lr)

    def to_inference(
        self, device: torch.device | str, dtype: torch.dtype, *, merge: bool = False
    ) -> PlainSR:
        """On ``device`` in ``dtype``, eval mode (``merge``: nothing to merge)."""
        return self.to(device=device, dtype=dtype).eval()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the manifest and the backbone's weights (its state dict)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.backbone.state_dict().items()}
        save_file(state, str(directory / BACKBONE_FILE))
        write_manifest(directory, self.model_type)
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> PlainSR:
        """A folder written by :meth:`save_pretrained`, a pretrained backbone name (a key of
        :data:`~mordasr.nets.loaders.PRETRAINED`) or a ``.pth``/``.param``/``.safetensors``
        file; a file that cannot be read (or a pickle that carries code) is a one-line
        :class:`~mordasr.sr.manifest.ModelLoadError`."""
        source = Path(name_or_path)
        if str(name_or_path) not in PRETRAINED and source.is_dir():
            check_model_type(source, cls.model_type)
            source = source / BACKBONE_FILE
        with loading(source):
            backbone = load_network(source)
        backbone.requires_grad_(False)
        scale, multiple_of = (int(cast(SupportsInt, backbone.scale)), backbone.multiple_of)
        return cls(backbone, scale, int(cast(SupportsInt, multiple_of))).eval()


@dataclass
class BicubicConfig:
    """What a bicubic model folder stores."""

    scale: int = 4


@register_model_type()
class BicubicSR(_FixedScaleSR):
    """Bicubic interpolation by ``scale`` (antialias off, as MATLAB-free baselines do)."""

    model_type: ClassVar[str] = "bicubic"
    feed_forward: ClassVar[bool] = False

    def __init__(self, scale: int = 4) -> None:
        super().__init__(scale, 1)

    def describe(self) -> str:
        return "bicubic"

    def prepare(
        self,
        lr: Tensor,
        scores: Tensor | None = None,
        *,
        routing: RoutingMode = "image",
        region_window: int = REGION_WINDOW,
    ) -> ImageWork:
        """The interpolation itself, with an empty plan: nothing is routed (whatever
        ``routing``)."""
        return ImageWork(self, RoutingPlan(None))

    def forward(self, lr: Tensor) -> Tensor:
        out = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out.clamp(0.0, 1.0)

    def to_inference(
        self, device: torch.device | str, dtype: torch.dtype, *, merge: bool = False
    ) -> BicubicSR:
        """Nothing to move or cast: interpolation runs in the input's dtype and device."""
        return self.eval()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the manifest and ``bicubic.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = BicubicConfig(self.scale)
        (directory / BICUBIC_FILE).write_text(json.dumps(asdict(config), indent=2) + "\n")
        write_manifest(directory, self.model_type)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BicubicSR:
        """Load a folder written by :meth:`save_pretrained`."""
        directory = Path(directory)
        check_model_type(directory, cls.model_type)
        config = read_json_dataclass(directory / BICUBIC_FILE, BicubicConfig)
        return cls(config.scale).eval()
