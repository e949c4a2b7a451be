"""The OpenVINO backend: float32 against eager torch, per-image routing fed as weights, and
bfloat16 kept close to float32 (the quality criterion itself is a benchmark)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import photo, photo_tensor

from mordasr.cli import main
from mordasr.infer.backends import OPENVINO_HINT
from mordasr.infer.backends import openvino as openvino_backend
from mordasr.infer.pipeline import Upscaler

pytest.importorskip("openvino")
pytestmark = pytest.mark.usefixtures("private_cache")

ONE_LEVEL = 1 / 255


def test_openvino_float32_matches_eager_torch_within_one_level(model_dir: Path) -> None:
    lr = photo_tensor()
    eager = Upscaler(model_dir, device="cpu", backend="torch").upscale_tensor(lr)
    exact = Upscaler(model_dir, device="cpu", backend="openvino", precision="exact")
    assert exact.configuration.dtype == torch.float32
    assert (exact.upscale_tensor(lr) - eager).abs().max() < ONE_LEVEL


def test_openvino_bfloat16_stays_near_float32(model_dir: Path) -> None:
    lr = photo_tensor()
    eager = Upscaler(model_dir, device="cpu", backend="torch").upscale_tensor(lr)
    half = Upscaler(model_dir, device="cpu", backend="openvino", dtype=torch.bfloat16)
    assert (half.upscale_tensor(lr) - eager).abs().mean() < 2 * ONE_LEVEL


def test_openvino_feeds_each_images_folded_weights(model_dir: Path) -> None:
    upscaler = Upscaler(model_dir, device="cpu", backend="openvino", precision="exact")
    lr = photo_tensor(24, 24)[None]
    outputs = []
    for value in (0.05, 0.95):
        work = upscaler.model.prepare(lr, torch.full((1, upscaler.model.score_dim or 0), value))
        with upscaler.backend.bind(work) as run:
            outputs.append(run(lr))
        with torch.no_grad(), work.plan.applied(work.network) as eager:
            assert (outputs[-1] - eager(lr)).abs().max() < ONE_LEVEL
    assert (outputs[0] - outputs[1]).abs().max() > 1e-4


def test_a_batch_is_routed_image_by_image_on_openvino(model_dir: Path) -> None:
    batch = torch.stack([photo_tensor(32, 32, seed=1), photo_tensor(32, 32, seed=2) * 0.5])
    eager = Upscaler(model_dir, device="cpu", backend="torch").upscale_tensor(batch)
    fast = Upscaler(model_dir, device="cpu", backend="openvino", precision="exact")
    assert (fast.upscale_tensor(batch) - eager).abs().max() < ONE_LEVEL


def test_the_compiled_model_is_shared_by_upscalers(model_dir: Path) -> None:
    first = Upscaler(model_dir, device="cpu", backend="openvino", precision="exact")
    second = Upscaler(model_dir, device="cpu", backend="openvino", precision="exact")
    shape = (1, 3, 16, 16)
    assert second.backend.compiled(second.model.backbone, shape) is first.backend.compiled(
        first.model.backbone, shape
    )


def test_a_bounded_number_of_shapes_stay_compiled(model_dir: Path) -> None:
    upscaler = Upscaler(model_dir, device="cpu", backend="openvino", precision="exact")
    network = upscaler.model.backbone
    shapes = [(1, 3, 8 + 4 * i, 8) for i in range(openvino_backend.MAX_SHAPES + 2)]
    for shape in shapes:
        upscaler.backend.compiled(network, shape)
    kept = [key[3] for key in openvino_backend._COMPILED]
    assert shapes[-1] in kept and shapes[0] not in kept
    assert len([s for s in kept if s in shapes]) == openvino_backend.MAX_SHAPES


def test_without_openvino_the_cli_prints_one_line_hint(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    source = tmp_path / "in.png"
    Image.fromarray(photo(16, 16)).save(source)
    argv = ["upscale", str(source), "-o", str(tmp_path / "out"), "--model", str(model_dir)]
    assert main([*argv, "--backend", "openvino"]) == 2
    assert capsys.readouterr().err.strip() == f"mordasr upscale: {OPENVINO_HINT}"


def test_the_summary_line_names_the_configuration(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(photo(16, 16)).save(source)
    argv = ["upscale", str(source), "-o", str(tmp_path / "out"), "--model", str(model_dir)]
    assert main([*argv, "--backend", "openvino", "--precision", "exact", "-q"]) == 0
    assert "ran on openvino float32 (exact)" in capsys.readouterr().out
