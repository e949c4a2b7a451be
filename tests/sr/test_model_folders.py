"""Model folders: one manifest naming the type, loading by it, legacy folders, one-line errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import photo, tiny_backbone

from mordasr.cli import main
from mordasr.sr import (
    MANIFEST_FILE,
    BicubicSR,
    ModelLoadError,
    MoRSuperResolver,
    PlainSR,
    SRModel,
    load_sr_model,
)
from mordasr.sr.mor_sr import builtin_model_dir
from mordasr.sr.registry import MODEL_TYPES


def manifest(directory: Path) -> dict[str, object]:
    return json.loads((directory / MANIFEST_FILE).read_text())


def lr() -> torch.Tensor:
    return torch.from_numpy(photo(24, 20)).permute(2, 0, 1).float()[None] / 255


def test_every_model_type_implements_the_protocol() -> None:
    assert set(MODEL_TYPES) >= {"mor", "onestep-sd", "plain", "bicubic"}
    for model_type, cls in MODEL_TYPES.items():
        assert cls.model_type == model_type
        for member in ("prepare", "to_inference", "describe", "save_pretrained"):
            assert callable(getattr(cls, member)), (model_type, member)
        assert isinstance(cls.feed_forward, bool), model_type


def test_a_saved_mor_folder_names_its_type_and_loads_through_the_zoo(model_dir: Path) -> None:
    assert manifest(model_dir) == {"type": "mor", "format_version": 1}
    model = load_sr_model(model_dir)
    assert isinstance(model, MoRSuperResolver) and isinstance(model, SRModel)
    assert (model.scale, model.multiple_of) == (4, 1)


def test_the_shipped_default_has_a_manifest() -> None:
    folder = builtin_model_dir("default")
    assert folder is not None and manifest(folder)["type"] == "mor"


def test_a_mor_folder_of_an_earlier_version_without_manifest_still_loads(
    model_dir: Path, tmp_path: Path
) -> None:
    legacy = shutil.copytree(model_dir, tmp_path / "legacy")
    (legacy / MANIFEST_FILE).unlink()
    with torch.no_grad():
        expected = load_sr_model(model_dir)(lr())
        torch.testing.assert_close(load_sr_model(legacy)(lr()), expected, rtol=0, atol=0)


def test_the_default_folder_as_shipped_before_manifests_still_loads(tmp_path: Path) -> None:
    folder = builtin_model_dir("default")
    assert folder is not None
    legacy = shutil.copytree(folder, tmp_path / "default")
    (legacy / MANIFEST_FILE).unlink()
    model = load_sr_model(legacy)
    assert isinstance(model, MoRSuperResolver) and model.spec.backbone == "realesrgan-x4plus"


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_a_plain_backbone_round_trips_through_its_folder(scale: int, tmp_path: Path) -> None:
    model = load_sr_model(tiny_backbone(tmp_path / "net.pth", scale))
    assert isinstance(model, PlainSR)
    assert (model.scale, model.multiple_of) == (scale, {4: 1, 2: 2, 1: 4}[scale])
    folder = model.save_pretrained(tmp_path / "plain")
    assert manifest(folder)["type"] == "plain"
    reloaded = load_sr_model(folder)
    image = lr()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(image), model(image), rtol=0, atol=0)


def test_bicubic_round_trips_through_its_folder(tmp_path: Path) -> None:
    folder = BicubicSR(scale=2).save_pretrained(tmp_path / "bicubic")
    model = load_sr_model(folder)
    assert isinstance(model, BicubicSR) and model.scale == 2
    assert model(lr()).shape == (1, 3, 48, 40)


def test_a_class_refuses_a_folder_of_another_type(tmp_path: Path) -> None:
    folder = BicubicSR().save_pretrained(tmp_path / "bicubic")
    with pytest.raises(ModelLoadError, match="holds a 'bicubic' model, not 'mor'"):
        MoRSuperResolver.from_pretrained(folder)


def test_a_folder_that_is_no_model_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is not a mordasr model folder"):
        load_sr_model(tmp_path)


class CarriesCode:
    """Unpickling this would create ``marker``: a stand-in for code a checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _rewrite_json(name: str, change: Callable[[dict[str, object]], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        change(data)
        (folder / name).write_text(json.dumps(data))

    return damage


def _truncate(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])

    return damage


def _scramble(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name).write_bytes(b"\x07" * 64)

    return damage


def _backbone_with_code(folder: Path) -> None:
    torch.save({"params_ema": CarriesCode(folder / "ran")}, folder / "evil.pth")
    _rewrite_json("model.json", lambda d: d.update(backbone=str(folder / "evil.pth")))(folder)


BAD_FOLDERS = {
    "manifest key misspelled": (
        _rewrite_json(MANIFEST_FILE, lambda d: d.update(tpye=d.pop("type"))),
        MANIFEST_FILE,
        "tpye: unknown key (did you mean 'type'?)",
    ),
    "manifest type unknown": (
        _rewrite_json(MANIFEST_FILE, lambda d: d.update(type="esrgan")),
        MANIFEST_FILE,
        "unknown model type 'esrgan'",
    ),
    "manifest newer than mordasr": (
        _rewrite_json(MANIFEST_FILE, lambda d: d.update(format_version=99)),
        MANIFEST_FILE,
        "format_version 99 is newer",
    ),
    "model.json key misspelled": (
        _rewrite_json("model.json", lambda d: d.update(estimater="learned")),
        "model.json",
        "estimater: unknown key (did you mean 'estimator'?)",
    ),
    "model.json value of the wrong type": (
        _rewrite_json("model.json", lambda d: d.update(scale="four")),
        "model.json",
        "scale: expected int, got str 'four'",
    ),
    "adapter config key misspelled": (
        _rewrite_json("mor_config.json", lambda d: d.update(top_kk=2)),
        "mor_config.json",
        "top_kk: unknown key (did you mean 'top_k'?)",
    ),
    "adapter safetensors truncated": (
        _truncate("mor_adapter.safetensors"),
        "mor_adapter.safetensors",
        "not a readable safetensors file",
    ),
    "estimator safetensors corrupt": (
        _scramble("estimator.safetensors"),
        "estimator.safetensors",
        "not a readable safetensors file",
    ),
    "backbone .pth carries code": (_backbone_with_code, "evil.pth", "refused"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_a_bad_model_folder_is_refused_in_one_line_naming_the_file(
    case: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, file_name, problem = BAD_FOLDERS[case]
    folder = shutil.copytree(model_dir, tmp_path / "model")
    damage(folder)
    Image.fromarray(photo(16, 16)).save(tmp_path / "a.png")
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    assert main([*args, "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mordasr upscale: ") and err.count("\n") == 1, err
    assert file_name in err and problem in err, err
    assert not (folder / "ran").exists()


def test_a_pth_that_carries_code_is_refused_without_running_it(tmp_path: Path) -> None:
    torch.save({"params_ema": CarriesCode(tmp_path / "ran")}, tmp_path / "evil.pth")
    with pytest.raises(ModelLoadError, match=r"evil\.pth: refused") as caught:
        load_sr_model(tmp_path / "evil.pth")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "ran").exists()
