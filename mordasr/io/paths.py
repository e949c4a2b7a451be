"""Plan input and output paths so that a batch never destroys a user's file.

Shared by the command lines that turn a set of input files into a folder of outputs
(``mordasr upscale``, ``mordasr degrade``):

- :func:`scan_inputs` lists the files to process and says what it did not enter (sub-folders,
  dangling links, unreadable entries), so a summary can report it instead of hiding it;
- :func:`check_plan` refuses, before any work, an output that would replace an input (whatever
  ``--overwrite`` says) and two inputs whose outputs would share one name (one result would be
  lost): it refuses rather than inventing a disambiguated name, so every output keeps the
  predictable name of its input;
- :func:`check_output_folder` tells whether the output folder can be created and written before
  a model is loaded or an image computed;
- :func:`single_output` places the one result of a batch given ``-o FILE`` (an image, GIF or
  video file name that is not an existing folder), and refuses it for several inputs or for
  a video written as an image (or the reverse).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mordasr.io.image import format_of_suffix

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".m4v", ".avi"})
"""Extensions read and written as videos."""
SUBFOLDER = "sub-folder"
DANGLING_LINK = "dangling link"
NOT_A_FILE = "not a regular file"
UNREADABLE = "unreadable"


class OutputPlanError(ValueError):
    """The outputs of a batch would destroy an input or another output, or cannot be written."""


@dataclass
class InputScan:
    """The files of a batch, in order and without repeats, and the entries left out by reason."""

    files: list[Path] = field(default_factory=list)
    left_out: dict[str, list[Path]] = field(default_factory=dict)
    subfolders: dict[Path, Path] = field(default_factory=dict)
    """For files found below a named folder with ``recursive``: their folder relative to it."""

    def leave_out(self, path: Path, reason: str) -> None:
        self.left_out.setdefault(reason, []).append(path)

    def left_out_summary(self) -> str:
        """E.g. ``"2 sub-folder, 1 dangling link"`` (empty when nothing was left out)."""
        return ", ".join(f"{len(paths)} {reason}" for reason, paths in self.left_out.items())


def _entry_kind(path: Path) -> str | None:
    """None for a regular file (links followed), else why the folder entry is left out."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return DANGLING_LINK if path.is_symlink() else UNREADABLE
    except OSError:
        return UNREADABLE
    if stat.S_ISDIR(mode):
        return SUBFOLDER
    if not stat.S_ISREG(mode):
        return NOT_A_FILE
    return None if os.access(path, os.R_OK) else UNREADABLE


def scan_inputs(items: Sequence[str | Path], recursive: bool = False) -> InputScan:
    """Files named directly, plus the regular files inside named folders (sorted).

    Named files are kept as given (a missing one fails when it is read, with its own reason).
    Folders are entered recursively only with ``recursive`` (each file found below a named
    folder then records its relative folder in :attr:`InputScan.subfolders`); otherwise their
    sub-folders are left out. Dangling links, special files and entries that cannot be read are
    recorded in :attr:`InputScan.left_out`. A file reached twice (named and inside a named
    folder, or through a link) is processed once.
    """
    scan = InputScan()
    seen: set[str] = set()

    def add(path: Path, subfolder: Path) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            scan.files.append(path)
            if subfolder.parts:
                scan.subfolders[path] = subfolder

    def walk(folder: Path, subfolder: Path) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            scan.leave_out(folder, UNREADABLE)
            return
        for entry in entries:
            reason = _entry_kind(entry)
            if reason is None:
                add(entry, subfolder)
            elif reason == SUBFOLDER and recursive and not entry.is_symlink():
                walk(entry, subfolder / entry.name)
            else:
                scan.leave_out(entry, reason)

    for item in items:
        path = Path(item)
        if path.is_dir():
            walk(path, Path())
        else:
            add(path, Path())
    return scan


def _identities(path: Path) -> list[object]:
    """Keys under which a path is one file: its resolved name and, if it exists, its inode."""
    keys: list[object] = [os.path.realpath(path)]
    try:
        info = path.stat()
    except OSError:
        return keys
    return [*keys, (info.st_dev, info.st_ino)]


