"""Batched one-image routing and folding for inference (``prefold_routed``)."""

from __future__ import annotations

import copy

import pytest
import torch
from mor_helpers import count_router_calls, randomise
from torch import nn
from toy_nets import TinyUNetBlock

from mordasr.mor import MoRConfig, inject_mor, mor_layers, prefold_routed, routing
from mordasr.mor.config import DEFAULT_TARGETS

SMALL = {"num_shared": 2, "num_routed": 8, "num_zero": 2, "top_k": 3}


def adapted_block(**overrides: object) -> nn.Module:
    """A UNet-like block with non-zero MoR adapters; a layer override makes a second router
    shape, so the batched routing has two groups."""
    torch.manual_seed(0)
    config = MoRConfig(
        target_modules=list(DEFAULT_TARGETS),
        layer_overrides={"conv_out": {"num_routed": 6, "num_zero": 1, "top_k": 2}},
        **{**SMALL, **overrides},
    )
    return randomise(inject_mor(TinyUNetBlock(), config).eval(), seed=1, std=0.05)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"renormalize_gates": True},
        {"renormalize_gates": True, "gate_scale": 3.0},
        {"router_bias": True},
        {"compute_path": "merged"},
        {"num_routed": 8, "num_zero": 0, "top_k": 4, "expert_rank": 2},
    ],
    ids=["plain", "renormalized", "gate-scale", "router-bias", "merged-path", "whole-lora-experts"],
)
def test_prefolded_forward_equals_the_layer_by_layer_forward(overrides: dict) -> None:
    model = adapted_block(**overrides)
    if overrides.get("router_bias"):
        with torch.no_grad():
            for _, layer in mor_layers(model):
                layer.router.gate.bias.normal_()
    reference = copy.deepcopy(model)
    x, scores = torch.randn(1, 4, 8, 8), torch.rand(1, 7)
    with torch.no_grad(), routing(reference, scores):
        expected = reference(x)
    with torch.no_grad(), routing(model, scores):
        prefold_routed(model)
        actual = model(x)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)


def test_after_prefolding_no_layer_routes_again(monkeypatch: pytest.MonkeyPatch) -> None:
    model = adapted_block()
    calls = count_router_calls(monkeypatch)
    with torch.no_grad(), routing(model, torch.rand(1, 7)):
        prefold_routed(model)
        model(torch.randn(1, 4, 8, 8))
        model(torch.randn(1, 4, 6, 10))
    assert calls == []


def test_prefolding_records_each_layers_routing() -> None:
    model = adapted_block()
    reference = copy.deepcopy(model)
    scores = torch.rand(1, 7)
    with torch.no_grad(), routing(model, scores):
        prefold_routed(model)
    for (name, layer), (_, ref) in zip(mor_layers(model), mor_layers(reference), strict=True):
        expected = ref.router(scores)
        assert torch.equal(layer.last_routing.indices, expected.indices), name


def test_kept_zero_experts_fold_to_exact_zeros() -> None:
    config = MoRConfig(
        target_modules=["0"], num_shared=0, num_routed=6, num_zero=3, top_k=3, compute_path="merged"
    )
    model = inject_mor(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)), config)
    layer = model[0]
    with torch.no_grad():
        layer.routed_B.normal_()
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[[3, 4, 5], 0] = 30.0
    scores = torch.zeros(1, 7)
    scores[0, 0] = 1.0
    x = torch.randn(1, 8, 16, 16)
    with torch.no_grad(), routing(model, scores):
        prefold_routed(model)
        assert torch.equal(model(x), layer.base_layer(x))


def test_layers_set_to_the_low_rank_path_are_not_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    model = adapted_block(compute_path="lowrank")
    calls = count_router_calls(monkeypatch)
    with torch.no_grad(), routing(model, torch.rand(1, 7)):
        prefold_routed(model)
        model(torch.randn(1, 4, 8, 8))
    assert len(calls) == sum(1 for _, layer in mor_layers(model) if layer.router is not None)


def _single_conv(channels: int) -> nn.Module:
    torch.manual_seed(0)
    config = MoRConfig(target_modules=["0"], num_shared=2, num_routed=8, num_zero=2, top_k=4)
    model = inject_mor(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1)), config).eval()
    with torch.no_grad():
        model[0].routed_B.normal_()
    return model


@pytest.mark.parametrize(("side", "folds"), [(2, False), (64, True)])
def test_auto_path_folds_only_where_the_first_call_has_enough_tokens(
    side: int, folds: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _single_conv(32)
    reference = copy.deepcopy(model)
    layer = model[0]
    fold_calls: list[int] = []
    original = type(layer)._fold_rows
    monkeypatch.setattr(
        type(layer), "_fold_rows", lambda self, *a: fold_calls.append(1) or original(self, *a)
    )
    x, scores = torch.randn(1, 32, side, side), torch.rand(1, 7)
    with torch.no_grad(), routing(reference, scores):
        expected = reference(x)
    with torch.no_grad(), routing(model, scores):
        prefold_routed(model)
        first, again = model(x), model(x)
    assert bool(fold_calls) == folds
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, first, atol=0, rtol=0)
