"""mordasr: real-world image super-resolution with Mixture-of-Ranks, degradation-aware adapters."""

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

__version__ = "0.1.0"

__all__ = [
    "MoRConfig",
    "Upscaler",
    "__version__",
    "balance_loss",
    "inject_mor",
    "load_mor_adapter",
    "load_mor_state_dict",
    "mark_only_mor_trainable",
    "merge_shared",
    "mor_state_dict",
    "routing",
    "routing_stats",
    "save_mor_adapter",
    "set_scores",
    "unmerge_shared",
]
