"""Mixture of Ranks: LoRA whose every rank is an expert, routed per image by degradation scores.

- :mod:`~mordasr.mor.config` — :class:`MoRConfig`, what to adapt and how big.
- :mod:`~mordasr.mor.router` — :class:`Router`, scores -> top-k gates (eq. 9).
- :mod:`~mordasr.mor.layer` — :class:`MoRLinear`, :class:`MoRConv2d` (eq. 10), two compute paths.
- :mod:`~mordasr.mor.balance` — standard and degradation-aware balance losses (eq. 13-17).
- :mod:`~mordasr.mor.model` — inject, route, merge, save/load, routing statistics.
- :mod:`~mordasr.mor.allocate` — gradient-importance rank allocation under a budget (AdaptSR).
- :mod:`~mordasr.mor.variants` — the paper's Table 2 ablations (LoRA, LoRA-MoE, MoR-v1/v2).
"""

from mordasr.mor.allocate import allocate_ranks, gradient_importance, params_per_rank
from mordasr.mor.balance import load_balance_loss, severity_from_scores
from mordasr.mor.config import MoRConfig
from mordasr.mor.layer import MoRConv2d, MoRLayer, MoRLinear
from mordasr.mor.model import (
    LayerRouting,
    balance_loss,
    inject_mor,
    load_mor_adapter,
    load_mor_state_dict,
    mark_only_mor_trainable,
    merge_shared,
    mor_config,
    mor_layers,
    mor_named_parameters,
    mor_parameters,
    mor_state_dict,
    prefold_routed,
    routing,
    routing_stats,
    save_mor_adapter,
    set_scores,
    set_strength,
    unmerge_shared,
)
from mordasr.mor.router import SCORE_TRANSFORMS, Router, Routing, transform_scores
from mordasr.mor.variants import VARIANTS, Variant, degradation_aware_balance, variant_config

__all__ = [
    "SCORE_TRANSFORMS",
    "VARIANTS",
    "LayerRouting",
    "MoRConfig",
    "MoRConv2d",
    "MoRLayer",
    "MoRLinear",
    "Router",
    "Routing",
    "Variant",
    "allocate_ranks",
    "balance_loss",
    "degradation_aware_balance",
    "gradient_importance",
    "inject_mor",
    "load_balance_loss",
    "load_mor_adapter",
    "load_mor_state_dict",
    "mark_only_mor_trainable",
    "merge_shared",
    "mor_config",
    "mor_layers",
    "mor_named_parameters",
    "mor_parameters",
    "mor_state_dict",
    "params_per_rank",
    "prefold_routed",
    "routing",
    "routing_stats",
    "save_mor_adapter",
    "set_scores",
    "set_strength",
    "severity_from_scores",
    "transform_scores",
    "unmerge_shared",
    "variant_config",
]
