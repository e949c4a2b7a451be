"""mordasr: real-world image super-resolution with Mixture-of-Ranks, degradation-aware adapters.

The names here are the ones the README shows: :class:`Upscaler` (images in, images out), the
model loaders (:func:`load_sr_model`, :class:`MoRSuperResolver`, :class:`OneStepSR`, the
:class:`SRModel` protocol, :class:`ModelLoadError`) and the Mixture-of-Ranks API (all of
:mod:`mordasr.mor`'s ``__all__``, re-exported so that it is listed once).
"""

from mordasr import mor
from mordasr.infer.pipeline import Upscaler
from mordasr.mor import *  # noqa: F403 (mor.__all__, added to __all__ below)
from mordasr.sr import ModelLoadError, MoRSuperResolver, OneStepSR, SRModel, load_sr_model

__version__ = "0.1.0"

__all__ = [
    "MoRSuperResolver",
    "ModelLoadError",
    "OneStepSR",
    "SRModel",
    "Upscaler",
    "__version__",
    "load_sr_model",
]
__all__ += mor.__all__
