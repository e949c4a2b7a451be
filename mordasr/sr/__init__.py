"""Super-resolution models: a backbone with MoR adapters, the one-step SD model, plain baselines.

Every model implements :class:`SRModel`; every model folder holds a manifest
(``mordasr_model.json``) naming its type, and :func:`load_sr_model` loads any of them::

    from mordasr.sr import load_sr_model
    model = load_sr_model("default")      # or a folder, "realesrgan-x4plus", a .pth, "bicubic"
    model.save_pretrained("my_model")     # manifest + the files its type needs

- :mod:`~mordasr.sr.protocol` — :class:`SRModel`, what every model type provides.
- :mod:`~mordasr.sr.manifest` — the manifest file and :class:`ModelLoadError` (one line).
- :mod:`~mordasr.sr.registry` — model types by manifest name, legacy folder detection.
- :mod:`~mordasr.sr.mor_sr` — backbone + MoR adapters + estimator, save/load.
- :mod:`~mordasr.sr.router_input` — what the routers of a MoR model read (scores or features).
- :mod:`~mordasr.sr.regions` — region scores and per-tile routing (``--routing region``).
- :mod:`~mordasr.sr.sd` — the paper's one-step SD 2.1 generator (:class:`OneStepSR`).
- :mod:`~mordasr.sr.baselines` — a plain backbone, bicubic interpolation.
- :mod:`~mordasr.sr.zoo` — one loader for every model name (`default`, backbones, bicubic).
"""

from mordasr.sr.baselines import BicubicSR, PlainSR
from mordasr.sr.manifest import MANIFEST_FILE, Manifest, ModelLoadError
from mordasr.sr.mor_sr import MoRSuperResolver, SRModelSpec
from mordasr.sr.protocol import SRModel
from mordasr.sr.registry import MODEL_TYPES, register_model_type
from mordasr.sr.sd import OneStepSR
from mordasr.sr.zoo import as_sr_model, load_sr_model

__all__ = [
    "MANIFEST_FILE",
    "MODEL_TYPES",
    "BicubicSR",
    "Manifest",
    "MoRSuperResolver",
    "ModelLoadError",
    "OneStepSR",
    "PlainSR",
    "SRModel",
    "SRModelSpec",
    "as_sr_model",
    "load_sr_model",
    "register_model_type",
]
