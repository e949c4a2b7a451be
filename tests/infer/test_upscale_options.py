"""`mordasr upscale` options: output size, strength, alpha, recursive folders, quality,
failures.csv, progress, and the half-precision guard (tiny models saved by the tests)."""

from __future__ import annotations

import csv
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_models import photo
from torch import nn

from mordasr.cli import main
from mordasr.infer.pipeline import Upscaler, output_size
from mordasr.infer.progress import ProgressEvent
from mordasr.io.image import read_image


def _upscale(model_dir: Path, source: Path, out: Path, *flags: str) -> int:
    return main(["upscale", str(source), "-o", str(out), "--model", str(model_dir), *flags])


def _png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    Image.fromarray(photo(height, width, seed)).save(path)
    return path


# Output size --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "size"),
    [
        (["--outscale", "2"], (200, 150)),
        (["--outscale", "3.5"], (350, 263)),
        (["--width", "1000"], (1000, 750)),
        (["--height", "300"], (400, 300)),
        (["--width", "120", "--height", "70"], (120, 70)),
    ],
)
def test_output_size_flags_give_exactly_that_size(
    model_dir: Path, tmp_path: Path, flags: list[str], size: tuple[int, int]
) -> None:
    source = _png(tmp_path / "a.png", 75, 100)
    assert _upscale(model_dir, source, tmp_path / "out", *flags) == 0
    assert Image.open(tmp_path / "out" / "a.png").size == size


def test_output_size_rounds_half_up_and_keeps_the_aspect_ratio() -> None:
    assert output_size(75, 100, 4, outscale=3.5) == (263, 350)
    assert output_size(75, 100, 4, out_width=50) == (38, 50)
    assert output_size(75, 100, 4, outscale=4) is None
    assert output_size(75, 100, 4) is None


def test_output_scale_and_width_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        output_size(75, 100, 4, outscale=2, out_width=10)


def test_outscale_resizes_the_model_output_bicubically(model_dir: Path) -> None:
    upscaler = Upscaler(model_dir, device="cpu")
    lr = torch.rand(3, 20, 24)
    with torch.no_grad():
        full = upscaler.model(lr[None])
    half = upscaler.upscale_tensor(lr, size=(40, 48))
    expected = F.interpolate(full, size=(40, 48), mode="bicubic", antialias=True)[0]
    torch.testing.assert_close(half, expected.clamp(0, 1), atol=1e-5, rtol=0)


# Strength -----------------------------------------------------------------------------------
def test_strength_zero_is_the_plain_backbone_exactly(model_dir: Path) -> None:
    lr = torch.from_numpy(photo(40, 36)).permute(2, 0, 1).float() / 255
    zero = Upscaler(model_dir, device="cpu", strength=0.0, backend="torch").upscale_tensor(lr)
    plain = Upscaler(model_dir.parent / "tiny.pth", device="cpu", backend="torch").upscale_tensor(
        lr
    )
    trained = Upscaler(model_dir, device="cpu", backend="torch").upscale_tensor(lr)
    assert torch.equal(zero, plain)
    assert (trained - plain).abs().max() > 1e-3


def test_strength_one_is_the_default(model_dir: Path, tmp_path: Path) -> None:
    source = _png(tmp_path / "a.png", 32, 32)
    _upscale(model_dir, source, tmp_path / "default")
    _upscale(model_dir, source, tmp_path / "one", "--strength", "1")
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "default" / "a.png")),
        np.asarray(Image.open(tmp_path / "one" / "a.png")),
    )


def test_strength_above_one_warns_and_beyond_the_limit_is_refused(model_dir: Path) -> None:
    with pytest.warns(UserWarning, match="extrapolates"):
        Upscaler(model_dir, device="cpu", strength=1.2)
    with pytest.raises(ValueError, match="strength"):
        Upscaler(model_dir, device="cpu", strength=1.6)


