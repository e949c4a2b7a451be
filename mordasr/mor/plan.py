"""Routing plans: what every MoR layer of a model does for a batch of scores, as one value.

``plan = route(model, scores)`` asks every router of ``model`` once (routers of the same shape
as one batched matmul, softmax and top-k) and returns an immutable :class:`RoutingPlan`: per
layer the kept slots, their gates and the router probabilities, and with ``fold=True`` the
frozen weight with the kept ranks folded in (float32). Nothing in the model changes until
``with plan.applied(model):``, the only thing that sets module state; the layers then run the
plan (:class:`~mordasr.mor.layer.MoRLayer`). A plan can be made for any scores: one image, a
training batch, or one tile or region of an image.

In training the plan keeps its autograd graph: the gates carry gradients to the routers and
:meth:`RoutingPlan.balance_loss` reads the probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from mordasr.mor.balance import calibrate_severity, load_balance_loss, severity_from_scores
from mordasr.mor.config import MoRConfig
from mordasr.mor.layer import MoRLayer
from mordasr.mor.router import Router, Routing, keep_top_k, transform_scores


@dataclass(frozen=True)
class LayerRouting:
    """What one MoR layer's router decided for a batch (detached, on CPU)."""

    indices: Tensor
    """(B, k) kept slots."""
    gates: Tensor
    """(B, k) their gate values."""
    probs: Tensor
    """(B, N) the full softmax."""
    num_zero: Tensor
    """(B,) how many kept slots were zero experts."""
    num_real: int
    """Real experts in this layer (slots ``>= num_real`` are zero experts)."""


@dataclass(frozen=True)
class LayerPlan:
    """One MoR layer's part of a plan."""

    config: MoRConfig
    """The layer's config (after per-layer overrides): the balance loss reads its severity
    settings."""
    routing: Routing | None
    """The router's decision (None for a layer without routed experts: plain LoRA)."""
    weight: Tensor | None = None
    """(U, *base weight shape): the frozen weight plus the adapter update of each of the U
    score rows (U = 1 without a router), when the plan was folded."""


