"""Gradient-importance rank allocation under a parameter budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_nets import small_conv_net

from mordasr.mor import MoRConfig, inject_mor, mor_layers
from mordasr.mor.allocate import allocate_ranks, gradient_importance, layout, params_per_rank

TEMPLATE = MoRConfig(num_shared=4, num_routed=16, num_zero=2, top_k=4)


def test_gradient_importance_scores_only_layers_that_reach_the_loss() -> None:
    torch.manual_seed(0)
    model = nn.ModuleDict({"used": nn.Linear(4, 4), "unused": nn.Linear(4, 4)})
    x = torch.randn(8, 4)
    config = MoRConfig(target_modules=["used", "unused"])
    scores = gradient_importance(model, lambda m: m["used"](x).square().mean(), config)
    assert scores["used"] > 0
    assert scores["unused"] == 0.0


def test_gradient_importance_leaves_the_model_as_it_was() -> None:
    model = small_conv_net()
    model.requires_grad_(False)
    model[2].bias.requires_grad_(True)
    config = MoRConfig(target_modules=["0", "2", "4"])
    gradient_importance(model, lambda m: m(torch.randn(1, 3, 8, 8)).mean(), config)
    assert [p.requires_grad for p in model.parameters()] == [
        False,
        False,
        False,
        True,
        False,
        False,
    ]
    assert all(p.grad is None for p in model.parameters())


def test_budget_goes_to_the_most_important_layers_first() -> None:
    importance = {"a": 1.0, "b": 5.0, "c": 3.0}
    cost = {"a": 10, "b": 10, "c": 10}
    config = allocate_ranks(importance, cost, budget=300, template=TEMPLATE)
    # full size is 4 shared + 14 real = 18 ranks = 180 parameters: b gets 18, c gets 12, a none
    assert config.target_modules == "b|c"
    assert config.layer_overrides == {"c": layout(12, TEMPLATE)}
    assert (
        layout(12, TEMPLATE)["num_shared"]
        + layout(12, TEMPLATE)["num_routed"]
        - layout(12, TEMPLATE)["num_zero"]
        == 12
    )


def test_min_rank_reaches_every_layer() -> None:
    importance = {"a": 1.0, "b": 5.0}
    config = allocate_ranks(importance, {"a": 10, "b": 10}, 60, TEMPLATE, min_rank=2)
    model_names = set(config.target_modules.split("|"))
    assert model_names == {"a", "b"}


def test_a_budget_below_min_rank_is_an_error() -> None:
    with pytest.raises(ValueError, match="budget"):
        allocate_ranks({"a": 1.0}, {"a": 10}, 5, TEMPLATE, min_rank=1)


def test_cost_per_rank_follows_where_the_kernel_sits() -> None:
    conv = nn.Conv2d(8, 4, 3)
    assert params_per_rank(conv, "kxk_1x1") == 8 * 9 + 4
    assert params_per_rank(conv, "1x1_kxk") == 8 + 4 * 9
    assert params_per_rank(nn.Linear(5, 7)) == 12


def test_small_ranks_keep_the_templates_proportions() -> None:
    assert layout(9, TEMPLATE) == {"num_shared": 2, "num_routed": 8, "num_zero": 1, "top_k": 2}
    assert layout(1, TEMPLATE) == {"num_shared": 1, "num_routed": 0, "num_zero": 0, "top_k": 0}


def test_allocated_config_injects_layers_within_the_budget() -> None:
    torch.manual_seed(0)
    model = small_conv_net()
    template = MoRConfig(
        target_modules=["0", "2", "4"],
        **{"num_shared": 2, "num_routed": 6, "num_zero": 2, "top_k": 2},
    )
    x = torch.randn(2, 3, 8, 8)
    importance = gradient_importance(model, lambda m: m(x).square().mean(), template)
    cost = {name: params_per_rank(model.get_submodule(name)) for name in importance}
    budget = 1000
    config = allocate_ranks(importance, cost, budget, template)
    inject_mor(model, config)
    adapter_params = sum(
        layer.shared_A.numel()
        + layer.shared_B.numel()
        + layer.routed_A.numel()
        + layer.routed_B.numel()
        for _, layer in mor_layers(model)
    )
    assert 0 < adapter_params <= budget
