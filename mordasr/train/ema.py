"""Exponential moving average of trainable tensors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * param`` for a named set of parameters.

    The average is what gets exported: it is smoother than the last iterate, as in Real-ESRGAN's
    ``params_ema``.
    """

    def __init__(self, params: dict[str, nn.Parameter], decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError("decay must lie in [0, 1)")
        self.decay = decay
        self.params = params
        self.shadow = {name: p.detach().clone() for name, p in params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the current parameters."""
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged tensors by parameter name."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore averaged tensors saved by :meth:`state_dict`."""
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Hold the averaged values in the parameters inside the block (e.g. to export them);
        the current values are restored on exit."""
        backup = {name: p.detach().clone() for name, p in self.params.items()}
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(backup[name])
