"""Plain LoRA merged for good at inference (AdaptSR): the plain backbone, computing the same."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import photo, tiny_mor_model

from mordasr.infer.export import export_model
from mordasr.mor import MoRLayer, mor_layers
from mordasr.nets.loaders import load_network
from mordasr.sr import MoRSuperResolver, PlainSR, load_sr_model


def lr() -> torch.Tensor:
    return torch.from_numpy(photo(20, 24)).permute(2, 0, 1)[None].float() / 255


def test_merged_lora_computes_the_adapted_output_within_one_level(tmp_path: Path) -> None:
    folder = tiny_mor_model(tmp_path, lora=True)
    with torch.no_grad():
        adapted = load_sr_model(folder)(lr())
        plain = load_network(folder.parent / "tiny.pth")(lr())
        merged = load_sr_model(folder).to_inference("cpu", torch.float32, merge=True)
        output = merged(lr())
    assert (output - adapted).abs().max() <= 1 / 255
    assert (adapted - plain).abs().max() > 1 / 255  # the adapters do change the output


def test_the_merged_model_is_the_plain_backbone_without_lora_modules(tmp_path: Path) -> None:
    folder = tiny_mor_model(tmp_path, lora=True)
    merged = load_sr_model(folder).to_inference("cpu", torch.float32, merge=True)
    assert isinstance(merged, PlainSR)
    assert not any(isinstance(m, MoRLayer) for m in merged.modules())
    assert merged.score_dim is None and merged.scale == 4


def test_the_merged_model_says_it_is_a_merged_lora_not_a_plain_backbone(tmp_path: Path) -> None:
    folder = tiny_mor_model(tmp_path, lora=True)
    merged = load_sr_model(folder).to_inference("cpu", torch.float32, merge=True)
    assert merged.describe().startswith("LoRA merged into ")


def test_the_merged_model_saves_and_exports_as_a_plain_network(tmp_path: Path) -> None:
    folder = tiny_mor_model(tmp_path, lora=True)
    merged = load_sr_model(folder).to_inference("cpu", torch.float32, merge=True)
    with torch.no_grad():
        expected = merged(lr())
        reloaded = load_sr_model(merged.save_pretrained(tmp_path / "plain"))
        exported = load_sr_model(export_model(merged, tmp_path / "merged.safetensors"))
        for model in (reloaded, exported):
            assert isinstance(model, PlainSR)
            torch.testing.assert_close(model(lr()), expected, rtol=0, atol=1e-6)


def test_a_routed_model_keeps_its_adapters(tmp_path: Path) -> None:
    routed = load_sr_model(tiny_mor_model(tmp_path)).to_inference("cpu", torch.float32, merge=True)
    assert isinstance(routed, MoRSuperResolver)
    assert next(mor_layers(routed.backbone), None) is not None
