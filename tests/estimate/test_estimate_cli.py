"""``mordasr estimate`` on image files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mordasr.cli import main
from mordasr.estimate import DIMENSIONS
from mordasr.io.image import read_rgb


@pytest.fixture
def image_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_json_output_has_the_seven_named_scores_per_image(image_file, capsys):
    assert main(["estimate", str(image_file), str(image_file), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["image"] for row in rows] == [str(image_file)] * 2
    for row in rows:
        assert list(row["scores"]) == list(DIMENSIONS)
        assert all(0.0 <= v <= 1.0 for v in row["scores"].values())


def test_table_output_has_a_header_and_one_line_per_image(image_file, capsys):
    assert main(["estimate", str(image_file)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("\t") == ["image", *DIMENSIONS]
    assert len(lines) == 2 and lines[1].startswith(str(image_file))


def test_clip_estimator_without_a_model_is_a_usage_error(image_file, capsys):
    assert main(["estimate", str(image_file), "--estimator", "clip"]) == 2
    assert "--clip-model" in capsys.readouterr().err


def test_grayscale_and_16_bit_images_load_as_rgb(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(gray)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(deep)
    assert read_rgb(gray).shape == (3, 8, 8)
    assert read_rgb(gray).max().item() == pytest.approx(128 / 255)
    assert read_rgb(deep).min().item() == pytest.approx(1.0)


def test_missing_clip_model_directory_is_reported_not_raised(image_file, tmp_path, capsys):
    missing = tmp_path / "no_such_clip"
    args = ["estimate", str(image_file), "--estimator", "clip", "--clip-model", str(missing)]
    assert main(args) == 1
    assert "cannot load the clip estimator" in capsys.readouterr().err
