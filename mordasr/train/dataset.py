"""Streaming training data: HR crops decoded on demand in DataLoader workers, bounded memory.

:class:`~mordasr.train.data.PatchSampler` keeps every decoded image for the whole run, which is
right for a few hundred photos and impossible at LSDIR's 85k. Here nothing is kept: each sample
is one file read, decoded and cropped when it is asked for, in a DataLoader worker when there
are workers. Memory is that of the batches in flight, however large the dataset.

Sources are folders (searched recursively for images) and/or file lists (``.txt``, one path
per line, relative paths taken from the list's folder, blank lines and ``#`` comments ignored).

Every sample is a pure function of ``(seed, step, slot, process)``: the file comes from a seeded
per-epoch permutation of all files, of which process ``p`` of ``N`` takes every N-th entry
(:func:`shard_indices`, disjoint shards that cover the epoch), and the crop and flips from a
generator seeded by the same words. So a loader started at step ``s`` yields exactly what an
uninterrupted one yields from ``s`` on, with any number of workers: resuming stays exact.
Unreadable files are skipped (the sample falls through to the next file of the shard), reported
with the batch, and warned about once and counted by :class:`TrainingBatches`; never fatal
unless no file of a shard can be read.

    dataset = HRCropDataset(find_training_images(["photos/", "more.txt"]), 512, batch_size=4)
    for batch in TrainingBatches(dataset, start_step=0, num_workers=2):   # endless
        batch["hr"]  # (4, 3, 512, 512) float in [0, 1], batch["step"] its step
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mordasr.degrade import degrade, resolve_config
from mordasr.io.image import ImageReadError, read_rgb
from mordasr.train.data import IMAGE_SUFFIXES

Key = tuple[int, int]
"""What the loader asks the dataset for: ``(step, slot)``, slot the position in the batch."""

_EPOCH_SALT = 0x0E90C4
_SAMPLE_SALT = 0x5A3B1E
_DEGRADE_SALT = 0xDE6AD3


def mix_seed(*words: int) -> int:
    """A 63-bit seed from non-negative integers (numpy's SeedSequence: no global RNG state)."""
    state = np.random.SeedSequence(list(words)).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


def preset_chunks(batch: Tensor, presets: int, index: int) -> list[tuple[int, Tensor]]:
    """Batch ``index`` of a run split between ``presets`` presets: ``(preset, images)`` for
    each consecutive chunk of ``batch.tensor_split(presets)``, empty ones included.

    Chunk ``j`` goes to preset ``(index * B + j) % presets`` (B the batch size): a batch that
    the number of presets divides is split in preset order, and otherwise the larger chunks go
    to the presets next in turn, so that over consecutive batches every preset gets the same
    share of images, as if they were dealt out one by one (also when B < ``presets``).
    """
    offset = index * batch.shape[0] % presets
    return [((offset + j) % presets, chunk) for j, chunk in enumerate(batch.tensor_split(presets))]


def read_file_list(path: str | Path) -> list[Path]:
    """The paths a file list names, one per line; relative ones are taken from the list's
    folder; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    folder = path.resolve().parent
    files = []
    for line in path.read_text().splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            item = Path(entry).expanduser()
            files.append(item if item.is_absolute() else folder / item)
    return files


def find_training_images(sources: Sequence[str | Path]) -> list[Path]:
    """Image files of the sources, in order: each folder's images (recursively, sorted) and
    each file list's entries as written. A missing source or no image at all is an error; a
    listed file that is missing or corrupt is only skipped later, when it is read."""
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = (p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files.extend(sorted(found))
        elif source.is_file():
            files.extend(read_file_list(source))
        else:
            raise FileNotFoundError(f"training source {source} is neither a folder nor a file list")
    if not files:
        raise FileNotFoundError(f"no training images under {[str(s) for s in sources]}")
    return files


def shard_indices(order: Sequence[int], process: int, num_processes: int) -> list[int]:
    """Process ``process``'s share of ``order``: every ``num_processes``-th entry from
    ``process`` on. The shards of all processes are disjoint and together cover ``order``."""
    if not 0 <= process < num_processes:
        raise ValueError(f"process {process} is not in [0, {num_processes})")
    return list(order[process::num_processes])


class HRCropDataset(Dataset[dict[str, Any]]):
    """Random square HR crops, one file decoded per sample, for one process of ``num_processes``.

    Indexed by ``(step, slot)`` (see :class:`StepSampler`). The ``n``-th sample of the process
    (``n = step * batch_size + slot``) is entry ``n mod L`` of the process's shard of epoch
    ``n // L``, ``L = len(files) // num_processes`` (equal shards keep processes in step).
    Images smaller than a crop are padded by reflection (replication where too small for it).
    Items hold a uint8 crop ``hr`` (3, P, P), their ``step`` and the ``skipped`` files
    (``(path, reason)``) passed over to find a readable one.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        patch_size: int,
        batch_size: int,
        augment: bool = True,
        seed: int = 0,
        process: int = 0,
        num_processes: int = 1,
    ) -> None:
        if patch_size < 1 or batch_size < 1:
            raise ValueError("patch_size and batch_size must be >= 1")
        if len(files) < num_processes:
            raise ValueError(f"{len(files)} training files cannot feed {num_processes} processes")
        shard_indices([], process, num_processes)
        self.files = [str(f) for f in files]
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.augment = augment
        self.seed = seed
        self.process = process
        self.num_processes = num_processes
        self._epoch: tuple[int, list[int]] | None = None

    @property
    def epoch_length(self) -> int:
        """Samples per process and epoch."""
        return len(self.files) // self.num_processes

    def __len__(self) -> int:
        return self.epoch_length

    def shard(self, epoch: int) -> list[int]:
        """Indices into ``files`` that this process reads in ``epoch``, in order."""
        if self._epoch is None or self._epoch[0] != epoch:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, _EPOCH_SALT))
            order = torch.randperm(len(self.files), generator=gen).tolist()
            shard = shard_indices(order, self.process, self.num_processes)
            self._epoch = (epoch, shard[: self.epoch_length])
        return self._epoch[1]

    def __getitem__(self, key: Key) -> dict[str, Any]:
        step, slot = key
        epoch, position = divmod(step * self.batch_size + slot, self.epoch_length)
        shard = self.shard(epoch)
        skipped: list[tuple[str, str]] = []
        for attempt in range(len(shard)):
            path = self.files[shard[(position + attempt) % len(shard)]]
            try:
                image = read_rgb(path)
            except ImageReadError as error:
                skipped.append((path, str(error)))
                continue
            seed = mix_seed(self.seed, step, slot, self.process, _SAMPLE_SALT)
            hr = self.crop(image, torch.Generator().manual_seed(seed))
            return {"hr": hr, "step": step, "skipped": skipped}
        raise RuntimeError(
            f"none of the {len(shard)} training files of process {self.process} could be read "
            f"(first: {skipped[0][1]})"
        )

    def crop(self, image: Tensor, generator: torch.Generator) -> Tensor:
        """A (3, P, P) uint8 crop of a (3, H, W) float image, flipped and rotated at random
        when ``augment``."""
        p = self.patch_size
        pad_h, pad_w = max(0, p - image.shape[1]), max(0, p - image.shape[2])
        if pad_h or pad_w:
            fits = pad_h < image.shape[1] and pad_w < image.shape[2]
            mode = "reflect" if fits else "replicate"
            image = F.pad(image[None], (0, pad_w, 0, pad_h), mode=mode)[0]
        top = int(torch.randint(image.shape[1] - p + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[2] - p + 1, (1,), generator=generator))
        patch = image[:, top : top + p, left : left + p]
        if self.augment:
            flip = int(torch.randint(2, (1,), generator=generator))
            rotation = int(torch.randint(4, (1,), generator=generator))
            patch = torch.rot90(patch.flip(-1) if flip else patch, rotation, dims=(1, 2))
        return patch.mul(255.0).round().to(torch.uint8).contiguous()


