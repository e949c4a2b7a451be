"""Upscale a video file as a stream of frames, routed per shot, with its sound kept.

Frames are decoded, upscaled by an :class:`~mordasr.infer.pipeline.Upscaler` and encoded one
by one (PyAV, the optional extra ``mordasr[video]``), so memory does not grow with the clip's
length: at most :attr:`ShotRouter.window` decoded frames wait for their routing. The frame
rate, time base, timestamps and frame count are kept and the audio streams are copied packet
by packet, unchanged.

Routing per shot: a MoR model routing every frame by its own degradation scores would switch
experts, and so texture, from frame to frame. Here a scene cut starts a new shot when the mean
absolute difference of two consecutive thumbnails exceeds a threshold; each shot is routed by
the mean scores of its first ``window`` frames (the look-ahead), so its kept experts stay the
same for the whole shot and change only at cuts.

An interrupted run (Ctrl-C) closes the encoder on the frames done, so the partial result is a
playable file (``<stem>.partial<ext>``), and says how far it got in one line.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageSequence
from torch import Tensor
from tqdm.auto import tqdm

from mordasr.infer.pipeline import Upscaler
from mordasr.io.image import check_pixels
from mordasr.mor import LayerRouting, RoutingPlan

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".m4v", ".avi"})
"""Extensions read as videos (the content is then opened by PyAV)."""
MISSING_PYAV = "video needs PyAV: pip install 'mordasr[video]'"
DEFAULT_CODEC = "libx264"
WEBM_CODEC = "libvpx-vp9"
DEFAULT_CRF = 18
DEFAULT_WINDOW = 8
DEFAULT_CUT_THRESHOLD = 0.1
"""Mean absolute difference (in [0, 1]) of consecutive 1/4-size gray thumbnails that starts a
new shot: noise and motion stay well below it, a change of scene is far above."""
THUMB_FACTOR = 4
SizeRule = Callable[[int, int], tuple[int, int] | None]
"""The output (height, width) of a video whose frames are (height, width); None: the model's."""


class VideoError(RuntimeError):
    """A video cannot be read or written (one line, for the batch's failure list)."""


def is_video(path: str | Path) -> bool:
    """Whether ``path`` is read as a video (by its extension)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def has_pyav() -> bool:
    """Whether the optional ``av`` package (``mordasr[video]``) is installed."""
    return importlib.util.find_spec("av") is not None


def default_codec(target: str | Path) -> str:
    """H.264 (yuv420p), or VP9 for WebM, which holds no H.264."""
    return WEBM_CODEC if Path(target).suffix.lower() == ".webm" else DEFAULT_CODEC


@runtime_checkable
class ScoredModel(Protocol):
    """A model routed by scores of its input (MoR models): what shot routing needs of it."""

    def route_input(self, lr: Tensor) -> Tensor: ...

    def plan(
        self, lr: Tensor, scores: Tensor | None = None, *, fold: bool = False
    ) -> RoutingPlan: ...


@dataclass
class Frame:
    """One decoded frame waiting for its routing."""

    index: int
    pts: int | None
    lr: Tensor
    """(3, h, w) RGB in [0, 1]."""
    scores: Tensor | None
    """(D,) the frame's own routing input (None: the model is not routed)."""
    shot: int = 0


@dataclass(frozen=True)
class Routed:
    """A frame with the routing input of its shot."""

    frame: Frame
    scores: Tensor | None


