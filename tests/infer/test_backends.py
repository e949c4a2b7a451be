"""The ONNX Runtime backend: against eager torch, per-image routing on the fed graph, its caches
and the install hint without ONNX Runtime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import photo, photo_tensor, tiny_backbone

from mordasr.cli import main
from mordasr.infer import backends
from mordasr.infer.backends import (
    ONNX_HINT,
    WEIGHT_INPUT_PREFIX,
    BackendUnavailableError,
    OnnxRuntimeBackend,
    choose_configuration,
)
from mordasr.infer.backends import onnxruntime as ort_backend
from mordasr.infer.pipeline import Upscaler

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("private_cache")

ONE_LEVEL = 1 / 255


def test_onnxruntime_matches_eager_torch_within_one_level(model_dir: Path) -> None:
    lr = photo_tensor()
    eager = Upscaler(model_dir, device="cpu", backend="torch").upscale_tensor(lr)
    fast = Upscaler(model_dir, device="cpu", backend="onnxruntime").upscale_tensor(lr)
    assert (fast - eager).abs().max() < ONE_LEVEL


def test_plain_backbone_runs_on_the_fast_path(tmp_path: Path) -> None:
    weights = tiny_backbone(tmp_path / "plain.pth")
    lr = photo_tensor(24, 28)
    fast = Upscaler(weights, device="cpu", backend="onnxruntime")
    eager = Upscaler(weights, device="cpu", backend="torch").upscale_tensor(lr)
    assert fast.backend.name == "onnxruntime"
    assert (fast.upscale_tensor(lr) - eager).abs().max() < ONE_LEVEL


def test_images_with_different_scores_get_different_folded_weights_on_the_fast_path(
    model_dir: Path,
) -> None:
    upscaler = Upscaler(model_dir, device="cpu", backend="onnxruntime")
    model = upscaler.model
    fed: list[dict[str, np.ndarray]] = []
    session = upscaler.backend.session(model.backbone)

    class Recording:
        def run(
            self, names: list[str], feeds: dict[str, np.ndarray], options: object
        ) -> list[np.ndarray]:
            fed.append({k: v.copy() for k, v in feeds.items() if k.startswith(WEIGHT_INPUT_PREFIX)})
            return session.run(names, feeds, options)

    upscaler.backend._sessions[id(model.backbone)] = (model.backbone, Recording())
    lr = photo_tensor(32, 32)
    mild, severe = torch.full((1, 7), 0.05), torch.full((1, 7), 0.95)
    outputs = []
    for scores in (mild, severe):
        work = model.prepare(lr[None], scores)
        with upscaler.backend.bind(work) as run:
            outputs.append(run(lr[None]))
        with torch.no_grad():
            eager = model(lr[None], scores)
        assert (outputs[-1] - eager).abs().max() < ONE_LEVEL
    assert fed[0].keys() == fed[1].keys() and fed[0]
    assert any(not np.array_equal(fed[0][k], fed[1][k]) for k in fed[0])
    assert (outputs[0] - outputs[1]).abs().max() > 1e-4


@pytest.mark.slow
def test_the_shipped_mor_dasr_model_keeps_per_image_routing_on_the_fast_path() -> None:
    upscaler = Upscaler("mor-dasr", device="cpu", backend="onnxruntime")
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 24, 24)
    folded, outputs = [], []
    for value in (0.05, 0.95):
        scores = torch.full((1, 7), value)
        work = upscaler.model.prepare(lr, scores)
        folded.append(backends.folded_weights(work.plan))
        with upscaler.backend.bind(work) as run:
            outputs.append(run(lr))
        with torch.no_grad():
            eager = upscaler.model(lr, scores)
        assert (outputs[-1] - eager).abs().max() < ONE_LEVEL
    assert any(not torch.equal(folded[0][k], folded[1][k]) for k in folded[0])
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3


def test_a_batch_is_routed_image_by_image(model_dir: Path) -> None:
    batch = torch.stack([photo_tensor(32, 32, seed=1), photo_tensor(32, 32, seed=2) * 0.5])
    eager = Upscaler(model_dir, device="cpu", backend="torch").upscale_tensor(batch)
    fast = Upscaler(model_dir, device="cpu", backend="onnxruntime").upscale_tensor(batch)
    assert (fast - eager).abs().max() < ONE_LEVEL


def test_the_graph_is_exported_once_per_model_and_kept_on_disk(
    model_dir: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort_backend, "_SESSIONS", {})
    first = Upscaler(model_dir, device="cpu", backend="onnxruntime")
    second = Upscaler(model_dir, device="cpu", backend="onnxruntime")
    session = first.backend.session(first.model.backbone)
    assert second.backend.session(second.model.backbone) is session
    assert len(list((private_cache / "onnx").glob("*.onnx"))) == 1


def test_an_unknown_backend_is_refused(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        Upscaler(model_dir, device="cpu", backend="tensorrt")


def test_onnxruntime_refuses_half_precision(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="float32 only"):
        Upscaler(model_dir, device="cpu", dtype=torch.float16, backend="onnxruntime")


@pytest.fixture
def without_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


@pytest.mark.usefixtures("without_onnxruntime")
def test_without_the_graph_backends_auto_runs_on_torch(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    upscaler = Upscaler(model_dir, device="cpu")
    assert upscaler.backend.name == "torch"
    assert upscaler.upscale_tensor(photo_tensor(16, 16)).shape == (3, 64, 64)


@pytest.mark.usefixtures("without_onnxruntime")
def test_without_onnxruntime_the_backend_names_the_install(model_dir: Path) -> None:
    model = Upscaler(model_dir, device="cpu", backend="torch").model
    with pytest.raises(BackendUnavailableError, match=r"pip install 'mordasr\[onnx\]'"):
        choose_configuration(model, torch.device("cpu"), "onnxruntime")
    with pytest.raises(BackendUnavailableError):
        OnnxRuntimeBackend()


@pytest.mark.usefixtures("without_onnxruntime")
def test_without_onnxruntime_the_cli_prints_one_line_hint(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(photo(16, 16)).save(source)
    argv = ["upscale", str(source), "-o", str(tmp_path / "out"), "--model", str(model_dir)]
    assert main([*argv, "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mordasr upscale: {ONNX_HINT}"


def test_onnxruntime_shrinks_its_memory_arena_after_every_run(model_dir: Path) -> None:
    upscaler = Upscaler(model_dir, device="cpu", backend="onnxruntime")
    options = upscaler.backend.run_options
    assert options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"


def test_onnxruntime_hands_freed_memory_back_after_every_image(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[None] = []
    monkeypatch.setattr(ort_backend, "release_freed_memory", lambda: calls.append(None))
    upscaler = Upscaler(model_dir, device="cpu", backend="onnxruntime", tile=0)
    upscaler.upscale_tensor(torch.stack([photo_tensor(seed=1), photo_tensor(seed=2)]))
    assert len(calls) == 2
