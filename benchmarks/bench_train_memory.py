"""Peak memory of a short training run over 2000 photos against the same run over 20 (issue 14).

The streaming pipeline (``data.streaming: true``) decodes every crop from its file when it is
needed, so a run's memory must not grow with its dataset: the issue asks for the peak over 2000
photos of 1024x768 to stay within 1.5 GiB of the peak over 20, for 50 steps. Each setting is one
``mordasr train`` of ``configs/realesrgan_mor.yaml`` (the Real-ESRGAN x4plus backbone with MoR
adapters, routed by the learned estimator) made small and fast: the config's 128 px crops,
batch 2, L1 + balance losses, no pool, no cached trunk, no rank allocation, nothing exported
but one checkpoint. It runs under ``/usr/bin/time -v``, whose "Maximum resident set size" is the
peak of the largest single process of the run (the trainer, or one of its workers); the PSS
(each shared page split between its sharers) of all the run's processes is also summed every
0.2 s with psutil, what the machine spends on the run, workers included. The small set is a
file list naming the first N photos (``data.hr_dirs`` takes file lists). ``--in-memory`` adds
the same runs on the in-memory sampler, which keeps every image it has read.

    python benchmarks/bench_train_memory.py --folder /tmp/bd_photos [--photos 2000] [--small 20]
        [--steps 50] [--workers 0 2] [--in-memory] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import PeakMemory, generate_photos

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "realesrgan_mor.yaml"
LIMIT_GIB = 1.5
"""What the 2000-photo run's peak may exceed the 20-photo run's by (the issue's target)."""


def overrides(
    source: Path, out: Path, steps: int, workers: int, streaming: bool, batch: int
) -> list[str]:
    """The ``--set`` values that make the shipped config a short run over ``source``."""
    return [
        f"data.hr_dirs=[{source}]",
        f"data.streaming={'true' if streaming else 'false'}",
        f"data.num_workers={workers}",
        "data.pool_size=0",
        f"data.batch_size={batch}",
        "model.cache_trunk=false",
        "model.allocate=null",
        "losses.lpips=0",
        f"total_steps={steps}",
        f"checkpoint_every={steps}",
        "keep_checkpoints=1",
        "log_every=10",
        f"output_dir={out}",
    ]


def train_command(config: Path, settings: list[str]) -> list[str]:
    """``/usr/bin/time -v python -m mordasr.cli train CONFIG --no-resume --set ...``."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "mordasr.cli", "train", str(config)]
    command.append("--no-resume")
    for setting in settings:
        command += ["--set", setting]
    return command


def max_rss_kib(time_report: str) -> int:
    """The "Maximum resident set size (kbytes)" of a ``/usr/bin/time -v`` report."""
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_report)
    if found is None:
        raise ValueError("no 'Maximum resident set size' in the /usr/bin/time -v report")
    return int(found.group(1))


@dataclass
class Run:
    """One measured training run."""

    photos: int
    workers: int
    streaming: bool
    max_rss_mib: float
    pss_peak_mib: float
    wall_s: float
    load_before: float
    load_after: float
    command: str


def measure(
    photos: int, source: Path, workers: int, streaming: bool, args: argparse.Namespace
) -> Run:
    """Train one setting under ``/usr/bin/time -v``; its figures."""
    out = Path(args.runs) / f"{'stream' if streaming else 'memory'}_{photos}_w{workers}"
    settings = overrides(source, out, args.steps, workers, streaming, args.batch)
    command = train_command(Path(args.config), settings)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    load_before = os.getloadavg()[0]
    tic = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with PeakMemory(process.pid, interval=0.2) as pss:
        stdout, stderr = process.communicate()
    peak = pss.peak
    wall = time.perf_counter() - tic
    if process.returncode != 0:
        raise RuntimeError(
            f"training failed ({process.returncode}): {stderr[-2000:]}{stdout[-500:]}"
        )
    return Run(
        photos=photos,
        workers=workers,
        streaming=streaming,
        max_rss_mib=max_rss_kib(stderr) / 1024,
        pss_peak_mib=peak / 2**20,
        wall_s=wall,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        command=" ".join(command),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folder", required=True, help="the generated photos (kept; made if absent)"
    )
    parser.add_argument("--photos", type=int, default=2000, help="photos of the large set")
    parser.add_argument("--small", type=int, default=20, help="photos of the small set")
    parser.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT of the photos")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--in-memory", action="store_true", help="also run the in-memory sampler")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs")
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--runs", default="/tmp/bench_train_memory", help="run folders go here")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    folder = Path(args.folder)
    files = generate_photos(folder, args.photos, width, height)
    listing = Path(args.runs) / f"first_{args.small}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{path.resolve()}\n" for path in files[: args.small]))
    sources = {args.photos: folder, args.small: listing}
    settings = [(True, workers) for workers in args.workers]
    if args.in_memory:
        settings.append((False, 0))
    runs = []
    for streaming, workers in settings:
        for photos, source in sources.items():
            run = measure(photos, source, workers, streaming, args)
            runs.append(run)
            print(
                f"{'streaming' if streaming else 'in-memory'}, {photos} photos, {workers} workers: "
                f"max RSS {run.max_rss_mib:.0f} MiB, PSS peak {run.pss_peak_mib:.0f} MiB, "
                f"{run.wall_s:.0f} s, load {run.load_before:.1f} -> {run.load_after:.1f}",
                flush=True,
            )
    for streaming, workers in settings:
        large, small = (
            next(r for r in runs if (r.streaming, r.workers, r.photos) == (streaming, workers, n))
            for n in (args.photos, args.small)
        )
        grows = (large.max_rss_mib - small.max_rss_mib) / 1024
        verdict = "within" if grows <= LIMIT_GIB else "NOT within"
        print(
            f"{'streaming' if streaming else 'in-memory'}, {workers} workers: max RSS grows by "
            f"{grows:+.3f} GiB from {args.small} to {args.photos} photos "
            f"({verdict} {LIMIT_GIB} GiB)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in runs], indent=2))


if __name__ == "__main__":
    main()
