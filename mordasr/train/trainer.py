"""The training loop: accelerate, per-step seeding, progress bar, CSV/TensorBoard logs, resume."""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mordasr.infer.cpu import cpu_features
from mordasr.train.checkpoint import (
    latest_verified_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from mordasr.train.config import MixedPrecision, TrainConfig
from mordasr.train.data import step_generator
from mordasr.train.ema import EMA
from mordasr.train.task import TASKS, TrainTask
from mordasr.train.tasks import OneStepSDTask, RealESRGANMoRTask

#: The tasks that ship with mordasr (importing them registers them by name).
BUILTIN_TASKS: tuple[type[TrainTask], ...] = (RealESRGANMoRTask, OneStepSDTask)

RUN_STATE = "mordasr-run.json"
"""The file that marks a folder as a mordasr run folder: written first thing by every run, so
a later run (a resume) knows every other file there is its own to rewrite."""


class RunFolderError(ValueError):
    """``output_dir`` holds files that no mordasr run wrote; the message is one line."""


def is_run_folder(output_dir: Path) -> bool:
    """Whether ``output_dir`` was made by a mordasr run: it holds :data:`RUN_STATE`, or (a
    run from before that file existed) checkpoints in the run layout or the ``config.json`` a
    run writes, naming this very folder as its ``output_dir``."""
    if (output_dir / RUN_STATE).is_file() or list_checkpoints(output_dir):
        return True
    try:
        saved = json.loads((output_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    named = saved.get("output_dir") if isinstance(saved, dict) else None
    return isinstance(named, str) and Path(named).resolve() == output_dir.resolve()


def claim_output_dir(output_dir: Path, task: str) -> None:
    """Make ``output_dir`` a run folder, or raise :class:`RunFolderError` (changing nothing)
    where it is a folder that holds someone else's files: a run rewrites ``config.json`` and
    ``log.csv`` and deletes old checkpoints, which must never hit a user's files."""
    if output_dir.exists() and not output_dir.is_dir():
        raise RunFolderError(f"output_dir {output_dir} is a file, not a folder")
    if output_dir.is_dir() and not is_run_folder(output_dir):
        # The marker itself is not someone else's file: another process of this run may have
        # written it between the check above and this listing.
        found = sorted(entry.name for entry in output_dir.iterdir() if entry.name != RUN_STATE)
        if found:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            raise RunFolderError(
                f"output_dir {output_dir} holds files that no mordasr run wrote ({shown}); "
                "choose a new or empty folder (a run folder is recognised by its "
                f"{RUN_STATE})"
            )
    output_dir.mkdir(parents=True, exist_ok=True)
    state = json.dumps({"written_by": "mordasr train", "task": task}, indent=1)
    try:
        with (output_dir / RUN_STATE).open("x") as file:
            file.write(state + "\n")
    except FileExistsError:
        pass  # a resumed run, or another process of this one got there first


class MetricLog:
    """Appends one CSV row per logged step (and TensorBoard scalars when asked)."""

    def __init__(self, output_dir: Path, tensorboard: bool, resume_step: int) -> None:
        self.path = output_dir / "log.csv"
        self._truncate_after(resume_step)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        """Drop rows logged after the checkpoint we resume from (they will be redone)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        kept = [r for r in rows if int(r["step"]) <= step]
        self._write(kept, mode="w")

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        if not rows:
            if mode == "w":
                self.path.unlink(missing_ok=True)
            return
        exists = self.path.exists() and mode == "a"
        fields = list(rows[0])
        if exists:
            with self.path.open(newline="") as fh:
                header = next(csv.reader(fh), fields)
            fields = header + [k for k in fields if k not in header]
        with self.path.open(mode, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            if not exists:
                writer.writeheader()
            writer.writerows(rows)

    def log(self, step: int, values: dict[str, float]) -> None:
        self._write([{"step": step, **{k: f"{v:.6g}" for k, v in values.items()}}], mode="a")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def build_task(config: TrainConfig, accelerator: Any) -> TrainTask:
    """Instantiate the task the config names (any registered task; the built-ins: BUILTIN_TASKS)."""
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; known: {sorted(TASKS)}")
    return TASKS[config.task](config, accelerator)


def resolve_mixed_precision(value: MixedPrecision, cpu: bool) -> MixedPrecision:
    """``value``, with ``auto`` made concrete: ``bf16`` where the device computes bfloat16
    natively (a CPU with AMX or AVX512-BF16, a CUDA device with bf16), else ``no``. Detected,
    never assumed: bf16 autocast on a CPU without it is slower than float32."""
    if value != "auto":
        return value
    native = cpu_features().native_bfloat16 if cpu else torch.cuda.is_bf16_supported()
    return "bf16" if native else "no"


def make_accelerator(config: TrainConfig, cpu: bool | None = None) -> Any:
    """An ``accelerate.Accelerator`` for the config (CPU when no CUDA device is present).

    Under DistributedDataParallel, unused parameters are searched for on every step: a routed
    expert that no image of a process's batch keeps gets no gradient there.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    if cpu is None:
        cpu = not torch.cuda.is_available()
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    precision = resolve_mixed_precision(config.mixed_precision, cpu)
    return Accelerator(mixed_precision=precision, cpu=cpu, kwargs_handlers=[ddp])


def train(
    config: TrainConfig,
    resume: bool | str | Path = True,
    stop_at: int | None = None,
    progress: bool = True,
    cpu: bool | None = None,
) -> Path:
    """Train ``config`` and return the run folder.

    ``resume=True`` continues from the newest checkpoint of ``config.output_dir`` that verifies
    (if any), saying on stderr which one it took and why it skipped newer ones; a path resumes
    from that checkpoint. A damaged checkpoint raises
    :class:`~mordasr.train.checkpoint.CheckpointError`. ``stop_at`` ends the run early after
    that step, saving a checkpoint there (the export happens only when ``total_steps`` is
    reached). An ``output_dir`` that holds files no mordasr run wrote raises
    :class:`RunFolderError` before anything is written.
    """
    output_dir = Path(config.output_dir)
    claim_output_dir(output_dir, config.task)
    accelerator = make_accelerator(config, cpu=cpu)
    if config.mixed_precision == "auto" and accelerator.is_main_process:
        chosen = accelerator.mixed_precision
        print(f"mordasr train: mixed_precision auto: {chosen}", file=sys.stderr)
    config = replace(config, mixed_precision=accelerator.mixed_precision)
    torch.manual_seed(config.seed)
    task = build_task(config, accelerator)
    try:
        _run(task, config, accelerator, resume, stop_at, progress)
    finally:
        task.close()
    return output_dir


def _run(
    task: TrainTask,
    config: TrainConfig,
    accelerator: Any,
    resume: bool | str | Path,
    stop_at: int | None,
    progress: bool,
) -> None:
    """Resume ``task`` if asked, run its steps with logs and checkpoints, export at the end."""
    output_dir = Path(config.output_dir)
    start = 0
    checkpoint_path = _resume_path(output_dir, resume, accelerator.is_main_process)
    if checkpoint_path is not None:
        checkpoint = load_checkpoint(checkpoint_path)
        task.load_state_tensors(checkpoint.tensors)
        for name, optimizer in task.optimizers.items():
            optimizer.load_state_dict(checkpoint.optimizers[name])
        start = checkpoint.step

    is_main = accelerator.is_main_process
    if is_main:
        (output_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    log = MetricLog(output_dir, config.tensorboard, start) if is_main else None
    end = min(config.total_steps, stop_at) if stop_at is not None else config.total_steps
    bar = tqdm(
        total=config.total_steps,
        initial=start,
        disable=not (progress and is_main),
        desc=f"train {config.task}",
        dynamic_ncols=True,
    )
    tic = time.perf_counter()
    for step in range(start, end):
        generator = step_generator(config.seed, step, accelerator.process_index)
        values = task.train_step(step, generator)
        done = step + 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:4]})
        if log is not None and (done % config.log_every == 0 or done == end):
            elapsed = time.perf_counter() - tic
            log.log(done, {**values, **_ema_gap(task), "seconds": elapsed})
        if done % config.checkpoint_every == 0 or done == end:
            _save(task, output_dir, done, config.keep_checkpoints, is_main)
            accelerator.wait_for_everyone()
    bar.close()
    if log is not None:
        log.close()
    if end == config.total_steps and is_main:
        task.export(output_dir / "final")
    accelerator.wait_for_everyone()


def _ema_gap(task: TrainTask) -> dict[str, float]:
    """``ema_gap``: how far the weights an export would hold (the EMA) are from the live ones,
    relative L2 (:meth:`EMA.relative_distance`); nothing for a task without an EMA."""
    ema = getattr(task, "ema", None)
    return {"ema_gap": ema.relative_distance()} if isinstance(ema, EMA) else {}


def _resume_path(output_dir: Path, resume: bool | str | Path, report: bool) -> Path | None:
    if resume is False:
        return None
    if resume is not True:
        return Path(resume)
    path, skipped = latest_verified_checkpoint(output_dir)
    if skipped and report and path is not None:
        reasons = "; ".join(skipped)
        print(
            f"mordasr train: resuming from {path.name}; skipped newer checkpoint(s): {reasons}",
            file=sys.stderr,
        )
    return path


def _save(task: TrainTask, output_dir: Path, step: int, keep: int, is_main: bool) -> None:
    if not is_main:
        return
    optimizers = {name: opt.state_dict() for name, opt in task.optimizers.items()}
    save_checkpoint(output_dir, step, task.state_tensors(), optimizers, task.extra_state(), keep)
