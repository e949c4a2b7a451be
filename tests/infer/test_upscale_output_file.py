"""`mordasr upscale IN -o result.png`: one input, one named output file."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tiny_models import photo

from mordasr.cli import main


def inputs(tmp_path: Path, *names: str) -> list[str]:
    paths = []
    for name in names:
        Image.fromarray(photo(12, 16)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths


def test_one_input_is_written_to_the_named_file_in_its_format(tmp_path: Path) -> None:
    target = tmp_path / "results" / "result.jpg"
    argv = ["upscale", *inputs(tmp_path, "in.png"), "-o", str(target), "--model", "bicubic"]
    assert main(argv) == 0
    with Image.open(target) as result:
        assert (result.format, result.size) == ("JPEG", (64, 48))
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.jpg"]


def test_several_inputs_with_a_file_name_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "result.png"
    argv = ["upscale", *inputs(tmp_path, "a.png", "b.png"), "-o", str(target)]
    assert main([*argv, "--model", "bicubic"]) == 2
    err = capsys.readouterr().err.strip()
    assert "-o must be a folder" in err and "\n" not in err
    assert not target.exists()


def test_a_folder_input_with_a_file_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    inputs(folder, "only.png")
    assert main(["upscale", str(folder), "-o", str(tmp_path / "r.png"), "--model", "bicubic"]) == 2
    assert "-o must be a folder" in capsys.readouterr().err


def test_an_existing_folder_named_like_an_image_stays_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "out.png"
    folder.mkdir()
    argv = ["upscale", *inputs(tmp_path, "in.png"), "-o", str(folder), "--model", "bicubic"]
    assert main(argv) == 0
    assert (folder / "in.png").is_file()


def test_a_format_that_disagrees_with_the_file_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["upscale", *inputs(tmp_path, "in.png"), "-o", str(tmp_path / "r.png")]
    assert main([*argv, "--format", "jpg", "--model", "bicubic"]) == 2
    assert "--format jpg disagrees with -o" in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()
