"""Folded plans (``route(model, scores, fold=True)``): one weight per score row that runs
like the frozen layer and computes what the unfolded paths compute; and the batched routing
``route`` does for every router of a model."""

from __future__ import annotations

import copy

import pytest
import torch
from mor_helpers import input_for, randomise, run
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from toy_nets import TinyUNetBlock, small_conv_net

from mordasr.mor import MoRConfig, MoRConv2d, MoRLayer, MoRLinear, inject_mor, mor_layers, route
from mordasr.mor.config import DEFAULT_TARGETS

SMALL = {"num_shared": 2, "num_routed": 8, "num_zero": 2, "top_k": 3}
MODEL_OVERRIDES = {
    "plain": {},
    "renormalized": {"renormalize_gates": True},
    "gate-scale": {"renormalize_gates": True, "gate_scale": 3.0},
    "router-bias": {"router_bias": True},
    "centred-scores": {"router_scores": "centred"},
    "whole-lora-experts": {"num_routed": 8, "num_zero": 0, "top_k": 4, "expert_rank": 2},
}


def adapted_block(**overrides: object) -> nn.Module:
    """A UNet-like block with non-zero MoR adapters (and router biases, where it has them); a
    layer override makes a second router shape, so the batched routing has two groups."""
    torch.manual_seed(0)
    config = MoRConfig(
        target_modules=list(DEFAULT_TARGETS),
        layer_overrides={"conv_out": {"num_routed": 6, "num_zero": 1, "top_k": 2}},
        **{**SMALL, **overrides},
    )
    model = randomise(inject_mor(TinyUNetBlock(), config).eval(), seed=1, std=0.05)
    with torch.no_grad():
        for _, layer in mor_layers(model):
            if layer.router.gate.bias is not None:
                layer.router.gate.bias.normal_()
    return model


def _layers() -> list[MoRLayer]:
    torch.manual_seed(0)
    layers = [
        MoRLinear(nn.Linear(12, 10), MoRConfig(**SMALL)),
        MoRConv2d(nn.Conv2d(5, 6, 3, padding=1), MoRConfig(**SMALL)),
        MoRConv2d(nn.Conv2d(5, 6, 3, padding=1), MoRConfig(**SMALL, conv_variant="1x1_kxk")),
        MoRConv2d(nn.Conv2d(5, 6, 3, stride=2, padding=1), MoRConfig(**SMALL)),
    ]
    return [randomise(layer) for layer in layers]


def _conv_forced_to(kept: list[int]) -> MoRConv2d:
    """A conv layer without shared ranks whose router keeps ``kept`` for the scores e_0."""
    config = MoRConfig(num_shared=0, num_routed=8, num_zero=2, top_k=len(kept))
    layer = randomise(MoRConv2d(nn.Conv2d(8, 8, 3, padding=1), config))
    with torch.no_grad():
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[kept, 0] = 30.0
    return layer


def _first_axis_scores(batch: int) -> torch.Tensor:
    scores = torch.zeros(batch, 7)
    scores[:, 0] = 1.0
    return scores


@torch.no_grad()
@pytest.mark.parametrize("index", range(4), ids=["linear", "kxk_1x1", "1x1_kxk", "strided"])
@pytest.mark.parametrize("path", ["lowrank", "merged"])
@pytest.mark.parametrize("rows", [1, 3])
def test_a_folded_layer_computes_what_the_unfolded_path_computes(
    index: int, path: str, rows: int
) -> None:
    layer = _layers()[index]
    layer.config.compute_path = path
    x, scores = input_for(layer, 3), torch.rand(rows, 7)
    expected = run(layer, x, route(layer, scores))
    folded = run(layer, x, route(layer, scores, fold=True))
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("overrides", MODEL_OVERRIDES.values(), ids=MODEL_OVERRIDES.keys())
def test_a_folded_model_computes_what_the_unfolded_model_computes(overrides: dict) -> None:
    model = adapted_block(**overrides)
    x, scores = torch.randn(2, 4, 8, 8), torch.rand(2, 7)
    expected = run(model, x, route(model, scores))
    folded = run(model, x, route(model, scores, fold=True))
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides", MODEL_OVERRIDES.values(), ids=MODEL_OVERRIDES.keys())
def test_batched_routing_decides_what_each_layers_own_router_decides(overrides: dict) -> None:
    model = adapted_block(**overrides)
    scores = torch.rand(3, 7)
    plan = route(model, scores)
    for name, layer in mor_layers(model):
        planned, own = plan.layers[name].routing, layer.router(scores)
        assert torch.equal(planned.indices, own.indices), name
        torch.testing.assert_close(planned.gates, own.gates)
        torch.testing.assert_close(planned.probs, own.probs)


