"""Tiny clips with sound for the video tests (needs PyAV, the ``video`` extra)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tiny_models import photo

RATE = 12
FRAMES = 12


CODECS = {".webm": ("libvpx-vp9", "libopus", 48000)}
"""Containers that need other codecs than H.264 and AAC (video, audio, sample rate)."""


def write_clip(path: Path, frames: int = FRAMES) -> Path:
    """A 32x24 clip at 12 fps (H.264, VP9 in WebM) with a 440 Hz tone: two shots (different
    scenes, the second one much noisier), each frame with fresh noise."""
    video_codec, audio_codec, sample_rate = CODECS.get(path.suffix, ("libx264", "aac", 16000))
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=RATE)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        video.options = {"crf": "0"} if video_codec == "libx264" else {"lossless": "1"}
        audio = container.add_stream(audio_codec, rate=sample_rate)
        audio.layout = "mono"
        for index in range(frames):
            second = index >= frames // 2
            scene = photo(24, 32, seed=int(second)).astype(np.float32)
            noisy = scene + rng.normal(0, 40.0 if second else 2.0, scene.shape)
            pixels = noisy.clip(0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = sample_rate * frames // RATE
        tone = np.sin(2 * np.pi * 440 * np.arange(samples) / sample_rate).astype(np.float32)
        step = audio.codec_context.frame_size or 1024
        for start in range(0, samples, step):
            chunk = np.zeros((1, step), np.float32)
            part = tone[start : start + step]
            chunk[0, : len(part)] = part
            sound = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            sound.sample_rate, sound.pts = sample_rate, start
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return path


def clip_streams(path: Path) -> tuple[int, Fraction, tuple[int, int], float]:
    """Frame count (decoded), frame rate, (width, height) and audio duration in seconds."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        count = sum(1 for _ in container.decode(video))
        rate, size = video.average_rate, (video.width, video.height)
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        ticks = sum(packet.duration or 0 for packet in container.demux(audio))
        return count, rate, size, float(ticks * audio.time_base)


def clip_times(path: Path) -> tuple[Fraction, list[Fraction]]:
    """The video stream's time base and each frame's presentation time in seconds."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return video.time_base, [frame.pts * video.time_base for frame in container.decode(video)]
