"""One `mordasr upscale` batch: where each result goes, the per-file loop and its tally.

Every output name is planned (and refused when it would replace an input or be shared) before
the model is loaded; each file then fails, is skipped or is done on its own, in one line, and the
batch ends with one summary line and, when some failed, a ``failures.csv`` listing them. The web
server names its results with :func:`output_path` too.
"""

from __future__ import annotations

import csv
import pickle
import signal
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from safetensors import SafetensorError
from tqdm.auto import tqdm

from mordasr.infer.launch import shard_files
from mordasr.infer.pipeline import Upscaler, output_size
from mordasr.infer.progress import TqdmProgress
from mordasr.infer.video import (
    ANIMATION_SUFFIXES,
    DEFAULT_CRF,
    is_animation,
    is_video,
    upscale_animation,
    upscale_video,
)
from mordasr.io.image import (
    DataDroppedWarning,
    ImageReadError,
    read_image,
    save_like,
    sniff_format,
)
from mordasr.io.paths import (
    SUBFOLDER,
    InputScan,
    check_output_folder,
    check_plan,
    names_a_file,
    scan_inputs,
    single_output,
)

PROG = "mordasr upscale"
FAILURES_FILE = "failures.csv"
DEFAULT_MAX_PIXELS = 100_000_000
"""``--max-pixels``: the largest input decoded, checked from its header (100 MP: 1.2 GB of
float32 RGB before any upscaling)."""
MODEL_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    SafetensorError,
)
"""What loading a model can raise for a bad name, file or manifest (each shown as one line)."""
_SUFFIX_OF_FORMAT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}


def output_path(source: Path, out_dir: Path, image_format: str, fmt: str, suffix: str) -> Path:
    """Where the result of ``source`` goes: same stem (+ suffix), format kept unless forced."""
    extension = "." + fmt if fmt != "auto" else _SUFFIX_OF_FORMAT.get(image_format, ".png")
    return out_dir / f"{source.stem}{suffix}{extension}"


def plan_outputs(
    files: list[Path],
    out_dir: Path,
    fmt: str,
    suffix: str,
    subfolders: dict[Path, Path] | None = None,
) -> dict[Path, Path]:
    """Where each input's result goes, from its header (below ``out_dir``, in its entry of
    ``subfolders`` if it has one); refuses (raises :class:`~mordasr.io.paths.OutputPlanError`)
    an output that is an input or is shared.

    A file whose header names no image format gets no target: reading it fails with a reason.
    A video (by its extension, :func:`~mordasr.infer.video.is_video`) keeps its container.
    """
    targets: dict[Path, Path] = {}
    for source in files:
        if is_video(source):  # a video keeps its container (its codec follows it)
            folder = out_dir / (subfolders or {}).get(source, Path())
            targets[source] = folder / f"{source.stem}{suffix}{source.suffix.lower()}"
            continue
        try:
            image_format = sniff_format(source)
        except Exception:  # e.g. a decompression bomb: reading it fails with the reason
            image_format = None
        if image_format is not None:
            folder = out_dir / (subfolders or {}).get(source, Path())
            if fmt == "auto" and is_animation(source):  # stays an animation of its format
                targets[source] = folder / f"{source.stem}{suffix}{source.suffix.lower()}"
                continue
            targets[source] = output_path(source, folder, image_format, fmt, suffix)
    check_plan(targets, files)
    return targets


@dataclass(frozen=True)
class BatchPlan:
    """What one process of a batch does, checked before any work: the scanned inputs, each
    one's result (``targets``), its share of them (``shard``; None: all) and whether it says
    what is shared by all processes of a launch (``first``)."""

    scan: InputScan
    out_dir: Path
    targets: dict[Path, Path]
    shard: tuple[int, int] | None = None
    first: bool = True

    @property
    def files(self) -> list[Path]:
        """This share's inputs (the output names were checked across all shares)."""
        return shard_files(self.scan.files, self.shard)


