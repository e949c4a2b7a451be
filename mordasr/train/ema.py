"""Bias-corrected exponential moving average of trainable tensors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

UPDATES_KEY = "__ema_updates__"
"""Entry of :meth:`EMA.state_dict` holding the number of updates averaged (an int64 scalar)."""


class EMA:
    """The bias-corrected exponential moving average of a named set of parameters.

    After ``t`` updates with parameter values ``p_1 .. p_t`` the average is Adam's
    bias-corrected moment::

        average_t = sum_i (1 - decay) * decay**(t - i) * p_i / (1 - decay**t)

    whose weights sum to 1: the initial values get weight 0 (a plain EMA started from them
    keeps ``decay**t`` of them, 37 % after 100 updates at decay 0.99). It is kept directly by
    ``average += (1 - decay) / (1 - decay**t) * (p_t - average)``, so the first update copies
    the parameters and, as ``t`` grows, the step tends to the plain EMA's ``1 - decay``.

    The average is what gets exported: it is smoother than the last iterate, as in
    Real-ESRGAN's ``params_ema``.
    """

    def __init__(self, params: dict[str, nn.Parameter], decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError("decay must lie in [0, 1)")
        if UPDATES_KEY in params:
            raise ValueError(f"a parameter may not be called {UPDATES_KEY!r}")
        self.decay = decay
        self.params = params
        self.shadow = {name: p.detach().clone() for name, p in params.items()}
        self.updates: int | None = 0
        """Updates averaged so far; None after loading a state saved without the count (an
        uncorrected average from before the bias correction): it then continues uncorrected."""

    def weight(self) -> float:
        """The share of the current parameters in the next update."""
        if self.updates is None:
            return 1.0 - self.decay
        return (1.0 - self.decay) / (1.0 - self.decay ** (self.updates + 1))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current parameters into the average."""
        weight = self.weight()
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach(), weight)
        if self.updates is not None:
            self.updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged tensors by parameter name, and the update count under ``UPDATES_KEY``."""
        state = dict(self.shadow)
        if self.updates is not None:
            state[UPDATES_KEY] = torch.tensor(self.updates, dtype=torch.int64)
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a state saved by :meth:`state_dict`.

        A state without ``UPDATES_KEY`` (checkpoints written before the bias correction) holds
        a plain EMA that includes the initial values; it is restored as it is and continues as a
        plain EMA (each update weighs ``1 - decay``), which is how it was being built.
        """
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])
        self.updates = int(state[UPDATES_KEY]) if UPDATES_KEY in state else None

    @torch.no_grad()
    def relative_distance(self) -> float:
        """How far the average is from the live parameters: ``||average - live|| / ||live||``,
        L2 over all averaged tensors together (0 when both are zero)."""
        diff = torch.zeros((), dtype=torch.float64)
        live = torch.zeros((), dtype=torch.float64)
        for name, p in self.params.items():
            current = p.detach().double()
            diff += (self.shadow[name].double() - current).square().sum().cpu()
            live += current.square().sum().cpu()
        if live == 0:
            return 0.0 if diff == 0 else float("inf")
        return float((diff / live).sqrt())

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
