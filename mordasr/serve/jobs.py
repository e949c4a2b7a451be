"""The job queue behind the web page: uploads checked like CLI inputs, one background worker.

Every upload becomes a :class:`Job` with its own folder under the queue's root, holding the
input and, once done, the result. An upload named as a video (``.mp4``, ``.webm``, ...) is
taken when PyAV reads it and it is short (``max_video_frames``); its result keeps the
container and the sound, and its progress counts frames. One worker thread runs the jobs in
order (CPU runs take minutes, so two at once would only share the cores); the state lives in
the server, so a page reloaded in the browser lists every job until the server stops. A job is
cancelled while queued (it never runs) or while running (at the next tile, or frame: the
worker's progress callback raises :class:`JobCancelled`). Files are only ever served from a
job's own folder, by name.
"""

from __future__ import annotations

import enum
import io
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, UnidentifiedImageError

from mordasr.infer.batch import output_path
from mordasr.infer.pipeline import Upscaler, output_size
from mordasr.infer.progress import ProgressEvent
from mordasr.infer.video import VideoError, upscale_video, video_facts
from mordasr.io.image import ImageReadError, read_image, save_image, save_like
from mordasr.io.paths import VIDEO_SUFFIXES
from mordasr.nets.loaders import PRETRAINED
from mordasr.sr.mor_sr import BUILTIN

OUTPUT_FORMATS = ("auto", "png", "jpg", "webp", "tif")
"""Result formats the page offers (``auto``: the input's)."""

BROWSER_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"})
"""Formats a browser shows; other inputs and results get a PNG copy for the comparison."""

MAX_VIDEO_FRAMES = 300
"""Longest video upload, in frames (10 s at 30 fps): a CPU takes minutes per second of it."""

MIN_TILE = 96
"""Smallest tile side: more than twice the Upscaler's default 32-pixel overlap."""
MAX_TILE = 4096


def available_models(default: str = "default") -> list[str]:
    """The models the page offers: the server's ``--model`` first, then the built-in ones.

    Only these can be picked, so a page never makes the server load a path of its choosing.
    """
    names = [default, *BUILTIN, *PRETRAINED, "bicubic"]
    return list(dict.fromkeys(names))


JobProgress = Callable[[int, int], None]
"""How a runner reports a job's progress: ``(tiles done, tiles in all)``; it raises
:class:`JobCancelled` once the job is cancelled, which stops the work at that tile."""


class UploadError(ValueError):
    """An upload that cannot become a job; the message is one line meant for the page."""


class JobCancelled(Exception):
    """Raised inside a running job when its cancellation was requested."""