def plan_batch(
    inputs: list[str],
    out_dir: Path,
    *,
    recursive: bool,
    fmt: str,
    suffix: str,
    shard: tuple[int, int] | None,
    first: bool,
) -> BatchPlan:
    """Scan ``inputs`` (printing what is not read when ``first``), place every result and check
    the output folder; raises :class:`~mordasr.io.paths.OutputPlanError` when one cannot work.
    An ``out_dir`` that names an image file (``-o result.png``) takes the one input's result
    (:func:`~mordasr.io.paths.single_output`); the plan's folder is then the file's."""
    scan = scan_inputs(inputs, recursive=recursive)
    for reason, paths in scan.left_out.items() if first else ():
        for path in paths:
            print(printable(f"{PROG}: not read {path}: {reason}"), file=sys.stderr)
    if names_a_file(out_dir):
        targets = single_output(scan, inputs, out_dir, fmt)
        check_output_folder(out_dir.parent)
        return BatchPlan(scan, out_dir.parent, targets, shard, first)
    targets = plan_outputs(scan.files, out_dir, fmt, suffix, scan.subfolders)
    check_output_folder(out_dir)
    return BatchPlan(scan, out_dir, targets, shard, first)


@dataclass(frozen=True)
class ResultOptions:
    """How each input is read and each result sized and saved (the ``upscale`` flags of the
    same names; ``max_pixels``: None for no limit)."""

    outscale: float | None = None
    width: int | None = None
    height: int | None = None
    quality: int = 95
    overwrite: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    crf: int = DEFAULT_CRF
    codec: str | None = None
    """Videos: the encoder (None: H.264, VP9 for WebM)."""
    routing_log: Path | None = None
    """Videos: the CSV each frame's shot and routing is appended to."""
    resume: bool = False
    """Videos: continue a run cut short from its finished frames (kept beside the output)."""


def failures_name(shard: tuple[int, int] | None) -> str:
    """``failures.csv``, or ``failures-K-of-N.csv`` for share K/N: the shares of one output
    folder (processes, machines) never write over each other's list."""
    if shard is None:
        return FAILURES_FILE
    return f"failures-{shard[0]}-of-{shard[1]}.csv"


def write_failures(
    out_dir: Path, failures: list[tuple[Path, str]], name: str = FAILURES_FILE
) -> Path:
    """Write the failures (path, reason) into ``out_dir / name`` (``failures.csv``).

    UTF-8; a name that is not valid UTF-8 keeps its exact bytes (``surrogateescape``, as
    Python decoded it from the file system), so every failure is listed as it is named.
    """
    target = out_dir / name
    with open(target, "w", newline="", encoding="utf-8", errors="surrogateescape") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "reason"])
        writer.writerows((str(path), reason) for path, reason in failures)
    return target


