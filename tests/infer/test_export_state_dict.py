"""`mordasr export -o FILE.safetensors|.pth`: the folded network as a plain state dict in the
official Real-ESRGAN layout, which the official architecture (tests/official_archs.py, not
mordasr's) loads strictly and which computes what `mordasr upscale` does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from official_archs import RRDBNet as OfficialRRDBNet
from official_archs import SRVGGNetCompact as OfficialCompact
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_models import photo, tiny_mor_model

from mordasr.cli import main
from mordasr.mor import MoRConfig, mor_layers
from mordasr.nets.loaders import WeightsNotFoundError, load_network
from mordasr.sr import MoRSuperResolver, load_sr_model
from mordasr.sr.mor_sr import SRModelSpec

TINY = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}  # tests/tiny_models.py's backbone


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an exported file, opened as another tool would."""
    if path.suffix == ".safetensors":
        return load_file(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert list(checkpoint) == ["params_ema"]  # as in RealESRGAN_x4plus.pth
    return checkpoint["params_ema"]


def upscaled(model: Path, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A photo and `mordasr upscale`'s result for it (0..255 floats)."""
    source = tmp_path / "photo.png"
    Image.fromarray(photo(28, 36)).save(source)
    argv = ["upscale", str(source), "-o", str(tmp_path / "out"), "--model", str(model)]
    assert main([*argv, "--backend", "torch"]) == 0
    return source, np.asarray(Image.open(tmp_path / "out" / "photo.png"), dtype=np.float64)


def official_output(state: dict[str, torch.Tensor], source: Path) -> np.ndarray:
    """The official RRDBNet's result (0..255 floats) after loading ``state`` strictly."""
    network = OfficialRRDBNet(**TINY)
    shapes = {key: value.shape for key, value in network.state_dict().items()}
    assert {key: value.shape for key, value in state.items()} == shapes
    network.load_state_dict(state, strict=True)
    lr = torch.from_numpy(np.array(Image.open(source))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        sr = network.eval()(lr).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return sr * 255


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_mor_export_is_an_official_rrdbnet_that_upscales_like_mordasr(
    model_dir: Path, tmp_path: Path, suffix: str
) -> None:
    source, expected = upscaled(model_dir, tmp_path)
    target = tmp_path / f"m{suffix}"
    assert main(["export", str(model_dir), "-o", str(target), "--scores", str(source)]) == 0
    exported = official_output(read_state(target), source)
    assert exported.shape == expected.shape
    assert np.abs(exported - expected).max() <= 1.0


def test_plain_lora_export_is_an_official_rrdbnet_that_upscales_like_mordasr(
    tmp_path: Path,
) -> None:
    lora = tiny_mor_model(tmp_path / "lora", lora=True)
    source, expected = upscaled(lora, tmp_path)
    for suffix in (".safetensors", ".pth"):
        target = tmp_path / f"lora{suffix}"
        assert main(["export", str(lora), "-o", str(target)]) == 0
        exported = official_output(read_state(target), source)
        assert np.abs(exported - expected).max() <= 1.0
    plain = load_network(lora.parent / "tiny.pth").state_dict()
    folded = read_state(tmp_path / "lora.pth")
    assert not torch.equal(folded["conv_last.weight"], plain["conv_last.weight"])


def test_safetensors_header_records_architecture_scale_and_routing(
    model_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "m.safetensors"
    scores = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    argv = ["export", str(model_dir), "-o", str(target), "--scores", *scores, "--strength", "0.5"]
    assert main(argv) == 0
    with safe_open(str(target), "pt") as file:
        metadata = file.metadata()
    assert metadata["architecture"] == "RRDBNet" and metadata["scale"] == "4"
    assert json.loads(metadata["routing_scores"]) == pytest.approx([float(s) for s in scores])
    assert json.loads(metadata["strength"]) == 0.5


def test_exported_pth_loads_back_as_a_plain_model_computing_the_same(
    model_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "m.pth"
    assert main(["export", str(model_dir), "-o", str(target), "--scores", *["0.3"] * 7]) == 0
    lr = torch.from_numpy(photo(20, 24)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        plain = load_sr_model(target)(lr)
        routed = load_sr_model(model_dir)(lr, torch.full((1, 7), 0.3))
    torch.testing.assert_close(plain, routed, atol=1e-5, rtol=1e-4)


def test_mor_on_the_compact_net_exports_an_official_compact_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save({"params": OfficialCompact(8, 2, 4).state_dict()}, tmp_path / "c.pth")
    spec = SRModelSpec(backbone=str(tmp_path / "c.pth"))
    mor = MoRConfig(target_modules=r"body\.\d+", num_shared=2, num_routed=4, num_zero=1, top_k=2)
    model = MoRSuperResolver.build(spec, mor).eval()
    with torch.no_grad():
        for _, layer in mor_layers(model.backbone):
            layer.shared_B.normal_(0, 0.05)
    folder = model.save_pretrained(tmp_path / "mor")
    assert main(["export", str(folder), "-o", str(tmp_path / "m.pth"), "--scores", "auto"]) == 0
    checkpoint = torch.load(tmp_path / "m.pth", weights_only=True)
    official = OfficialCompact(8, 2, 4)
    official.load_state_dict(checkpoint["params"], strict=True)  # as realesr-animevideov3.pth
    lr = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(official(lr), model(lr, torch.full((1, 7), 0.5)))


def test_the_default_model_exports_the_x4plus_layout(tmp_path: Path) -> None:
    try:
        load_sr_model("default")
    except (WeightsNotFoundError, ValueError) as missing:
        pytest.skip(str(missing))
    target = tmp_path / "default.safetensors"
    assert main(["export", "default", "-o", str(target), "--scores", "auto"]) == 0
    state = load_file(target)
    x4plus = OfficialRRDBNet().state_dict()  # RealESRGAN_x4plus's architecture
    assert {key: value.shape for key, value in state.items()} == {
        key: value.shape for key, value in x4plus.items()
    }


def test_format_flag_overrides_the_extension(model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    assert main(["export", str(model_dir), "-o", str(target), "--format", "pth"]) == 0
    assert "params_ema" in torch.load(target, weights_only=True)


def test_unknown_extension_is_one_line_and_writes_nothing(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(model_dir), "-o", str(tmp_path / "model.bin")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mordasr export: cannot tell the format") and "\n" not in err
    assert not (tmp_path / "model.bin").exists()
