"""merge_lora: plain LoRA folded into the frozen weights for good, the adapters removed."""

from __future__ import annotations

import pytest
import torch
from toy_nets import small_conv_net

from mordasr.mor import MoRConfig, MoRLayer, inject_mor, mor_layers
from mordasr.mor.model import merge_lora


def _lora_net() -> torch.nn.Module:
    torch.manual_seed(0)
    model = inject_mor(small_conv_net(), MoRConfig.lora(2, target_modules=["0", "2"]))
    with torch.no_grad():
        for _, layer in mor_layers(model):
            layer.shared_B.normal_(0, 0.1)
    return model


def test_merging_removes_every_adapter_and_keeps_the_output() -> None:
    model = _lora_net()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        merged = merge_lora(model)
        torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-6)
    assert not any(isinstance(m, MoRLayer) for m in merged.modules())
    assert isinstance(merged[0], torch.nn.Conv2d)


def test_a_non_finite_merge_changes_nothing() -> None:
    model = _lora_net()
    layer = dict(mor_layers(model))["2"]
    with torch.no_grad():
        layer.shared_B[0, 0] = float("nan")
    before = {name: layer.base_layer.weight.clone() for name, layer in mor_layers(model)}
    with pytest.raises(ValueError, match=r"2: .*non-finite"):
        merge_lora(model)
    after = dict(mor_layers(model))
    assert set(after) == {"0", "2"}
    for name, weight in before.items():
        assert torch.equal(after[name].base_layer.weight, weight)
        assert not after[name].shared_merged


def test_a_routed_layer_is_refused() -> None:
    model = inject_mor(small_conv_net(), MoRConfig(target_modules=["0"], num_shared=1))
    with pytest.raises(ValueError, match="routed"):
        merge_lora(model)
    assert dict(mor_layers(model))
