"""SRVGGNetCompact (Real-ESRGAN's compact net): official .pth files, the shipped ncnn files, and
the one-line hint for architectures mordasr does not define."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ncnn_helpers import write_ncnn_compact
from official_archs import SRVGGNetCompact as OfficialCompact
from torch import nn

from mordasr.nets.loaders import (
    ANY_EXTRA_HINT,
    PRETRAINED,
    ForeignNetwork,
    WeightsNotFoundError,
    load_network,
)
from mordasr.nets.rrdbnet import UnknownArchitectureError
from mordasr.nets.srvgg import ResizedOutput, SRVGGNetCompact, detect_srvgg_config


def official_compact(path: Path, num_feat: int = 8, num_conv: int = 3, upscale: int = 4) -> Path:
    """Save a randomly initialised official compact net the way the official files hold it."""
    torch.manual_seed(0)
    net = OfficialCompact(num_feat=num_feat, num_conv=num_conv, upscale=upscale)
    with torch.no_grad():
        for layer in net.body:
            if isinstance(layer, nn.PReLU):
                layer.weight.uniform_(0.0, 0.5)  # not all equal, so a mix-up would show
    torch.save({"params": net.state_dict()}, path)
    return path


@pytest.mark.parametrize("upscale", [2, 3, 4])
def test_official_compact_pth_loads_and_computes_the_same(tmp_path: Path, upscale: int) -> None:
    path = official_compact(tmp_path / "compact.pth", upscale=upscale)
    network = load_network(path)
    official = OfficialCompact(num_feat=8, num_conv=3, upscale=upscale)
    official.load_state_dict(torch.load(path, weights_only=True)["params"])
    image = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        torch.testing.assert_close(network(image), official(image))
    assert isinstance(network, SRVGGNetCompact)
    assert (network.scale, network.multiple_of) == (upscale, 1)


def test_compact_config_is_detected_from_the_keys_and_shapes(tmp_path: Path) -> None:
    path = official_compact(tmp_path / "c.pth", num_feat=12, num_conv=5, upscale=2)
    config = detect_srvgg_config(torch.load(path, weights_only=True)["params"])
    assert (config.num_feat, config.num_conv, config.upscale) == (12, 5, 2)


def unknown_architecture(path: Path) -> Path:
    torch.save({"params": {"head.weight": torch.zeros(4, 3, 3, 3)}}, path)
    return path


def test_unknown_architecture_without_spandrel_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "spandrel", None)  # `import spandrel` fails
    with pytest.raises(UnknownArchitectureError) as caught:
        load_network(unknown_architecture(tmp_path / "other.pth"))
    message = str(caught.value)
    assert ANY_EXTRA_HINT in message and "\n" not in message


def test_unknown_architecture_loads_through_spandrel_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in for spandrel's ModelLoader: the network, scale and side multiple it detects
    are what mordasr runs."""
    network = nn.Upsample(scale_factor=2)

    class ModelLoader:
        def load_from_state_dict(self, state: dict[str, torch.Tensor]) -> object:
            assert set(state) == {"head.weight"}
            requirements = types.SimpleNamespace(multiple_of=8)
            return types.SimpleNamespace(model=network, scale=2, size_requirements=requirements)

    monkeypatch.setitem(sys.modules, "spandrel", types.SimpleNamespace(ModelLoader=ModelLoader))
    loaded = load_network(unknown_architecture(tmp_path / "other.pth"))
    assert isinstance(loaded, ForeignNetwork)
    assert (loaded.scale, loaded.multiple_of, loaded.network) == (2, 8, network)


def test_ncnn_compact_files_load_to_the_official_network(tmp_path: Path) -> None:
    net = OfficialCompact(num_feat=8, num_conv=2, upscale=4)
    with torch.no_grad():
        for layer in net.body:
            if isinstance(layer, nn.PReLU):
                layer.weight.uniform_(0.0, 0.5)
    image = torch.rand(1, 3, 8, 12)
    x4 = load_network(write_ncnn_compact(net, tmp_path / "x4"), cache=False)
    x2 = load_network(write_ncnn_compact(net, tmp_path / "x2", resize=0.5), cache=False)
    assert isinstance(x4, SRVGGNetCompact) and isinstance(x2, ResizedOutput)
    assert (x4.scale, x2.scale) == (4, 2)
    with torch.no_grad():
        torch.testing.assert_close(x4(image), net(image))
        expected = F.interpolate(net(image), scale_factor=0.5, mode="bicubic")
        torch.testing.assert_close(x2(image), expected)


def shipped(name: str) -> nn.Module:
    try:
        return load_network(name, cache=False)
    except WeightsNotFoundError as missing:
        pytest.skip(str(missing))


def test_shipped_animevideov3_is_the_x4_compact_net() -> None:
    network = shipped("realesr-animevideov3")
    assert isinstance(network, SRVGGNetCompact)
    assert (network.config.num_feat, network.config.num_conv, network.scale) == (64, 16, 4)


def test_shipped_animevideov3_x2_and_x3_resize_the_x4_output_bicubically() -> None:
    image = torch.rand(1, 3, 12, 16)
    x4 = shipped("realesr-animevideov3")
    for scale in (2, 3):
        network = shipped(f"realesr-animevideov3-x{scale}")
        assert isinstance(network, ResizedOutput) and network.scale == scale
        with torch.no_grad():
            expected = F.interpolate(x4(image), scale_factor=scale / 4, mode="bicubic")
            torch.testing.assert_close(network(image), expected)


def test_shipped_x4plus_anime_is_a_six_block_rrdbnet() -> None:
    network = shipped("realesrgan-x4plus-anime")
    assert network.config.num_block == 6 and network.scale == 4


def test_the_compact_models_are_registered_by_name() -> None:
    names = {"realesr-animevideov3", "realesr-animevideov3-x2", "realesr-animevideov3-x3"}
    assert names | {"realesrgan-x4plus-anime"} <= set(PRETRAINED)
