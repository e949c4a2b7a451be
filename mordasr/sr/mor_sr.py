"""A feed-forward SR backbone with MoR adapters routed by a degradation estimator.

A model folder (``save_pretrained``/``from_pretrained``) holds ``model.json`` (which backbone,
which estimator, the scale), the MoR adapter (``mor_config.json``, ``mor_adapter.safetensors``)
and, for the learned estimator, the estimator heads the adapters were trained with
(``estimator.safetensors``). The backbone weights are not copied: they are named (a pretrained
name such as ``realesrgan-x4plus``) or referenced by path.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mordasr.estimate import DegradationEstimator, LearnedEstimator, load_estimator
from mordasr.estimate.learned import MIN_SIDE
from mordasr.mor import MoRConfig, inject_mor, load_mor_adapter, routing, save_mor_adapter
from mordasr.nets.loaders import load_realesrgan
from mordasr.sr.router_input import RouterInput, router_input

MODEL_FILE = "model.json"
ESTIMATOR_FILE = "estimator.safetensors"
BUILTIN = {"default": "default"}
"""Model names shipped inside the package (folders under ``mordasr/weights``)."""


@dataclass
class SRModelSpec:
    """What a MoR super-resolution model is made of."""

    backbone: str = "realesrgan-x4plus"
    """A pretrained backbone name or a weight file (absolute, or relative to the model folder)."""
    estimator: str = "learned"
    """Which degradation estimator routes the adapters: ``learned`` or ``clip``."""
    clip_model: str | None = None
    """Hub id or local folder of the CLIP weights when ``estimator`` is ``clip``."""
    estimator_weights: str | None = None
    """Learned-estimator heads bundled with the model (relative to the model folder), so the
    adapters are always routed by the estimator they were trained with; None: the package's."""
    scale: int = 4
    """Upscaling factor of the backbone."""
    router_input: RouterInput = "scores"
    """What the routers see: all seven ``scores``, ``blur-noise`` only, or ``lr-features``
    (see :mod:`mordasr.sr.router_input`)."""


class MoRSuperResolver(nn.Module):
    """Backbone + MoR adapters + estimator: ``sr = backbone_routed_by(estimator(lr))(lr)``."""

    def __init__(
        self, backbone: nn.Module, estimator: DegradationEstimator, spec: SRModelSpec
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.estimator = estimator
        self.spec = spec
        self.estimator.requires_grad_(False)

    @property
    def scale(self) -> int:
        return self.spec.scale

    @classmethod
    def build(
        cls, spec: SRModelSpec, mor: MoRConfig | None, base_dir: Path | None = None
    ) -> MoRSuperResolver:
        """Load the backbone and estimator and, if ``mor`` is given, inject fresh adapters."""
        backbone = load_realesrgan(_resolve(spec.backbone, base_dir))
        backbone.requires_grad_(False)
        if mor is not None:
            inject_mor(backbone, mor)
        if spec.estimator == "learned" and spec.estimator_weights:
            weights = Path(spec.estimator_weights)
            if base_dir is not None and not weights.is_absolute():
                weights = base_dir / weights
            estimator: DegradationEstimator = LearnedEstimator.from_pretrained(weights)
        else:
            estimator = load_estimator(spec.estimator, clip_model=spec.clip_model)
        return cls(backbone, estimator, spec)

    def estimate(self, lr: Tensor) -> Tensor:
        """(B, 7) degradation scores of the LR images."""
        return estimate_scores(self.estimator, lr)

    @torch.no_grad()
    def route_input(self, lr: Tensor) -> Tensor:
        """What the routers see for the LR images, as ``spec.router_input`` says (by default
        the seven scores of :meth:`estimate`)."""
        image = _estimator_view(lr)
        return router_input(self.spec.router_input, self.estimator, image).to(lr.dtype)

    def forward(self, lr: Tensor, scores: Tensor | None = None) -> Tensor:
        """Super-resolve ``lr`` (B, 3, h, w) in [0, 1]; ``scores`` (the routers' input)
        default to :meth:`route_input`."""
        if scores is None:
            scores = self.route_input(lr)
        with routing(self.backbone, scores):
            return self.backbone(lr)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.json`` and the adapter into ``directory``."""
        directory = Path(directory)
        save_mor_adapter(self.backbone, directory)
        spec = replace(self.spec)
        if isinstance(self.estimator, LearnedEstimator):
            self.estimator.save_heads(directory / ESTIMATOR_FILE)
            spec.estimator_weights = ESTIMATOR_FILE
        (directory / MODEL_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "default") -> MoRSuperResolver:
        """Load a built-in model by name (``default``) or a folder written by save_pretrained."""
        directory = builtin_model_dir(str(name_or_path)) or Path(name_or_path)
        spec_file = directory / MODEL_FILE
        if not spec_file.is_file():
            raise FileNotFoundError(f"{directory} is not a mordasr model folder (no {MODEL_FILE})")
        spec = SRModelSpec(**json.loads(spec_file.read_text()))
        model = cls.build(spec, mor=None, base_dir=directory)
        load_mor_adapter(model.backbone, directory)
        model.backbone.requires_grad_(False)
        return model.eval()


@torch.no_grad()
def estimate_scores(estimator: DegradationEstimator, lr: Tensor) -> Tensor:
    """(B, 7) degradation scores of LR images (B, 3, h, w) in [0, 1], in ``lr``'s dtype
    (small images are enlarged first, see :func:`_estimator_view`)."""
    return estimator(_estimator_view(lr)).to(lr.dtype)


def builtin_model_dir(name: str) -> Path | None:
    """The package folder of a built-in model, or None when ``name`` is not one."""
    if name not in BUILTIN:
        return None
    return Path(str(resources.files("mordasr") / "weights" / BUILTIN[name]))


def _estimator_view(lr: Tensor) -> Tensor:
    """``lr`` in float32, bicubically enlarged when a side is under ``MIN_SIDE``: the
    estimator's features need a minimum extent."""
    image = lr.float()
    short = min(image.shape[-2:])
    if short < MIN_SIDE:
        height, width = image.shape[-2:]
        size = (math.ceil(height * MIN_SIDE / short), math.ceil(width * MIN_SIDE / short))
        image = F.interpolate(image, size=size, mode="bicubic", align_corners=False)
        image = image.clamp(0.0, 1.0)
    return image


def _resolve(backbone: str, base_dir: Path | None) -> str:
    path = Path(backbone)
    if base_dir is not None and not path.is_absolute() and (base_dir / path).exists():
        return str(base_dir / path)
    return backbone
