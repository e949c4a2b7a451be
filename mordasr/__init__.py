"""mordasr: real-world image super-resolution with Mixture-of-Ranks, degradation-aware adapters.

The names here are the ones the README shows: :class:`Upscaler` (images in, images out), the
model loaders (:func:`load_sr_model`, :class:`MoRSuperResolver`, :class:`OneStepSR`, the
:class:`SRModel` protocol, :class:`ModelLoadError`) and the Mixture-of-Ranks API.
"""

from mordasr.infer.pipeline import Upscaler
from mordasr.mor import (
    MoRConfig,
    balance_loss,
    inject_mor,
    load_mor_adapter,
    load_mor_state_dict,
    mark_only_mor_trainable,
    merge_shared,
    mor_state_dict,
    routing,
    routing_stats,
    save_mor_adapter,
    set_scores,
    unmerge_shared,
)
from mordasr.sr import ModelLoadError, MoRSuperResolver, OneStepSR, SRModel, load_sr_model

__version__ = "0.1.0"

__all__ = [
    "MoRConfig",
    "MoRSuperResolver",
    "ModelLoadError",
    "OneStepSR",
    "SRModel",
    "Upscaler",
    "__version__",
    "balance_loss",
    "inject_mor",
    "load_mor_adapter",
    "load_mor_state_dict",
    "load_sr_model",
    "mark_only_mor_trainable",
    "merge_shared",
    "mor_state_dict",
    "routing",
    "routing_stats",
    "save_mor_adapter",
    "set_scores",
    "unmerge_shared",
]
