from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mordasr.nets.loaders import (
    WeightsNotFoundError,
    cache_dir,
    load_realesrgan,
    load_state_dict_file,
)
from mordasr.nets.rrdbnet import RRDBNet

TINY = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}


def _tiny_model(seed: int = 0, scale: int = 4) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(scale=scale, **TINY).eval()


def _assert_same_function(a: RRDBNet, b: RRDBNet) -> None:
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_official_checkpoint_with_params_ema_round_trips(tmp_path: Path) -> None:
    model = _tiny_model()
    path = tmp_path / "net.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    _assert_same_function(load_realesrgan(path), model)


def test_params_ema_is_preferred_over_params(tmp_path: Path) -> None:
    ema, raw = _tiny_model(0), _tiny_model(1)
    path = tmp_path / "net.pth"
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, path)
    _assert_same_function(load_realesrgan(path), ema)


def test_raw_state_dict_with_data_parallel_prefix_loads(tmp_path: Path) -> None:
    model = _tiny_model(scale=2)
    path = tmp_path / "net.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded = load_realesrgan(path)
    assert loaded.scale == 2
    _assert_same_function(loaded, model)


def test_safetensors_checkpoint_loads(tmp_path: Path) -> None:
    model = _tiny_model()
    path = tmp_path / "net.safetensors"
    save_file(model.state_dict(), path)
    _assert_same_function(load_realesrgan(path), model)


def test_loaded_model_is_in_eval_mode(tmp_path: Path) -> None:
    path = tmp_path / "net.pth"
    torch.save(_tiny_model().state_dict(), path)
    assert not load_realesrgan(path).training


def test_checkpoints_are_read_without_unpickling_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(1)}, "extra": Path("x")}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict_file(path)


def test_unknown_name_raises_weights_not_found() -> None:
    with pytest.raises(WeightsNotFoundError, match="realesrgan-x4plus"):
        load_realesrgan("no-such-model")


def test_missing_file_raises_weights_not_found(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError):
        load_realesrgan(tmp_path / "absent.pth")


def test_cache_dir_honours_override_then_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORDASR_CACHE", "/somewhere/else")
    assert cache_dir() == Path("/somewhere/else")
    monkeypatch.delenv("MORDASR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert cache_dir() == Path("/xdg/mordasr")
