"""benchmarks/make_mixed_set.py: a seeded mixed-degradation test set from a folder of photos."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from script_loader import loaded_script

from mordasr.degrade import resize
from mordasr.degrade.config import BLUR_SIGMA, JPEG_QUALITY, NOISE_SIGMA
from mordasr.io.image import read_rgb

CROP = 96
SCALE = 4


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    with loaded_script("make_mixed_set") as module:
        yield module


def _photo(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC).save(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    _photo(folder / "a.png", (128, 112), 0)
    _photo(folder / "b.png", (104, 136), 1)
    _photo(folder / "tiny.png", (64, 64), 2)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _make(script: ModuleType, photos: Path, out: Path, *extra: str) -> Path:
    args = [str(photos), "-o", str(out), "--crop", str(CROP), "--scale", str(SCALE), *extra]
    assert script.main(args) == 0
    return out


@pytest.fixture(scope="module")
def made(script: ModuleType, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(script, photos, tmp_path_factory.mktemp("set") / "out", "--per-image", "2")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _label(root: Path) -> str:
    return json.loads((root / "set.json").read_text())["folders"][0]


def _records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "params.jsonl").read_text().splitlines()]


def test_same_seed_gives_the_same_bytes(
    script: ModuleType, photos: Path, made: Path, tmp_path: Path
) -> None:
    again = _make(script, photos, tmp_path / "again", "--per-image", "2")
    assert _files(again) == _files(made)


def test_another_seed_gives_other_crops_and_draws(
    script: ModuleType, photos: Path, made: Path, tmp_path: Path
) -> None:
    other = _make(script, photos, tmp_path / "other", "--per-image", "2", "--seed", "1")
    assert [r["crop"] for r in _records(other)] != [r["crop"] for r in _records(made)]
    severe = f"LR/severe/{_label(made)}-a-0.png"
    assert _files(other)[severe] != _files(made)[severe]


def test_layout_every_crop_in_every_group(script: ModuleType, made: Path) -> None:
    label = _label(made)
    ids = [f"{label}-{stem}-{k}" for stem in ("a", "b") for k in (0, 1)]
    assert sorted(p.stem for p in (made / "HR").iterdir()) == ids
    for group in script.GROUPS:
        lrs = sorted((made / "LR" / group).iterdir())
        assert [p.stem for p in lrs] == ids
        assert {Image.open(p).size for p in lrs} == {(CROP // SCALE, CROP // SCALE)}
    records = _records(made)
    assert [(r["id"], r["group"]) for r in records] == [(i, g) for i in ids for g in script.GROUPS]


def test_small_photos_and_other_files_are_skipped_and_listed(made: Path) -> None:
    skipped = json.loads((made / "set.json").read_text())["skipped"]
    assert len(skipped) == 2
    assert any("notes.txt" in s for s in skipped)
    assert any("tiny.png" in s for s in skipped)


def test_the_hr_crop_is_the_recorded_box_of_the_source(photos: Path, made: Path) -> None:
    for record in _records(made):
        if record["group"] != "clean":
            continue
        top, left, height, width = record["crop"]
        source = read_rgb(photos / record["source"].split("/")[1])
        hr = read_rgb(made / "HR" / f"{record['id']}.png")
        assert torch.equal(hr, source[:, top : top + height, left : left + width])


def test_clean_is_the_bicubic_downscaling_of_the_hr_crop(made: Path) -> None:
    image_id = _records(made)[0]["id"]
    hr = read_rgb(made / "HR" / f"{image_id}.png").unsqueeze(0)
    expected = (resize(hr, (CROP // SCALE, CROP // SCALE)).clamp(0, 1) * 255).round() / 255
    assert torch.equal(read_rgb(made / "LR" / "clean" / f"{image_id}.png"), expected[0])


def test_single_factor_groups_record_their_level(script: ModuleType, made: Path) -> None:
    by_group = {r["group"]: r["params"] for r in _records(made)}
    assert BLUR_SIGMA[0] <= by_group["blur"]["blur_sigma"] <= BLUR_SIGMA[1]
    assert NOISE_SIGMA[0] <= by_group["noise"]["noise_sigma"] <= NOISE_SIGMA[1]
    assert JPEG_QUALITY[0] <= by_group["jpeg"]["jpeg_quality"] <= JPEG_QUALITY[1]
    assert by_group["mild"]["preset"] == "mordasr-mild"
    assert by_group["severe"]["stage2"]["jpeg_quality"] is not None


def test_mixed_halves_join_the_recorded_sides_of_mild_and_severe(made: Path) -> None:
    sides = set()
    for record in _records(made):
        if record["group"] != "mixed-halves":
            continue
        lr = {g: read_rgb(made / "LR" / g / f"{record['id']}.png") for g in ("mild", "severe")}
        mixed = read_rgb(made / "LR" / "mixed-halves" / f"{record['id']}.png")
        split, side = record["params"]["split_column"], record["params"]["severe_side"]
        left, right = ("severe", "mild") if side == "left" else ("mild", "severe")
        assert torch.equal(mixed[..., :split], lr[left][..., :split])
        assert torch.equal(mixed[..., split:], lr[right][..., split:])
        sides.add(side)
    assert sides == {"left", "right"}


def test_a_crop_does_not_depend_on_the_other_photos(
    script: ModuleType, photos: Path, made: Path, tmp_path: Path
) -> None:
    alone = tmp_path / _label(made)
    alone.mkdir()
    shutil.copy(photos / "b.png", alone / "b.png")
    out = _make(script, alone, tmp_path / "out", "--per-image", "2")
    original = _files(made)
    for name, data in _files(out).items():
        if name.endswith(".png"):
            assert original[name] == data, name


def test_an_existing_set_is_not_replaced_without_overwrite(
    script: ModuleType, photos: Path, made: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(made, copy)
    args = [str(photos), "-o", str(copy), "--crop", str(CROP)]
    assert script.main(args) == 1
    assert script.main([*args, "--overwrite"]) == 0
    assert len(list((copy / "HR").iterdir())) == 2
