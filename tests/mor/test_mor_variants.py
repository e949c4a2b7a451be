"""The Table 2 variants: the layout each builds from one MoR template and its balance loss."""

from __future__ import annotations

import pytest
from torch import nn

from mordasr.mor import MoRConfig, MoRLinear, degradation_aware_balance, variant_config

TEMPLATE = MoRConfig(target_modules=["proj"], num_shared=8, num_routed=32, num_zero=4, top_k=8)


def _layer(variant: str) -> MoRLinear:
    return MoRLinear(nn.Linear(16, 16), variant_config(TEMPLATE, variant))


@pytest.mark.parametrize("variant", ["mor", "mor-standard-balance"])
def test_mor_variants_keep_the_template_layout(variant: str) -> None:
    assert variant_config(TEMPLATE, variant) == TEMPLATE


def test_only_mor_v2_trains_with_the_standard_balance_loss() -> None:
    assert not degradation_aware_balance("mor-standard-balance")
    variants = ("mor", "mor-no-zero", "lora-moe", "lora", "lora-16")
    assert all(degradation_aware_balance(v) for v in variants)


def test_mor_without_zero_experts_makes_every_routed_slot_real() -> None:
    layer = _layer("mor-no-zero")
    assert layer.config.num_zero == 0
    assert layer.routed_A.shape[0] == 32
    assert layer.router.gate.weight.shape[0] == 32
    assert layer.config.top_k == 8


def test_lora_moe_groups_the_routed_ranks_into_rank_4_experts() -> None:
    layer = _layer("lora-moe")
    config = layer.config
    assert (config.num_routed, config.num_zero, config.top_k, config.expert_rank) == (8, 0, 2, 4)
    assert config.rank == TEMPLATE.rank
    assert config.top_k * config.expert_rank == TEMPLATE.top_k
    assert layer.routed_A.shape[0] == 32
    assert layer.router.gate.weight.shape[0] == 8


def test_lora_moe_expert_rank_must_divide_the_slots_and_top_k() -> None:
    with pytest.raises(ValueError, match="divide"):
        variant_config(TEMPLATE, "lora-moe", expert_rank=3)


def test_plain_lora_has_the_mor_trainable_ranks_and_no_router() -> None:
    layer = _layer("lora")
    assert layer.router is None
    assert layer.config.is_lora
    assert layer.shared_A.shape[0] == TEMPLATE.num_shared + TEMPLATE.num_real == 36
    assert layer.routed_A.shape[0] == 0


def test_lora_16_has_the_mor_active_ranks_and_no_router() -> None:
    layer = _layer("lora-16")
    assert layer.router is None
    assert layer.config.is_lora
    assert layer.shared_A.shape[0] == TEMPLATE.num_shared + TEMPLATE.top_k == 16
    assert layer.routed_A.shape[0] == 0


def test_lora_16_has_16_of_plain_loras_36_ranks_of_parameters() -> None:
    def count(variant: str) -> int:
        layer = _layer(variant)
        return sum(p.numel() for p in layer.parameters() if p.requires_grad)

    assert count("lora-16") * 36 == count("lora") * 16


def test_unknown_variant_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        variant_config(TEMPLATE, "moe")


def test_variants_refuse_per_layer_overrides_they_cannot_rewrite() -> None:
    overrides = {"proj": {"num_shared": 4, "num_routed": 16, "num_zero": 2, "top_k": 4}}
    template = MoRConfig(target_modules=["proj"], layer_overrides=overrides)
    with pytest.raises(ValueError, match="layer_overrides"):
        variant_config(template, "lora")
