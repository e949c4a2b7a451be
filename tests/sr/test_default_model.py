"""The shipped models load offline and are really adapted (not the plain backbone): the
default is a plain LoRA, ``mor-dasr`` a routed MoR-DASR model."""

from __future__ import annotations

import torch

from mordasr.mor import mor_layers
from mordasr.sr.zoo import PlainSR, load_sr_model


def test_default_model_loads_with_trained_plain_lora_adapters() -> None:
    model = load_sr_model("default")
    layers = dict(mor_layers(model.backbone))
    assert layers, "the default model carries adapters"
    assert all(layer.router is None for layer in layers.values())
    assert all(layer.shared_B.abs().sum() > 0 for layer in layers.values())


def test_mor_dasr_model_loads_with_trained_routed_adapters() -> None:
    model = load_sr_model("mor-dasr")
    layers = dict(mor_layers(model.backbone))
    assert layers, "the mor-dasr model carries MoR layers"
    assert all(layer.router is not None for layer in layers.values())
    assert any(layer.routed_B.abs().sum() > 0 for layer in layers.values())


def test_default_model_output_differs_from_its_plain_backbone() -> None:
    model = load_sr_model("default")
    plain = load_sr_model("realesrgan-x4plus")
    assert isinstance(plain, PlainSR)
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        adapted, base = model(lr), plain(lr)
    assert adapted.shape == base.shape == (1, 3, 128, 128)
    assert (adapted - base).abs().mean() > 1e-3
