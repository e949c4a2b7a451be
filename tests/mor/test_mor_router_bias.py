"""The optional router bias: ``softmax(s W_g + b)`` instead of the paper's ``softmax(s W_g)``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from toy_nets import small_conv_net

from mordasr.mor import (
    MoRConfig,
    MoRLinear,
    Router,
    inject_mor,
    load_mor_adapter,
    mor_state_dict,
    route,
    save_mor_adapter,
)

SMALL = {"num_shared": 2, "num_routed": 8, "num_zero": 2, "top_k": 3}
MILD, SEVERE = torch.full((1, 7), 0.2), torch.full((1, 7), 0.8)
"""Score vectors that point the same way and differ in magnitude only."""


def test_the_paper_router_has_no_bias_by_default() -> None:
    layer = MoRLinear(nn.Linear(6, 6), MoRConfig(**SMALL))
    assert layer.router.gate.bias is None


def test_a_fresh_bias_is_zero_and_leaves_routing_unchanged() -> None:
    plain, biased = Router(7, 8, 6, 3), Router(7, 8, 6, 3, bias=True)
    assert torch.equal(biased.gate.bias, torch.zeros(8))
    with torch.no_grad():
        biased.gate.weight.copy_(plain.gate.weight)
    scores = torch.rand(4, 7)
    assert torch.equal(biased(scores).indices, plain(scores).indices)


def test_without_bias_same_direction_scores_keep_the_same_top_slot() -> None:
    for seed in range(20):
        torch.manual_seed(seed)
        router = Router(7, 8, 6, 1)
        assert torch.equal(router(MILD).indices, router(SEVERE).indices)


def test_a_bias_lets_mild_and_severe_scores_pick_different_slots() -> None:
    router = Router(7, 8, 6, 1, bias=True)
    with torch.no_grad():
        router.gate.weight.zero_()
        router.gate.weight[0] = 1.0
        router.gate.bias.zero_()
        router.gate.bias[7] = 3.5
    assert int(router(MILD).indices) == 7
    assert int(router(SEVERE).indices) == 0


def test_the_bias_is_trained_and_saved_with_the_adapter(tmp_path: Path) -> None:
    config = MoRConfig(target_modules=["2"], router_bias=True, **SMALL)
    model = inject_mor(small_conv_net(), config)
    assert any(name.endswith("gate.bias") for name in mor_state_dict(model))
    route(model, torch.rand(4, 7)).balance_loss().backward()
    assert model[2].router.gate.bias.grad.abs().sum() > 0
    save_mor_adapter(model, tmp_path)
    restored = load_mor_adapter(small_conv_net(), tmp_path)
    assert torch.equal(restored[2].router.gate.bias, model[2].router.gate.bias)
