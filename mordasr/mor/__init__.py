"""Mixture of Ranks: LoRA whose every rank is an expert, routed per image by degradation scores.

- :mod:`~mordasr.mor.config` — :class:`MoRConfig`, what to adapt and how big.
- :mod:`~mordasr.mor.router` — :class:`Router`, scores -> top-k gates (eq. 9).
- :mod:`~mordasr.mor.layer` — :class:`MoRLinear`, :class:`MoRConv2d` (eq. 10): folded or low-rank.
- :mod:`~mordasr.mor.plan` — :func:`route` -> :class:`RoutingPlan`, the routing as one value.
- :mod:`~mordasr.mor.balance` — standard and degradation-aware balance losses (eq. 13-17).
- :mod:`~mordasr.mor.model` — inject, merge, save/load.
- :mod:`~mordasr.mor.allocate` — gradient-importance rank allocation under a budget (AdaptSR).
- :mod:`~mordasr.mor.variants` — the paper's Table 2 ablations (LoRA, LoRA-MoE, MoR-v1/v2).
"""

from mordasr.mor.allocate import allocate_ranks, gradient_importance, params_per_rank
from mordasr.mor.balance import load_balance_loss, severity_from_scores
from mordasr.mor.config import MoRConfig
from mordasr.mor.layer import MoRConv2d, MoRLayer, MoRLinear
from mordasr.mor.model import (
    cast_network,
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
    save_mor_adapter,
    set_strength,
    unmerge_shared,
)
from mordasr.mor.plan import LayerPlan, LayerRouting, RoutingPlan, applied_plan, route
from mordasr.mor.router import SCORE_TRANSFORMS, Router, Routing, transform_scores
from mordasr.mor.variants import VARIANTS, Variant, degradation_aware_balance, variant_config

__all__ = [
    "SCORE_TRANSFORMS",
    "VARIANTS",
    "LayerPlan",
    "LayerRouting",
    "MoRConfig",
    "MoRConv2d",
    "MoRLayer",
    "MoRLinear",
    "Router",
    "Routing",
    "RoutingPlan",
    "Variant",
    "allocate_ranks",
    "applied_plan",
    "cast_network",
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
    "route",
    "save_mor_adapter",
    "set_strength",
    "severity_from_scores",
    "transform_scores",
    "unmerge_shared",
    "variant_config",
]