def collate_crops(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One step's samples -> ``hr`` (B, 3, P, P) float in [0, 1], ``step``, ``skipped``."""
    return {
        "hr": torch.stack([s["hr"] for s in samples]).float().div_(255.0),
        "step": samples[0]["step"],
        "skipped": [item for s in samples for item in s["skipped"]],
    }


class DegradeCollate:
    """Collate crops and synthesise their LR inputs in the worker (the CPU's place for it):
    the batch is split between the presets by :func:`preset_chunks`, each chunk degraded
    batched with a seed of ``(seed, step, process, chunk)``. Adds ``lr`` and replaces ``hr`` by
    the synthesis's ``gt``."""

    def __init__(
        self, presets: str | Sequence[str], scale: int = 4, seed: int = 0, process: int = 0
    ) -> None:
        names = [presets] if isinstance(presets, str) else list(presets)
        self.presets = [resolve_config(name) for name in names]
        self.scale = scale
        self.seed = seed
        self.process = process

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_crops(samples)
        batch["lr"], batch["hr"] = self.synthesise(batch["hr"], batch["step"])
        return batch

    def synthesise(self, hr: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """The LR inputs and ground truths of step ``step``'s HR crops, on ``hr``'s device
        (the same seeds wherever it runs: in a worker or batched on the accelerator)."""
        lrs, gts = [], []
        chunks = preset_chunks(hr, len(self.presets), step)
        for index, (preset, chunk) in enumerate(chunks):
            if chunk.shape[0]:
                seed = mix_seed(self.seed, step, self.process, index, _DEGRADE_SALT)
                result = degrade(chunk, self.presets[preset], scale=self.scale, seed=seed)
                lrs.append(result.lr)
                gts.append(result.gt)
        return torch.cat(lrs), torch.cat(gts)


class StepSampler(Sampler[list[Key]]):
    """The keys of each step's batch, ``[(step, 0), ..., (step, B - 1)]``, for steps
    ``start, start + 1, ...`` up to ``stop`` (endless when None)."""

    def __init__(self, batch_size: int, start: int = 0, stop: int | None = None) -> None:
        self.batch_size = batch_size
        self.start = start
        self.stop = stop

    def __iter__(self) -> Iterator[list[Key]]:
        step = self.start
        while self.stop is None or step < self.stop:
            yield [(step, slot) for slot in range(self.batch_size)]
            step += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless StepSampler has no length")
        return max(0, self.stop - self.start)


def _single_thread_worker(worker_id: int) -> None:
    """Workers use one torch thread each: several workers must not oversubscribe the cores."""
    torch.set_num_threads(1)


class TrainingBatches:
    """Iterate a dataset's batches for steps ``start_step, ...`` through a DataLoader with
    ``num_workers`` workers prefetching ``prefetch_factor`` batches each.

    Unreadable files reported by the samples are warned about once each (in this process) and
    counted in :attr:`skipped_files` (``skipped_files`` given: that mapping, shared with an
    earlier loader, so a restarted stream does not warn again).
    """

    def __init__(
        self,
        dataset: HRCropDataset,
        start_step: int = 0,
        stop_step: int | None = None,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]] = collate_crops,
        skipped_files: dict[str, str] | None = None,
    ) -> None:
        sampler = StepSampler(dataset.batch_size, start_step, stop_step)
        self.loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate,
            prefetch_factor=prefetch_factor if num_workers else None,
            persistent_workers=False,
            worker_init_fn=_single_thread_worker if num_workers else None,
        )
        self.skipped_files: dict[str, str] = {} if skipped_files is None else skipped_files

    def __iter__(self) -> Generator[dict[str, Any], None, None]:
        for batch in self.loader:
            for path, reason in batch["skipped"]:
                if path not in self.skipped_files:
                    self.skipped_files[path] = reason
                    warnings.warn(f"skipped unreadable training file: {reason}", stacklevel=2)
            yield batch