def printable(text: str) -> str:
    """``text`` safe to print on any stream: a file name that is not valid UTF-8 (decoded by
    Python with surrogates) shows its odd bytes as ``\\xe9`` instead of failing the write."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(error: BaseException) -> str:
    """An exception as one line: its first line of text, or its type when it has none."""
    if isinstance(error, MemoryError):
        return f"out of memory ({type(error).__name__}{': ' if str(error) else ''}{error})"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class BatchTerminated(BaseException):
    """Raised in the batch's thread when the process gets SIGTERM, so the batch ends as after
    Ctrl+C: its summary, then status 143. Not an :class:`Exception`, so no per-file handler
    takes it for a failure of the file at hand."""


TERMINATED_STATUS = 128 + signal.SIGTERM


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`BatchTerminated` while the block runs (main thread only:
    elsewhere signals cannot be handled and SIGTERM keeps ending the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise BatchTerminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class BatchTally:
    """What a batch did so far, for its one-line summary."""

    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    ran_on: str = ""
    """The backend and precision that ran the network, once the model is loaded."""

    def fail(self, source: Path, reason: str) -> None:
        self.failed += 1
        self.failures.append((source, reason))

    def summary(
        self,
        scan: InputScan,
        out_dir: Path,
        interrupted: bool = False,
        shard: tuple[int, int] | None = None,
        left_out: bool = True,
    ) -> str:
        """The batch's line; ``shard``: prefixed by the share it covers; ``left_out``: with
        what the scan did not read (one process of a launch says it for all)."""
        parts = [f"{self.done} upscaled, {self.skipped} skipped (exist), {self.failed} failed"]
        if interrupted:
            left = self.total - self.done - self.skipped - self.failed
            parts[0] = f"interrupted: {parts[0]}, {left} not started"
        if shard is not None:
            parts[0] = f"share {shard[0]}/{shard[1]}: {parts[0]}"
        if left_out and scan.left_out:
            entered = SUBFOLDER not in scan.left_out
            hint = "" if entered else " (sub-folders are not entered without --recursive)"
            parts.append(f"not read: {scan.left_out_summary()}{hint}")
        if self.dropped:
            kinds = ", ".join(f"{what} ({n} file(s))" for what, n in self.dropped.items())
            parts.append(f"dropped: {kinds}")
        if self.ran_on:
            parts.append(f"ran on {self.ran_on}")
        return "; ".join(parts) + f" -> {out_dir}"


@contextmanager
def _reporting_drops(source: Path, dropped: set[str]) -> Iterator[None]:
    """Print each :class:`DataDroppedWarning` raised inside as a line about ``source`` and
    collect what was dropped; other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for item in caught:
        if isinstance(item.message, DataDroppedWarning):
            dropped.add(item.message.what)
            tqdm.write(printable(f"note {source}: {item.message}"), file=sys.stderr)
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def _upscale_one(
    upscaler: Upscaler,
    source: Path,
    target: Path | None,
    options: ResultOptions,
    tally: BatchTally,
) -> None:
    """Upscale one file into ``target`` and count the outcome; whatever goes wrong with this
    file (a bad or hostile file, running out of memory, a failed write) is one line, a row of
    ``failures.csv`` and no partial output, and the batch goes on. A result is published only
    under a free name unless ``overwrite``: one that another run wrote meanwhile is kept and
    this file counted as skipped."""
    animated = target is not None and target.suffix.lower() in ANIMATION_SUFFIXES
    if target is not None and (is_video(source) or (animated and is_animation(source))):
        _upscale_frames_one(upscaler, source, target, options, tally)
        return
    dropped: set[str] = set()
    try:
        with _reporting_drops(source, dropped):
            decoded = read_image(source, max_pixels=options.max_pixels)
        if target is None:
            raise ImageReadError(source, "its format could not be detected from its header")
    except ImageReadError as error:
        tqdm.write(printable(f"skipped {source}: {error}"), file=sys.stderr)
        tally.fail(source, error.reason)
        return
    except Exception as error:  # e.g. MemoryError or a decoder's own error while reading
        tqdm.write(printable(f"skipped {source}: {one_line(error)}"), file=sys.stderr)
        tally.fail(source, one_line(error))
        return
    if target.exists() and not options.overwrite:
        tqdm.write(
            printable(f"skipped {source}: {target} exists (use --overwrite)"), file=sys.stderr
        )
        tally.skipped += 1
        return
    try:
        height, width = decoded.tensor.shape[-2:]
        size = output_size(
            height,
            width,
            upscaler.scale,
            outscale=options.outscale,
            out_width=options.width,
            out_height=options.height,
        )
        result = upscaler.upscale_decoded(decoded, size)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _reporting_drops(source, dropped):
            save_like(
                target,
                result.image,
                decoded,
                alpha=result.alpha,
                quality=options.quality,
                overwrite=options.overwrite,
            )
    except FileExistsError:  # another run wrote it since the check above: theirs is kept
        tqdm.write(
            printable(f"skipped {source}: {target} exists (use --overwrite)"), file=sys.stderr
        )
        tally.skipped += 1
        return
    except Exception as error:  # the save is atomic: nothing of this result is left
        tqdm.write(printable(f"failed {source}: {one_line(error)}"), file=sys.stderr)
        tally.fail(source, one_line(error))
        return
    tally.done += 1
    tally.dropped.update(dropped)


