"""Helpers for the MoR tests: adapters that actually change the output, routed comparisons."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mordasr.mor import MoRLayer, Router, mor_layers, routing


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


def assert_routed_outputs_equal(
    model: nn.Module, other: nn.Module, x: torch.Tensor, scores: torch.Tensor
) -> None:
    """Both models routed by ``scores`` give exactly the same output for ``x``."""
    with torch.no_grad(), routing(model, scores):
        expected = model(x)
    with torch.no_grad(), routing(other, scores):
        torch.testing.assert_close(other(x), expected, atol=0, rtol=0)


def count_router_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one entry on every router call from now on."""
    calls: list[int] = []
    original = Router.forward
    monkeypatch.setattr(Router, "forward", lambda self, s: calls.append(1) or original(self, s))
    return calls


def input_for(layer: MoRLayer, batch: int) -> torch.Tensor:
    """A random input batch shaped for ``layer`` (tokens for a linear, an image for a conv)."""
    if isinstance(layer.base_layer, nn.Linear):
        return torch.randn(batch, 9, layer.base_layer.in_features)
    return torch.randn(batch, layer.base_layer.in_channels, 11, 13)


def assert_paths_agree(layer: MoRLayer, batch: int) -> None:
    """The low-rank and the merged compute paths give the same output for ``batch`` images."""
    x = input_for(layer, batch)
    layer.set_scores(torch.rand(batch, 7))
    outputs = {}
    for path in ("lowrank", "merged"):
        layer.config.compute_path = path
        outputs[path] = layer(x)
    torch.testing.assert_close(outputs["lowrank"], outputs["merged"], atol=1e-5, rtol=0)


def routed_input(layer: MoRLayer, path: str, score_rows: int, batch: int = 2) -> torch.Tensor:
    """Set ``layer`` to compute ``path`` routed by ``score_rows`` random score rows; return an
    input batch for it."""
    layer.config.compute_path = path
    layer.set_scores(torch.rand(score_rows, 7))
    return input_for(layer, batch)