class PairStream:
    """LR/HR training pairs of batches ``0, 1, 2, ...`` of one process, on ``device``: what a
    task draws from when it streams.

    The batches come in order from a :class:`TrainingBatches` started at the first index asked
    for and restarted wherever the caller jumps (a resumed run starts at its step), so pair
    ``n`` is the same however the run got there. The LR synthesis runs in the workers
    (:class:`DegradeCollate`) when ``device`` is the CPU, and batched on ``device`` otherwise
    (``in_workers`` forces either), with the same seeds either way.
    """

    def __init__(
        self,
        dataset: HRCropDataset,
        synthesis: DegradeCollate,
        device: torch.device,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        in_workers: bool | None = None,
    ) -> None:
        self.dataset = dataset
        self.synthesis = synthesis
        self.device = torch.device(device)
        self.in_workers = self.device.type == "cpu" if in_workers is None else in_workers
        """Whether the synthesis runs in the loader rather than batched on the device."""
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.skipped_files: dict[str, str] = {}
        """Unreadable files met so far (path -> reason), over every restart."""
        self._batches: Generator[dict[str, Any], None, None] | None = None
        self._next = 0

    def pair(self, index: int) -> tuple[Tensor, Tensor]:
        """The ``(lr, gt)`` of batch ``index``."""
        if self._batches is None or index != self._next:
            self.close()
            loader = TrainingBatches(
                self.dataset,
                start_step=index,
                num_workers=self.num_workers,
                prefetch_factor=self.prefetch_factor,
                collate=self.synthesis if self.in_workers else collate_crops,
                skipped_files=self.skipped_files,
            )
            self._batches = iter(loader)
        batch = next(self._batches)
        self._next = index + 1
        if self.in_workers:
            return batch["lr"].to(self.device), batch["hr"].to(self.device)
        return self.synthesis.synthesise(batch["hr"].to(self.device), index)

    def close(self) -> None:
        """Stop the loader and its workers (the next :meth:`pair` starts a new one)."""
        if self._batches is not None:
            self._batches.close()
            self._batches = None
