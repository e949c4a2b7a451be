"""What every backend is: a way to run a routed network over tiles; eager torch is the first."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import ModuleType
from typing import Protocol

from torch import Tensor

from mordasr.sr.protocol import ImageWork

Network = Callable[[Tensor], Tensor]


class BackendUnavailableError(ValueError):
    """The requested backend cannot run here (its optional dependency is not installed)."""


def import_optional(name: str, hint: str) -> ModuleType:
    """The optional module ``name``, or :class:`BackendUnavailableError` with the install
    ``hint`` (one line)."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise BackendUnavailableError(hint) from error


def importable(name: str) -> bool:
    """Whether the optional module ``name`` can be imported."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


class Backend(Protocol):
    """Turns a network, routed for the current image, into the callable that runs it."""

    name: str

    def bind(self, work: ImageWork) -> AbstractContextManager[Network]:
        """A callable running ``work``'s network under its plan, for the block's tiles."""
        ...


class TorchBackend:
    """Eager PyTorch: the network itself, running the plan cast to the network's dtype."""

    name = "torch"

    @contextmanager
    def bind(self, work: ImageWork) -> Iterator[Network]:
        parameter = next(work.network.parameters(), None)
        plan = work.plan if parameter is None else work.plan.to(parameter.dtype)
        with plan.applied(work.network) as network:
            yield network