def test_strength_needs_a_model_with_adapters(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="MoR models only"):
        Upscaler(model_dir.parent / "tiny.pth", device="cpu", strength=0.5)


@pytest.mark.slow
def test_default_model_at_strength_zero_is_realesrgan_x4plus_within_one_level(
    tmp_path: Path,
) -> None:
    source = _png(tmp_path / "a.png", 16, 20)
    common = ["upscale", str(source), "--tile", "0"]
    assert main([*common, "-o", str(tmp_path / "zero"), "--strength", "0"]) == 0
    assert main([*common, "-o", str(tmp_path / "plain"), "--model", "realesrgan-x4plus"]) == 0
    zero = np.asarray(Image.open(tmp_path / "zero" / "a.png"), dtype=np.int16)
    plain = np.asarray(Image.open(tmp_path / "plain" / "a.png"), dtype=np.int16)
    assert np.abs(zero - plain).max() <= 1


# Alpha --------------------------------------------------------------------------------------
def _rgba(path: Path) -> Path:
    rgba = np.dstack([photo(24, 28), photo(24, 28, seed=3)[..., 0]])
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def test_alpha_goes_through_the_model_by_default(model_dir: Path, tmp_path: Path) -> None:
    upscaler = Upscaler(model_dir, device="cpu")
    decoded = read_image(_rgba(tmp_path / "a.png"))
    assert decoded.alpha is not None
    result = upscaler.upscale_decoded(decoded)
    gray = upscaler.upscale_tensor(decoded.alpha.expand(3, -1, -1))
    expected = (gray * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    assert result.alpha is not None
    torch.testing.assert_close(result.alpha, expected.clamp(0, 1), atol=1e-6, rtol=0)


def test_alpha_bicubic_on_request(model_dir: Path, tmp_path: Path) -> None:
    decoded = read_image(_rgba(tmp_path / "a.png"))
    assert decoded.alpha is not None
    result = Upscaler(model_dir, device="cpu", alpha="bicubic").upscale_decoded(decoded)
    expected = F.interpolate(decoded.alpha[None], scale_factor=4, mode="bicubic")[0]
    assert result.alpha is not None
    torch.testing.assert_close(result.alpha, expected.clamp(0, 1), atol=1e-6, rtol=0)


def test_cli_alpha_flag_changes_only_the_alpha(model_dir: Path, tmp_path: Path) -> None:
    source = _rgba(tmp_path / "a.png")
    _upscale(model_dir, source, tmp_path / "model")
    _upscale(model_dir, source, tmp_path / "bicubic", "--alpha", "bicubic")
    by_model = np.asarray(Image.open(tmp_path / "model" / "a.png"))
    by_bicubic = np.asarray(Image.open(tmp_path / "bicubic" / "a.png"))
    assert np.array_equal(by_model[..., :3], by_bicubic[..., :3])
    assert not np.array_equal(by_model[..., 3], by_bicubic[..., 3])


# Folders, failures, quality -----------------------------------------------------------------
def test_recursive_reproduces_the_folder_tree(model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    for relative in ("top.png", "sub/mid.png", "sub/deeper/low.png"):
        _png(src / relative, 16, 16)
    assert _upscale(model_dir, src, tmp_path / "out", "--recursive") == 0
    written = sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")
    )
    assert written == ["sub/deeper/low.png", "sub/mid.png", "top.png"]


def test_without_recursive_sub_folders_are_not_read(model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _png(src / "top.png", 16, 16)
    _png(src / "sub" / "mid.png", 16, 16)
    assert _upscale(model_dir, src, tmp_path / "out") == 0
    assert [p.name for p in (tmp_path / "out").rglob("*.png")] == ["top.png"]


def test_a_corrupt_file_is_listed_in_failures_csv_and_the_rest_finish(
    model_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png", 16, 16)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _png(src / "c.png", 16, 16)
    assert _upscale(model_dir, src, tmp_path / "out") == 1
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "c.png").is_file()
    with open(tmp_path / "out" / "failures.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["path", "reason"]
    assert [row[0] for row in rows[1:]] == [str(src / "b.png")] and rows[1][1]


def test_no_failures_csv_when_everything_succeeds(model_dir: Path, tmp_path: Path) -> None:
    assert _upscale(model_dir, _png(tmp_path / "a.png", 16, 16), tmp_path / "out") == 0
    assert not (tmp_path / "out" / "failures.csv").exists()


def test_quality_sets_the_jpeg_quality(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "a.jpg"
    Image.fromarray(photo(32, 32)).save(source, quality=95)
    _upscale(model_dir, source, tmp_path / "low", "--quality", "20")
    _upscale(model_dir, source, tmp_path / "high", "--quality", "98")
    assert (tmp_path / "low" / "a.jpg").stat().st_size < (
        tmp_path / "high" / "a.jpg"
    ).stat().st_size


# Progress -----------------------------------------------------------------------------------
def test_progress_callback_sees_files_and_tiles_in_order(model_dir: Path) -> None:
    events: list[ProgressEvent] = []
    upscaler = Upscaler(model_dir, device="cpu", tile=32, tile_overlap=8, progress=events.append)
    upscaler.begin_file(0, 2, "a.png")
    upscaler.upscale_tensor(torch.rand(3, 40, 40))
    upscaler.end_file()
    upscaler.begin_file(1, 2, "b.png")
    upscaler.end_file("corrupt")
    stages = [event.stage for event in events]
    tiles = [event for event in events if event.stage == "tile"]
    assert stages == [
        "file_start",
        *["tile"] * len(tiles),
        "file_done",
        "file_start",
        "file_failed",
    ]
    assert [event.tiles_done for event in tiles] == list(range(len(tiles)))
    assert {event.tiles_total for event in tiles} == {4} and len(tiles) == 5
    assert {(event.path, event.file_index, event.file_count) for event in tiles} == {
        ("a.png", 0, 2)
    }
    assert events[-1].message == "corrupt"


def test_cli_shows_bars_on_a_terminal_and_quiet_silences_them(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png", 40, 40)
    _png(src / "b.png", 40, 40)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _upscale(model_dir, src, tmp_path / "shown", "--tile", "32", "--tile-overlap", "8")
    shown = capsys.readouterr().err
    _upscale(model_dir, src, tmp_path / "quiet", "--tile", "32", "--tile-overlap", "8", "-q")
    quiet = capsys.readouterr().err
    assert "files" in shown and "tiles" in shown and "<" in shown  # tqdm's elapsed<ETA
    assert "files" not in quiet and "tiles" not in quiet


# Half precision -----------------------------------------------------------------------------
class HalfBreaks(nn.Module):
    """A x2 net that returns NaN (or black) whenever it runs in half precision."""

    scale = 2

    def __init__(self, black: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1)
        self.black = black

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")
        if out.dtype != torch.float32:
            return out * 0 if self.black else out * float("nan")
        return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("black", [False, True])
def test_broken_half_precision_tiles_are_redone_in_float32(dtype: torch.dtype, black: bool) -> None:
    image = torch.rand(3, 30, 30) * 0.5 + 0.25
    expected = Upscaler(HalfBreaks(), device="cpu", tile=0).upscale_tensor(image)
    model = HalfBreaks(black)
    with pytest.warns(UserWarning, match="redone in float32"):
        out = Upscaler(model, device="cpu", dtype=dtype, tile=16, tile_overlap=4).upscale_tensor(
            image
        )
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=0)
    assert model.conv.weight.dtype == dtype


def test_healthy_half_precision_output_is_kept_as_is(model_dir: Path) -> None:
    upscaler = Upscaler(model_dir, device="cpu", dtype=torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = upscaler.upscale_tensor(torch.rand(3, 16, 16))
    assert torch.isfinite(out).all()
