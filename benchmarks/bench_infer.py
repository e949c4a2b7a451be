"""End-to-end upscale time of the default model in each backend and precision, against eager
float32.

Each candidate is an :class:`~mordasr.infer.pipeline.Upscaler` whose ``upscale_file`` (decode,
estimate, route, fold, network, encode) is timed on a PNG crop of a real photo (from
``../shared/data``; a synthetic image when that is absent) at 256x256 and 512x384 inputs. Rounds
interleave the candidates in a rotating order; the table gives the median seconds per input
megapixel and the median over rounds of the time ratio to eager torch float32 in the same
round, after one untimed pass of every candidate at that size (OpenVINO compiles once per input
shape). One-time costs (model load, graph export and compilation, the first image) are timed
separately.

Candidates (:data:`CANDIDATES`): ``torch`` (eager float32, the baseline), ``onnxruntime`` and
``openvino`` (float32), ``openvino-bfloat16`` and ``torch-bfloat16``; the row marked ``auto`` is
what ``Upscaler()`` chooses on this machine. ``torch-bfloat16`` is timed on the first size only
unless ``--bf16-sizes`` says more. Every row gives the max and the 99th percentile of its
output's difference from eager float32's, in 8-bit levels (the quality criterion over 100 RealSR
pairs is ``benchmarks/precision_check.py``).

Achieved GFLOP/s counts the network's convolutions (2 FLOP per multiply-add, counted by hooks).
It is reported as a fraction of the ceiling that applies to the row's precision: for float32
the theoretical FMA peak ``threads x 2 FMA units x lanes x 2 FLOP x clock``, with the lanes from
the /proc/cpuinfo flags (``avx512f``: 16, ``avx2``: 8, else 4), 2 FMA units per core assumed
(nothing reports it) and the clock the largest ``cpu MHz``; for bfloat16 the AMX peak
``threads x 1024 FLOP x clock`` where the CPU has ``amx_bf16`` (else AVX512-BF16's
``threads x 2 x 32 x 2 FLOP x clock``); and, for every row, a large float32 matrix product
measured at the start of the run on the same threads (the practical float32 ceiling).

    OMP_NUM_THREADS=2 python benchmarks/bench_infer.py [--rounds 3] [--bf16-sizes 1]
        [--json runs/bench_infer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import photo_crop
from PIL import Image
from torch import Tensor, nn

from mordasr.infer.pipeline import Upscaler
from mordasr.mor import MoRConv2d, route

SIZES = ((256, 256), (512, 384))


def conv_flops_per_pixel(upscaler: Upscaler) -> float:
    """FLOP per input pixel of the network's convolutions (2 per multiply-add)."""
    backbone = upscaler.model.backbone
    total = 0

    def count(conv: nn.Conv2d) -> object:
        def hook(_: nn.Module, __: object, out: Tensor) -> None:
            nonlocal total
            kh, kw = conv.kernel_size
            total += 2 * out.numel() * conv.in_channels * kh * kw // conv.groups

        return hook

    handles = []
    for name, module in backbone.named_modules():
        if isinstance(module, MoRConv2d):
            handles.append(module.register_forward_hook(count(module.base_layer)))
        elif isinstance(module, nn.Conv2d) and not name.endswith("base_layer"):
            handles.append(module.register_forward_hook(count(module)))
    side = 32
    scores = upscaler.model.route_input(torch.rand(1, 3, 64, 64))
    with torch.no_grad(), route(backbone, scores).applied(backbone):
        backbone(torch.rand(1, 3, side, side))
    for handle in handles:
        handle.remove()
    return total / side**2


def peak_rule(flags: str, threads: int, mhz: float) -> dict[str, float | str]:
    """The theoretical float32 FMA peak of ``threads`` cores at ``mhz`` whose /proc/cpuinfo
    ``flags`` line is ``flags``: the SIMD width from the flags, 2 FMA units per core assumed."""
    names = set(flags.split(":", 1)[-1].split())
    lanes, isa = (
        (16, "avx512f") if "avx512f" in names else (8, "avx2") if "avx2" in names else (4, "sse")
    )
    fma_units = 2
    return {
        "rule": f"{threads} threads x {fma_units} FMA units (assumed) x {lanes} fp32 lanes "
        f"({isa}) x 2 FLOP x {mhz:.0f} MHz",
        "lanes": lanes,
        "peak_gflops": threads * fma_units * lanes * 2 * mhz / 1e3,
    }


