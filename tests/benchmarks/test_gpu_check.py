"""The prepared GPU check (benchmarks/gpu_check.py): its tiny CPU run and its failure handling.

The full-size run needs a lent GPU; the tiny run takes every part through the same code on toy
shapes, so the script cannot rot between the rare sessions that have a device.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from script_loader import loaded_script

pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

ISSUE_PARTS = {
    "default_model",
    "degrade",
    "realesrgan_train",
    "sd_infer_512",
    "sd_infer_2048",
    "sd_train_step",
}
"""What issue 16 asks the check to measure."""


@pytest.fixture(scope="module")
def gpu_check() -> Iterator[ModuleType]:
    with loaded_script("gpu_check") as module:
        yield module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One ``--tiny`` run with random weights (what a lent GPU without weight packages runs)."""
    out = tmp_path_factory.mktemp("gpu_check")
    command = [sys.executable, str(SCRIPT), "--tiny", "--weights", "random", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=480, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def _rows(results: dict[str, Any], part: str) -> dict[str, dict[str, Any]]:
    return {row["variant"]: row for row in results["parts"][part]["rows"]}


def test_tiny_run_passes_every_part_of_the_issue(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, _ = tiny_run
    assert set(results["parts"]) == ISSUE_PARTS
    assert {name: part["status"] for name, part in results["parts"].items()} == dict.fromkeys(
        ISSUE_PARTS, "ok"
    )
    assert results["meta"]["weights"] == "random"


def test_tiny_run_times_every_variant(tiny_run: tuple[dict[str, Any], str]) -> None:
    results, _ = tiny_run
    for name, part in results["parts"].items():
        assert part["rows"], name
        assert all(row["ms"] > 0 for row in part["rows"]), name


def test_default_model_compares_each_dtype_with_strict_float32(
    tiny_run: tuple[dict[str, Any], str],
) -> None:
    rows = _rows(tiny_run[0], "default_model")
    assert set(rows) == {"float32, TF32 off", "float32, TF32 convolutions", "float16", "bfloat16"}
    assert rows["float32, TF32 off"]["max_abs_diff"] == 0.0
    assert rows["bfloat16"]["max_abs_diff"] > 0.0


def test_sd_parts_compare_mor_with_osediff_and_the_base_unet(
    tiny_run: tuple[dict[str, Any], str],
) -> None:
    results, _ = tiny_run
    untiled = [(row["variant"], row["vs"]) for row in results["parts"]["sd_infer_512"]["rows"]]
    assert ("MoR, given scores", "plain merged LoRA (OSEDiff)") in untiled
    assert ("plain merged LoRA (OSEDiff)", "base UNet alone (no adapters)") in untiled
    assert (
        "MoR, routers batched, ranks folded per image",
        "base UNet alone (no adapters)",
    ) in untiled
    assert results["parts"]["sd_infer_2048"]["tiling"]["latent_tile"] > 0
    assert set(_rows(results, "sd_train_step")) == {
        "gradient checkpointing on",
        "gradient checkpointing off",
    }


def test_markdown_table_has_a_row_for_each_measurement(
    tiny_run: tuple[dict[str, Any], str],
) -> None:
    results, table = tiny_run
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    measured = sum(len(part["rows"]) for part in results["parts"].values())
    assert len(lines) == 1 + measured
    assert {line.split(" | ")[0][2:] for line in lines[1:]} == ISSUE_PARTS


def test_a_failing_part_is_recorded_in_one_line_and_the_next_still_runs(
    gpu_check: ModuleType,
) -> None:
    def broken(ctx: Any, result: dict[str, Any], deadline: float) -> None:
        result["rows"].append({"variant": "half done", "ms": 1.0})
        raise ValueError("out of memory\nmore detail")

    def fine(ctx: Any, result: dict[str, Any], deadline: float) -> None:
        result["rows"].append({"variant": "done", "ms": 2.0})

    results = gpu_check.run_parts(
        {"broken": broken, "fine": fine}, None, {"broken": 10, "fine": 10}, 60
    )
    assert results["broken"]["status"] == "failed: ValueError: out of memory"
    assert results["broken"]["rows"] == [{"variant": "half done", "ms": 1.0}]
    assert results["fine"]["status"] == "ok"


def test_a_part_past_its_time_box_is_stopped_and_later_parts_skip_when_time_is_up(
    gpu_check: ModuleType,
) -> None:
    def slow(ctx: Any, result: dict[str, Any], deadline: float) -> None:
        time.sleep(5)

    start = time.monotonic()
    results = gpu_check.run_parts(
        {"slow": slow, "late": slow}, None, {"slow": 0.2, "late": 10}, 0.3, min_box=0.15
    )
    assert time.monotonic() - start < 2
    assert results["slow"]["status"] == "failed: PartTimeout: ran past its 0.2 s time box"
    assert results["late"]["status"] == "skipped: no time left"
