"""Helpers for the MoR tests: adapters that actually change the output, planned forwards."""

from __future__ import annotations

import torch
from torch import nn

from mordasr.mor import MoRLayer, RoutingPlan, mor_layers, route


def randomise(target: nn.Module, seed: int = 0, std: float = 0.1) -> nn.Module:
    """Give the B factors of ``target`` (a MoR layer, or every MoR layer of a model) random
    values, so the adapters change the output (at init B is zero); returns ``target``."""
    layers = [target] if isinstance(target, MoRLayer) else [m for _, m in mor_layers(target)]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            for b in (layer.shared_B, layer.routed_B):
                b.copy_(torch.randn(b.shape, generator=gen) * std)
    return target


def run(target: nn.Module, x: torch.Tensor, plan: RoutingPlan) -> torch.Tensor:
    """``target`` (a MoR layer or a model) applied to ``x`` while running ``plan``."""
    with plan.applied(target):
        return target(x)


def assert_routed_outputs_equal(
    model: nn.Module, other: nn.Module, x: torch.Tensor, scores: torch.Tensor
) -> None:
    """Both models routed by ``scores`` give exactly the same output for ``x``."""
    with torch.no_grad():
        expected = run(model, x, route(model, scores))
        torch.testing.assert_close(run(other, x, route(other, scores)), expected, atol=0, rtol=0)


def input_for(layer: MoRLayer, batch: int) -> torch.Tensor:
    """A random input batch shaped for ``layer`` (tokens for a linear, an image for a conv)."""
    if isinstance(layer.base_layer, nn.Linear):
        return torch.randn(batch, 9, layer.base_layer.in_features)
    return torch.randn(batch, layer.base_layer.in_channels, 11, 13)


def assert_paths_agree(layer: MoRLayer, batch: int) -> None:
    """The low-rank and the merged compute paths give the same output for ``batch`` images."""
    x = input_for(layer, batch)
    plan = route(layer, torch.rand(batch, 7))
    outputs = {}
    for path in ("lowrank", "merged"):
        layer.config.compute_path = path
        outputs[path] = run(layer, x, plan)
    torch.testing.assert_close(outputs["lowrank"], outputs["merged"], atol=1e-5, rtol=0)


def routed_input(
    layer: MoRLayer, path: str, score_rows: int, batch: int = 2
) -> tuple[torch.Tensor, RoutingPlan]:
    """Set ``layer`` to compute ``path``; return an input batch for it and the plan of
    ``score_rows`` random score rows."""
    layer.config.compute_path = path
    return input_for(layer, batch), route(layer, torch.rand(score_rows, 7))
