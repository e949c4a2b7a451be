"""Video (issue 30): peak memory against clip length, and flicker of per-frame routing
against per-shot routing.

``memory``: writes synthetic clips of each ``--frames`` count (48x32, 12 fps, a panned
texture with a 440 Hz tone), runs the real command line on each under ``/usr/bin/time -v``
(``python -m mordasr.cli upscale CLIP -o OUT --model M -q``, from the repository root) and
records its "Maximum resident set size": streaming keeps it flat with the clip's length.

``flicker``: clips of two shots of different degradations (the first lightly noisy, the
second blurred and very noisy, fresh noise every frame):
a synthetic texture (still, and panned), and a crop panned across each of two photos of
``REAL_PHOTOS``. Each clip
is upscaled three times, losslessly encoded (``crf 0``): by bicubic, by the model routed per
frame (every frame its own shot: ``cut_threshold=-1``) and routed per shot (the default).
Flicker is the mean absolute difference of consecutive frames within a shot (0-255, RGB),
given against bicubic's; residual flicker is the same of the output minus bicubic's (what the
model adds, without the scene's own motion and noise); the routing log gives how many distinct
kept-expert sets each shot used, ``mean_abs_vs_per_shot`` how far per-frame routing moves
the pixels from per-shot routing, and ``routing_flicker`` the flicker of that difference: the
frame-to-frame change that per-frame routing adds (none under per-shot routing).

    python benchmarks/bench_video.py memory --frames 30 300 --model default
    python benchmarks/bench_video.py flicker --model default
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
from common import REAL_PHOTOS
from PIL import Image, ImageFilter

from mordasr.infer.pipeline import Upscaler
from mordasr.infer.video import DEFAULT_CUT_THRESHOLD, upscale_video

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "video"
RATE = 12
SAMPLE_RATE = 16000
Scene = Callable[[int], np.ndarray]
"""Frame index -> (height, width, 3) uint8."""


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random colour texture with some edges, (height, width, 3) float in [0, 255]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (max(2, height // 8), max(2, width // 8), 3)).astype(np.uint8)
    resized = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    smooth = np.asarray(resized, dtype=np.float64)
    stripes = 40.0 * np.sign(np.sin(np.arange(width) / 3.0 + seed))[None, :, None]
    return np.clip(smooth + stripes, 0, 255)


def degraded(frame: np.ndarray, blur: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``frame`` blurred (Gaussian radius ``blur``) with fresh Gaussian noise of ``noise``."""
    image = Image.fromarray(frame.clip(0, 255).astype(np.uint8))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    noisy = np.asarray(image, float) + rng.normal(0.0, noise, frame.shape)
    return noisy.clip(0, 255).astype(np.uint8)


def two_shots(
    canvases: tuple[np.ndarray, np.ndarray], frames: int, size: tuple[int, int], pan: int = 1
) -> Scene:
    """A crop of ``size`` (height, width) panned ``pan`` pixels a frame across the first canvas
    (light noise) for the first half of the frames, then across the second (blur and strong
    noise)."""
    height, width = size
    rng = np.random.default_rng(0)

    def scene(index: int) -> np.ndarray:
        second = index >= frames // 2
        step = index - frames // 2 if second else index
        canvas = canvases[int(second)]
        left = (step * pan) % (canvas.shape[1] - width + 1)
        crop = canvas[:height, left : left + width]
        return degraded(crop, 1.2 if second else 0.0, 20.0 if second else 3.0, rng)

    return scene


