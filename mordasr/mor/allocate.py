"""Rank allocation under a parameter budget by layer importance (AdaptSR's Algorithm 1).

A first-order Taylor expansion says a layer whose weight gradient is large gains most from an
update, so layers are scored by ``||dL/dW||`` on a batch (before any adapter exists) and the
budget is spent on the highest-scoring layers first. The result is a :class:`MoRConfig` whose
``target_modules`` names the chosen layers and whose ``layer_overrides`` give each its size,
keeping the template's proportions of shared, routed, zero experts and top-k.

Other scorers (:data:`SCORERS`) are the alternatives AdaptSR's Table 11 compares: ``taylor``
(``sum |g * W|``, the first-order loss change of removing the weight, as SNIP) and ``weight``
(``||W||``, no gradient at all). :func:`importance_stability` says how much the ranking of the
layers moves from one batch to the next (AdaptSR reports a Spearman correlation of 0.91).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Literal, get_args

from torch import Tensor, nn

from mordasr.mor.config import MoRConfig

Scorer = Literal["gradient", "taylor", "weight"]
SCORERS: tuple[str, ...] = get_args(Scorer)


def gradient_importance(
    model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], config: MoRConfig
) -> dict[str, float]:
    """``||dL/dW||_2`` of every layer ``config`` targets, from one backward pass of ``loss_fn``.

    Gradients are enabled on those weights only for the call; the model's ``requires_grad``
    flags and ``.grad`` fields are restored afterwards.
    """
    return layer_importance(model, loss_fn, config, "gradient")


def layer_importance(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], Tensor],
    config: MoRConfig,
    scorer: Scorer = "gradient",
) -> dict[str, float]:
    """The ``scorer``'s importance of every ``nn.Linear``/``nn.Conv2d`` layer ``config``
    targets: ``gradient`` ``||g||_2``, ``taylor`` ``sum |g * W|`` (``g = dL/dW`` from one
    backward pass of ``loss_fn``, the model left as :func:`gradient_importance` says) or
    ``weight`` ``||W||_2`` (``loss_fn`` is not called)."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; choose one of {list(SCORERS)}")
    layers = {
        name: module
        for name, module in model.named_modules()
        if name and isinstance(module, nn.Linear | nn.Conv2d) and config.matches(name)
    }
    if not layers:
        raise ValueError("the config targets no nn.Linear/nn.Conv2d layer of this model")
    if scorer == "weight":
        return {name: float(module.weight.detach().norm()) for name, module in layers.items()}
    flags = {p: p.requires_grad for p in model.parameters()}
    saved = {p: p.grad for p in model.parameters()}
    try:
        model.requires_grad_(False)
        for module in layers.values():
            module.weight.requires_grad_(True)
            module.weight.grad = None
        loss_fn(model).backward()
        scores = {}
        for name, module in layers.items():
            grad = module.weight.grad
            if grad is None:
                scores[name] = 0.0
            elif scorer == "gradient":
                scores[name] = float(grad.norm())
            else:
                scores[name] = float((grad * module.weight.detach()).abs().sum())
        return scores
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = saved[p]


def spearman(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Spearman rank correlation of two scorings of the same layers (ties share their mean
    rank); 0 when either scoring is constant."""
    if set(a) != set(b):
        raise ValueError("the two scorings name different layers")
    names = sorted(a)
    ra, rb = _ranks([a[n] for n in names]), _ranks([b[n] for n in names])
    mean = (len(names) - 1) / 2
    da, db = [r - mean for r in ra], [r - mean for r in rb]
    cross = sum(x * y for x, y in zip(da, db, strict=True))
    norm = (sum(x * x for x in da) * sum(y * y for y in db)) ** 0.5
    return cross / norm if norm > 0 else 0.0


def importance_stability(scorings: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """How alike the layer rankings of several batches are: the mean and the smallest Spearman
    correlation over every pair of ``scorings`` (at least two)."""
    if len(scorings) < 2:
        raise ValueError("stability needs the scorings of at least two batches")
    rhos = [spearman(a, b) for a, b in itertools.combinations(scorings, 2)]
    return {"spearman_mean": sum(rhos) / len(rhos), "spearman_min": min(rhos)}


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2
        start = end + 1
    return ranks


def uniform_budget(cost_per_rank: Mapping[str, int], rank: int) -> int:
    """Adapter parameters of rank ``rank`` on every layer: the budget at which rank-aware
    allocation is compared with a uniform rank."""
    return rank * sum(cost_per_rank.values())


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


def allocated_ranks(config: MoRConfig, names: Sequence[str]) -> dict[str, int]:
    """The real ranks (shared + real routed) ``config`` gives each of ``names``; 0 for a layer
    it does not adapt."""
    ranks = {}
    for name in names:
        layer = config.for_layer(name)
        ranks[name] = layer.num_shared + layer.num_real_ranks if config.matches(name) else 0
    return ranks
