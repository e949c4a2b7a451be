"""`mordasr upscale --shard K/N`: N jobs split one input list, each file done exactly once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mordasr.cli import main


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for index in range(5):
        pixels = (255 * rng.random((6, 5, 3))).astype(np.uint8)
        Image.fromarray(pixels).save(inputs / f"{index}.png")
    return inputs


def _upscale(folder: Path, out: Path, *extra: str) -> int:
    return main(["upscale", str(folder), "-o", str(out), "--model", "bicubic", *extra])


def test_the_shards_together_cover_every_input_once(folder: Path, tmp_path: Path) -> None:
    outputs = []
    for shard in ("1/2", "2/2"):
        out = tmp_path / f"out_{shard[0]}"
        assert _upscale(folder, out, "--shard", shard) == 0
        outputs.append({p.name for p in out.iterdir()})
    assert not outputs[0] & outputs[1]
    assert outputs[0] | outputs[1] == {p.name for p in folder.iterdir()}
    assert len(outputs[0]) == 3


@pytest.mark.parametrize("bad", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_a_malformed_shard_is_refused_in_one_line(
    folder: Path, tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _upscale(folder, tmp_path / "out", "--shard", bad)
    assert "--shard wants K/N with 1 <= K <= N" in capsys.readouterr().err