def check_plan(targets: Mapping[Path, Path], inputs: Sequence[Path] = ()) -> None:
    """Refuse a plan (source -> output) that would destroy data; raises :class:`OutputPlanError`.

    An output must be none of ``inputs`` (default: the sources), whether reached by the same
    name, a link or a hard link, and no two sources may share an output. The message names the
    files and how to avoid the clash.
    """
    by_output: dict[str, list[Path]] = {}
    for source, target in targets.items():
        by_output.setdefault(os.path.realpath(target), []).append(source)
    for sources in by_output.values():
        if len(sources) > 1:
            names = " and ".join(str(s) for s in sources)
            raise OutputPlanError(
                f"{names} would all be written to {targets[sources[0]]}; nothing was written "
                "(process them into different -o folders, or rename one)"
            )
    originals = {key: path for path in inputs or targets for key in _identities(path)}
    for target in targets.values():
        original = next((originals[k] for k in _identities(target) if k in originals), None)
        if original is not None:
            raise OutputPlanError(
                f"the output {target} would replace the input {original}; inputs are never "
                "replaced, even with --overwrite: choose another -o folder or a --suffix"
            )


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(out_dir: str | Path) -> None:
    """Check that ``out_dir`` is, or can be created as, a writable folder, without creating it.

    The test writes (and removes) a probe file in the folder or in its nearest existing parent,
    so it holds for any user (root included) and any file system (read-only mounts included).
    """
    out_dir = Path(out_dir)
    base = _nearest_existing(out_dir)
    if not base.is_dir():
        where = "is" if base == Path(os.path.abspath(out_dir)) else f"is under {base},"
        raise OutputPlanError(f"the output folder {out_dir} {where} a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".mordasr-probe-"):
            pass
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            reason = f"{reason}; choose a writable -o folder"
        message = f"cannot write to the output folder {out_dir} ({base}): {reason}"
        raise OutputPlanError(message) from error


def names_a_file(out: str | Path) -> bool:
    """Whether ``-o out`` names one output file rather than a folder: it ends in an image,
    animation or video extension (``.png``, ``.jpg``, ``.gif``, ``.mp4``, ...) and is not an
    existing folder."""
    suffix = Path(out).suffix.lower()
    named = format_of_suffix(out) is not None or suffix in VIDEO_SUFFIXES or suffix == ".gif"
    return named and not Path(out).is_dir()


def single_output(
    scan: InputScan, inputs: Sequence[str | Path], out: Path, fmt: str = "auto"
) -> dict[Path, Path]:
    """The plan (source -> ``out``) of ``-o FILE``: one named input file, written in the format
    of ``out``'s extension; raises :class:`OutputPlanError` for several inputs (or a folder)
    and for a ``--format`` that disagrees with the extension."""
    folders = [Path(item) for item in inputs if Path(item).is_dir()]
    if len(scan.files) != 1 or folders:
        count = f"{len(scan.files)} inputs" if not folders else f"the folder {folders[0]}"
        raise OutputPlanError(
            f"-o {out} names one file but there are {count}: with several inputs -o must be "
            f"a folder (e.g. -o {out.with_suffix('')}/); nothing was written"
        )
    if fmt != "auto" and format_of_suffix(f".{fmt}") != format_of_suffix(out):
        raise OutputPlanError(f"--format {fmt} disagrees with -o {out}: drop one of them")
    source = scan.files[0]
    video_in, video_out = (path.suffix.lower() in VIDEO_SUFFIXES for path in (source, out))
    if video_in and not video_out:
        raise OutputPlanError(
            f"{source} is a video: -o must name a video file (.mp4, .mkv, ...) or a folder; "
            "nothing was written"
        )
    if video_out and not video_in:
        raise OutputPlanError(
            f"-o {out} names a video but {source} is not one; nothing was written"
        )
    if out.suffix.lower() == ".gif" and source.suffix.lower() != ".gif":
        raise OutputPlanError(f"-o {out}: only a GIF is written as a GIF; nothing was written")
    targets = {source: out}
    check_plan(targets, scan.files)
    return targets