def sgemm_gflops(n: int) -> float:
    """GFLOP/s of an ``n`` x ``n`` float32 matrix product (median of 5 after a warm-up)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    times = []
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def fp32_peak(threads: int, sgemm_size: int) -> dict[str, float | str]:
    """This CPU's theoretical float32 peak (:func:`peak_rule` on /proc/cpuinfo) and a measured
    ``sgemm_size``-cubed sgemm, the practical ceiling."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    clocks = [float(line.split(":")[1]) for line in text.splitlines() if "cpu MHz" in line]
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    mhz = max(clocks) if clocks else float("nan")
    peak = peak_rule(flags, threads, mhz)
    half = half_peak(flags, threads, mhz)
    return {
        **peak,
        "bf16_rule": half["rule"],
        "bf16_peak_gflops": half["peak_gflops"],
        "sgemm_size": sgemm_size,
        "sgemm_gflops": sgemm_gflops(sgemm_size),
    }


def level_differences(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max, 99th percentile and mean of the absolute difference of two 8-bit images, in
    levels (the percentile is a value that occurs: ``method="higher"``)."""
    diff = np.abs(output.astype(np.int16) - reference.astype(np.int16))
    return {
        "max_level_diff": int(diff.max()),
        "p99_level_diff": int(np.percentile(diff, 99, method="higher")),
        "mean_level_diff": float(diff.mean()),
    }


CANDIDATES: dict[str, dict[str, object]] = {
    "torch": {"backend": "torch", "precision": "exact"},
    "onnxruntime": {"backend": "onnxruntime", "precision": "exact"},
    "openvino": {"backend": "openvino", "precision": "exact"},
    "openvino-bfloat16": {"backend": "openvino", "dtype": torch.bfloat16},
    "torch-bfloat16": {"backend": "torch", "dtype": torch.bfloat16},
}
"""Each candidate's :class:`Upscaler` options."""


def make_candidates(
    model: str, names: list[str]
) -> tuple[dict[str, Upscaler], dict[str, float], str]:
    """Upscalers by candidate name, their one-time setup seconds (load, export and compile
    on an empty cache, first image), and the candidate ``Upscaler()`` chooses here."""
    setup: dict[str, float] = {}
    candidates: dict[str, Upscaler] = {}
    warm = torch.rand(3, 64, 64)
    for name in names:
        start = time.perf_counter()
        upscaler = Upscaler(model, device="cpu", **CANDIDATES[name])  # type: ignore[arg-type]
        upscaler.upscale_tensor(warm)
        setup[f"{name}: load, export/compile, first 64x64 image"] = time.perf_counter() - start
        candidates[name] = upscaler
    chosen = Upscaler(model, device="cpu").configuration
    auto = next(
        (
            name
            for name, upscaler in candidates.items()
            if (upscaler.configuration.backend, upscaler.configuration.dtype)
            == (chosen.backend, chosen.dtype)
        ),
        chosen.describe(),
    )
    return candidates, setup, auto


def half_peak(flags: str, threads: int, mhz: float) -> dict[str, float | str]:
    """The bfloat16 peak of ``threads`` cores: AMX tiles (1024 FLOP per cycle and core) where
    ``flags`` list ``amx_bf16``, else AVX512-BF16 (2 units x 32 lanes x 2 FLOP), else none."""
    names = set(flags.split(":", 1)[-1].split())
    if "amx_bf16" in names:
        per_cycle, rule = 1024, "AMX bf16: 1024 FLOP per cycle and core"
    elif "avx512_bf16" in names:
        per_cycle, rule = 128, "AVX512-BF16: 2 units x 32 lanes x 2 FLOP"
    else:
        return {"rule": "no bfloat16 hardware", "peak_gflops": float("nan")}
    return {
        "rule": f"{threads} threads x {rule} x {mhz:.0f} MHz",
        "peak_gflops": threads * per_cycle * mhz / 1e3,
    }


def row_peak(name: str, peak: dict[str, float | str]) -> float:
    """The ceiling of candidate ``name``: the bfloat16 peak for bfloat16 rows, else float32's."""
    key = "bf16_peak_gflops" if name.endswith("bfloat16") else "peak_gflops"
    return float(peak[key])


def markdown_table(rows: list[dict[str, object]]) -> str:
    """The rows as a markdown table: speed, both ceilings' fractions, max and p99 differences."""
    lines = [
        "",
        "| input | backend | s / MP | ratio vs torch | GFLOP/s | of its peak | of sgemm "
        "| max diff (levels) | p99 diff (levels) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['backend']} | {row['s_per_mp']:.1f} | {row['ratio']:.3f} | "
            f"{row['gflops']:.1f} | {row['peak_fraction']:.1%} | {row['sgemm_fraction']:.1%} "
            f"| {row['max_level_diff']} | {row['p99_level_diff']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rounds", default="3,2", help="rounds per size (one number: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--candidates", nargs="+", choices=sorted(CANDIDATES), default=list(CANDIDATES)
    )
    parser.add_argument(
        "--bf16-sizes", type=int, default=1, help="time torch bfloat16 on the first N sizes"
    )
    parser.add_argument(
        "--sgemm-size", type=int, default=3072, help="side of the sgemm measured as the ceiling"
    )
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rounds = [int(r) for r in args.rounds.split(",")]
    rounds += [rounds[-1]] * (len(sizes) - len(rounds))
    peak = fp32_peak(args.threads, args.sgemm_size)
    report: dict[str, object] = {
        "threads": args.threads,
        "torch": torch.__version__,
        "load_start": os.getloadavg(),
        "peak": peak,
    }
    print(json.dumps(report), flush=True)
    wanted = [n for n in args.candidates if n != "torch-bfloat16" or args.bf16_sizes > 0]
    names = ["torch", *(n for n in wanted if n != "torch")]  # the baseline always runs
    candidates, setup, auto = make_candidates(args.model, names)
    first_sizes = {"torch-bfloat16": args.bf16_sizes}
    flops = conv_flops_per_pixel(candidates["torch"])
    report.update(setup=setup, auto=auto, mflop_per_pixel=flops / 1e6)
    print(json.dumps({"setup": setup, "auto": auto, "mflop_per_pixel": flops / 1e6}), flush=True)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as folder:
        warm = Path(folder) / "warm.png"
        photo_crop(64, 64).save(warm)
        for upscaler in candidates.values():
            upscaler.upscale_file(warm, Path(folder) / "warm_out.png")
        for size_index, (width, height) in enumerate(sizes):
            names = [n for n in candidates if size_index < first_sizes.get(n, len(sizes))]
            source = Path(folder) / f"in_{width}x{height}.png"
            photo_crop(width, height).save(source)
            for name in names:  # one-time work per input shape (graph compilation) is setup
                candidates[name].upscale_file(source, Path(folder) / "warm_out.png")
            times: dict[str, list[float]] = {name: [] for name in names}
            ratios: dict[str, list[float]] = {name: [] for name in names}
            loads = []
            for round_index in range(rounds[size_index]):
                order = names[round_index % len(names) :] + names[: round_index % len(names)]
                got: dict[str, float] = {}
                for name in order:
                    target = Path(folder) / f"out_{name}.png"
                    start = time.perf_counter()
                    candidates[name].upscale_file(source, target)
                    got[name] = time.perf_counter() - start
                for name in names:
                    times[name].append(got[name])
                    ratios[name].append(got[name] / got["torch"])
                loads.append(os.getloadavg()[0])
                print(
                    json.dumps({"size": f"{width}x{height}", "round": round_index, **got}),
                    flush=True,
                )
            outputs = {
                name: np.asarray(Image.open(Path(folder) / f"out_{name}.png")) for name in names
            }
            megapixels = width * height / 1e6
            for name in names:
                seconds = statistics.median(times[name])
                gflops = flops * width * height / seconds / 1e9
                row = {
                    "size": f"{width}x{height}",
                    "backend": name + (" (auto)" if name == auto else ""),
                    "s_per_mp": seconds / megapixels,
                    "ratio": statistics.median(ratios[name]),
                    "gflops": gflops,
                    "peak_fraction": gflops / row_peak(name, peak),
                    "sgemm_fraction": gflops / peak["sgemm_gflops"],
                    **level_differences(outputs[name], outputs["torch"]),
                    "load_1min": loads,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    report["rows"] = rows
    report["load_end"] = os.getloadavg()
    print(markdown_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
