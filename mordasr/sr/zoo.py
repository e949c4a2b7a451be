"""Every super-resolution model mordasr can run, behind one loader.

``load_sr_model(name)`` accepts:

- ``default`` (or another built-in name): the shipped MoR-adapted model;
- a folder written by ``MoRSuperResolver.save_pretrained`` (or a training run's ``final``);
- a folder written by ``OneStepSR.save_pretrained`` (the one-step SD 2.1 model, e.g. the
  ``final`` of an ``sd21-mor`` training run), loaded onto the SD weights its config names;
- ``realesrgan-x4plus`` / ``realsr-df2k-x4`` or a ``.pth``/``.param`` file: the plain backbone;
- ``bicubic``: bicubic interpolation (x4), the usual floor in benchmark tables.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from mordasr.nets.loaders import PRETRAINED, load_realesrgan
from mordasr.sr.mor_sr import MODEL_FILE, MoRSuperResolver, builtin_model_dir
from mordasr.sr.sd.sr_model import OneStepSR, is_onestep_checkpoint


class PlainSR(nn.Module):
    """A feed-forward backbone used as is (no adapters, no routing)."""

    def __init__(self, backbone: nn.Module, scale: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.scale = scale

    def forward(self, lr: Tensor) -> Tensor:
        return self.backbone(lr)


class BicubicSR(nn.Module):
    """Bicubic interpolation by ``scale`` (antialias off, as MATLAB-free baselines do)."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, lr: Tensor) -> Tensor:
        out = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out.clamp(0.0, 1.0)


def load_sr_model(name_or_path: str | Path = "default") -> nn.Module:
    """Load any supported SR model in eval mode; it has ``.scale`` and maps (B,3,h,w) LR to SR."""
    key = str(name_or_path)
    if key == "bicubic":
        return BicubicSR().eval()
    if builtin_model_dir(key) is not None or (Path(key) / MODEL_FILE).is_file():
        return MoRSuperResolver.from_pretrained(key)
    if is_onestep_checkpoint(key):
        return OneStepSR.from_pretrained(key)
    if key in PRETRAINED or Path(key).is_file():
        backbone = load_realesrgan(key)
        backbone.requires_grad_(False)
        return PlainSR(backbone, backbone.scale).eval()
    raise FileNotFoundError(
        f"unknown model {key!r}: use 'default', a model folder (MoR or one-step SD), "
        f"a backbone name ({', '.join(PRETRAINED)}), a weight file, or 'bicubic'"
    )


def describe(model: nn.Module) -> str:
    """A short human-readable name of a loaded model, for tables and logs."""
    if isinstance(model, MoRSuperResolver):
        return f"MoR on {model.spec.backbone} (estimator: {model.spec.estimator})"
    if isinstance(model, OneStepSR):
        config = model.config
        return f"one-step MoR on {config.base_model} (estimator: {config.estimator})"
    if isinstance(model, PlainSR):
        return "plain backbone"
    if isinstance(model, BicubicSR):
        return "bicubic"
    return type(model).__name__


__all__ = ["BicubicSR", "PlainSR", "describe", "load_sr_model"]
