"""Upscale a video file as a stream of frames, routed per shot, with its sound kept.

Frames are decoded, upscaled by an :class:`~mordasr.infer.pipeline.Upscaler` and encoded one
by one (PyAV, the optional extra ``mordasr[video]``), so memory does not grow with the clip's
length: at most :attr:`ShotRouter.window` decoded frames wait for their routing, and encoded
frames go to disk in groups (:class:`FrameGroups`) that are muxed with the source's audio at
the end. The frame rate, time base, timestamps and frame count are kept and the audio streams
are copied packet by packet, unchanged.

Routing per shot: a MoR model routing every frame by its own degradation scores would switch
experts, and so texture, from frame to frame. Here a scene cut starts a new shot when the mean
absolute difference of two consecutive thumbnails exceeds a threshold; each shot is routed by
the mean scores of its first ``window`` frames (the look-ahead), so its kept experts stay the
same for the whole shot and change only at cuts; its folded plan is made once for all its
frames.

An interrupted run (Ctrl-C) closes the encoder on the frames done, so the partial result is a
playable file (``<stem>.partial<ext>``), and says how far it got in one line; ``--resume``
continues it from the frames done (after a crash, from the last finished group).
"""

from __future__ import annotations

import csv
import heapq
import importlib.util
import json
import os
import shutil
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
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
from mordasr.io.paths import VIDEO_SUFFIXES
from mordasr.mor import LayerRouting, RoutingPlan
from mordasr.sr.protocol import ImageWork

