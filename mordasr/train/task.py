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

from mordasr.train.config import TrainConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

TASKS: dict[str, type[TrainTask]] = {}


def register_task(name: str) -> Callable[[type[TrainTask]], type[TrainTask]]:
    """Class decorator: make a task available as ``task: <name>`` in training configs."""

    def add(cls: type[TrainTask]) -> type[TrainTask]:
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice")
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


def loss_weights(config: TrainConfig, known: set[str]) -> dict[str, float]:
    """The config's non-zero loss weights by name; a loss the task does not know is an error
    (a typo must not silently switch a loss off)."""
    unknown = set(config.losses) - known
    if unknown:
        raise ValueError(f"unknown losses {sorted(unknown)}; known: {sorted(known)}")
    return {k: float(v) for k, v in config.losses.items() if float(v) != 0.0}
