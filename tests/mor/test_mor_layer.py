"""Single MoR layers running a routing plan: identity at init, eq. 10, zero experts, compute
paths, merging."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mor_helpers import assert_paths_agree, input_for, randomise, routed_input, run
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mordasr.mor import (
    MoRConfig,
    MoRConv2d,
    MoRLayer,
    MoRLinear,
    inject_mor,
    merge_shared,
    mor_layers,
    route,
)

SMALL = {"num_shared": 2, "num_routed": 8, "num_zero": 2, "top_k": 3, "score_dim": 7}


def _force_router(layer: MoRLayer, favoured: list[int], strength: float = 30.0) -> None:
    """Make score vector e_0 give ``favoured`` slots equal, dominant logits."""
    assert layer.router is not None
    with torch.no_grad():
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[favoured, 0] = strength


def _first_axis_scores(batch: int) -> torch.Tensor:
    """Scores e_0 for every image: the input :func:`_force_router` is set up for."""
    scores = torch.zeros(batch, 7)
    scores[:, 0] = 1.0
    return scores


def _layers() -> list[MoRLayer]:
    torch.manual_seed(0)
    return [
        MoRLinear(nn.Linear(12, 10), MoRConfig(**SMALL)),
        MoRConv2d(nn.Conv2d(5, 6, 3, padding=1), MoRConfig(**SMALL)),
        MoRConv2d(nn.Conv2d(5, 6, 3, padding=1), MoRConfig(**SMALL, conv_variant="1x1_kxk")),
        MoRConv2d(nn.Conv2d(5, 6, 3, stride=2, padding=1, dilation=1), MoRConfig(**SMALL)),
    ]


@pytest.mark.parametrize("index", range(4))
def test_freshly_injected_layer_equals_its_base_layer_exactly_on_the_low_rank_path(
    index: int,
) -> None:
    layer = _layers()[index]
    x, plan = routed_input(layer, "lowrank", 2)
    assert torch.equal(run(layer, x, plan), layer.base_layer(x))


@pytest.mark.parametrize("index", range(4))
def test_freshly_injected_layer_equals_its_base_layer_on_the_merged_path(index: int) -> None:
    layer = _layers()[index]
    x, plan = routed_input(layer, "merged", 2)
    torch.testing.assert_close(run(layer, x, plan), layer.base_layer(x), atol=1e-6, rtol=0)


def test_linear_with_forced_gates_is_plain_lora_of_the_chosen_ranks() -> None:
    layer = randomise(MoRLinear(nn.Linear(12, 10), MoRConfig(**SMALL)))
    chosen = [1, 4, 5]
    _force_router(layer, chosen)
    scores = _first_axis_scores(1)
    x = torch.randn(1, 4, 12)

    gates = torch.softmax(scores @ layer.router.gate.weight.t(), -1)[0, chosen]
    a = torch.cat([layer.shared_A, layer.routed_A[chosen]])
    b = torch.cat([layer.shared_B, layer.routed_B[:, chosen]], dim=1)
    coeff = torch.cat([torch.ones(2), gates])
    base = layer.base_layer
    expected = F.linear(x, base.weight, base.bias) + layer.scaling * F.linear(
        F.linear(x, a) * coeff, b
    )
    torch.testing.assert_close(run(layer, x, route(layer, scores)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", ["kxk_1x1", "1x1_kxk"])
def test_conv_with_forced_gates_is_plain_conv_lora_of_the_chosen_ranks(variant: str) -> None:
    config = MoRConfig(**SMALL, conv_variant=variant, compute_path="lowrank")
    layer = randomise(MoRConv2d(nn.Conv2d(5, 6, 3, padding=1), config))
    chosen = [0, 2, 3]
    _force_router(layer, chosen)
    scores = _first_axis_scores(1)
    x = torch.randn(1, 5, 8, 8)

    gates = torch.softmax(scores @ layer.router.gate.weight.t(), -1)[0, chosen]
    coeff = torch.cat([torch.ones(2), gates])[None, :, None, None]
    a = torch.cat([layer.shared_A, layer.routed_A[chosen]])
    b = torch.cat([layer.shared_B, layer.routed_B[:, chosen]], dim=1)
    base = layer.base_layer
    if variant == "kxk_1x1":
        update = F.conv2d(F.conv2d(x, a, padding=1) * coeff, b[:, :, None, None])
    else:
        update = F.conv2d(F.conv2d(x, a[:, :, None, None]) * coeff, b, padding=1)
    expected = base(x) + layer.scaling * update
    torch.testing.assert_close(run(layer, x, route(layer, scores)), expected, atol=1e-6, rtol=0)


def test_plain_lora_mode_has_no_router_and_applies_every_rank() -> None:
    layer = randomise(MoRLinear(nn.Linear(12, 10), MoRConfig.lora(4, alpha=8.0)))
    x = torch.randn(3, 12)
    assert layer.router is None
    base = layer.base_layer
    expected = base(x) + 2.0 * F.linear(F.linear(x, layer.shared_A), layer.shared_B)
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=0)


def test_router_keeps_exactly_top_k_distinct_slots_per_image() -> None:
    layer = MoRLinear(nn.Linear(12, 10), MoRConfig(**SMALL))
    routing = route(layer, torch.rand(5, 7)).layers[""].routing
    assert routing is not None
    assert routing.indices.shape == (5, 3)
    assert all(len(set(row.tolist())) == 3 for row in routing.indices)
    top = torch.topk(routing.probs, 3).indices
    assert torch.equal(routing.indices, top)


def test_gates_are_raw_softmax_values_unless_renormalised() -> None:
    raw = MoRLinear(nn.Linear(12, 10), MoRConfig(**SMALL))
    scores = torch.rand(4, 7)
    assert torch.all(route(raw, scores).layers[""].routing.gates.sum(-1) < 1)

    renorm = MoRLinear(nn.Linear(12, 10), MoRConfig(**SMALL, renormalize_gates=True))
    gates = route(renorm, scores).layers[""].routing.gates
    torch.testing.assert_close(gates.sum(-1), torch.ones(4))


def test_gate_scale_multiplies_the_renormalised_gates() -> None:
    config = MoRConfig(**SMALL, renormalize_gates=True, gate_scale=3.0)
    layer = MoRLinear(nn.Linear(12, 10), config)
    gates = route(layer, torch.rand(4, 7)).layers[""].routing.gates
    torch.testing.assert_close(gates.sum(-1), torch.full((4,), 3.0))


@pytest.mark.parametrize("index", range(4))
def test_zero_experts_add_nothing(index: int) -> None:
    layer = randomise(_layers()[index])
    assert layer.config.num_real == 6
    _force_router(layer, [0, 6, 7])
    plan = route(layer, _first_axis_scores(2))
    routing = plan.layers[""].routing
    layer.config.compute_path = "lowrank"
    x = input_for(layer, 2)
    out = run(layer, x, plan)
    assert torch.equal(routing.indices.sort(-1).values, torch.tensor([[0, 6, 7]] * 2))

    gate = routing.gates[0, 0]
    a = torch.cat([layer.shared_A, layer.routed_A[:1]])
    b = torch.cat([layer.shared_B, layer.routed_B[:, :1]], dim=1)
    coeff = torch.stack([torch.tensor(1.0), torch.tensor(1.0), gate]).reshape(1, 3)
    expected = layer.base_layer(x) + layer.scaling * layer._lowrank(x, a, b, coeff)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_zero_experts_cost_no_flops() -> None:
    config = MoRConfig(num_shared=0, num_routed=6, num_zero=3, top_k=3, score_dim=7)
    layer = randomise(MoRConv2d(nn.Conv2d(8, 8, 3, padding=1), config))
    _force_router(layer, [3, 4, 5])
    plan = route(layer, _first_axis_scores(1))
    x = torch.randn(1, 8, 32, 32)
    with FlopCounterMode(display=False) as base_counter:
        layer.base_layer(x)
    with FlopCounterMode(display=False) as mor_counter:
        out = run(layer, x, plan)
    assert mor_counter.get_total_flops() == base_counter.get_total_flops()
    assert torch.equal(out, layer.base_layer(x))


def test_low_rank_path_computes_only_the_ranks_in_use() -> None:
    config = MoRConfig(num_shared=2, num_routed=16, num_zero=4, top_k=4, compute_path="lowrank")
    layer = randomise(MoRLinear(nn.Linear(64, 64, bias=False), config))
    plan = route(layer, torch.rand(1, 7))
    x = torch.randn(1, 100, 64)
    with FlopCounterMode(display=False) as counter:
        run(layer, x, plan)
    active = 2 + int((plan.layers[""].routing.indices < 12).sum())
    base = 2 * 100 * 64 * 64
    assert counter.get_total_flops() == base + 2 * 100 * active * (64 + 64)


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("batch", [1, 3])
def test_low_rank_and_merged_paths_agree(index: int, batch: int) -> None:
    assert_paths_agree(randomise(_layers()[index]), batch)


def test_auto_path_at_inference_prefers_merged_for_many_tokens_and_low_rank_for_few() -> None:
    conv = MoRConv2d(nn.Conv2d(64, 64, 3, padding=1), MoRConfig())
    linear = MoRLinear(nn.Linear(640, 640), MoRConfig())
    with torch.no_grad():
        assert conv._path(torch.zeros(1, 64, 128, 128), rank=16, update_batch=1) == "merged"
        assert linear._path(torch.zeros(1, 8, 640), rank=16, update_batch=1) == "lowrank"


def test_auto_path_in_training_avoids_full_weight_gradients() -> None:
    conv = MoRConv2d(nn.Conv2d(64, 64, 3, padding=1), MoRConfig())
    assert conv._path(torch.zeros(1, 64, 128, 128), rank=16, update_batch=1) == "lowrank"


def test_one_score_row_routes_a_whole_batch() -> None:
    layer = randomise(MoRLinear(nn.Linear(12, 10), MoRConfig(**SMALL)))
    x = torch.randn(3, 5, 12)
    with route(layer, torch.rand(1, 7)).applied(layer):
        together = layer(x)
        separate = torch.cat([layer(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, separate, atol=1e-6, rtol=0)


@pytest.mark.parametrize("index", range(4))
def test_merge_shared_keeps_outputs_and_unmerge_restores_the_weight(index: int) -> None:
    layer = randomise(_layers()[index])
    x = input_for(layer, 2)
    plan = route(layer, torch.rand(2, 7))
    before = run(layer, x, plan)
    weight = layer.base_layer.weight.clone()
    layer.merge_shared()
    assert not torch.equal(layer.base_layer.weight, weight)
    torch.testing.assert_close(run(layer, x, plan), before, atol=1e-5, rtol=0)
    layer.unmerge_shared()
    torch.testing.assert_close(layer.base_layer.weight, weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(run(layer, x, plan), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", ["lowrank", "merged"])
def test_gradients_reach_factors_and_router_but_not_the_base(path: str) -> None:
    layer = randomise(MoRConv2d(nn.Conv2d(4, 4, 3, padding=1), MoRConfig(**SMALL)))
    layer.config.compute_path = path
    run(layer, torch.randn(2, 4, 6, 6), route(layer, torch.rand(2, 7))).square().mean().backward()
    for name in ("shared_A", "shared_B", "routed_A", "routed_B"):
        grad = getattr(layer, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert layer.router.gate.weight.grad.abs().sum() > 0
    assert layer.base_layer.weight.grad is None
    assert layer.base_layer.bias.grad is None


@pytest.mark.parametrize("fold", [False, True])
def test_scores_for_a_different_batch_size_are_an_error(fold: bool) -> None:
    layer = MoRLinear(nn.Linear(12, 10), MoRConfig(**SMALL))
    plan = route(layer, torch.rand(2, 7), fold=fold)
    with pytest.raises(ValueError, match="batch"):
        run(layer, torch.randn(3, 12), plan)


def test_grouped_convolution_is_rejected() -> None:
    with pytest.raises(ValueError, match="groups"):
        MoRConv2d(nn.Conv2d(4, 4, 3, groups=2), MoRConfig(**SMALL))


def test_wrapped_layer_exposes_base_attributes() -> None:
    layer = MoRConv2d(nn.Conv2d(4, 6, 3), MoRConfig(**SMALL))
    assert layer.out_channels == 6
    assert layer.weight is layer.base_layer.weight


@pytest.mark.parametrize("index", range(4))
def test_a_plan_folded_after_merging_the_shared_ranks_matches_the_training_computation(
    index: int,
) -> None:
    layer = randomise(_layers()[index])
    x, plan = routed_input(layer, "merged", 1)
    expected = run(layer, x, plan).detach()
    layer.merge_shared()
    with torch.no_grad():
        folded = run(layer, x, route(layer, plan.scores, fold=True))
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("index", range(4))
def test_bf16_merge_is_the_float32_sum_rounded_once(index: int) -> None:
    layer = randomise(_layers()[index]).to(torch.bfloat16)
    base = layer.base_layer.weight.detach().clone()
    ones = torch.ones(1, layer.config.num_shared)
    delta = layer._delta(layer.shared_A.float(), layer.shared_B.float(), ones)[0]
    expected = (base.float() + layer.scaling * delta.view(base.shape)).to(torch.bfloat16)
    layer.merge_shared()
    assert torch.equal(layer.base_layer.weight, expected)
    layer.unmerge_shared()
    torch.testing.assert_close(layer.base_layer.weight, base, atol=2e-2, rtol=0)


def test_a_merge_to_non_finite_weights_is_refused_and_nothing_stays_merged() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 12), nn.Linear(12, 12))
    inject_mor(model, MoRConfig(target_modules=["0", "1"], **SMALL))
    for _, layer in mor_layers(model):
        randomise(layer)
    before = [layer.base_layer.weight.detach().clone() for _, layer in mor_layers(model)]
    with torch.no_grad():
        model[1].shared_A[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^1: merging the shared ranks gives non-finite"):
        merge_shared(model)
    for (_, layer), weight in zip(mor_layers(model), before, strict=True):
        assert not layer.shared_merged
        torch.testing.assert_close(layer.base_layer.weight, weight, atol=1e-6, rtol=0)


def test_a_merge_that_overflows_the_weight_dtype_is_refused() -> None:
    layer = MoRLinear(nn.Linear(4, 4).half(), MoRConfig(**SMALL))
    with torch.no_grad():
        layer.shared_A.fill_(300.0)
        layer.shared_B.fill_(300.0)
    before = layer.base_layer.weight.detach().clone()
    with pytest.raises(ValueError, match="non-finite"):
        layer.merge_shared()
    assert torch.equal(layer.base_layer.weight, before) and not layer.shared_merged