class JobState(str, enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class Settings:
    """What the page asked for one job.

    ``tile`` is an input tile side (0: the whole image) or ``"auto"`` where the Upscaler
    chooses; ``strength`` and ``outscale`` are ``None`` where not asked for (or not supported
    by this version's :class:`~mordasr.infer.pipeline.Upscaler`).
    """

    model: str = "default"
    tile: int | str = 256
    format: str = "auto"
    strength: float | None = None
    outscale: float | None = None


def parse_settings(
    models: list[str],
    model: str,
    tile: str,
    image_format: str,
    strength: float | None,
    outscale: float | None,
) -> Settings:
    """Check the form values of an upload; raises :class:`UploadError` with a one-line reason."""
    if model not in models:
        raise UploadError(f"unknown model {model!r}; choose from {', '.join(models)}")
    if image_format not in OUTPUT_FORMATS:
        choices = ", ".join(OUTPUT_FORMATS)
        raise UploadError(f"unknown format {image_format!r}; choose from {choices}")
    tile_value: int | str
    if tile == "auto":
        tile_value = "auto"
    else:
        try:
            tile_value = int(tile)
        except ValueError:
            raise UploadError(f"tile must be a whole number of pixels, got {tile!r}") from None
        if not (tile_value == 0 or MIN_TILE <= tile_value <= MAX_TILE):
            raise UploadError(
                f"tile must be 0 (whole image) or {MIN_TILE}..{MAX_TILE}, got {tile_value}"
            )
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise UploadError(f"strength must lie in [0, 1], got {strength}")
    if outscale is not None and not 1.0 <= outscale <= 8.0:
        raise UploadError(f"output scale must lie in [1, 8], got {outscale}")
    return Settings(
        model=model,
        tile=tile_value,
        format=image_format,
        strength=strength,
        outscale=outscale,
    )


@dataclass
class Job:
    """One uploaded image and what became of it."""

    id: str
    name: str  # the upload's file name, for display and download names only
    folder: Path
    settings: Settings
    input_file: str
    input_view: str
    input_size: tuple[int, int]
    state: JobState = JobState.QUEUED
    tiles_done: int = 0
    tiles_total: int = 0
    error: str | None = None
    result_file: str | None = None
    result_view: str | None = None
    result_size: tuple[int, int] | None = None
    seconds: float | None = None
    created: float = field(default_factory=time.time)
    cancel_requested: bool = False
    kind: str = "image"
    """``image`` or ``video`` (shown by the page in a video element)."""

    def files(self) -> set[str]:
        """Names of the files this job may serve (all inside its folder)."""
        names = {self.input_file, self.input_view, self.result_file, self.result_view}
        return {name for name in names if name is not None}

    def download_name(self) -> str:
        """The name a downloaded result is saved under: the upload's stem plus a suffix."""
        suffix = Path(self.result_file or "").suffix
        return f"{Path(self.name).stem}-mordasr{suffix}"

    def to_json(self) -> dict[str, Any]:
        """The job as the page reads it."""
        base = f"/api/jobs/{self.id}/files/"
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "state": self.state.value,
            "tiles_done": self.tiles_done,
            "tiles_total": self.tiles_total,
            "error": self.error,
            "settings": {
                "model": self.settings.model,
                "tile": self.settings.tile,
                "format": self.settings.format,
                "strength": self.settings.strength,
                "outscale": self.settings.outscale,
            },
            "input_size": list(self.input_size),
            "result_size": list(self.result_size) if self.result_size else None,
            "seconds": self.seconds,
            "input_url": base + self.input_view,
            "result_url": base + self.result_view if self.result_view else None,
            "download_url": base + self.result_file + "?download=1" if self.result_file else None,
        }


class Runner(Protocol):
    """Does a job's work: writes its result into its folder, reporting tiles to ``progress``."""

    def __call__(self, job: Job, progress: JobProgress) -> None: ...


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _safe_name(name: str) -> str:
    """A display name without folders or control characters (never used as a path)."""
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return base[:120] or "image"


class UpscaleRunner:
    """Runs jobs with :class:`~mordasr.infer.pipeline.Upscaler`, keeping the last one loaded.

    A job with the same model and options as the previous one reuses its Upscaler (loading a
    model takes seconds); its tile progress goes to whichever job is running. Strength, output
    scale and tile go to the Upscaler as the job asked.
    """

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._loaded: tuple[tuple[Any, ...], Upscaler] | None = None
        self._report: JobProgress | None = None

    def _forward(self, event: ProgressEvent) -> None:
        """The Upscaler's ``tile`` progress events, to the running job's progress."""
        if self._report is not None and event.stage == "tile":
            self._report(event.tiles_done, event.tiles_total)

    def _upscaler(self, settings: Settings) -> Upscaler:
        key = (settings.model, settings.tile, settings.strength)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None  # free the previous model before loading the next
            options: dict[str, Any] = {"tile": settings.tile or None, "progress": self._forward}
            if settings.strength is not None and settings.strength != 1.0:
                options["strength"] = settings.strength
            self._loaded = (key, Upscaler(settings.model, device=self.device, **options))
        return self._loaded[1]

    def __call__(self, job: Job, progress: JobProgress) -> None:
        settings = job.settings
        upscaler = self._upscaler(settings)
        if job.kind == "video":
            self._video(job, upscaler, progress)
            return
        decoded = read_image(job.folder / job.input_file)
        height, width = decoded.tensor.shape[-2:]
        size = output_size(height, width, upscaler.scale, outscale=settings.outscale)
        self._report = progress
        try:
            result = upscaler.upscale_decoded(decoded, size=size)
        finally:
            self._report = None
        target = output_path(Path("result"), job.folder, decoded.format, settings.format, "")
        save_like(target, result.image, decoded, alpha=result.alpha)
        job.result_file = job.result_view = target.name
        job.result_size = (int(result.image.shape[-1]), int(result.image.shape[-2]))
        with Image.open(target) as saved:
            displayable = saved.format in BROWSER_FORMATS
        if not displayable:
            save_image(job.folder / "result-view.png", result.image, alpha=result.alpha)
            job.result_view = "result-view.png"

    def _video(self, job: Job, upscaler: Upscaler, progress: JobProgress) -> None:
        """Upscale a video job into ``result<ext>`` (the input's container), frame by frame;
        its progress counts frames, and a cancellation stops it at the next frame."""
        source = job.folder / job.input_file
        frames = video_facts(source).frames
        target = job.folder / f"result{source.suffix}"

        def size_for(height: int, width: int) -> tuple[int, int] | None:
            return output_size(height, width, upscaler.scale, outscale=job.settings.outscale)

        try:
            upscale_video(
                upscaler,
                source,
                target,
                size_for=size_for,
                overwrite=True,
                progress=lambda done, total: progress(done, total or frames),
            )
        except VideoError as error:
            if isinstance(error.__cause__, JobCancelled):
                raise JobCancelled from None
            raise
        job.result_file = job.result_view = target.name
        facts = video_facts(target)
        job.result_size = (facts.width, facts.height)


