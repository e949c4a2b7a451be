"""Routing plans as values: made by ``route`` without touching the model, run only inside
``plan.applied(model)``, cast, summarised and folded with the strength of their making."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from mor_helpers import randomise, run
from torch import nn
from toy_nets import small_conv_net

from mordasr.mor import MoRConfig, MoRLinear, applied_plan, inject_mor, mor_layers, route

SMALL = {"num_shared": 2, "num_routed": 8, "num_zero": 2, "top_k": 3}
X = torch.randn(2, 3, 8, 8)


def _model(targets: tuple[str, ...] = ("0", "2")) -> nn.Module:
    torch.manual_seed(0)
    config = MoRConfig(target_modules=list(targets), **SMALL)
    return randomise(inject_mor(small_conv_net(), config))


def _lora_model() -> nn.Module:
    torch.manual_seed(0)
    return randomise(inject_mor(small_conv_net(), MoRConfig.lora(4, target_modules=["0", "2"])))


def test_a_plan_and_its_layer_entries_cannot_be_reassigned() -> None:
    plan = route(_model(), torch.rand(2, 7), fold=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.scores = torch.rand(2, 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.layers["0"].weight = None


def test_making_a_plan_leaves_the_model_unrouted() -> None:
    model = _model()
    route(model, torch.rand(2, 7), fold=True)
    assert applied_plan(model) is None
    assert all(layer.plan is None for _, layer in mor_layers(model))


def test_applied_runs_the_plan_inside_the_block_only() -> None:
    model = _model()
    plan = route(model, torch.rand(2, 7))
    with plan.applied(model) as running:
        assert running is model
        assert applied_plan(model) is plan
    assert applied_plan(model) is None


def test_applied_plans_nest_and_the_outer_one_resumes() -> None:
    model = _model()
    outer, inner = route(model, torch.rand(2, 7)), route(model, torch.rand(2, 7))
    expected_outer = run(model, X, outer)
    with outer.applied(model):
        with inner.applied(model):
            assert applied_plan(model) is inner
            torch.testing.assert_close(model(X), run(model, X, inner), atol=0, rtol=0)
        assert applied_plan(model) is outer
        torch.testing.assert_close(model(X), expected_outer, atol=0, rtol=0)


def test_applied_restores_the_previous_plan_when_the_block_raises() -> None:
    model = _model()
    plan = route(model, torch.rand(2, 7))
    with pytest.raises(KeyError), plan.applied(model):
        raise KeyError("inside")
    assert applied_plan(model) is None


def test_a_routed_layer_without_a_plan_raises_a_one_line_error() -> None:
    layer = MoRLinear(nn.Linear(12, 10), MoRConfig(**SMALL))
    with pytest.raises(RuntimeError, match=r"route\(model, scores\)\.applied\(model\)") as error:
        layer(torch.randn(2, 12))
    assert "\n" not in str(error.value)


def test_a_plan_applied_to_another_model_is_refused_and_changes_nothing() -> None:
    plan, other = route(_model(("0",)), torch.rand(2, 7)), _model(("0", "2"))
    with (
        pytest.raises(ValueError, match="another model: it has no entry for 2"),
        plan.applied(other),
    ):
        other(X)
    assert all(layer.plan is None for _, layer in mor_layers(other))


def test_routing_a_routed_model_needs_scores() -> None:
    with pytest.raises(ValueError, match="needs them"):
        route(_model(), None)


@pytest.mark.parametrize("scores", [torch.rand(7), torch.rand(2, 5)], ids=["1d", "wrong-dim"])
def test_scores_of_the_wrong_shape_are_refused(scores: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="scores must have shape"):
        route(_model(), scores)


def test_a_model_without_routers_is_planned_without_scores() -> None:
    model = _lora_model()
    plan = route(model, None)
    assert plan.scores is None
    assert all(entry.routing is None for entry in plan.layers.values())
    torch.testing.assert_close(run(model, X, plan), model(X), atol=0, rtol=0)


def test_a_plan_is_folded_only_when_asked() -> None:
    model = _model()
    scores = torch.rand(2, 7)
    assert not route(model, scores).folded
    assert route(model, scores, fold=True).folded


def test_to_casts_the_folded_weights_and_nothing_else() -> None:
    plan = route(_model(), torch.rand(2, 7), fold=True)
    cast = plan.to(torch.bfloat16)
    for name, entry in cast.layers.items():
        assert entry.weight.dtype == torch.bfloat16
        assert plan.layers[name].weight.dtype == torch.float32
        assert entry.routing.gates.dtype == entry.routing.probs.dtype == torch.float32
    assert cast.scores.dtype == torch.float32


def test_folding_a_bf16_model_gives_float32_weights() -> None:
    model = _model().to(torch.bfloat16)
    plan = route(model, torch.rand(2, 7), fold=True)
    assert all(entry.weight.dtype == torch.float32 for entry in plan.layers.values())
    assert run(model, X.bfloat16(), plan).dtype == torch.bfloat16


def test_a_folded_plan_keeps_the_strength_it_was_folded_with() -> None:
    model = _model()
    scores = torch.rand(2, 7)
    for _, layer in mor_layers(model):
        layer.set_strength(0.5)
    with torch.no_grad():
        half = run(model, X, route(model, scores))
        folded = route(model, scores, fold=True)
        for _, layer in mor_layers(model):
            layer.set_strength(1.0)
        torch.testing.assert_close(run(model, X, folded), half, atol=1e-5, rtol=0)


def test_mean_zero_experts_averages_over_images_and_routed_layers() -> None:
    model = _model()
    kept = {"0": ([0, 6, 7], [0, 1, 6]), "2": ([1, 2, 3], [5, 6, 7])}  # zero experts: 6, 7
    with torch.no_grad():
        for name, layer in mor_layers(model):
            layer.router.gate.weight.zero_()
            for axis, slots in enumerate(kept[name]):
                layer.router.gate.weight[slots, axis] = 30.0
    scores = torch.zeros(2, 7)
    scores[0, 0] = scores[1, 1] = 1.0
    # layer 0 keeps 2 and 1 zero experts, layer 2 keeps 0 and 2: (1.5 + 1) / 2
    assert route(model, scores).mean_zero_experts() == pytest.approx(1.25)


def test_a_plan_without_routers_keeps_no_zero_experts() -> None:
    assert route(_lora_model(), None).mean_zero_experts() == 0.0


def test_stats_are_detached_while_the_training_plan_keeps_its_graph() -> None:
    plan = route(_model(), torch.rand(2, 7))
    assert plan.layers["0"].routing.probs.requires_grad
    assert not plan.stats()["0"].probs.requires_grad


def test_a_plan_made_without_gradients_keeps_no_graph() -> None:
    with torch.no_grad():
        plan = route(_model(), torch.rand(2, 7))
    assert not plan.layers["0"].routing.gates.requires_grad