MISSING_PYAV = "video needs PyAV: pip install 'mordasr[video]'"
DEFAULT_CODEC = "libx264"
WEBM_CODEC = "libvpx-vp9"
DEFAULT_CRF = 18
DEFAULT_WINDOW = 8
DEFAULT_CUT_THRESHOLD = 0.1
"""Mean absolute difference (in [0, 1]) of consecutive 1/4-size gray thumbnails that starts a
new shot: noise and motion stay well below it, a change of scene is far above."""
THUMB_FACTOR = 4
GROUP_FRAMES = 100
"""Frames per encoded group, each starting with a key frame: a run that is killed resumes
(``--resume``) after its last finished group; Ctrl-C closes the group at the frame done."""
GLOBAL_HEADER = 1 << 22
"""``AV_CODEC_FLAG_GLOBAL_HEADER``: the codec's headers go to the container, not the packets."""
FORMAT_GLOBAL_HEADER = 0x40
"""``AVFMT_GLOBALHEADER``: a container format that wants the codec's headers itself."""
_RECORD = struct.Struct("<qq?I")
"""A packet in a group file: pts, dts, key frame, size (then its bytes)."""
_NO_TIME = -(2**63)
SizeRule = Callable[[int, int], tuple[int, int] | None]
"""The output (height, width) of a video whose frames are (height, width); None: the model's."""
FrameProgress = Callable[[int, int], None]
"""Told (frames done, frames in all; 0 where the container does not say) after each frame."""


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

    def __init__(self, path: str | Path, source: Path) -> None:
        self.path = Path(path)
        self.source = source
        self._kept: tuple[RoutingPlan | None, str] = (None, "")

    @contextmanager
    def rows(self) -> Iterator[Callable[[Routed, RoutingPlan | None], None]]:
        """A function writing each frame's row (with its shot's plan) while the block runs."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(self.HEADER)

            def write(routed: Routed, plan: RoutingPlan | None) -> None:
                frame = routed.frame
                row = (frame.index, frame.shot, _numbers(frame.scores), _numbers(routed.scores))
                writer.writerow((str(self.source), *row, self._kept_of(plan)))

            yield write

    def _kept_of(self, plan: RoutingPlan | None) -> str:
        """The experts each layer of ``plan`` keeps (described once per shot's plan)."""
        if plan is None:
            return ""
        if self._kept[0] is not plan:
            stats = plan.stats()
            kept = " ".join(f"{name}:{_experts(layer)}" for name, layer in stats.items())
            self._kept = (plan, kept)
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
    resume: bool = False,
    group_frames: int = GROUP_FRAMES,
    progress: FrameProgress | None = None,
) -> VideoResult:
    """Upscale the video ``source`` into ``target`` frame by frame, routed per shot, with its
    audio copied. ``size_for(height, width)`` gives the output (height, width) of the source's
    frames (None, or no rule: the model's scale), rounded down to even sides for yuv420p.

    Frames are encoded in groups of ``group_frames`` (each starting with a key frame) into a
    hidden folder beside ``target`` (:class:`FrameGroups`); the groups and the source's audio
    are then muxed into ``target``, published at the end. Nothing is left of a failed run
    (raises :class:`VideoError` with one line; :class:`FileExistsError` when ``target``
    exists and not ``overwrite``). On Ctrl-C the group being encoded is closed on the frames
    done, the finished frames are muxed into ``<stem>.partial<ext>`` beside ``target``, a
    line says so, and the :class:`KeyboardInterrupt` goes on; ``resume`` then continues after
    the last finished frame (also after a crash, from the last finished group), provided the
    source and the output settings are the same. Frames over ``max_pixels`` are refused
    before any is decoded. ``progress`` is told of every frame done (else the upscaler's
    progress shows a bar).
    """
    if not has_pyav():
        raise VideoError(MISSING_PYAV)
    source, target = Path(source), Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(target)
    if group_frames < 1:
        raise ValueError(f"group_frames must be at least 1, got {group_frames}")
    import av

    temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    groups = FrameGroups(target)
    router = ShotRouter(window, cut_threshold)
    try:
        container = av.open(str(source))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"cannot open the video: {_reason(error)}") from error
    with container:
        try:
            encoding = _encoding(
                container, upscaler, source, temporary, size_for, max_pixels, crf, codec
            )
            settings = {
                **encoding.settings(),
                "source": _identity(source),
                "model": _fingerprint(upscaler),
                "strength": upscaler.strength,
                "window": window,
                "cut_threshold": cut_threshold,
                "group_frames": group_frames,
            }
            done = groups.start(settings, resume)
        except VideoError:
            raise
        except Exception as error:  # e.g. over the pixel limit, or no room for the groups
            raise VideoError(_reason(error)) from error
        encoder = _Encoder(upscaler, encoding, groups, done, group_frames)
        log = None if routing_log is None else RoutingLog(routing_log, source)
        try:
            _run(upscaler, container, router, encoder, log, done, progress)
            encoder.finish()
            if not encoder.frames:
                raise VideoError("no frame could be decoded")
            _assemble(source, groups.finished(), encoding, temporary)
        except Exception as error:
            temporary.unlink(missing_ok=True)
            groups.remove()
            if isinstance(error, VideoError):
                raise
            raise VideoError(_reason(error)) from error
        except BaseException:  # Ctrl-C (or a termination): keep what is done for --resume
            temporary.unlink(missing_ok=True)
            _interrupted(encoder, groups, encoding, source, target)
            raise
    try:
        if overwrite:
            temporary.replace(target)
        else:
            _publish(temporary, target)
    finally:
        groups.remove()
    _partial_of(target).unlink(missing_ok=True)
    return VideoResult(encoder.frames, router.shots, target)


@dataclass(frozen=True)
class VideoFacts:
    """What a video's header and packets say, read without decoding a frame."""

    width: int
    height: int
    frames: int
    """Video packets (one per frame)."""


def video_facts(path: str | Path) -> VideoFacts:
    """The first video stream's frame size and frame count (its packets counted, nothing
    decoded); raises :class:`VideoError` for a file that is no readable video."""
    if not has_pyav():
        raise VideoError(MISSING_PYAV)
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no video stream")
            video = container.streams.video[0]
            frames = sum(1 for packet in container.demux(video) if packet.size)
            return VideoFacts(video.width, video.height, frames)
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"not a readable video: {_reason(error)}") from error


def _partial_of(target: Path) -> Path:
    return target.with_name(f"{target.stem}.partial{target.suffix}")


def _interrupted(
    encoder: _Encoder,
    groups: FrameGroups,
    encoding: _Encoding,
    source: Path,
    target: Path,
) -> None:
    """After an interruption: close the group being encoded and mux every finished frame into
    ``<stem>.partial<ext>`` (playable), saying so in one line."""
    encoder.finish()
    if not encoder.frames:
        groups.remove()
        print(f"interrupted {source}: no frame was finished", file=sys.stderr)
        return
    partial = _partial_of(target)
    temporary = partial.with_name(f".{partial.name}.{os.getpid()}.tmp{partial.suffix}")
    try:
        _assemble(source, groups.finished(), encoding, temporary, until_video_end=True)
    except Exception as error:
        temporary.unlink(missing_ok=True)
        print(f"interrupted {source}: no partial file ({_reason(error)})", file=sys.stderr)
        return
    temporary.replace(partial)
    print(
        f"interrupted {source}: {encoder.frames} frames written to {partial} "
        "(--resume continues from there)",
        file=sys.stderr,
    )


