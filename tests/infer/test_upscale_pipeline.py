"""The upscale pipeline and `mordasr upscale` on a tiny MoR model saved by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import photo, tiny_backbone, tiny_mor_model

from mordasr.cli import main
from mordasr.infer.pipeline import Upscaler
from mordasr.infer.progress import ProgressEvent
from mordasr.infer.tiling import tile_starts
from mordasr.io.image import read_image


@pytest.fixture(scope="module")
def upscaler(model_dir: Path) -> Upscaler:
    return Upscaler(model_dir, device="cpu", precision="exact")


def test_tensor_upscale_is_four_times_larger_and_in_range(upscaler: Upscaler) -> None:
    out = upscaler.upscale_tensor(torch.rand(3, 40, 36))
    assert out.shape == (3, 160, 144)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_progress_callback_hears_every_tile(model_dir: Path) -> None:
    events: list[ProgressEvent] = []
    upscaler = Upscaler(model_dir, device="cpu", tile=24, tile_overlap=4, progress=events.append)
    upscaler.upscale_tensor(torch.rand(3, 40, 36))
    count = len(tile_starts(40, 24, 4)) * len(tile_starts(36, 24, 4))
    calls = [(e.tiles_done, e.tiles_total) for e in events if e.stage == "tile"]
    assert calls == [(done, count) for done in range(count + 1)]


def test_pipeline_routes_by_the_whole_image_scores(upscaler: Upscaler) -> None:
    lr = torch.from_numpy(photo(48, 48)).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        expected = upscaler.model(lr).clamp(0, 1)
    torch.testing.assert_close(upscaler.upscale_tensor(lr), expected, atol=1e-6, rtol=0)


def test_tiled_upscale_matches_untiled(model_dir: Path) -> None:
    lr = torch.from_numpy(photo(90, 100)).permute(2, 0, 1).float() / 255
    whole = Upscaler(model_dir, device="cpu").upscale_tensor(lr)
    tiled = Upscaler(model_dir, device="cpu", tile=64, tile_overlap=24).upscale_tensor(lr)
    assert (tiled - whole).abs().max() < 2e-3


def test_pil_api_keeps_mode_and_scales(upscaler: Upscaler) -> None:
    rgba = Image.fromarray(photo(32, 40)).convert("RGBA")
    out = upscaler.upscale_image(rgba)
    assert out.mode == "RGBA" and out.size == (160, 128)
    gray = upscaler.upscale_image(Image.fromarray(photo(32, 40)).convert("L"))
    assert gray.mode == "L" and gray.size == (160, 128)


def test_cli_writes_every_readable_input_and_reports_corrupt_ones(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo(32, 32)).save(src / "a.png")
    Image.fromarray(photo(32, 32, 1)).save(src / "b.jpg", quality=90)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    status = main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", str(model_dir)])
    assert status == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.png",
        "b.jpg",
        "failures.csv",
    ]
    assert "broken.png" in capsys.readouterr().err
    assert read_image(tmp_path / "out" / "b.jpg").format == "JPEG"


def test_cli_never_overwrites_without_permission(model_dir: Path, tmp_path: Path) -> None:
    Image.fromarray(photo(32, 32)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"keep me")
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(out), "--model", str(model_dir)]
    assert main(args) == 0
    assert (out / "a.png").read_bytes() == b"keep me"
    assert main([*args, "--overwrite"]) == 0
    assert read_image(out / "a.png").tensor.shape == (3, 128, 128)


def test_cli_keeps_gray_alpha_and_sixteen_bits(model_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(photo(32, 32)).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(photo(32, 32)).convert("RGBA").save(tmp_path / "alpha.png")
    Image.fromarray((rng.random((32, 32)) * 65535).astype(np.uint16)).save(tmp_path / "deep.png")
    out = tmp_path / "out"
    inputs = [str(tmp_path / n) for n in ("gray.png", "alpha.png", "deep.png")]
    assert main(["upscale", *inputs, "-o", str(out), "--model", str(model_dir)]) == 0
    gray, alpha, deep = (read_image(out / n) for n in ("gray.png", "alpha.png", "deep.png"))
    assert gray.is_gray and gray.tensor.shape == (1, 128, 128)
    assert alpha.alpha is not None and alpha.alpha.shape == (1, 128, 128)
    assert deep.bit_depth == 16


def test_cli_applies_exif_orientation(model_dir: Path, tmp_path: Path) -> None:
    image = Image.fromarray(photo(32, 48))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    main(
        [
            "upscale",
            str(tmp_path / "rotated.jpg"),
            "-o",
            str(tmp_path / "o"),
            "--model",
            str(model_dir),
        ]
    )
    assert read_image(tmp_path / "o" / "rotated.jpg").tensor.shape == (3, 192, 128)


def test_model_folder_bundles_the_estimator_it_was_trained_with(model_dir: Path) -> None:
    from mordasr.sr.mor_sr import MoRSuperResolver

    assert (model_dir / "estimator.safetensors").is_file()
    model = MoRSuperResolver.from_pretrained(model_dir)
    assert model.spec.estimator_weights == "estimator.safetensors"


def test_cli_names_an_unknown_model_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(photo(32, 32)).save(tmp_path / "a.png")
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "nope"]
    assert main(args) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def small_scale_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Plain and MoR models on x2 and x1 RRDBNets (they pixel-unshuffle by 2 and 4)."""
    root = tmp_path_factory.mktemp("scales")
    models: dict[str, Path] = {}
    for scale in (2, 1):
        models[f"plain-x{scale}"] = tiny_backbone(root / f"x{scale}.pth", scale)
        models[f"mor-x{scale}"] = tiny_mor_model(root / f"mor-x{scale}", scale=scale)
    return models


