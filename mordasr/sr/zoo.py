"""Every super-resolution model mordasr can run, behind one loader.

``load_sr_model(name)`` accepts:

- ``default`` (the shipped LoRA-adapted Real-ESRGAN x4plus) or another built-in name
  (``mor-dasr``: the shipped MoR-DASR model);
- a model folder: loaded by the class its manifest (``mordasr_model.json``) names, e.g. one
  written by ``MoRSuperResolver.save_pretrained`` (or a training run's ``final``) or by
  ``OneStepSR.save_pretrained`` (the one-step SD 2.1 model, loaded onto the SD weights its
  config names); folders of earlier versions, without a manifest, are recognised by their
  ``model.json`` or ``onestep_config.json``;
- a backbone name (``realesrgan-x4plus``, ``realsr-df2k-x4``, ``realesrgan-x4plus-anime``,
  ``realesr-animevideov3`` and its ``-x2``/``-x3``) or a ``.pth``/``.param``/``.safetensors``
  file: the plain network (RRDBNet, SRVGGNetCompact, or another architecture through spandrel
  with the ``mordasr[any]`` extra);
- ``bicubic``: bicubic interpolation (x4), the usual floor in benchmark tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import SupportsInt, cast

from torch import nn

from mordasr.nets.loaders import PRETRAINED
from mordasr.sr.baselines import BicubicSR, PlainSR
from mordasr.sr.mor_sr import MoRSuperResolver, builtin_model_dir
from mordasr.sr.protocol import SRModel
from mordasr.sr.registry import load_model_folder
from mordasr.sr.sd.sr_model import OneStepSR


def load_sr_model(name_or_path: str | Path = "default") -> SRModel:
    """Load any supported SR model in eval mode (see the module docstring for the names).

    Raises FileNotFoundError for a name that is none of them, and a one-line
    :class:`~mordasr.sr.manifest.ModelLoadError` (a ``ValueError``) for a folder or file that
    cannot be loaded.
    """
    key = str(name_or_path)
    if key == "bicubic":
        return BicubicSR().eval()
    folder = builtin_model_dir(key) or Path(key)
    if folder.is_dir():
        return load_model_folder(folder)
    if key in PRETRAINED or Path(key).is_file():
        return PlainSR.from_pretrained(key)
    raise FileNotFoundError(
        f"unknown model {key!r}: use 'default', 'mor-dasr', a model folder (MoR or one-step SD), "
        f"a backbone name ({', '.join(PRETRAINED)}), a weight file, or 'bicubic'"
    )


def as_sr_model(module: nn.Module) -> SRModel:
    """``module`` itself when it implements :class:`SRModel`, else a :class:`PlainSR` around
    it (any network with a ``scale`` attribute, run as is)."""
    if isinstance(module, SRModel):
        return module
    # a plain attribute, which nn.Module's __getattr__ types as a submodule or tensor
    scale = cast(SupportsInt, module.scale)
    return PlainSR(module, int(scale))


__all__ = [
    "BicubicSR",
    "MoRSuperResolver",
    "OneStepSR",
    "PlainSR",
    "as_sr_model",
    "load_sr_model",
]