def _fingerprint(upscaler: Upscaler) -> str:
    """What tells a resumed run that it runs the model it started with: the model's class,
    scale, parameter count and the sum of its parameters' magnitudes, and where it runs."""
    model = upscaler.model
    parameters = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    with torch.no_grad():
        count = sum(parameter.numel() for parameter in parameters)
        total = sum(float(parameter.detach().abs().double().sum()) for parameter in parameters)
    described = upscaler.configuration.describe()
    return f"{type(model).__name__} x{upscaler.scale} {count} {total:.9g} {described}"


def _identity(path: Path) -> dict[str, object]:
    """What tells a resumed run that its source is the one it started on."""
    info = path.stat()
    return {"path": str(path.resolve()), "bytes": info.st_size, "mtime_ns": info.st_mtime_ns}


def _run(
    upscaler: Upscaler,
    container: Any,
    router: ShotRouter,
    encoder: _Encoder,
    log: RoutingLog | None,
    done: int,
    progress: FrameProgress | None,
) -> None:
    """Route every frame of ``container`` and encode those from ``done`` on (the frames before
    are decoded and routed again, so that their shots route the rest as before)."""
    video = container.streams.video[0]
    total = video.frames or 0
    bar = (
        tqdm(total=total or None, initial=done, desc=encoder.name, unit="frame", file=sys.stderr)
        if upscaler.progress and progress is None
        else None
    )
    try:
        with nullcontext(None) if log is None else log.rows() as write:
            for routed in _routed(upscaler, container, video, router):
                if routed.frame.index < done:
                    continue
                plan = encoder.encode(routed)
                if write is not None:
                    write(routed, plan)
                if bar is not None:
                    bar.update()
                if progress is not None:
                    progress(encoder.frames, total)
    finally:
        if bar is not None:
            bar.close()


def _routed(upscaler: Upscaler, container: Any, video: Any, router: ShotRouter) -> Iterator[Routed]:
    """The video's frames with their shots' routing, in order."""
    model = upscaler.model
    scored = upscaler.routing == "image" and model.score_dim is not None
    scored = scored and isinstance(model, ScoredModel)
    for index, decoded in enumerate(container.decode(video)):
        rgb = decoded.to_ndarray(format="rgb24")
        lr = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
        scores = None
        if scored:
            assert isinstance(model, ScoredModel)
            with torch.no_grad():
                scores = model.route_input(lr[None].to(upscaler.device))[0].float().cpu()
        yield from router.push(Frame(index, decoded.pts, lr, scores))
    yield from router.flush()


