"""Gradient-importance rank allocation under a parameter budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_nets import small_conv_net

from mordasr.mor import MoRConfig, inject_mor, mor_layers
from mordasr.mor.allocate import (
    allocate_ranks,
    allocated_ranks,
    gradient_importance,
    importance_stability,
    layer_importance,
    layout,
    params_per_rank,
    spearman,
    uniform_budget,
)
from mordasr.nets.srvgg import SRVGGNetCompact

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


def _compact() -> tuple[SRVGGNetCompact, MoRConfig, dict[str, int]]:
    """A small compact SR net, a plain-LoRA template over all its convolutions (max rank 8)
    and the cost of one rank on each."""
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=4, upscale=2)
    template = MoRConfig.lora(8, target_modules=r"body\.\d+", conv_variant="1x1_kxk")
    convs = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    cost = {name: params_per_rank(net.get_submodule(name), "1x1_kxk") for name in convs}
    return net, template, cost


def test_a_binding_budget_gives_layers_different_ranks_within_it_and_drops_rank_0_layers() -> None:
    net, template, cost = _compact()
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    importance = layer_importance(net, lambda m: (m(x) - y).abs().mean(), template)
    budget = uniform_budget(cost, 2)
    config = allocate_ranks(importance, cost, budget, template)
    ranks = allocated_ranks(config, list(cost))
    inject_mor(net, config)
    adapted = dict(mor_layers(net))
    assert len(set(ranks.values())) >= 2
    assert sum(ranks[n] * cost[n] for n in ranks) <= budget
    spent = sum(p.numel() for layer in adapted.values() for p in layer.adapter_parameters)
    assert spent <= budget
    dropped = {name for name, r in ranks.items() if r == 0}
    assert dropped and not dropped & set(adapted)
    assert {name: layer.shared_A.shape[0] for name, layer in adapted.items()} == {
        name: r for name, r in ranks.items() if r > 0
    }


def test_the_scorers_rank_layers_differently() -> None:
    net, template, _ = _compact()
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)

    def loss(m: nn.Module) -> torch.Tensor:
        return (m(x) - y).abs().mean()

    scored = {s: layer_importance(net, loss, template, s) for s in ("gradient", "taylor", "weight")}
    assert all(set(v) == set(scored["gradient"]) for v in scored.values())
    assert scored["taylor"] != scored["gradient"] != scored["weight"]
    weights = {n: float(net.get_submodule(n).weight.detach().norm()) for n in scored["weight"]}
    assert scored["weight"] == pytest.approx(weights)


def test_the_weight_scorer_needs_no_loss() -> None:
    net, template, _ = _compact()

    def no_loss(m: nn.Module) -> torch.Tensor:
        raise AssertionError("the weight norm needs no backward pass")

    assert len(layer_importance(net, no_loss, template, "weight")) == 6


def test_an_unknown_scorer_is_refused() -> None:
    net, template, _ = _compact()
    with pytest.raises(ValueError, match="scorer"):
        layer_importance(net, lambda m: m(torch.rand(1, 3, 4, 4)).mean(), template, "random")  # type: ignore[arg-type]


def test_spearman_is_1_for_the_same_order_and_minus_1_for_the_reverse() -> None:
    a = {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}
    assert spearman(a, {k: 10 * v for k, v in a.items()}) == pytest.approx(1.0)
    assert spearman(a, {k: -v for k, v in a.items()}) == pytest.approx(-1.0)


def test_spearman_gives_tied_values_their_mean_rank() -> None:
    a = {"x": 1.0, "y": 1.0, "z": 2.0}
    b = {"x": 0.0, "y": 5.0, "z": 9.0}
    # ranks (0.5, 0.5, 2) against (0, 1, 2)
    assert spearman(a, b) == pytest.approx(0.8660254)


def test_stability_is_the_mean_and_minimum_pairwise_correlation() -> None:
    a = {"x": 1.0, "y": 2.0, "z": 3.0}
    b = {"x": 3.0, "y": 2.0, "z": 1.0}
    stability = importance_stability([a, a, b])
    assert stability == pytest.approx({"spearman_mean": -1 / 3, "spearman_min": -1.0})
    with pytest.raises(ValueError, match="two"):
        importance_stability([a])


def test_uniform_budget_is_the_cost_of_that_rank_everywhere() -> None:
    assert uniform_budget({"a": 10, "b": 7}, 8) == 136
