"""Whole-LoRA experts (``expert_rank > 1``): the LoRA+MoE baseline on the MoR layers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mor_helpers import (
    assert_paths_agree,
    assert_routed_outputs_equal,
    input_for,
    randomise,
    routed_input,
    run,
)
from torch import nn
from toy_nets import small_conv_net

from mordasr.mor import (
    MoRConfig,
    MoRConv2d,
    MoRLayer,
    MoRLinear,
    inject_mor,
    load_mor_adapter,
    route,
    save_mor_adapter,
)
from mordasr.mor.allocate import allocate_ranks

MOE = {"num_shared": 2, "num_routed": 4, "num_zero": 1, "top_k": 2, "expert_rank": 3}
"""Three real rank-3 LoRA experts and one zero expert; two slots kept per image."""


def _layers() -> list[MoRLayer]:
    torch.manual_seed(0)
    return [
        randomise(MoRLinear(nn.Linear(12, 10), MoRConfig(**MOE))),
        randomise(MoRConv2d(nn.Conv2d(5, 6, 3, padding=1), MoRConfig(**MOE))),
        randomise(
            MoRConv2d(nn.Conv2d(5, 6, 3, padding=1), MoRConfig(**MOE, conv_variant="1x1_kxk"))
        ),
        randomise(MoRConv2d(nn.Conv2d(5, 6, 3, stride=2, padding=1), MoRConfig(**MOE))),
    ]


def test_every_real_slot_owns_expert_rank_ranks() -> None:
    layer = MoRLinear(nn.Linear(12, 10), MoRConfig(**MOE))
    assert layer.routed_A.shape == (9, 12)
    assert layer.routed_B.shape == (10, 9)
    assert layer.router.gate.weight.shape == (4, 7)
    assert layer.config.rank == 2 + 4 * 3
    assert layer.scaling == 1.0


def test_a_kept_expert_applies_its_whole_lora_under_one_gate() -> None:
    layer = _layers()[0]
    layer.config.compute_path = "lowrank"
    with torch.no_grad():
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[[1, 3], 0] = 30.0
    scores = torch.zeros(1, 7)
    scores[0, 0] = 1.0
    x = torch.randn(1, 4, 12)

    gate = torch.softmax(scores @ layer.router.gate.weight.t(), -1)[0, 1]
    rows = [3, 4, 5]
    a = torch.cat([layer.shared_A, layer.routed_A[rows]])
    b = torch.cat([layer.shared_B, layer.routed_B[:, rows]], dim=1)
    coeff = torch.cat([torch.ones(2), gate.expand(3)])
    expected = layer.base_layer(x) + layer.scaling * F.linear(F.linear(x, a) * coeff, b)
    torch.testing.assert_close(run(layer, x, route(layer, scores)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("batch", [1, 3])
def test_low_rank_and_merged_paths_agree(index: int, batch: int) -> None:
    assert_paths_agree(_layers()[index], batch)


@pytest.mark.parametrize("index", range(4))
def test_a_folded_plan_matches_the_training_computation(index: int) -> None:
    layer = _layers()[index]
    x, plan = routed_input(layer, "merged", 1)
    expected = run(layer, x, plan).detach()
    with torch.no_grad():
        folded = run(layer, x, route(layer, plan.scores, fold=True))
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("index", range(4))
def test_merge_shared_keeps_outputs_and_unmerge_restores_the_weight(index: int) -> None:
    layer = _layers()[index]
    x = input_for(layer, 2)
    plan = route(layer, torch.rand(2, 7))
    before = run(layer, x, plan)
    weight = layer.base_layer.weight.clone()
    layer.merge_shared()
    torch.testing.assert_close(run(layer, x, plan), before, atol=1e-5, rtol=0)
    layer.unmerge_shared()
    torch.testing.assert_close(layer.base_layer.weight, weight, atol=1e-6, rtol=0)


def test_adapter_round_trips_through_safetensors(tmp_path: Path) -> None:
    base = small_conv_net()
    model = inject_mor(copy.deepcopy(base), MoRConfig(target_modules=["0", "2"], **MOE))
    randomise(model)
    save_mor_adapter(model, tmp_path)
    restored = load_mor_adapter(copy.deepcopy(base), tmp_path)
    assert restored[2].config.expert_rank == 3
    assert_routed_outputs_equal(model, restored, torch.randn(2, 3, 8, 8), torch.rand(2, 7))


def test_rank_allocation_refuses_whole_lora_experts() -> None:
    with pytest.raises(ValueError, match="expert_rank"):
        allocate_ranks({"a": 1.0}, {"a": 10}, 100, MoRConfig(**MOE))
