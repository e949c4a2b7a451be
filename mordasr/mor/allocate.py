"""Rank allocation under a parameter budget by gradient importance (AdaptSR's Algorithm 1).

A first-order Taylor expansion says a layer whose weight gradient is large gains most from an
update, so layers are scored by ``||dL/dW||`` on a batch (before any adapter exists) and the
budget is spent on the highest-scoring layers first. The result is a :class:`MoRConfig` whose
``target_modules`` names the chosen layers and whose ``layer_overrides`` give each its size,
keeping the template's proportions of shared, routed, zero experts and top-k.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from torch import Tensor, nn

from mordasr.mor.config import MoRConfig


def gradient_importance(
    model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], config: MoRConfig
) -> dict[str, float]:
    """``||dL/dW||_2`` of every layer ``config`` targets, from one backward pass of ``loss_fn``.

    Gradients are enabled on those weights only for the call; the model's ``requires_grad``
    flags and ``.grad`` fields are restored afterwards.
    """
    layers = {
        name: module
        for name, module in model.named_modules()
        if name and isinstance(module, nn.Linear | nn.Conv2d) and config.matches(name)
    }
    if not layers:
        raise ValueError("the config targets no nn.Linear/nn.Conv2d layer of this model")
    flags = {p: p.requires_grad for p in model.parameters()}
    saved = {p: p.grad for p in model.parameters()}
    try:
        model.requires_grad_(False)
        for module in layers.values():
            module.weight.requires_grad_(True)
            module.weight.grad = None
        loss_fn(model).backward()
        return {
            name: float(module.weight.grad.norm()) if module.weight.grad is not None else 0.0
            for name, module in layers.items()
        }
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = saved[p]


def params_per_rank(module: nn.Module, conv_variant: str = "kxk_1x1") -> int:
    """Adapter parameters one rank costs on ``module`` (one row of A plus one column of B);
    for convolutions the kernel sits in A (``kxk_1x1``) or in B (``1x1_kxk``)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        if conv_variant == "1x1_kxk":
            return module.in_channels + module.out_channels * kh * kw
        return module.in_channels * kh * kw + module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features + module.out_features
    raise TypeError(f"cannot adapt {type(module).__name__}")


def allocate_ranks(
    importance: dict[str, float],
    cost_per_rank: dict[str, int],
    budget: int,
    template: MoRConfig,
    min_rank: int = 0,
    max_rank: int | None = None,
) -> MoRConfig:
    """Spend ``budget`` adapter parameters on the most important layers.

    Every layer first gets ``min_rank`` real ranks; then, from the most important layer down, each
    is raised to ``max_rank`` (default: the template's shared + real ranks) while the budget
    lasts, and the last one gets what is left. Layers left at rank 0 are not adapted.
    Rank-1 experts only: a LoRA-MoE template (``expert_rank > 1``) cannot be split rank by rank.
    """
    if template.expert_rank != 1:
        raise ValueError("rank allocation needs rank-1 experts (expert_rank == 1)")
    full = template.num_shared + template.num_real
    max_rank = full if max_rank is None else max_rank
    if not 0 <= min_rank <= max_rank:
        raise ValueError("need 0 <= min_rank <= max_rank")
    ranks = {name: min_rank for name in importance}
    spent = sum(min_rank * cost_per_rank[name] for name in importance)
    if spent > budget:
        raise ValueError(f"min_rank alone needs {spent} parameters, over the budget {budget}")
    for name in sorted(importance, key=importance.__getitem__, reverse=True):
        affordable = (budget - spent) // cost_per_rank[name]
        extra = min(max_rank - ranks[name], affordable)
        ranks[name] += extra
        spent += extra * cost_per_rank[name]
    chosen = {name: r for name, r in ranks.items() if r > 0}
    if not chosen:
        raise ValueError("the budget does not afford a single rank")
    targets = "|".join(re.escape(name) for name in sorted(chosen))
    overrides = {re.escape(name): layout(r, template) for name, r in chosen.items() if r != full}
    return replace(template, target_modules=targets, layer_overrides=overrides)


def layout(rank: int, template: MoRConfig) -> dict[str, int]:
    """Split ``rank`` real ranks into shared / routed / zero / top-k in the template's ratios."""
    full = template.num_shared + template.num_real
    if rank >= full:
        return {}
    factor = rank / full
    shared = min(rank, max(1, round(template.num_shared * factor)))
    real = rank - shared
    if real == 0 or template.num_routed == 0:
        return {"num_shared": rank, "num_routed": 0, "num_zero": 0, "top_k": 0}
    zero = round(template.num_zero * factor)
    routed = real + zero
    top_k = min(routed, max(1, round(template.top_k * factor)))
    return {"num_shared": shared, "num_routed": routed, "num_zero": zero, "top_k": top_k}
