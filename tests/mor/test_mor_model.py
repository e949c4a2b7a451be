"""Model-level MoR API: injection, routing plans on a model, merging, saving and statistics."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from mor_helpers import assert_routed_outputs_equal, randomise, run
from safetensors.torch import load_file
from torch import nn
from toy_nets import TinyUNetBlock, small_conv_net

from mordasr.mor import (
    MoRConfig,
    MoRConv2d,
    MoRLinear,
    inject_mor,
    load_balance_loss,
    load_mor_adapter,
    load_mor_state_dict,
    mark_only_mor_trainable,
    merge_shared,
    mor_layers,
    mor_state_dict,
    route,
    save_mor_adapter,
    unmerge_shared,
)
from mordasr.mor.config import DEFAULT_TARGETS

UNET_TARGETS = list(DEFAULT_TARGETS)
SMALL = {"num_shared": 2, "num_routed": 8, "num_zero": 2, "top_k": 3}


def test_injection_into_a_diffusers_style_block_wraps_every_target() -> None:
    model = inject_mor(TinyUNetBlock(), MoRConfig(target_modules=UNET_TARGETS, **SMALL))
    names = {name for name, _ in mor_layers(model)}
    assert names == {
        "conv_in",
        "conv_out",
        "resnets.0.conv1",
        "resnets.0.conv2",
        "resnets.0.conv_shortcut",
        "attentions.0.proj_in",
        "attentions.0.proj_out",
        "attentions.0.attn1.to_q",
        "attentions.0.attn1.to_k",
        "attentions.0.attn1.to_v",
        "attentions.0.attn1.to_out.0",
        "attentions.0.ff.net.0.proj",
        "attentions.0.ff.net.2",
    }
    assert isinstance(model.attentions[0].attn1.to_q, MoRLinear)
    assert isinstance(model.resnets[0].conv1, MoRConv2d)


def test_injected_diffusers_block_computes_what_it_did_before() -> None:
    torch.manual_seed(0)
    model = TinyUNetBlock()
    x = torch.randn(2, 4, 8, 8)
    before = model(x)
    inject_mor(model, MoRConfig(target_modules=UNET_TARGETS, compute_path="lowrank", **SMALL))
    after = run(model, x, route(model, torch.rand(2, 7)))
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_trained_adapters_change_the_output_per_image_scores() -> None:
    torch.manual_seed(0)
    model = inject_mor(TinyUNetBlock(), MoRConfig(target_modules=UNET_TARGETS, **SMALL))
    randomise(model, seed=1, std=0.05)
    x = torch.randn(1, 4, 8, 8).expand(2, -1, -1, -1)
    scores = torch.stack([torch.full((7,), 0.05), torch.linspace(0.2, 1.0, 7)])
    out = run(model, x, route(model, scores))
    assert not torch.allclose(out[0], out[1])


def test_injection_into_a_small_conv_net_by_regex() -> None:
    model = inject_mor(small_conv_net(), MoRConfig(target_modules=r"[02]", **SMALL))
    assert [name for name, _ in mor_layers(model)] == ["0", "2"]


def test_excluded_modules_are_left_alone() -> None:
    config = MoRConfig(target_modules=UNET_TARGETS, exclude_modules=["conv_in"], **SMALL)
    model = inject_mor(TinyUNetBlock(), config)
    assert isinstance(model.conv_in, nn.Conv2d) and not isinstance(model.conv_in, MoRConv2d)


def test_injecting_with_no_matching_module_is_an_error() -> None:
    with pytest.raises(ValueError, match="matches"):
        inject_mor(small_conv_net(), MoRConfig(target_modules=["to_q"]))


def test_a_model_left_by_its_plan_refuses_to_run_unrouted() -> None:
    model = inject_mor(small_conv_net(), MoRConfig(target_modules=["0"], **SMALL))
    run(model, torch.randn(1, 3, 8, 8), route(model, torch.rand(1, 7)))
    with pytest.raises(RuntimeError, match="applied"):
        model(torch.randn(1, 3, 8, 8))


def test_mark_only_mor_trainable_leaves_gradients_to_adapters_only() -> None:
    model = inject_mor(TinyUNetBlock(), MoRConfig(target_modules=UNET_TARGETS, **SMALL))
    randomise(model, seed=1, std=0.05)
    mark_only_mor_trainable(model)
    out = run(model, torch.randn(2, 4, 8, 8), route(model, torch.rand(2, 7)))
    out.square().mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(mor_state_dict(model))
    assert all(
        n.rsplit(".", 1)[-1] in {"shared_A", "shared_B", "routed_A", "routed_B"}
        or n.endswith("router.gate.weight")
        for n in with_grad
    )


def test_merge_shared_on_a_model_keeps_its_outputs() -> None:
    torch.manual_seed(0)
    model = inject_mor(TinyUNetBlock(), MoRConfig(target_modules=UNET_TARGETS, **SMALL))
    randomise(model, seed=1, std=0.05)
    x = torch.randn(2, 4, 8, 8)
    with route(model, torch.rand(2, 7)).applied(model):
        before = model(x)
        merge_shared(model)
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)
        unmerge_shared(model)
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)


def test_plain_lora_fully_merged_is_the_base_model_with_new_weights() -> None:
    torch.manual_seed(0)
    model = inject_mor(small_conv_net(), MoRConfig.lora(4, target_modules=["0", "2", "4"]))
    randomise(model, seed=1, std=0.05)
    x = torch.randn(1, 3, 8, 8)
    adapted = model(x)
    merge_shared(model)
    plain = nn.Sequential(*[m.base_layer if isinstance(m, MoRConv2d) else m for m in model])
    torch.testing.assert_close(plain(x), adapted, atol=1e-5, rtol=0)


def test_adapter_round_trips_through_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = TinyUNetBlock()
    model = inject_mor(copy.deepcopy(base), MoRConfig(target_modules=UNET_TARGETS, **SMALL))
    randomise(model, seed=1, std=0.05)
    save_mor_adapter(model, tmp_path)
    assert json.loads((tmp_path / "mor_config.json").read_text())["num_routed"] == 8
    stored = load_file(str(tmp_path / "mor_adapter.safetensors"))
    assert set(stored) == set(mor_state_dict(model))

    restored = load_mor_adapter(copy.deepcopy(base), tmp_path)
    assert_routed_outputs_equal(model, restored, torch.randn(2, 4, 8, 8), torch.rand(2, 7))


def test_state_dict_with_missing_keys_is_refused() -> None:
    model = inject_mor(small_conv_net(), MoRConfig(target_modules=["0", "2"], **SMALL))
    state = mor_state_dict(model)
    state.pop(next(iter(state)))
    with pytest.raises(KeyError, match="missing"):
        load_mor_state_dict(model, state)


def test_plan_stats_report_chosen_slots_and_zero_expert_counts() -> None:
    model = inject_mor(small_conv_net(), MoRConfig(target_modules=["0", "2"], **SMALL))
    stats = route(model, torch.rand(4, 7)).stats()
    assert set(stats) == {"0", "2"}
    layer = stats["2"]
    assert layer.indices.shape == (4, 3)
    assert torch.equal(layer.num_zero, (layer.indices >= layer.num_real).sum(1))
    assert layer.num_real == 6


def test_plan_balance_loss_is_differentiable_in_the_routers() -> None:
    model = inject_mor(small_conv_net(), MoRConfig(target_modules=["0", "2"], **SMALL))
    loss = route(model, torch.rand(4, 7)).balance_loss(alpha=0.1)
    loss.backward()
    assert torch.isfinite(loss)
    for _, layer in mor_layers(model):
        assert layer.router.gate.weight.grad.abs().sum() > 0


def test_plain_lora_has_no_balance_loss() -> None:
    model = inject_mor(small_conv_net(), MoRConfig.lora(4, target_modules=["0"]))
    assert route(model, None).balance_loss().item() == 0.0


def test_layer_overrides_give_matching_layers_their_own_sizes(tmp_path: Path) -> None:
    overrides = {"conv_out": {"num_shared": 1, "num_routed": 4, "num_zero": 1, "top_k": 2}}
    config = MoRConfig(target_modules=UNET_TARGETS, layer_overrides=overrides, **SMALL)
    model = inject_mor(TinyUNetBlock(), config)
    assert model.conv_out.routed_A.shape[0] == 3
    assert model.conv_in.routed_A.shape[0] == 6
    save_mor_adapter(model, tmp_path)
    restored = load_mor_adapter(TinyUNetBlock(), tmp_path)
    assert restored.conv_out.config.top_k == 2


def test_balance_loss_takes_severities_from_the_given_scores() -> None:
    model = inject_mor(small_conv_net(), MoRConfig(target_modules=["2"], **SMALL))
    plan = route(model, torch.zeros(4, 7))
    loss = plan.balance_loss(alpha=0.1, severity_scores=torch.ones(4, 3))
    routed_by = plan.balance_loss(alpha=0.1)
    r = plan.layers["2"].routing
    expected = load_balance_loss(r.probs, r.indices, r.num_real, 0.1, torch.ones(4))
    torch.testing.assert_close(loss, expected)
    assert loss > routed_by
