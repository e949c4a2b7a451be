"""One bad file never ends a `mordasr upscale` batch: bombs, out-of-memory, a failing write and
odd names are each one line and a ``failures.csv`` row; SIGTERM ends with the summary."""

from __future__ import annotations

import csv
import errno
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hostile_helpers import BOMBS, tall_paeth_png16
from PIL import Image
from tiny_models import photo

from mordasr.cli import main
from mordasr.infer import batch
from mordasr.infer import cli as upscale_cli
from mordasr.infer.pipeline import Upscaler

BAD = "b.png"


PEAK_OF_CHILD = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)
"""Runs the command line after it and prints that process's peak RSS (KiB) as the last line of
stderr: measured in a fresh parent, so no earlier child of the test run counts."""


def _photos(folder: Path, *names: str, side: int = 8) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(photo(side, side, seed=i)).save(folder / name)
    return [folder / name for name in names]


def _upscale(folder: Path, out: Path) -> int:
    return main(["upscale", str(folder), "-o", str(out), "--model", "bicubic"])


def _failures(out: Path) -> list[list[str]]:
    with open(out / "failures.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.reader(f))[1:]


def _assert_the_rest_was_done(out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The good files were written, the bad one is listed, and its line is the only one."""
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png", "failures.csv"]
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    (line,) = [line for line in captured.err.splitlines() if BAD in line]
    assert (
        captured.out.strip().splitlines()[-1].startswith("2 upscaled, 0 skipped (exist), 1 failed")
    )
    return line


def test_a_decompression_bomb_is_one_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _photos(tmp_path / "in", "a.png", "c.png")
    _photos(tmp_path / "in", BAD, side=16)  # 256 pixels: over twice the limit below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # sniffing it raises the bomb error
    assert _upscale(tmp_path / "in", tmp_path / "out") == 1
    line = _assert_the_rest_was_done(tmp_path / "out", capsys)
    assert "decompression bomb" in line
    [(path, reason)] = _failures(tmp_path / "out")
    assert path == str(tmp_path / "in" / BAD) and "decompression bomb" in reason


def test_running_out_of_memory_while_reading_is_one_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _photos(tmp_path / "in", "a.png", BAD, "c.png")
    real = batch.read_image

    def no_memory_for_b(path: Path, **options: Any) -> Any:
        if Path(path).name == BAD:
            raise MemoryError
        return real(path, **options)

    monkeypatch.setattr(batch, "read_image", no_memory_for_b)
    assert _upscale(tmp_path / "in", tmp_path / "out") == 1
    assert _assert_the_rest_was_done(tmp_path / "out", capsys).endswith(
        "out of memory (MemoryError)"
    )
    assert _failures(tmp_path / "out") == [
        [str(tmp_path / "in" / BAD), "out of memory (MemoryError)"]
    ]


def test_any_error_while_writing_is_one_failure_and_leaves_no_partial_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _photos(tmp_path / "in", "a.png", BAD, "c.png")
    real = os.link

    def disk_full_for_b(source: Any, target: Any, **kwargs: Any) -> None:
        if Path(target).name == BAD:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(source, target, **kwargs)

    monkeypatch.setattr(os, "link", disk_full_for_b)
    assert _upscale(tmp_path / "in", tmp_path / "out") == 1
    assert _assert_the_rest_was_done(tmp_path / "out", capsys).endswith("No space left on device")


def test_an_output_another_run_wrote_meanwhile_is_kept_and_counted_as_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = _photos(tmp_path / "in", "a.png", BAD)
    out = tmp_path / "out"
    real = Upscaler.upscale_decoded

    def another_run_finishes_b_first(self: Upscaler, decoded: Any, size: Any = None) -> Any:
        if len(list(out.glob("*.png"))) == 1:  # a.png is done: b.png is being upscaled
            (out / BAD).write_bytes(b"the other run's result")
        return real(self, decoded, size)

    monkeypatch.setattr(Upscaler, "upscale_decoded", another_run_finishes_b_first)
    assert main(["upscale", *map(str, inputs), "-o", str(out), "--model", "bicubic"]) == 0
    assert (out / BAD).read_bytes() == b"the other run's result"
    assert capsys.readouterr().out.startswith("1 upscaled, 1 skipped (exist), 0 failed")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", BAD]  # no temporary file left


_ONE_RUN = """
import sys
from mordasr.cli import main
sys.exit(main(["upscale", *sys.argv[1:], "--model", "bicubic", "-q"]))
"""


def test_two_concurrent_runs_into_one_folder_write_each_output_once(tmp_path: Path) -> None:
    inputs = _photos(tmp_path / "in", *(f"{i}.png" for i in range(8)), side=24)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _ONE_RUN, *map(str, inputs), "-o", str(out)]
    runs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    results = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    counts = [re.match(r"(\d+) upscaled, (\d+) skipped", stdout) for stdout, _ in results]
    assert all(counts), results
    done = sum(int(match[1]) for match in counts if match)
    skipped = sum(int(match[2]) for match in counts if match)
    assert (done, skipped) == (8, 8)  # each input upscaled by one run, skipped by the other
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in inputs)


def test_a_failing_name_that_is_not_utf8_is_listed_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    _photos(folder, "a.png")
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1: not valid UTF-8
    (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    assert _upscale(folder, out) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"skipped {folder}/caf\\xe9.png: " in err
    assert b"caf\xe9.png" in (out / "failures.csv").read_bytes()
    assert [row[0] for row in _failures(out)] == [str(folder / name)]


def test_sigterm_is_left_as_it_was_after_the_batch(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    _photos(tmp_path / "in", "a.png")
    assert _upscale(tmp_path / "in", tmp_path / "out") == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_max_pixels_refuses_a_larger_input_and_the_rest_is_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _photos(tmp_path / "in", "a.png", "c.png")
    _photos(tmp_path / "in", BAD, side=40)
    out = tmp_path / "out"
    args = ["upscale", str(tmp_path / "in"), "-o", str(out), "--model", "bicubic"]
    assert main([*args, "--max-pixels", "1000"]) == 1
    line = _assert_the_rest_was_done(out, capsys)
    assert line.endswith("40x40 is more than the 1,000 pixel limit (checked before decoding)")


@pytest.mark.parametrize(("value", "pixels"), [("100M", 100_000_000), ("2.5m", 2_500_000)])
def test_max_pixels_reads_millions(value: str, pixels: int) -> None:
    assert upscale_cli._pixel_count(value) == pixels
    assert upscale_cli._pixel_count("0") is None  # no limit


def test_the_hostile_corpus_is_refused_in_bounded_memory_and_the_rest_is_done(
    tmp_path: Path,
) -> None:
    """Each bomb is one line and a failures.csv row, the good files (a 1 x 20000 Paeth PNG
    among them) are upscaled, and the whole batch peaks under 1 GB (measured in its process)."""
    folder = tmp_path / "in"
    _photos(folder, "a.png")
    (folder / "tall.png").write_bytes(tall_paeth_png16(20000))
    for name, make in BOMBS.items():
        (folder / name).write_bytes(make())
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mordasr.cli", "upscale", str(folder), "-o", str(out)]
    with subprocess.Popen(
        [sys.executable, "-c", PEAK_OF_CHILD, *command, "--model", "bicubic", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        stdout, stderr = process.communicate(timeout=120)
    *messages, peak = stderr.splitlines()
    stderr = "\n".join(messages)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "failures.csv", "tall.png"]
    assert sorted(Path(row[0]).name for row in _failures(out)) == sorted(BOMBS)
    assert len([line for line in stderr.splitlines() if line.startswith("skipped ")]) == len(BOMBS)
    assert stdout.strip().startswith(f"2 upscaled, 0 skipped (exist), {len(BOMBS)} failed")
    assert int(peak) < 2**20  # KiB: the CLI process's peak resident memory, < 1 GB
