"""What a training task is: its networks, one optimisation step, its checkpoint state, its export.

The trainer (:mod:`mordasr.train.trainer`) owns the loop, seeding, logging and checkpoints; a task
owns everything model-specific. Tasks register by name so a YAML config can pick one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from mordasr.train.config import TASK_SECTIONS, TaskSections, TrainConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

TASKS: dict[str, type[TrainTask]] = {}


def register_task(
    name: str, sections: TaskSections | None = None
) -> Callable[[type[TrainTask]], type[TrainTask]]:
    """Class decorator: make a task available as ``task: <name>`` in training configs.

    ``sections`` are the dataclasses of the task's ``model``, ``losses`` and ``degradation``
    sections (the built-in tasks' are in :data:`TASK_SECTIONS` already).
    """

    def add(cls: type[TrainTask]) -> type[TrainTask]:
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        if sections is not None:
            TASK_SECTIONS[name] = sections
        if name not in TASK_SECTIONS:
            raise ValueError(f"task {name!r} needs its config sections (register_task(sections=))")
        cls.name = name
        TASKS[name] = cls
        return cls

    return add


class TrainTask(ABC):
    """One trainable setup. Subclasses build their networks and optimisers in ``__init__``."""

    name: ClassVar[str]

    def __init__(self, config: TrainConfig, accelerator: Accelerator) -> None:
        self.config = config
        self.accelerator = accelerator

    @property
    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by name (checkpointed and restored by the trainer)."""

    @abstractmethod
    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        """Run optimisation step ``step`` drawing all randomness from ``generator``; return the
        scalars to log."""

    @abstractmethod
    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        """Trainable state to checkpoint, grouped (e.g. ``adapter``, ``ema``, ``discriminator``)."""

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        """Restore what :meth:`state_tensors` returned."""

    @abstractmethod
    def export(self, directory: Path) -> Path:
        """Write the trained model in its loadable form (e.g. an adapter folder); return it."""

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state beyond tensors (none by default)."""
        return {}

    def close(self) -> None:  # noqa: B027 (a hook: most tasks hold nothing to release)
        """Release what the task holds beyond its networks (e.g. data-loader workers); called
        when a run ends, however it ends. Nothing by default."""