class JobQueue:
    """Jobs under ``root`` (default: a temporary folder removed by :meth:`stop`), run one at a
    time by a background worker with ``runner``.

    Args:
        runner: does each job's work (default :class:`UpscaleRunner` on ``device``).
        root: folder holding one sub-folder per job.
        max_bytes: largest accepted upload.
        max_pixels: largest accepted input (width x height, of each frame of a video).
        max_video_frames: longest accepted video.
    """

    def __init__(
        self,
        runner: Runner | None = None,
        root: str | Path | None = None,
        *,
        max_bytes: int = 50 * 2**20,
        max_pixels: int = 16 * 2**20,
        max_video_frames: int = MAX_VIDEO_FRAMES,
    ) -> None:
        self.runner: Runner = runner or UpscaleRunner()
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="mordasr-serve-") if root is None else root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.max_video_frames = max_video_frames
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pending: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="mordasr-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Cancel what is left, stop the worker and remove a temporary root."""
        with self._lock:
            for job in self._jobs.values():
                job.cancel_requested = True
        if self._thread is not None:
            self._pending.put(None)
            self._thread.join(timeout)
            self._thread = None
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def submit(self, name: str, data: bytes, settings: Settings) -> Job:
        """Check an upload by content and queue it; raises :class:`UploadError` if it is no
        image this server takes (nothing is kept of a refused upload)."""
        name = _safe_name(name)
        if len(data) > self.max_bytes:
            raise UploadError(f"{name}: larger than the {self.max_bytes // 2**20} MB limit")
        suffix = Path(name).suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            return self._submit_video(name, suffix, data, settings)
        try:
            with warnings.catch_warnings():  # the pixel limit below replaces Pillow's warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
            with image:
                size = image.size  # known before decoding: a huge image is refused unread
        except Image.DecompressionBombError as error:
            raise UploadError(_one_line(f"{name}: {error}")) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
            size = None  # not Pillow's: read_image below decides (e.g. float TIFF) or refuses
        message = self._too_many_pixels(name, *size) if size else None
        if message is not None:
            raise UploadError(message)
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir()
        source = folder / "upload"
        source.write_bytes(data)
        try:
            decoded = read_image(source, max_pixels=self.max_pixels)
        except ImageReadError as error:
            message = f"{name}: {error.reason}"
        except Exception as error:  # e.g. MemoryError: this upload fails, the server goes on
            message = f"{name}: cannot be read ({type(error).__name__})"
        else:
            height, width = decoded.tensor.shape[-2:]
            message = self._too_many_pixels(name, width, height)
        if message is not None:
            shutil.rmtree(folder, ignore_errors=True)
            raise UploadError(_one_line(message))
        input_file = output_path(Path("input"), folder, decoded.format, "auto", "").name
        source.rename(folder / input_file)
        input_view = input_file
        if decoded.format not in BROWSER_FORMATS:
            input_view = "input-view.png"
            save_image(folder / input_view, decoded.tensor, alpha=decoded.alpha)
        size = (int(decoded.tensor.shape[-1]), int(decoded.tensor.shape[-2]))
        job = Job(job_id, name, folder, settings, input_file, input_view, size)
        with self._lock:
            self._jobs[job_id] = job
        self._pending.put(job_id)
        return job

    def _submit_video(self, name: str, suffix: str, data: bytes, settings: Settings) -> Job:
        """Queue a video upload that PyAV reads, within the frame size and count limits."""
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir()
        source = folder / f"input{suffix}"
        source.write_bytes(data)
        try:
            facts = video_facts(source)
        except VideoError as error:
            message: str | None = f"{name}: {error}"
        else:
            message = self._too_many_pixels(name, facts.width, facts.height)
            if message is None and facts.frames > self.max_video_frames:
                message = (
                    f"{name}: {facts.frames} frames is more than the {self.max_video_frames} "
                    "frame limit of a video here"
                )
        if message is not None:
            shutil.rmtree(folder, ignore_errors=True)
            raise UploadError(_one_line(message))
        size = (facts.width, facts.height)
        job = Job(job_id, name, folder, settings, source.name, source.name, size, kind="video")
        with self._lock:
            self._jobs[job_id] = job
        self._pending.put(job_id)
        return job

    def _too_many_pixels(self, name: str, width: int, height: int) -> str | None:
        if width * height <= self.max_pixels:
            return None
        return f"{name}: {width}x{height} is more than the {self.max_pixels:,} pixel limit"

    def jobs(self) -> list[Job]:
        """Every job, oldest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda job: job.created)

    def get(self, job_id: str) -> Job:
        """The job of that id; raises ``KeyError`` for an unknown one."""
        with self._lock:
            return self._jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (a finished one is left as it is)."""
        with self._lock:
            job = self._jobs[job_id]
            if job.state == JobState.QUEUED:
                job.state = JobState.CANCELLED
            elif job.state == JobState.RUNNING:
                job.cancel_requested = True
            return job

    def file(self, job_id: str, name: str) -> Path:
        """The path of one of a job's files; ``KeyError`` for an unknown job or file,
        ``PermissionError`` for anything that resolves outside the job's folder."""
        job = self.get(job_id)
        if name not in job.files():
            raise KeyError(name)
        folder = job.folder.resolve()
        path = (folder / name).resolve()
        if not path.is_relative_to(folder) or not path.is_file():
            raise PermissionError(name)
        return path

    def results_zip(self) -> bytes:
        """A zip of every finished result, named after the uploads."""
        buffer = io.BytesIO()
        used: set[str] = set()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for job in self.jobs():
                if job.state != JobState.DONE or job.result_file is None:
                    continue
                name = job.download_name()
                stem, suffix, count = Path(name).stem, Path(name).suffix, 1
                while name in used:
                    count += 1
                    name = f"{stem}-{count}{suffix}"
                used.add(name)
                archive.write(self.file(job.id, job.result_file), name)
        return buffer.getvalue()

    def _progress(self, job: Job) -> JobProgress:
        def report(done: int, total: int) -> None:
            if job.cancel_requested:
                raise JobCancelled
            job.tiles_done, job.tiles_total = done, total

        return report

    def _work(self) -> None:
        while True:
            job_id = self._pending.get()
            if job_id is None:
                return
            with self._lock:
                job = self._jobs[job_id]
                if job.state != JobState.QUEUED or job.cancel_requested:
                    continue
                job.state = JobState.RUNNING
            self._run(job)

    def _run(self, job: Job) -> None:
        start = time.perf_counter()
        try:
            self.runner(job, self._progress(job))
            if job.cancel_requested:
                raise JobCancelled
        except JobCancelled:
            state, error = JobState.CANCELLED, None
        except Exception as failure:  # a failed job must not stop the worker
            state, error = JobState.FAILED, _one_line(f"{type(failure).__name__}: {failure}")
        else:
            state, error = JobState.DONE, None
        with self._lock:
            job.state, job.error = state, error
            job.seconds = round(time.perf_counter() - start, 2)
            if state != JobState.DONE:
                for name in (job.result_file, job.result_view):
                    if name is not None:
                        (job.folder / name).unlink(missing_ok=True)
                job.result_file = job.result_view = job.result_size = None
