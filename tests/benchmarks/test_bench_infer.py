"""The inference backend benchmark (benchmarks/bench_infer.py): its peak rule, its output
differences, and a tiny end-to-end run with every candidate row."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
import torch
from script_loader import loaded_script
from tiny_models import tiny_mor_model

XEON_FLAGS = "flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16"
AVX2_FLAGS = "flags\t\t: fpu sse sse2 avx fma avx2"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with loaded_script("bench_infer") as module:
        yield module


def test_peak_rule_counts_16_fp32_lanes_with_avx512f(bench: ModuleType) -> None:
    peak = bench.peak_rule(XEON_FLAGS, threads=2, mhz=2600.0)
    assert peak["lanes"] == 16
    assert peak["peak_gflops"] == pytest.approx(2 * 2 * 16 * 2 * 2.6)


def test_peak_rule_counts_8_fp32_lanes_with_avx2_only(bench: ModuleType) -> None:
    peak = bench.peak_rule(AVX2_FLAGS, threads=2, mhz=3000.0)
    assert peak["lanes"] == 8
    assert peak["peak_gflops"] == pytest.approx(2 * 2 * 8 * 2 * 3.0)


def test_peak_rule_says_the_fma_units_are_assumed(bench: ModuleType) -> None:
    assert "2 FMA units (assumed)" in bench.peak_rule(AVX2_FLAGS, threads=1, mhz=1.0)["rule"]


def test_level_differences_give_max_and_99th_percentile(bench: ModuleType) -> None:
    reference = np.zeros(1000, dtype=np.uint8)
    output = reference.copy()
    output[:15] = 1
    output[15:20] = 10
    diff = bench.level_differences(output, reference)
    assert (diff["max_level_diff"], diff["p99_level_diff"]) == (10, 1)


def test_level_differences_do_not_wrap_around_in_uint8(bench: ModuleType) -> None:
    diff = bench.level_differences(np.array([0], np.uint8), np.array([255], np.uint8))
    assert diff["max_level_diff"] == 255


@pytest.fixture(scope="module")
def tiny_run(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    root = tmp_path_factory.mktemp("bench_infer")
    model = tiny_mor_model(root / "model")
    report = root / "report.json"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MORDASR_CACHE", str(root / "cache"))
        sizes = ["--sizes", "16x16,24x16", "--rounds", "2,1"]
        quick = ["--threads", "1", "--sgemm-size", "64", "--json", str(report)]
        bench.main([*sizes, *quick, "--model", str(model)])
    torch.set_num_threads(threads)
    return json.loads(report.read_text())


def test_tiny_run_times_torch_bfloat16_on_the_first_size_only(
    tiny_run: dict[str, object],
) -> None:
    rows = {(row["size"], row["backend"].removesuffix(" (auto)")) for row in tiny_run["rows"]}
    graph = {"onnxruntime", "openvino", "openvino-bfloat16"}
    assert rows == {
        *(("16x16", name) for name in ("torch", "torch-bfloat16", *graph)),
        *(("24x16", name) for name in ("torch", *graph)),
    }


def test_tiny_run_marks_the_automatic_choice(tiny_run: dict[str, object]) -> None:
    assert sum(row["backend"].endswith(" (auto)") for row in tiny_run["rows"]) == 2


def test_half_peak_counts_amx_tiles(bench: ModuleType) -> None:
    peak = bench.half_peak(XEON_FLAGS, threads=2, mhz=2600.0)
    assert peak["peak_gflops"] == pytest.approx(2 * 1024 * 2.6)


def test_tiny_run_reports_max_and_p99_differences_from_eager_float32(
    tiny_run: dict[str, object],
) -> None:
    for row in tiny_run["rows"]:
        assert 0 <= row["p99_level_diff"] <= row["max_level_diff"]
        if row["backend"] == "torch":
            assert row["max_level_diff"] == 0 and row["ratio"] == 1.0


def test_tiny_run_reports_fractions_of_peak_and_of_the_measured_sgemm(
    tiny_run: dict[str, object],
) -> None:
    peak = tiny_run["peak"]
    for row in tiny_run["rows"]:
        ceiling = peak["bf16_peak_gflops" if "bfloat16" in row["backend"] else "peak_gflops"]
        assert row["peak_fraction"] == pytest.approx(row["gflops"] / ceiling, nan_ok=True)
        assert row["sgemm_fraction"] == pytest.approx(row["gflops"] / peak["sgemm_gflops"])
