"""Progress of long upscaling work as plain events, and a terminal view of them.

Every long step of :class:`~mordasr.infer.pipeline.Upscaler` and of ``mordasr upscale`` reports
a :class:`ProgressEvent` to a callback, so a terminal bar (:class:`TqdmProgress`), a log or a
web page can follow the same work. A callback receives events in this order for each file:
``file_start``, then ``tile`` before each tile and once after the last (``retry`` when an
out-of-memory error restarts the image with smaller tiles, ``warning`` for anything the user
should know), then ``file_done`` or ``file_failed``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tqdm.auto import tqdm

Stage = Literal["file_start", "tile", "retry", "warning", "file_done", "file_failed"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of upscaling work.

    ``file_index`` counts from 0 among ``file_count`` files of a batch (0 of 1 for a single
    image); ``tiles_done`` of ``tiles_total`` are the tiles finished in the current pass over the
    image (a pass restarts at 0 after a ``retry``); ``tile_size`` is that pass's input tile side
    (``None``: the whole image); ``message`` explains retries, warnings and failures.
    """

    stage: Stage
    file_index: int = 0
    file_count: int = 1
    path: str | None = None
    tiles_done: int = 0
    tiles_total: int = 0
    tile_size: int | None = None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]
"""What ``progress=`` accepts besides a bool: called with every :class:`ProgressEvent`."""


class TqdmProgress:
    """tqdm bars on stderr: one over the files of a batch (when there are several) and one over
    the tiles of the current image, both with rate and ETA."""

    def __init__(self) -> None:
        self._files: tqdm | None = None
        self._tiles: tqdm | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage == "file_start" and event.file_count > 1 and self._files is None:
            self._files = tqdm(total=event.file_count, desc="files", unit="img", file=sys.stderr)
        if event.stage == "tile":
            self._tile(event)
        elif event.stage in ("retry", "warning", "file_failed"):
            self._close_tiles()
            tqdm.write(f"{event.path or 'image'}: {event.message}", file=sys.stderr)
        if event.stage in ("file_done", "file_failed"):
            self._close_tiles()
            if self._files is not None:
                self._files.update()
                total = self._files.total
                if total is not None and self._files.n >= total:
                    self._files.close()
                    self._files = None

    def _tile(self, event: ProgressEvent) -> None:
        if self._tiles is None or event.tiles_done == 0:
            self._close_tiles()
            self._tiles = tqdm(
                total=event.tiles_total,
                desc="tiles" if event.tile_size is None else f"tiles of {event.tile_size}px",
                unit="tile",
                leave=False,
                file=sys.stderr,
            )
        self._tiles.update(event.tiles_done - self._tiles.n)

    def close(self) -> None:
        """Close any open bar (e.g. when the work is interrupted)."""
        self._close_tiles()
        if self._files is not None:
            self._files.close()
            self._files = None

    def _close_tiles(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
            self._tiles = None


def progress_callback(progress: bool | ProgressCallback | None) -> ProgressCallback | None:
    """The callback for a ``progress=`` argument: True gives :class:`TqdmProgress`."""
    if progress is True:
        return TqdmProgress()
    if progress is False or progress is None:
        return None
    return progress
