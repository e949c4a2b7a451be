"""`mordasr upscale --shard K/N` and multi-process launches: N jobs or processes split one input
list, each file done exactly once."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from launch_helpers import accelerate_launch
from PIL import Image

from mordasr.cli import main
from mordasr.infer.launch import launch_device, launch_process, process_shard, shard_files


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


ROOT = Path(__file__).resolve().parents[2]


def test_accelerate_launch_splits_the_inputs_between_its_processes(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    upscale = ["upscale", str(folder), "-o", str(out), "--model", "bicubic"]
    result = accelerate_launch(upscale, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in folder.iterdir())
    shares = dict(re.findall(r"share (\d/2): (\d+) upscaled, 0 skipped", result.stdout))
    assert shares == {"1/2": "3", "2/2": "2"}  # 5 writes for 5 files: each done once


def test_the_shares_of_jobs_and_their_processes_cover_every_input_once() -> None:
    files = [Path(f"{index}.png") for index in range(23)]
    done = [
        path
        for job in range(1, 4)
        for rank in range(2)
        for path in shard_files(files, process_shard((job, 3), (rank, 2)))
    ]
    assert sorted(done) == sorted(files)
    assert process_shard(None, (1, 2)) == (2, 2)
    assert process_shard((2, 4), None) == (2, 4)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"RANK": "1", "WORLD_SIZE": "4"}, (1, 4)),
        ({"LOCAL_RANK": "0", "WORLD_SIZE": "2"}, (0, 2)),
        ({"RANK": "0", "WORLD_SIZE": "1"}, None),
    ],
)
def test_the_launch_is_read_from_the_environment(
    environ: dict[str, str], expected: tuple[int, int] | None
) -> None:
    assert launch_process(environ) == expected


@pytest.mark.parametrize(
    "environ", [{"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "2", "WORLD_SIZE": "2"}]
)
def test_a_malformed_launch_is_refused(
    folder: Path,
    tmp_path: Path,
    environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert _upscale(folder, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "cannot tell this process's share" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_each_launched_process_takes_its_own_gpu() -> None:
    assert launch_device({"LOCAL_RANK": "3", "RANK": "7"}, cuda_count=2) == "cuda:1"
    assert launch_device({"LOCAL_RANK": "1"}, cuda_count=0) is None


def test_a_process_lists_its_failures_in_its_own_file_and_only_the_first_reports_the_scan(
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (folder / "1.png").write_bytes(b"not a png")  # files 0..4: process 1 of 2 takes 1 and 3
    (folder / "sub").mkdir()
    out = tmp_path / "out"
    streams = {}
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert _upscale(folder, out) == (1 if rank == 1 else 0)
        streams[rank] = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == [
        "0.png",
        "2.png",
        "3.png",
        "4.png",
        "failures-2-of-2.csv",
    ]
    assert "failures-2-of-2.csv" in streams[1].out
    assert "sub-folder" not in streams[1].err + streams[1].out
    assert f"not read {folder / 'sub'}" in streams[0].err
    assert "not read: 1 sub-folder" in streams[0].out
