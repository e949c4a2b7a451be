"""The strength knob: a MoR layer's adapter delta scaled between the frozen layer and the
trained adapter, on both compute paths and in folded plans."""

from __future__ import annotations

import pytest
import torch
from mor_helpers import run
from torch import nn

from mordasr.mor import MoRConfig, MoRConv2d, MoRLayer, MoRLinear, merge_shared, route, set_strength

SMALL = {"num_shared": 2, "num_routed": 8, "num_zero": 2, "top_k": 3, "score_dim": 7}


def _layer(kind: str, path: str) -> tuple[MoRLayer, torch.Tensor]:
    torch.manual_seed(0)
    config = MoRConfig(**SMALL, compute_path="merged" if path == "folded" else path)
    if kind == "linear":
        layer: MoRLayer = MoRLinear(nn.Linear(12, 10), config)
        x = torch.randn(2, 9, 12)
    else:
        layer = MoRConv2d(nn.Conv2d(5, 6, 3, padding=1), config)
        x = torch.randn(1, 5, 11, 13)
    with torch.no_grad():
        for b in (layer.shared_B, layer.routed_B):
            b.copy_(torch.randn(b.shape) * 0.1)
    return layer, x


def _forward(layer: MoRLayer, x: torch.Tensor, path: str) -> torch.Tensor:
    """``layer`` on ``x`` under a fresh plan (folded for ``path="folded"``) of fixed scores."""
    scores = torch.rand(x.shape[0], 7, generator=torch.Generator().manual_seed(1))
    return run(layer, x, route(layer, scores, fold=path == "folded"))


CASES = [(kind, path) for kind in ("linear", "conv") for path in ("lowrank", "merged", "folded")]


@torch.no_grad()
@pytest.mark.parametrize(("kind", "path"), CASES)
def test_strength_zero_is_the_frozen_layer_exactly(kind: str, path: str) -> None:
    layer, x = _layer(kind, path)
    layer.set_strength(0.0)
    assert torch.equal(_forward(layer, x, path), layer.base_layer(x))


@torch.no_grad()
@pytest.mark.parametrize(("kind", "path"), CASES)
@pytest.mark.parametrize("strength", [0.25, 0.5, 1.5])
def test_strength_moves_linearly_along_the_adapter_delta(
    kind: str, path: str, strength: float
) -> None:
    layer, x = _layer(kind, path)
    base, trained = layer.base_layer(x), _forward(layer, x, path)
    layer.set_strength(strength)
    expected = base + strength * (trained - base)
    torch.testing.assert_close(_forward(layer, x, path), expected, atol=1e-5, rtol=1e-5)


def test_model_level_strength_reaches_every_layer() -> None:
    model = nn.Sequential(_layer("linear", "lowrank")[0], _layer("linear", "merged")[0])
    set_strength(model, 0.3)
    assert [layer.strength for layer in model] == [0.3, 0.3]


def test_strength_is_refused_while_shared_ranks_are_merged() -> None:
    layer, _ = _layer("linear", "lowrank")
    merge_shared(layer)
    with pytest.raises(RuntimeError, match="unmerge"):
        layer.set_strength(0.5)


def test_merging_shared_ranks_is_refused_at_another_strength() -> None:
    layer, _ = _layer("linear", "lowrank")
    layer.set_strength(0.5)
    with pytest.raises(RuntimeError, match="strength 1"):
        layer.merge_shared()
