"""``mordasr degrade``: outputs, parameter log, overwrite protection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mordasr.cli import main


@pytest.fixture
def hr_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / "a.png")
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / "b.jpg")
    Image.fromarray((rng.random((24, 40)) * 255).astype(np.uint8)).save(
        folder / "gray_noext", format="PNG"
    )
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_writes_png_lr_images_named_like_the_inputs(hr_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(["degrade", str(hr_dir), "-o", str(out), "--preset", "mordasr-mild", "--seed", "3"])
        == 0
    )
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "gray_noext.png"]
    with Image.open(out / "gray_noext.png") as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (10, 6)


def test_logs_one_json_line_of_parameters_per_image(hr_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["degrade", str(hr_dir), "-o", str(out), "--scale", "2", "--seed", "1"])
    records = [json.loads(line) for line in (out / "params.jsonl").read_text().splitlines()]
    assert sorted(r["input"] for r in records) == ["a.png", "b.jpg", "gray_noext"]
    assert all(r["params"]["scale"] == 2 and r["preset"] == "realesrgan" for r in records)


def test_a_single_factor_preset_logs_its_level(hr_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["degrade", str(hr_dir), "-o", str(out), "--preset", "noise-only"]) == 0
    records = [json.loads(line) for line in (out / "params.jsonl").read_text().splitlines()]
    assert all(10 <= r["params"]["noise_sigma"] <= 30 for r in records)


def test_same_seed_reproduces_the_outputs(hr_dir: Path, tmp_path: Path) -> None:
    for name in ("one", "two"):
        main(["degrade", str(hr_dir), "-o", str(tmp_path / name), "--seed", "9"])
    for f in ("a.png", "b.png"):
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "one" / f)),
            np.asarray(Image.open(tmp_path / "two" / f)),
        )


def test_refuses_to_overwrite_unless_asked(
    hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["degrade", str(hr_dir), "-o", str(out)]) == 0
    before = (out / "a.png").read_bytes()
    assert main(["degrade", str(hr_dir), "-o", str(out), "--seed", "5"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == before
    assert main(["degrade", str(hr_dir), "-o", str(out), "--seed", "5", "--overwrite"]) == 0


def test_save_gt_writes_ground_truth_at_full_size(hr_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["degrade", str(hr_dir), "-o", str(out), "--save-gt"])
    with Image.open(out / "gt" / "a.png") as im:
        assert im.size == (32, 32)


def test_missing_input_folder_is_an_error(tmp_path: Path) -> None:
    assert main(["degrade", str(tmp_path / "absent"), "-o", str(tmp_path / "out")]) == 2


def test_refuses_to_replace_its_inputs_even_with_overwrite(
    hr_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p: p.read_bytes() for p in hr_dir.iterdir()}
    assert main(["degrade", str(hr_dir), "-o", str(hr_dir), "--overwrite"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in hr_dir.iterdir()} == before


def test_refuses_inputs_whose_outputs_share_a_name(
    hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.open(hr_dir / "a.png").save(hr_dir / "a.webp", lossless=True)
    assert main(["degrade", str(hr_dir), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(hr_dir / "a.png") in err and str(hr_dir / "a.webp") in err
    assert not (tmp_path / "out").exists()