def write_clip(path: Path, scene: Scene, frames: int, size: tuple[int, int]) -> Path:
    """An H.264 clip (lossless) of ``scene``'s frames at 12 fps with a 440 Hz AAC tone."""
    height, width = size
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "0"}
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(scene(index), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = SAMPLE_RATE * frames // RATE
        tone = np.sin(2 * np.pi * 440 * np.arange(samples) / SAMPLE_RATE).astype(np.float32)
        step = audio.codec_context.frame_size or 1024
        for start in range(0, samples, step):
            chunk = np.zeros((1, step), np.float32)
            part = tone[start : start + step]
            chunk[0, : len(part)] = part
            sound = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            sound.sample_rate, sound.pts = SAMPLE_RATE, start
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return path


def peak_rss_mb(clip: Path, out: Path, model: str) -> tuple[float, str]:
    """Peak RSS (MB) of ``mordasr upscale clip -o out --model model`` and its command."""
    command = [sys.executable, "-m", "mordasr.cli", "upscale", str(clip), "-o", str(out)]
    command += ["--model", model, "-q"]
    run = subprocess.run(
        ["/usr/bin/time", "-v", *command], cwd=ROOT, capture_output=True, text=True, check=True
    )
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    assert found is not None, run.stderr
    return int(found.group(1)) / 1024, " ".join(command)


def memory(args: argparse.Namespace) -> dict[str, object]:
    size = (32, 48)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for frames in args.frames:
            wide = texture(size[0], size[1] + frames, seed=0)
            scene = two_shots((wide, texture(size[0], size[1] + frames, seed=1)), frames, size)
            clip = write_clip(Path(folder) / f"clip{frames}.mp4", scene, frames, size)
            peak, command = peak_rss_mb(clip, Path(folder) / f"out{frames}", args.model)
            rows.append({"frames": frames, "peak_rss_mb": round(peak, 1), "command": command})
            print(f"{frames} frames: peak RSS {peak:.1f} MB", flush=True)
    peaks = [float(row["peak_rss_mb"]) for row in rows]
    return {
        "model": args.model,
        "size": "48x32",
        "rows": rows,
        "largest_over_smallest": round(max(peaks) / min(peaks), 4),
    }


def decoded(path: Path) -> np.ndarray:
    """Every frame of ``path`` as (frames, height, width, 3) float."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(
            float
        )


def rounded(values: list[float] | list[np.floating]) -> list[float]:
    return [round(float(value), 3) for value in values]


def flicker_of(frames: np.ndarray, shots: list[range]) -> list[float]:
    """Mean absolute difference of consecutive frames within each shot (0-255)."""
    return [float(np.abs(np.diff(frames[shot], axis=0)).mean()) for shot in shots]


def kept_sets(log: Path, shots: list[range]) -> list[int]:
    """How many distinct kept-expert sets the frames of each shot ran."""
    with open(log, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return [len({row["kept"] for row in rows if int(row["frame"]) in shot}) for shot in shots]


def photo_canvases(height: int, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Crops of ``height`` x ``width`` from the first two photos of ``REAL_PHOTOS`` that are
    large enough (None without them)."""
    canvases = []
    for path in sorted(p for p in REAL_PHOTOS.rglob("*") if p.is_file()):
        with Image.open(path) as image:
            if image.width >= width and image.height >= height:
                left, top = (image.width - width) // 2, (image.height - height) // 2
                crop = image.convert("RGB").crop((left, top, left + width, top + height))
                canvases.append(np.asarray(crop, float))
        if len(canvases) == 2:
            return canvases[0], canvases[1]
    return None


def flicker(args: argparse.Namespace) -> dict[str, object]:
    size, frames = (48, 64), args.flicker_frames
    shots = [range(0, frames // 2), range(frames // 2, frames)]
    synthetic = (texture(48, 64 + frames, 0), texture(48, 64 + frames, 1))
    clips = {"synthetic-static": (synthetic, 0), "synthetic-panned": (synthetic, 1)}
    photos = photo_canvases(48, 64 + frames)
    if photos is not None:
        clips["photos-panned"] = (photos, 1)
    model = Upscaler(args.model, device="cpu")
    bicubic = Upscaler("bicubic", device="cpu")
    results: dict[str, object] = {"model": args.model, "size": "64x48", "frames": frames}
    with tempfile.TemporaryDirectory() as folder:
        for name, (pair, pan) in clips.items():
            scene = two_shots(pair, frames, size, pan)
            clip = write_clip(Path(folder) / f"{name}.mp4", scene, frames, size)
            runs = {
                "bicubic": (bicubic, DEFAULT_CUT_THRESHOLD),
                "per_frame": (model, -1.0),  # every frame a cut: routed by its own scores
                "per_shot": (model, DEFAULT_CUT_THRESHOLD),
            }
            outputs: dict[str, np.ndarray] = {}
            row: dict[str, dict[str, Any]] = {}
            for label, (upscaler, cut) in runs.items():
                out = Path(folder) / f"{name}-{label}.mp4"
                log = out.with_suffix(".csv")
                result = upscale_video(
                    upscaler, clip, out, crf=0, routing_log=log, cut_threshold=cut
                )
                outputs[label] = decoded(out)
                row[label] = {
                    "flicker": rounded(flicker_of(outputs[label], shots)),
                    "shots_detected": result.shots,
                }
                if label != "bicubic":
                    residual = outputs[label] - outputs["bicubic"]
                    row[label]["residual_flicker"] = rounded(flicker_of(residual, shots))
                    row[label]["kept_sets_per_shot"] = kept_sets(log, shots)
            for label in ("per_frame", "per_shot"):
                pairs = zip(row[label]["flicker"], row["bicubic"]["flicker"], strict=True)
                row[label]["over_bicubic"] = [round(v / b, 4) for v, b in pairs]
            routing = outputs["per_frame"] - outputs["per_shot"]
            row["per_frame"]["routing_flicker"] = rounded(flicker_of(routing, shots))
            change = np.abs(routing)
            row["per_frame"]["mean_abs_vs_per_shot"] = rounded(
                [change[shot].mean() for shot in shots]
            )
            print(name, json.dumps(row), flush=True)
            results[name] = row
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("memory", "flicker"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--flicker-frames", type=int, default=48)
    args = parser.parse_args()
    result = memory(args) if args.what == "memory" else flicker(args)
    result["machine"] = f"{platform.processor() or platform.machine()}, {platform.python_version()}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{args.what}.json"
    target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"-> {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
