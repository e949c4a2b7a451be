"""Backbones other than RRDBNet: the compact net as a plain model, under MoR adapters, and the
one-line hint for an architecture that needs the `mordasr[any]` extra."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from official_archs import SRVGGNetCompact as OfficialCompact
from PIL import Image
from tiny_models import photo

from mordasr.cli import main
from mordasr.mor import MoRConfig, mor_layers
from mordasr.nets.loaders import ANY_EXTRA_HINT, WeightsNotFoundError, load_network
from mordasr.sr import MoRSuperResolver, PlainSR, load_sr_model
from mordasr.sr.mor_sr import SRModelSpec


def compact_pth(path: Path, upscale: int = 4) -> Path:
    torch.manual_seed(0)
    net = OfficialCompact(num_feat=8, num_conv=2, upscale=upscale)
    torch.save({"params": net.state_dict()}, path)
    return path


def lr() -> torch.Tensor:
    return torch.from_numpy(photo(20, 24)).permute(2, 0, 1).float()[None] / 255


def test_a_compact_pth_is_a_plain_model_of_its_scale(tmp_path: Path) -> None:
    model = load_sr_model(compact_pth(tmp_path / "c.pth", upscale=2))
    assert isinstance(model, PlainSR)
    assert (model.scale, model.multiple_of) == (2, 1)
    with torch.no_grad():
        assert model(lr()).shape == (1, 3, 40, 48)


def test_mor_adapters_inject_into_the_compact_net_and_route(tmp_path: Path) -> None:
    spec = SRModelSpec(backbone=str(compact_pth(tmp_path / "c.pth")))
    mor = MoRConfig(target_modules=r"body\.\d+", num_shared=2, num_routed=4, num_zero=1, top_k=2)
    model = MoRSuperResolver.build(spec, mor).eval()
    names = [name for name, _ in mor_layers(model.backbone)]
    assert names == ["body.0", "body.2", "body.4", "body.6"]  # the convolutions, not the PReLUs
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in mor_layers(model.backbone):
            for b in (layer.shared_B, layer.routed_B):
                b.copy_(0.05 * torch.randn(b.shape, generator=gen))
        mild, severe = (model(lr(), torch.full((1, 7), value)) for value in (0.1, 0.9))
        plain = load_network(tmp_path / "c.pth")(lr())
    assert mild.shape == (1, 3, 80, 96)
    assert (mild - severe).abs().max() > 1e-4 and (mild - plain).abs().max() > 1e-4
    reloaded = load_sr_model(model.save_pretrained(tmp_path / "mor"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(lr(), torch.full((1, 7), 0.1)), mild)


def test_upscale_with_an_unknown_architecture_gives_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "spandrel", None)  # `import spandrel` fails
    other = tmp_path / "other.pth"
    torch.save({"params": {"head.weight": torch.zeros(4, 3, 3, 3)}}, other)
    Image.fromarray(photo(16, 16)).save(tmp_path / "in.png")
    argv = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(other)]
    assert main([*argv, "--backend", "torch"]) == 2
    err = capsys.readouterr().err.strip()
    assert ANY_EXTRA_HINT in err and "\n" not in err


def test_upscale_with_realesr_animevideov3_works_offline(tmp_path: Path) -> None:
    try:
        load_network("realesr-animevideov3", cache=False)
    except WeightsNotFoundError as missing:
        pytest.skip(str(missing))
    Image.fromarray(photo(20, 28)).save(tmp_path / "in.png")
    argv = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out")]
    assert main([*argv, "--model", "realesr-animevideov3", "--backend", "torch"]) == 0
    result = np.asarray(Image.open(tmp_path / "out" / "in.png"))
    assert result.shape == (80, 112, 3)