def test_a_folded_plan_holds_one_float32_weight_per_score_row() -> None:
    layer = _layers()[1]
    scores = torch.rand(3, 7)
    weight = route(layer, scores, fold=True).layers[""].weight
    assert weight.dtype == torch.float32
    assert weight.shape == (3, *layer.base_layer.weight.shape)
    for i in range(3):
        alone = route(layer, scores[i : i + 1], fold=True).layers[""].weight
        torch.testing.assert_close(weight[i : i + 1], alone, atol=1e-6, rtol=0)


def test_kept_zero_experts_fold_to_exactly_the_frozen_weight() -> None:
    layer = _conv_forced_to([6, 7])
    weight = route(layer, _first_axis_scores(1), fold=True).layers[""].weight
    assert torch.equal(weight[0], layer.base_layer.weight)


@pytest.mark.parametrize("path", ["lowrank", "merged", "folded"])
def test_experts_no_image_keeps_are_never_gathered(path: str) -> None:
    layer = _conv_forced_to([0, 1, 6])
    with torch.no_grad():
        layer.routed_A[2:] = float("nan")
        layer.routed_B[:, 2:] = float("nan")
    layer.config.compute_path = "merged" if path == "folded" else path
    plan = route(layer, _first_axis_scores(2), fold=path == "folded")
    with torch.no_grad():
        out = run(layer, torch.randn(2, 8, 6, 6), plan)
    assert torch.isfinite(out).all()


def test_a_plain_lora_plan_folds_every_rank_into_one_weight() -> None:
    model = randomise(inject_mor(small_conv_net(), MoRConfig.lora(4, target_modules=["2"])))
    layer = model[2]
    weight = route(model, None, fold=True).layers["2"].weight
    delta = torch.einsum("or,rikl->oikl", layer.shared_B, layer.shared_A)
    expected = layer.base_layer.weight + layer.scaling * delta
    assert weight.shape == (1, *expected.shape)
    torch.testing.assert_close(weight[0], expected, atol=1e-6, rtol=0)


def test_a_folded_model_costs_what_the_frozen_model_costs() -> None:
    torch.manual_seed(0)
    frozen = TinyUNetBlock()
    model = randomise(inject_mor(copy.deepcopy(frozen), MoRConfig(**SMALL)))
    plan = route(model, torch.rand(1, 7), fold=True)
    x = torch.randn(1, 4, 8, 8)
    with FlopCounterMode(display=False) as frozen_counter:
        frozen(x)
    with FlopCounterMode(display=False) as folded_counter:
        run(model, x, plan)
    assert folded_counter.get_total_flops() == frozen_counter.get_total_flops()


@torch.no_grad()
def test_a_folded_plan_keeps_the_adapter_it_was_folded_from() -> None:
    layer = _layers()[0]
    x, scores = input_for(layer, 1), torch.rand(1, 7)
    plan = route(layer, scores, fold=True)
    before = run(layer, x, plan)
    layer.shared_B.add_(1.0)
    assert torch.equal(run(layer, x, plan), before)
    assert not torch.allclose(run(layer, x, route(layer, scores, fold=True)), before)