@dataclass(frozen=True)
class _Encoding:
    """How the output's video stream is encoded (every frame group and the final stream alike,
    so that the groups' packets join into one stream)."""

    name: str
    codec: str
    crf: int
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    global_header: bool
    """Whether the output container keeps the codec's headers out of the packets."""

    def settings(self) -> dict[str, object]:
        return {
            "codec": self.codec,
            "crf": self.crf,
            "size": [self.width, self.height],
            "rate": str(self.rate),
            "time_base": str(self.time_base),
        }

    def options(self) -> dict[str, str]:
        """The encoder's options: the quality, and no B-frames, so that every group's packets
        are decoded in presentation order and the groups' timestamps join without overlap."""
        return {"crf": str(self.crf), "bf": "0"}

    def context(self) -> Any:
        """A fresh encoder (one per frame group)."""
        import av

        context: Any = av.CodecContext.create(self.codec, "w")
        context.width, context.height, context.pix_fmt = self.width, self.height, "yuv420p"
        context.time_base = self.time_base
        context.framerate = self.rate
        context.options = self.options()
        if self.global_header:
            context.flags |= GLOBAL_HEADER
        return context

    def add_to(self, output: Any) -> Any:
        """The video stream of ``output`` that the groups' packets are muxed into."""
        stream = output.add_stream(self.codec, rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.options = self.options()
        return stream


def _encoding(
    container: Any,
    upscaler: Upscaler,
    source: Path,
    target: Path,
    size_for: SizeRule | None,
    max_pixels: int | None,
    crf: int,
    codec: str | None,
) -> _Encoding:
    """The encoding of ``container``'s first video stream (refused over ``max_pixels``) into a
    file named like ``target``: its size from ``size_for`` (even sides), rate and time base
    kept."""
    import av

    if not container.streams.video:
        raise VideoError("no video stream")
    video = container.streams.video[0]
    check_pixels(video.width, video.height, max_pixels)
    size = None if size_for is None else size_for(video.height, video.width)
    height, width = size or (video.height * upscaler.scale, video.width * upscaler.scale)
    codec = codec or default_codec(target)
    try:
        with av.open(str(target), "w") as probe:  # writes nothing: no stream is added
            global_header = bool(probe.format.flags & FORMAT_GLOBAL_HEADER)
        av.CodecContext.create(codec, "w")
    except (av.FFmpegError, ValueError) as error:
        raise VideoError(f"cannot write {target.suffix} with {codec}: {_reason(error)}") from error
    return _Encoding(
        name=source.name,
        codec=codec,
        crf=crf,
        width=max(2, width - width % 2),
        height=max(2, height - height % 2),
        rate=video.average_rate or video.guessed_rate,
        time_base=video.time_base,
        global_header=global_header,
    )


class FrameGroups:
    """The hidden folder ``.<target name>.parts`` beside a video's target: a settings file
    and the encoded packets of each finished frame group, ``<first>-<count>.group`` (written
    under a temporary name and renamed when the group is closed, so a crash never leaves a
    half group under a finished name)."""

    SETTINGS = "settings.json"

    def __init__(self, target: Path) -> None:
        self.folder = target.with_name(f".{target.name}.parts")

    def start(self, settings: dict[str, object], resume: bool) -> int:
        """How many frames are done: with ``resume`` and the same ``settings``, those of the
        finished groups; otherwise none (the folder is started afresh)."""
        if resume and self._settings() == settings:
            finished = self.finished()
            return _group_span(finished[-1])[1] if finished else 0
        if resume and self.folder.exists():
            print(f"{self.folder} was made with other settings: starting over", file=sys.stderr)
        self.remove()
        self.folder.mkdir(parents=True)
        (self.folder / self.SETTINGS).write_text(json.dumps(settings), encoding="utf-8")
        return 0

    def _settings(self) -> object:
        try:
            return json.loads((self.folder / self.SETTINGS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def finished(self) -> list[Path]:
        """The finished groups that follow on from the first frame, in order."""
        groups, end = [], 0
        for path in sorted(self.folder.glob("*.group")):
            first, after = _group_span(path)
            if first != end:
                break
            groups.append(path)
            end = after
        return groups

    def writer(self, first: int) -> _GroupWriter:
        return _GroupWriter(self.folder, first)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _group_span(path: Path) -> tuple[int, int]:
    """(first frame, frame after the last) of a group file named ``<first>-<count>.group``."""
    first, count = path.stem.split("-")
    return int(first), int(first) + int(count)


class _GroupWriter:
    """Packets of one frame group, written as they come and published when closed."""

    def __init__(self, folder: Path, first: int) -> None:
        self.folder = folder
        self.first = first
        self.count = 0
        self.path = folder / f".{first:09d}.part"
        self.file = open(self.path, "wb")  # noqa: SIM115 (closed by close())

    def write(self, packet: Any) -> None:
        data = bytes(packet)
        pts = _NO_TIME if packet.pts is None else packet.pts
        dts = _NO_TIME if packet.dts is None else packet.dts
        self.file.write(_RECORD.pack(pts, dts, packet.is_keyframe, len(data)))
        self.file.write(data)

    def close(self) -> None:
        """Publish the group under its finished name (or drop it when it has no frame)."""
        self.file.close()
        if self.count:
            self.path.replace(self.folder / f"{self.first:09d}-{self.count:09d}.group")
        else:
            self.path.unlink()


def _packets(path: Path, time_base: Fraction) -> Iterator[Any]:
    """The packets of a group file, timed in ``time_base``."""
    import av

    with open(path, "rb") as file:
        while header := file.read(_RECORD.size):
            pts, dts, key, size = _RECORD.unpack(header)
            packet = av.Packet(file.read(size))
            packet.pts = None if pts == _NO_TIME else pts
            packet.dts = None if dts == _NO_TIME else dts
            packet.time_base = time_base
            packet.is_keyframe = bool(key)
            yield packet


class _Encoder:
    """Upscales routed frames and encodes them, at their source timestamps, into frame groups
    of ``group_frames``; each shot's folded routing plan is made once, for all its frames."""

    def __init__(
        self,
        upscaler: Upscaler,
        encoding: _Encoding,
        groups: FrameGroups,
        done: int,
        group_frames: int,
    ) -> None:
        self.upscaler = upscaler
        self.encoding = encoding
        self.groups = groups
        self.group_frames = group_frames
        self.frames = done
        """Frames encoded into finished groups or the open one."""
        self.name = encoding.name
        self._group: _GroupWriter | None = None
        self._context: Any = None
        self._shot: tuple[int, ImageWork] | None = None

    def encode(self, routed: Routed) -> RoutingPlan | None:
        """Upscale and encode one frame; the routing plan it ran (None: not routed per shot)."""
        import av

        work = self._work(routed)
        size = (self.encoding.height, self.encoding.width)
        out = self.upscaler.upscale_tensor(routed.frame.lr, size, work=work)
        pixels = out.permute(1, 2, 0).mul(255.0).round().byte().cpu().numpy()
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = routed.frame.pts
        frame.time_base = self.encoding.time_base
        if self._group is None:
            self._group = self.groups.writer(self.frames)
            self._context = self.encoding.context()
        for packet in self._context.encode(frame):
            self._group.write(packet)
        self._group.count += 1
        self.frames += 1
        if self._group.count == self.group_frames:
            self.finish()
        return None if work is None else work.plan

    def _work(self, routed: Routed) -> ImageWork | None:
        """The shot's network and folded plan (made at the shot's first frame encoded here)."""
        model = self.upscaler.model
        if routed.scores is None or model.tiling != "image":
            return None
        if self._shot is None or self._shot[0] != routed.frame.shot:
            lr = routed.frame.lr[None].to(self.upscaler.device).float()
            with torch.no_grad():
                work = model.prepare(lr, routed.scores[None].to(lr.device), routing="image")
            assert isinstance(work, ImageWork)
            self._shot = (routed.frame.shot, work)
        return self._shot[1]

    def finish(self) -> None:
        """Flush the encoder and close the open group (if any)."""
        if self._group is None:
            return
        group, self._group = self._group, None
        try:
            for packet in self._context.encode(None):
                group.write(packet)
        finally:
            group.close()


def _assemble(
    source: Path,
    groups: list[Path],
    encoding: _Encoding,
    path: Path,
    *,
    until_video_end: bool = False,
) -> None:
    """Mux the frame groups' packets and ``source``'s audio packets, interleaved by time,
    into ``path``; ``until_video_end``: only the audio up to the last frame's end."""
    import av

    with av.open(str(source)) as container, av.open(str(path), "w") as output:
        audio_streams = list(container.streams.audio)
        video = encoding.add_to(output)
        audio = {stream.index: output.add_stream_from_template(stream) for stream in audio_streams}
        pictures = (
            (packet.dts * packet.time_base, 0, packet)
            for group in groups
            for packet in _packets(group, encoding.time_base)
            if packet.dts is not None
        )
        end = _video_end(groups[-1], encoding) if until_video_end else None
        sounds: Iterator[tuple[Fraction, int, Any]] = iter(())
        if audio_streams:
            sounds = (
                (packet.dts * packet.time_base, 1, packet)
                for packet in container.demux(*audio_streams)
                if packet.dts is not None
                and (end is None or packet.pts is None or packet.pts * packet.time_base < end)
            )
        for _, kind, packet in heapq.merge(pictures, sounds, key=lambda item: item[:2]):
            packet.stream = video if kind == 0 else audio[packet.stream.index]
            output.mux(packet)


def _video_end(group: Path, encoding: _Encoding) -> Fraction:
    """When the last frame of ``group`` ends, in seconds."""
    last = max(p.pts for p in _packets(group, encoding.time_base) if p.pts is not None)
    return last * encoding.time_base + 1 / encoding.rate


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