class ShotRouter:
    """Groups frames into shots and gives every frame its shot's routing input.

    :meth:`push` takes frames in order and returns those whose routing is decided; a frame
    waits until ``window`` frames follow it (or :meth:`flush`). A shot's routing input is the
    mean of the scores of its frames within ``window`` frames of its first one.
    """

    def __init__(
        self, window: int = DEFAULT_WINDOW, cut_threshold: float = DEFAULT_CUT_THRESHOLD
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.cut_threshold = cut_threshold
        self._waiting: deque[Frame] = deque()
        self._thumb: Tensor | None = None
        self._shot = -1
        self._shot_scores: Tensor | None = None
        self._routed_shot = -1

    @property
    def shots(self) -> int:
        """How many shots were seen so far."""
        return self._shot + 1

    def push(self, frame: Frame) -> list[Routed]:
        """Add the next frame; the frames now decided, in order."""
        thumb = _thumbnail(frame.lr)
        if self._thumb is None or self.is_cut(self._thumb, thumb):
            self._shot += 1
        self._thumb = thumb
        frame.shot = self._shot
        self._waiting.append(frame)
        ready = []
        while len(self._waiting) > self.window:
            ready.append(self._pop())
        return ready

    def flush(self) -> list[Routed]:
        """The frames still waiting (end of the clip)."""
        return [self._pop() for _ in range(len(self._waiting))]

    def is_cut(self, previous: Tensor, thumb: Tensor) -> bool:
        """Whether two consecutive thumbnails belong to different shots."""
        if previous.shape != thumb.shape:
            return True
        return float((previous - thumb).abs().mean()) > self.cut_threshold

    def _pop(self) -> Routed:
        frame = self._waiting.popleft()
        if frame.shot != self._routed_shot:
            self._routed_shot = frame.shot
            same = [frame] + [f for f in self._waiting if f.shot == frame.shot]
            scores = [f.scores for f in same if f.scores is not None]
            self._shot_scores = torch.stack(scores).mean(0) if scores else None
        return Routed(frame, self._shot_scores)


def _thumbnail(lr: Tensor) -> Tensor:
    """A gray thumbnail of (3, h, w) ``lr``, a quarter of its sides (area averaged)."""
    gray = lr.float().mean(0, keepdim=True)[None]
    height, width = gray.shape[-2:]
    size = (max(1, height // THUMB_FACTOR), max(1, width // THUMB_FACTOR))
    return F.adaptive_avg_pool2d(gray, size)[0, 0]


@dataclass
class VideoResult:
    """What :func:`upscale_video` wrote."""

    frames: int
    shots: int
    target: Path


class RoutingLog:
    """``--routing-log``: one CSV row per frame (video, frame, shot, the frame's own scores,
    its shot's routing scores, the experts every layer keeps with their gates), appended
    across videos."""

    HEADER = ("video", "frame", "shot", "scores", "shot_scores", "kept")

    def __init__(self, path: str | Path, upscaler: Upscaler, source: Path) -> None:
        self.path = Path(path)
        self.upscaler = upscaler
        self.source = source
        self._kept: tuple[int, str] = (-1, "")

    @contextmanager
    def rows(self) -> Iterator[Callable[[Routed], None]]:
        """A function writing each frame's row while the block runs."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(self.HEADER)

            def write(routed: Routed) -> None:
                frame = routed.frame
                row = (frame.index, frame.shot, _numbers(frame.scores), _numbers(routed.scores))
                writer.writerow((str(self.source), *row, self._kept_of(routed)))

            yield write

    def _kept_of(self, routed: Routed) -> str:
        """The experts each layer keeps for the frame's shot (computed once per shot)."""
        model = self.upscaler.model
        if routed.scores is None or not isinstance(model, ScoredModel):
            return ""
        if self._kept[0] != routed.frame.shot:
            lr = routed.frame.lr[None].to(self.upscaler.device).float()
            stats = model.plan(lr, routed.scores[None].to(lr.device)).stats()
            kept = " ".join(f"{name}:{_experts(layer)}" for name, layer in stats.items())
            self._kept = (routed.frame.shot, kept)
        return self._kept[1]


def _experts(layer: LayerRouting) -> str:
    """A layer's kept slots of the first image with their gates, e.g. ``3=0.61,4=0.39``."""
    pairs = zip(layer.indices[0].tolist(), layer.gates[0].tolist(), strict=True)
    return ",".join(f"{index}={gate:.3f}" for index, gate in sorted(pairs))


def _numbers(values: Tensor | None) -> str:
    return "" if values is None else " ".join(f"{v:.4f}" for v in values.tolist())


def upscale_video(
    upscaler: Upscaler,
    source: str | Path,
    target: str | Path,
    *,
    size_for: SizeRule | None = None,
    crf: int = DEFAULT_CRF,
    codec: str | None = None,
    routing_log: str | Path | None = None,
    window: int = DEFAULT_WINDOW,
    cut_threshold: float = DEFAULT_CUT_THRESHOLD,
    overwrite: bool = False,
    max_pixels: int | None = None,
) -> VideoResult:
    """Upscale the video ``source`` into ``target`` frame by frame, routed per shot, with its
    audio copied. ``size_for(height, width)`` gives the output (height, width) of the source's
    frames (None, or no rule: the model's scale), rounded down to even sides for yuv420p.

    The result is written under a temporary name and published at the end; nothing is left of
    a failed run (raises :class:`VideoError` with one line; :class:`FileExistsError` when
    ``target`` exists and not ``overwrite``). On Ctrl-C the frames done are closed into
    ``<stem>.partial<ext>`` beside ``target``, a line says so, and the
    :class:`KeyboardInterrupt` goes on. Frames over ``max_pixels`` are refused before any is
    decoded.
    """
    if not has_pyav():
        raise VideoError(MISSING_PYAV)
    source, target = Path(source), Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(target)
    temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    router = ShotRouter(window, cut_threshold)
    log = None if routing_log is None else RoutingLog(routing_log, upscaler, source)
    done = 0
    try:
        with closing(
            _stream(
                upscaler,
                source,
                temporary,
                router,
                log,
                size_for,
                max_pixels,
                crf,
                codec or default_codec(target),
            )
        ) as frames:
            for _ in frames:
                done += 1
    except KeyboardInterrupt:
        partial = target.with_name(f"{target.stem}.partial{target.suffix}")
        if done:
            temporary.replace(partial)
            print(f"interrupted {source}: {done} frames written to {partial}", file=sys.stderr)
        else:
            temporary.unlink(missing_ok=True)
            print(f"interrupted {source}: no frame was finished", file=sys.stderr)
        raise
    except Exception as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, VideoError):
            raise
        raise VideoError(_reason(error)) from error
    if not done:
        temporary.unlink(missing_ok=True)
        raise VideoError("no frame could be decoded")
    if overwrite:
        temporary.replace(target)
    else:
        _publish(temporary, target)
    return VideoResult(done, router.shots, target)


def _stream(
    upscaler: Upscaler,
    source: Path,
    temporary: Path,
    router: ShotRouter,
    log: RoutingLog | None,
    size_for: SizeRule | None,
    max_pixels: int | None,
    crf: int,
    codec: str,
) -> Generator[int, None, None]:
    """Decode, route, upscale and encode ``source`` into ``temporary``, yielding each frame's
    index once it is encoded; the output is closed (playable) however the loop ends."""
    import av

    try:
        container = av.open(str(source))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"cannot open the video: {_reason(error)}") from error
    with container, av.open(str(temporary), "w") as output:
        if not container.streams.video:
            raise VideoError("no video stream")
        video = container.streams.video[0]
        check_pixels(video.width, video.height, max_pixels)
        size = None if size_for is None else size_for(video.height, video.width)
        encoder = _Encoder(upscaler, video, output, size, crf, codec)
        audio = {
            stream.index: output.add_stream_from_template(stream)
            for stream in container.streams.audio
        }
        total = video.frames or None
        bar = (
            tqdm(total=total, desc=source.name, unit="frame", file=sys.stderr)
            if upscaler.progress
            else None
        )
        with nullcontext(None) if log is None else log.rows() as write:
            try:
                for routed in _routed(upscaler, container, video, audio, output, router):
                    encoder.encode(routed)
                    if write is not None:
                        write(routed)
                    if bar is not None:
                        bar.update()
                    yield routed.frame.index
            except (KeyboardInterrupt, GeneratorExit):  # the frames done stay playable
                encoder.flush()
                raise
            finally:
                if bar is not None:
                    bar.close()
            encoder.flush()


def _routed(
    upscaler: Upscaler,
    container: Any,
    video: Any,
    audio: dict[int, Any],
    output: Any,
    router: ShotRouter,
) -> Iterator[Routed]:
    """The video's frames with their shots' routing, in order; audio packets are copied to
    ``output`` as they are demuxed."""
    model = upscaler.model
    scored = upscaler.routing == "image" and model.score_dim is not None
    scored = scored and isinstance(model, ScoredModel)
    index = 0
    for packet in container.demux(video, *container.streams.audio):
        if packet.stream.index in audio:
            if packet.dts is not None:
                packet.stream = audio[packet.stream.index]
                output.mux(packet)
            continue
        for decoded in packet.decode():
            rgb = decoded.to_ndarray(format="rgb24")
            lr = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
            scores = None
            if scored:
                assert isinstance(model, ScoredModel)
                batch = lr[None].to(upscaler.device)
                scores = model.route_input(batch)[0].float().cpu()
            yield from router.push(Frame(index, decoded.pts, lr, scores))
            index += 1
    yield from router.flush()


class _Encoder:
    """Upscales routed frames and encodes them at their source timestamps."""

    def __init__(
        self,
        upscaler: Upscaler,
        video: Any,
        output: Any,
        size: tuple[int, int] | None,
        crf: int,
        codec: str,
    ) -> None:
        self.upscaler = upscaler
        height, width = size or (
            video.height * upscaler.scale,
            video.width * upscaler.scale,
        )
        even = (max(2, height - height % 2), max(2, width - width % 2))
        self.size: tuple[int, int] | None = even
        rate = video.average_rate or video.guessed_rate
        stream = output.add_stream(codec, rate=rate)
        stream.width, stream.height = even[1], even[0]
        stream.pix_fmt = "yuv420p"
        stream.time_base = video.time_base
        stream.codec_context.time_base = video.time_base
        stream.options = {"crf": str(crf)}
        self.stream = stream
        self.time_base = video.time_base

    def encode(self, routed: Routed) -> None:
        import av

        scores = None if routed.scores is None else routed.scores[None]
        out = self.upscaler.upscale_tensor(routed.frame.lr, self.size, scores=scores)
        pixels = out.permute(1, 2, 0).mul(255.0).round().byte().cpu().numpy()
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = routed.frame.pts
        frame.time_base = self.time_base
        for packet in self.stream.encode(frame):
            self.stream.container.mux(packet)

    def flush(self) -> None:
        for packet in self.stream.encode(None):
            self.stream.container.mux(packet)


ANIMATED_FORMATS = ("GIF", "WEBP")
ANIMATION_SUFFIXES = (".gif", ".webp")
"""Output extensions an animation is written to as an animation (else its first frame)."""


def is_animation(path: str | Path) -> bool:
    """Whether ``path`` is an animated GIF or WebP (more than one frame)."""
    try:
        with Image.open(path) as image:
            return image.format in ANIMATED_FORMATS and getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def upscale_animation(
    upscaler: Upscaler,
    source: str | Path,
    target: str | Path,
    *,
    size_for: SizeRule | None = None,
    overwrite: bool = False,
    max_pixels: int | None = None,
) -> int:
    """Upscale every frame of an animated GIF or WebP into ``target`` (same format), keeping
    each frame's duration and the loop count; returns the frame count. Frames are upscaled
    as they are written (each routed on its own, alpha kept as the model's gray). Frames over
    ``max_pixels`` are refused before decoding (:class:`~mordasr.io.image.ImageTooLargeError`)."""
    source, target = Path(source), Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(target)
    temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        with Image.open(source) as image:
            check_pixels(image.width, image.height, max_pixels)
            durations = [_duration(frame) for frame in ImageSequence.Iterator(image)]
            size = None if size_for is None else size_for(image.height, image.width)
            frames = (
                upscaler.upscale_image(frame.convert("RGBA"), size)
                for frame in ImageSequence.Iterator(image)
            )
            first = next(frames)
            extra = {"loop": image.info["loop"]} if "loop" in image.info else {}
            first.save(
                temporary,
                format=image.format,
                save_all=True,
                append_images=frames,
                duration=durations,
                disposal=2,
                **extra,
            )
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if overwrite:
        temporary.replace(target)
    else:
        _publish(temporary, target)
    return len(durations)


def _duration(frame: Image.Image) -> int:
    """A frame's display time in milliseconds (WebP sets it when the frame is loaded)."""
    frame.load()
    return int(frame.info.get("duration", 0))


def _publish(temporary: Path, target: Path) -> None:
    """Move ``temporary`` to ``target`` unless another run wrote ``target`` meanwhile."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        temporary.unlink(missing_ok=True)
        raise
    temporary.unlink()


def _reason(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
