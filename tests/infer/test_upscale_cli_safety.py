"""`mordasr upscale` never loses a user's file and reports every refusal in one line:
inputs are never outputs, colliding names and bad arguments are refused before any work,
an interrupted batch says what it finished, and whatever is not kept is reported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from tiny_models import photo, tiny_mor_model

from mordasr.cli import main
from mordasr.infer import cli as upscale_cli
from mordasr.infer.pipeline import Upscaler
from mordasr.io.image import read_image


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as loading a model."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(upscale_cli, "Upscaler", refuse)


def _photos(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(photo(16, 16, seed=i)).save(folder / name, quality=90)
    return [folder / name for name in names]


def test_output_folder_equal_to_the_input_folder_is_refused_even_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    originals = {p: p.read_bytes() for p in _photos(tmp_path / "d", "a.png", "b.jpg")}
    status = main(["upscale", str(tmp_path / "d"), "-o", str(tmp_path / "d"), "--overwrite"])
    assert status == 2
    assert "would replace the input" in _one_line_error(capsys)
    assert {p: p.read_bytes() for p in originals} == originals
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["a.png", "b.jpg"]


@pytest.mark.parametrize("layout", ["same stem", "two folders"])
def test_inputs_whose_outputs_collide_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None, layout: str
) -> None:
    if layout == "same stem":
        inputs = _photos(tmp_path / "in", "p.jpg", "p.jpeg")
    else:
        inputs = _photos(tmp_path / "x", "a.png") + _photos(tmp_path / "y", "a.png")
    out = tmp_path / "out"
    args = ["upscale", *map(str, inputs), "-o", str(out), "--overwrite"]
    assert main(args) == 2
    error = _one_line_error(capsys)
    assert all(str(p) in error for p in inputs) and "nothing was written" in error
    assert not out.exists()


def test_output_under_a_regular_file_is_one_line_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    (source,) = _photos(tmp_path, "a.png")
    (tmp_path / "file").write_text("not a folder")
    assert main(["upscale", str(source), "-o", str(tmp_path / "file" / "out")]) == 2
    assert "is under" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--tile", "40"], "--tile must exceed 2 x --tile-overlap (64)"),
        (["--tile-overlap", "-1"], "--tile-overlap must be 0 or more"),
        (["--latent-tile", "16", "--latent-overlap", "32"], "--latent-tile must exceed"),
        (["--suffix", "/../x"], "must not hold a path separator"),
        (["--device", "warp-drive"], "is not a device name"),
    ],
)
def test_bad_arguments_are_one_line_with_the_fix(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
    flags: list[str],
    expected: str,
) -> None:
    (source,) = _photos(tmp_path, "a.png")
    assert main(["upscale", str(source), "-o", str(tmp_path / "out"), *flags]) == 2
    assert expected in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    (source,) = _photos(tmp_path, "a.png")
    assert main(["upscale", str(source), "-o", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "no CUDA device is available" in _one_line_error(capsys)


def _unknown_manifest_key(model: Path) -> Path:
    manifest = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**manifest, "sclae": 4}))
    return model


def _truncated_adapter(model: Path) -> Path:
    adapter = model / "mor_adapter.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-50])
    return model


def _garbage_weights(model: Path) -> Path:
    (model / "bad.pth").write_bytes(b"garbage")
    return model / "bad.pth"


def _empty_weights(model: Path) -> Path:
    (model / "empty.pth").write_bytes(b"")
    return model / "empty.pth"


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_unknown_manifest_key, "sclae"),
        (_truncated_adapter, "cannot load model"),
        (_garbage_weights, "cannot load model"),
        (_empty_weights, "EOFError"),
    ],
)
def test_a_broken_model_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    breakage: Callable[[Path], Path],
    expected: str,
) -> None:
    model = breakage(tiny_mor_model(tmp_path / "model"))
    (source,) = _photos(tmp_path, "a.png")
    args = ["upscale", str(source), "-o", str(tmp_path / "out"), "--model", str(model)]
    assert main(args) == 2
    assert expected in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_an_interrupted_batch_keeps_finished_outputs_and_says_what_it_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = _photos(tmp_path / "in", "a.png", "b.png", "c.png")
    real = Upscaler.upscale_decoded
    calls = []

    def interrupted_on_the_second(self: Upscaler, decoded: object, size: object = None) -> object:
        calls.append(decoded)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, decoded, size)  # type: ignore[arg-type]

    monkeypatch.setattr(Upscaler, "upscale_decoded", interrupted_on_the_second)
    out = tmp_path / "out"
    status = main(["upscale", *map(str, inputs), "-o", str(out), "--model", "bicubic"])
    assert status == 130
    err = capsys.readouterr().err
    summary = err.strip().splitlines()[-1]  # after the progress bar's lines
    assert "Traceback" not in err
    assert summary.startswith("interrupted: 1 upscaled") and "2 not started" in summary
    assert [p.name for p in out.iterdir()] == ["a.png"]
    assert read_image(out / "a.png").tensor.shape == (3, 64, 64)


def test_the_summary_reports_what_was_left_out_or_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    _photos(src, "a.png")
    _photos(src / "nested", "b.png")
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    frames = [Image.fromarray(photo(16, 16, seed=i)).convert("P") for i in range(3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--model", "bicubic", "--format", "png"]) == 0
    captured = capsys.readouterr()
    summary = captured.out.strip().splitlines()[-1]
    assert summary.startswith("2 upscaled")
    assert "1 dangling link, 1 sub-folder" in summary and "--recursive" in summary
    assert "dropped: animation frames (1 file(s))" in summary
    assert "first of 3 frames" in captured.err and "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "anim.png"]


def test_float_and_sixteen_bit_colour_tiffs_keep_their_range_and_depth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    floats = (rng.random((8, 8, 3)) * 255).astype(np.float32)
    deep = rng.integers(0, 65536, (8, 8, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "float.tif", floats, photometric="rgb")
    tifffile.imwrite(tmp_path / "deep.tif", deep, photometric="rgb")
    out = tmp_path / "out"
    inputs = [str(tmp_path / "float.tif"), str(tmp_path / "deep.tif")]
    assert main(["upscale", *inputs, "-o", str(out), "--model", "bicubic"]) == 0
    assert "note" not in capsys.readouterr().err
    float_out, deep_out = tifffile.imread(out / "float.tif"), tifffile.imread(out / "deep.tif")
    assert float_out.dtype == np.float32 and float_out.shape == (32, 32, 3)
    assert 0.9 * floats.max() < float_out.max() <= 255.0
    assert float_out.mean() == pytest.approx(floats.mean(), rel=0.05)
    assert deep_out.dtype == np.uint16 and deep_out.shape == (32, 32, 3)
    assert len(np.unique(deep_out)) > 256  # not 8-bit values stretched to 16 bits


def test_the_default_cli_still_upscales_with_a_real_model(tmp_path: Path) -> None:
    model = tiny_mor_model(tmp_path / "model")
    inputs = _photos(tmp_path / "in", "a.png")
    shutil.copy(inputs[0], tmp_path / "in" / "b.png")
    out = tmp_path / "out"
    assert main(["upscale", str(tmp_path / "in"), "-o", str(out), "--model", str(model)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


_SLOW_SECOND_IMAGE = """
import signal, sys, time
from mordasr.cli import main
from mordasr.infer.pipeline import Upscaler

# As at a terminal, even when the test itself runs in the background (SIGINT ignored there).
signal.signal(signal.SIGINT, signal.default_int_handler)

real, calls = Upscaler.upscale_decoded, []

def slow_second(self, decoded, size=None):
    calls.append(1)
    if len(calls) == 2:
        print("second started", flush=True)
        time.sleep(60)
    return real(self, decoded, size)

Upscaler.upscale_decoded = slow_second
sys.exit(main(["upscale", *sys.argv[1:], "--model", "bicubic"]))
"""


@pytest.mark.parametrize(
    ("stop", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_mid_batch_ends_with_a_one_line_summary_and_its_status(
    tmp_path: Path, stop: signal.Signals, status: int
) -> None:
    inputs = _photos(tmp_path / "in", "a.png", "b.png", "c.png")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", _SLOW_SECOND_IMAGE, *map(str, inputs), "-o", str(out)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None and process.stdout.readline() == "second started\n"
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    assert process.returncode == status
    assert "Traceback" not in err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("interrupted: 1 upscaled") and "2 not started" in summary
    assert [p.name for p in out.iterdir()] == ["a.png"]
