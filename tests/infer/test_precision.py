"""Reduced precision never touches routing or folding: a network run in bfloat16 keeps the
experts float32 chooses, its folded weights are float32's rounded once, and --precision exact
reproduces float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import photo, tiny_mor_model

from mordasr.cli import main
from mordasr.eval.io import load_image
from mordasr.infer.pipeline import Upscaler
from mordasr.mor import mor_layers

ONE_LEVEL = 1 / 255


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_mor_model(tmp_path_factory.mktemp("model"))


def images() -> torch.Tensor:
    return torch.stack(
        [torch.from_numpy(photo(32, 32, seed)).permute(2, 0, 1).float() / 255 for seed in range(4)]
    )


def test_bfloat16_routes_every_image_to_float32s_experts(model_dir: Path) -> None:
    exact = Upscaler(model_dir, device="cpu", backend="torch", precision="exact")
    half = Upscaler(model_dir, device="cpu", backend="torch", dtype=torch.bfloat16)
    lr = images()
    plans = [up.model.prepare(lr).plan for up in (exact, half)]
    for name, entry in plans[0].layers.items():
        other = plans[1].layers[name]
        assert entry.routing is not None and other.routing is not None
        assert torch.equal(entry.routing.indices, other.routing.indices)
        assert torch.equal(entry.routing.gates, other.routing.gates)


def test_bfloat16_folded_weights_are_float32s_rounded_once(model_dir: Path) -> None:
    exact = Upscaler(model_dir, device="cpu", backend="torch", precision="exact")
    half = Upscaler(model_dir, device="cpu", backend="torch", dtype=torch.bfloat16)
    lr = images()
    folded = exact.model.prepare(lr).plan.to(torch.bfloat16)
    rounded = half.model.prepare(lr).plan.to(torch.bfloat16)
    for name, entry in folded.layers.items():
        assert entry.weight is not None
        assert torch.equal(entry.weight, rounded.layers[name].weight)


def test_a_bfloat16_network_keeps_its_mor_layers_in_float32(model_dir: Path) -> None:
    half = Upscaler(model_dir, device="cpu", backend="torch", dtype=torch.bfloat16)
    network = half.model.prepare(images()[:1]).network
    layers = [layer for _, layer in mor_layers(network)]
    assert layers and all(p.dtype == torch.float32 for m in layers for p in m.parameters())


def test_precision_exact_reproduces_float32_within_one_level(
    model_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(photo(40, 36, 3)).save(source)
    argv = ["upscale", str(source), "-o", str(tmp_path / "out"), "--model", str(model_dir)]
    assert main([*argv, "--precision", "exact", "-q"]) == 0
    eager = Upscaler(model_dir, device="cpu", backend="torch", dtype=torch.float32)
    expected = eager.upscale_tensor(load_image(source)[0])
    assert (load_image(tmp_path / "out" / "in.png")[0] - expected).abs().max() <= ONE_LEVEL