@pytest.mark.parametrize("name", ["plain-x2", "plain-x1", "mor-x2", "mor-x1"])
@pytest.mark.parametrize("size", [(33, 31), (1, 1)])
def test_x2_and_x1_rrdbnets_upscale_any_size(
    name: str, size: tuple[int, int], small_scale_models: dict[str, Path]
) -> None:
    upscaler = Upscaler(small_scale_models[name], device="cpu")
    height, width = size
    out = upscaler.upscale_tensor(torch.rand(3, height, width))
    scale = upscaler.scale
    assert out.shape == (3, height * scale, width * scale)
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_padding_keeps_the_image_content_in_place(small_scale_models: dict[str, Path]) -> None:
    """Padding goes to the bottom and right only: a 33x31 input's result matches, away from
    those borders, the result of its 32x28 top-left crop (a multiple of 4)."""
    upscaler = Upscaler(small_scale_models["mor-x1"], device="cpu")
    lr = torch.from_numpy(photo(33, 31)).permute(2, 0, 1).float() / 255
    odd, crop = upscaler.upscale_tensor(lr), upscaler.upscale_tensor(lr[:, :32, :28])
    assert (odd[:, :20, :16] - crop[:, :20, :16]).abs().max() < 0.05


def test_tiled_odd_sizes_match_untiled_on_an_x1_model(small_scale_models: dict[str, Path]) -> None:
    """Tiles start on the model's pixel-unshuffle grid, so every tile sees the grid the whole
    image does (unaligned starts differ by about 0.02 here)."""
    lr = torch.from_numpy(photo(93, 101)).permute(2, 0, 1).float() / 255
    whole = Upscaler(small_scale_models["mor-x1"], device="cpu").upscale_tensor(lr)
    tiled = Upscaler(small_scale_models["mor-x1"], device="cpu", tile=64, tile_overlap=24)
    assert (tiled.upscale_tensor(lr) - whole).abs().max() < 2e-3


def test_a_bad_file_never_stops_the_rest_of_the_folder(
    small_scale_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo(33, 31)).save(src / "a_odd.png")
    (src / "b_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    Image.fromarray(photo(1, 1)).save(src / "c_tiny.png")
    Image.fromarray(photo(16, 16)).save(src / "d_fine.png")
    model = str(small_scale_models["mor-x2"])
    status = main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", model])
    assert status == 1
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a_odd.png", "c_tiny.png", "d_fine.png", "failures.csv"]
    assert read_image(tmp_path / "out" / "a_odd.png").tensor.shape == (3, 66, 62)
    err = capsys.readouterr().err
    assert "b_corrupt.jpg" in err and "Traceback" not in err


def test_any_module_with_a_scale_runs_as_a_plain_model() -> None:
    net = torch.nn.Upsample(scale_factor=2)
    net.scale = 2
    out = Upscaler(net, device="cpu").upscale_tensor(torch.rand(3, 5, 7))
    assert out.shape == (3, 10, 14)
