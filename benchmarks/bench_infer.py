"""End-to-end upscale time of the default model on each inference backend against eager torch.

Each candidate is an :class:`~mordasr.infer.pipeline.Upscaler` whose ``upscale_file`` (decode,
estimate, route, fold, network, encode) is timed on a PNG crop of a real photo (from
``../shared/data``; a synthetic image when that is absent) at 256x256 and 512x384 inputs. Rounds
interleave the candidates in a rotating order; the table gives the median seconds per input
megapixel and the median over rounds of the time ratio to eager torch float32 in the same
round. One-time costs (model load, graph export, session creation) are timed separately.

Candidates: ``torch`` (eager float32, the baseline), ``onnxruntime``, ``auto`` (what
``Upscaler(backend="auto")`` resolves to; timed once per round under its resolved name),
``channels_last`` (eager torch on channels-last tensors) and ``bfloat16`` (eager torch with
``dtype=torch.bfloat16``: oneDNN's AMX/AVX512-BF16 kernels where the CPU has them, at a cost in
accuracy); the last two are timed on the first size only unless ``--channels-last-sizes`` /
``--bf16-sizes`` say more. Every row gives the max and the 99th percentile of its output's
difference from eager float32's, in 8-bit levels.

Achieved GFLOP/s counts the network's convolutions (2 FLOP per multiply-add, counted by hooks).
It is reported as a fraction of two ceilings: the theoretical float32 peak ``threads x 2 FMA
units x lanes x 2 FLOP x clock``, with the lanes from the /proc/cpuinfo flags (``avx512f``: 16,
``avx2``: 8, else 4), 2 FMA units per core assumed (nothing reports it: Xeons with one 512-bit
FMA unit, and AMD Zen 4, which splits each 512-bit FMA into two 256-bit halves, have half that
peak) and the clock the largest ``cpu MHz`` (not the lower clock AVX-512 code may run at); and
the practical ceiling, a large float32 matrix product measured at the start of the run on the
same threads. The bfloat16 row's fractions are of these float32 ceilings too, so they can pass
100 %.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from mordasr.infer import backends
from mordasr.infer.backends import Network, OnnxRuntimeBackend, TorchBackend
from mordasr.infer.pipeline import Upscaler
from mordasr.mor import MoRConv2d, route
from mordasr.sr.protocol import ImageWork

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "RealSRSet+5images"
SIZES = ((256, 256), (512, 384))


class ChannelsLast:
    """Eager torch with the network's weights and activations in channels-last layout."""

    name = "channels_last"

    def __init__(self, network: nn.Module) -> None:
        network.to(memory_format=torch.channels_last)

    @contextmanager
    def bind(self, work: ImageWork) -> Iterator[Network]:
        with TorchBackend().bind(work) as network:

            def run(image: Tensor) -> Tensor:
                out = network(image.contiguous(memory_format=torch.channels_last))
                return out.contiguous()

            yield run


def photo_crop(width: int, height: int) -> Image.Image:
    """A centred crop of the first real photo at least ``width`` x ``height`` (else noise)."""
    if DATA.is_dir():
        for path in sorted(p for p in DATA.rglob("*") if p.is_file()):
            with Image.open(path) as image:
                if image.width >= width and image.height >= height:
                    left, top = (image.width - width) // 2, (image.height - height) // 2
                    return image.convert("RGB").crop((left, top, left + width, top + height))
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


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
    peak = peak_rule(flags, threads, max(clocks) if clocks else float("nan"))
    return {**peak, "sgemm_size": sgemm_size, "sgemm_gflops": sgemm_gflops(sgemm_size)}


def level_differences(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max, 99th percentile and mean of the absolute difference of two 8-bit images, in
    levels (the percentile is a value that occurs: ``method="higher"``)."""
    diff = np.abs(output.astype(np.int16) - reference.astype(np.int16))
    return {
        "max_level_diff": int(diff.max()),
        "p99_level_diff": int(np.percentile(diff, 99, method="higher")),
        "mean_level_diff": float(diff.mean()),
    }


def make_candidates(
    model: str, channels_last: bool, bf16: bool
) -> tuple[dict[str, Upscaler], dict[str, float], str]:
    """Upscalers by candidate name, their one-time setup seconds, and what ``auto`` became."""
    setup: dict[str, float] = {}
    candidates: dict[str, Upscaler] = {}
    for name in ("torch", "onnxruntime"):
        start = time.perf_counter()
        candidates[name] = Upscaler(model, device="cpu", backend=name)
        setup[f"{name}: load model"] = time.perf_counter() - start
    ort = candidates["onnxruntime"]
    network = ort.model.backbone
    backends._SESSIONS.clear()
    start = time.perf_counter()
    OnnxRuntimeBackend(disk_cache=False).session(network)
    setup["onnxruntime: export graph + create session (no disk cache)"] = (
        time.perf_counter() - start
    )
    backends._SESSIONS.clear()
    OnnxRuntimeBackend().session(network)
    backends._SESSIONS.clear()
    start = time.perf_counter()
    backend = OnnxRuntimeBackend()
    backend.session(network)
    setup["onnxruntime: hash weights + session from the disk cache (new process)"] = (
        time.perf_counter() - start
    )
    ort.backend = backend
    lr = torch.rand(1, 3, 64, 64)
    start = time.perf_counter()
    for _ in range(5):
        with backend.bind(ort.model.prepare(lr)):
            pass
    setup["onnxruntime: fold + feed one image's weights (per image)"] = (
        time.perf_counter() - start
    ) / 5
    if channels_last:
        eager = Upscaler(model, device="cpu", backend="torch")
        eager.backend = ChannelsLast(eager.model.backbone)
        candidates["channels_last"] = eager
    if bf16:
        start = time.perf_counter()
        candidates["bfloat16"] = Upscaler(
            model, device="cpu", dtype=torch.bfloat16, backend="torch"
        )
        setup["bfloat16: load model"] = time.perf_counter() - start
    auto = Upscaler(model, device="cpu").backend.name
    return candidates, setup, auto


def markdown_table(rows: list[dict[str, object]]) -> str:
    """The rows as a markdown table: speed, both ceilings' fractions, max and p99 differences."""
    lines = [
        "",
        "| input | backend | s / MP | ratio vs torch | GFLOP/s | of fp32 peak | of sgemm "
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
        "--channels-last-sizes", type=int, default=1, help="time channels_last on the first N sizes"
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
    candidates, setup, auto = make_candidates(
        args.model, args.channels_last_sizes > 0, args.bf16_sizes > 0
    )
    first_sizes = {"channels_last": args.channels_last_sizes, "bfloat16": args.bf16_sizes}
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
                    "peak_fraction": gflops / peak["peak_gflops"],
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
