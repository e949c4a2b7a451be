"""`mordasr export`: an ONNX file plain ONNX Runtime runs like `mordasr upscale`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import photo, tiny_backbone

from mordasr.cli import main
from mordasr.infer.export import MID_SEVERITY, export_model
from mordasr.sr.zoo import load_sr_model

ort = pytest.importorskip("onnxruntime")


def run_onnx(path: Path, image: np.ndarray) -> np.ndarray:
    """The file's output for an (H, W, 3) uint8 image, as (H', W', 3) floats in [0, 1]."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    return session.run(["output"], {"input": batch})[0][0].transpose(1, 2, 0)


def test_export_matches_mordasr_upscale_on_the_same_image(model_dir: Path, tmp_path: Path) -> None:
    image = photo(36, 44)
    source = tmp_path / "photo.png"
    Image.fromarray(image).save(source)
    upscale = ["upscale", str(source), "-o", str(tmp_path / "out"), "--model", str(model_dir)]
    assert main([*upscale, "--backend", "torch"]) == 0
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(model_dir), "-o", str(onnx_file), "--scores", str(source)]) == 0
    upscaled = np.asarray(Image.open(tmp_path / "out" / "photo.png"), dtype=np.float64)
    exported = run_onnx(onnx_file, image) * 255
    assert exported.shape == upscaled.shape
    assert np.abs(exported - upscaled).max() <= 1.0


def test_export_has_real_esrgan_style_io_and_any_size(model_dir: Path, tmp_path: Path) -> None:
    path = export_model(load_sr_model(model_dir), tmp_path / "m.onnx", torch.rand(1, 7))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name, inp.type) == ("input", "output", "tensor(float)")
    assert inp.shape[1] == 3 and all(isinstance(side, str) for side in inp.shape[2:])
    for height, width in ((20, 28), (33, 17)):
        result = run_onnx(path, photo(height, width))
        assert result.shape == (4 * height, 4 * width, 3)
        assert result.min() >= 0.0 and result.max() <= 1.0


def test_given_scores_route_the_export_as_the_model(model_dir: Path, tmp_path: Path) -> None:
    model = load_sr_model(model_dir)
    image = photo(24, 24)
    lr = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    outputs = []
    for value in ("0.1", "0.9"):
        path = tmp_path / f"s{value}.onnx"
        assert main(["export", str(model_dir), "-o", str(path), "--scores", *[value] * 7]) == 0
        outputs.append(run_onnx(path, image))
        with torch.no_grad():
            eager = model(lr, torch.full((1, 7), float(value))).clamp(0, 1)
        assert np.abs(outputs[-1] - eager[0].permute(1, 2, 0).numpy()).max() < 1 / 255
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4


def test_auto_scores_are_mid_severity(model_dir: Path, tmp_path: Path) -> None:
    model = load_sr_model(model_dir)
    auto = main(["export", str(model_dir), "-o", str(tmp_path / "auto.onnx")])
    assert auto == 0
    fixed = export_model(model, tmp_path / "mid.onnx", torch.full((1, 7), MID_SEVERITY))
    image = photo(20, 20)
    np.testing.assert_array_equal(run_onnx(tmp_path / "auto.onnx", image), run_onnx(fixed, image))


def test_strength_zero_exports_the_plain_backbone(model_dir: Path, tmp_path: Path) -> None:
    model = load_sr_model(model_dir)
    adapted = export_model(model, tmp_path / "t0.onnx", torch.rand(1, 7), strength=0.0)
    plain = tmp_path / "plain.onnx"
    assert main(["export", str(tiny_backbone(tmp_path / "b.pth")), "-o", str(plain)]) == 0
    image = photo(20, 24)
    assert np.abs(run_onnx(adapted, image) - run_onnx(plain, image)).max() < 1e-5


def test_wrong_number_of_scores_is_one_line_error(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", str(model_dir), "-o", str(tmp_path / "x.onnx"), "--scores", "0.1", "0.2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mordasr export: --scores takes") and "\n" not in err
    assert not (tmp_path / "x.onnx").exists()