@dataclass(frozen=True)
class RoutingPlan:
    """Every MoR layer's routing (and folded weight) for one batch of scores."""

    scores: Tensor | None
    """(B, D) what the routers saw (float32), or None for a model without routers."""
    layers: Mapping[str, LayerPlan] = field(default_factory=dict)
    """By the layer's qualified name in the model."""

    @property
    def folded(self) -> bool:
        """Whether every layer carries its folded weight."""
        return all(entry.weight is not None for entry in self.layers.values())

    def to(self, dtype: torch.dtype) -> RoutingPlan:
        """The plan with its folded weights cast to ``dtype`` (computed in float32, rounded
        once); the routing itself stays float32."""
        layers = {
            name: entry if entry.weight is None else replace(entry, weight=entry.weight.to(dtype))
            for name, entry in self.layers.items()
        }
        return replace(self, layers=layers)

    def stats(self) -> dict[str, LayerRouting]:
        """Per routed layer: the kept slots, gates, probabilities and zero-expert counts."""
        stats: dict[str, LayerRouting] = {}
        for name, entry in self.layers.items():
            r = entry.routing
            if r is None:
                continue
            stats[name] = LayerRouting(
                indices=r.indices.detach().cpu(),
                gates=r.gates.detach().cpu(),
                probs=r.probs.detach().cpu(),
                num_zero=r.num_zero_active.detach().cpu(),
                num_real=r.num_real,
            )
        return stats

    def mean_zero_experts(self) -> float:
        """Mean number of zero experts an image keeps per routed layer (0 without routers)."""
        counts = [
            entry.routing.num_zero_active.float().mean()
            for entry in self.layers.values()
            if entry.routing is not None
        ]
        return float(torch.stack(counts).mean()) if counts else 0.0

    def balance_loss(
        self,
        alpha: float = 1.0,
        degradation_aware: bool = True,
        severity_scores: Tensor | None = None,
    ) -> Tensor:
        """Mean balance loss over the routed layers (eq. 13-17).

        Degradation-aware by default: each image's severity comes from ``severity_scores`` (B, D)
        in [0, 1] (default: the scores the plan was routed by), reduced as each layer's config
        says. Pass them when the routers see something else, such as LR features. 0 for a plan
        without routed layers (plain LoRA).
        """
        losses = []
        for entry in self.layers.values():
            r = entry.routing
            if r is None or self.scores is None:
                continue
            severity = None
            if degradation_aware:
                scores = self.scores if severity_scores is None else severity_scores
                severity = calibrate_severity(
                    severity_from_scores(scores.float(), entry.config.severity_reduce),
                    entry.config.severity_range,
                )
            losses.append(load_balance_loss(r.probs, r.indices, r.num_real, alpha, severity))
        if not losses:
            return torch.zeros(())
        return torch.stack(losses).mean()

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` running this plan inside the block; what its layers ran before is restored
        on exit. Every MoR layer of ``model`` must have an entry."""
        layers = [(name, m) for name, m in model.named_modules() if isinstance(m, MoRLayer)]
        missing = [name for name, _ in layers if name not in self.layers]
        if missing:
            raise ValueError(
                f"this routing plan was made for another model: it has no entry for {missing[0]}"
            )
        previous = [(layer, layer.plan, layer.routing_plan) for _, layer in layers]
        for name, layer in layers:
            layer.plan, layer.routing_plan = self.layers[name], self
        try:
            yield model
        finally:
            for layer, entry, plan in previous:
                layer.plan, layer.routing_plan = entry, plan


def route(model: nn.Module, scores: Tensor | None, *, fold: bool = False) -> RoutingPlan:
    """The :class:`RoutingPlan` of ``model``'s MoR layers for (B, D) ``scores``.

    Routers of the same shape are evaluated together; the result keeps its autograd graph when
    gradients are on (training). ``fold`` also computes each layer's folded weight in float32
    (inference; :meth:`RoutingPlan.to` casts them). ``scores`` may be None only for a model
    without routed layers.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, MoRLayer)]
    routers = [(name, layer.router) for name, layer in layers if layer.router is not None]
    if routers and scores is None:
        raise ValueError("this model routes by degradation scores: route(model, scores) needs them")
    decisions: dict[str, Routing] = {}
    if routers and scores is not None:
        decisions = _route_batched(routers, scores)
    entries: dict[str, LayerPlan] = {}
    for name, layer in layers:
        decision = decisions.get(name)
        weight = layer.fold(decision) if fold else None
        entries[name] = LayerPlan(layer.config, decision, weight)
    plan_scores = None if scores is None or not routers else scores.float()
    return RoutingPlan(plan_scores, entries)


def applied_plan(model: nn.Module) -> RoutingPlan | None:
    """The plan ``model``'s MoR layers are running now (inside ``plan.applied``), or None."""
    for module in model.modules():
        if isinstance(module, MoRLayer):
            return module.routing_plan
    return None


def _route_batched(routers: list[tuple[str, Router]], scores: Tensor) -> dict[str, Routing]:
    """Every router's decision for ``scores``: one einsum, softmax and top-k per group of
    routers that share their shape and settings."""
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (B, D), got {tuple(scores.shape)}")
    groups: dict[tuple[object, ...], list[tuple[str, Router]]] = {}
    for name, router in routers:
        key = (
            tuple(router.gate.weight.shape),
            router.gate.bias is not None,
            router.top_k,
            router.num_real,
            router.renormalize,
            router.gate_scale,
            router.score_transform,
            router.gate.weight.device,
        )
        groups.setdefault(key, []).append((name, router))
    decisions: dict[str, Routing] = {}
    for members in groups.values():
        first = members[0][1]
        if scores.shape[1] != first.gate.in_features:
            raise ValueError(
                f"scores must have shape (B, {first.gate.in_features}), got {tuple(scores.shape)}"
            )
        x = transform_scores(scores.to(first.gate.weight.device), first.score_transform)
        weights = torch.stack([router.gate.weight.float() for _, router in members])
        logits = torch.einsum("bd,lnd->lbn", x, weights)
        if first.gate.bias is not None:
            biases = torch.stack([router.gate.bias.float() for _, router in members])
            logits = logits + biases[:, None, :]
        probs = torch.softmax(logits, dim=-1)
        gates, indices = keep_top_k(probs, first.top_k, first.renormalize, first.gate_scale)
        for i, (name, _) in enumerate(members):
            decisions[name] = Routing(
                probs=probs[i], indices=indices[i], gates=gates[i], num_real=first.num_real
            )
    return decisions