def _upscale_frames_one(
    upscaler: Upscaler, source: Path, target: Path, options: ResultOptions, tally: BatchTally
) -> None:
    """Upscale one video or animated image into ``target`` and count the outcome, as
    :func:`_upscale_one` does for an image: a failure is one line and a row of
    ``failures.csv``, and no output."""

    def size_for(height: int, width: int) -> tuple[int, int] | None:
        return output_size(
            height,
            width,
            upscaler.scale,
            outscale=options.outscale,
            out_width=options.width,
            out_height=options.height,
        )

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_video(source):
            upscale_video(
                upscaler,
                source,
                target,
                size_for=size_for,
                crf=options.crf,
                codec=options.codec,
                routing_log=options.routing_log,
                overwrite=options.overwrite,
                max_pixels=options.max_pixels,
                resume=options.resume,
            )
        else:
            upscale_animation(
                upscaler,
                source,
                target,
                size_for=size_for,
                overwrite=options.overwrite,
                max_pixels=options.max_pixels,
            )
    except FileExistsError:
        tqdm.write(
            printable(f"skipped {source}: {target} exists (use --overwrite)"), file=sys.stderr
        )
        tally.skipped += 1
        return
    except Exception as error:
        tqdm.write(printable(f"failed {source}: {one_line(error)}"), file=sys.stderr)
        tally.fail(source, one_line(error))
        return
    tally.done += 1


def run_batch(
    plan: BatchPlan,
    options: ResultOptions,
    load: Callable[[], Upscaler],
    *,
    model: str,
    bars: TqdmProgress | None = None,
) -> int:
    """Load the model (``load``; ``model`` names it in messages), upscale this share's files
    and print the summary: exit status 0, 1 if any file failed (listed in ``failures.csv``), 2
    when the model cannot load or the output folder cannot be made, 130 when interrupted
    (Ctrl+C) and 143 when terminated (SIGTERM), each after the same summary (``bars``, the
    model's progress bars, are closed first)."""
    files = plan.files
    tally = BatchTally(total=len(files))
    try:
        with sigterm_raises():
            return _run_files(plan, options, load, model, tally)
    except (KeyboardInterrupt, BatchTerminated) as stop:
        if bars is not None:  # an interrupted batch leaves their lines open
            bars.close()
        print(printable(_summary(tally, plan, interrupted=True)), file=sys.stderr)
        return 130 if isinstance(stop, KeyboardInterrupt) else TERMINATED_STATUS


def _run_files(
    plan: BatchPlan,
    options: ResultOptions,
    load: Callable[[], Upscaler],
    model: str,
    tally: BatchTally,
) -> int:
    """:func:`run_batch` up to its interruption: load, the files one by one, the summary."""
    files = plan.files
    try:
        upscaler = load()
    except MODEL_ERRORS as error:
        print(f"{PROG}: cannot load model {model}: {one_line(error)}", file=sys.stderr)
        return 2
    tally.ran_on = upscaler.configuration.describe()
    try:
        plan.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"{PROG}: cannot create {plan.out_dir}: {one_line(error)}", file=sys.stderr)
        return 2
    for index, source in enumerate(files):
        upscaler.begin_file(index, len(files), source)
        failed = tally.failed
        _upscale_one(upscaler, source, plan.targets.get(source), options, tally)
        upscaler.end_file(tally.failures[-1][1] if tally.failed > failed else None)
    line = _summary(tally, plan)
    if tally.failures:
        listed = write_failures(plan.out_dir, tally.failures, failures_name(plan.shard))
        line += f" (failures listed in {listed})"
    print(printable(line))
    return 1 if tally.failed else 0


def _summary(tally: BatchTally, plan: BatchPlan, interrupted: bool = False) -> str:
    """The summary line of ``plan``'s batch so far."""
    return tally.summary(
        plan.scan, plan.out_dir, interrupted=interrupted, shard=plan.shard, left_out=plan.first
    )
