"""Where the text conditioning of the one-step generator comes from.

The paper tags each LR image with DAPE (a RAM-based tagger) to build its prompt. That tagger is
not available here, so the prompt source is a hook: any callable mapping the LR batch to one
prompt per image. :class:`FixedPrompt` (the same text for every image) is the default.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class PromptSource(Protocol):
    """Maps a batch of LR images (B, 3, h, w) in [0, 1] to one prompt per image."""

    def __call__(self, lr: Tensor) -> list[str]: ...


class FixedPrompt:
    """The same prompt for every image (a fixed default or the user's ``--prompt``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, lr: Tensor) -> list[str]:
        return [self.text] * lr.shape[0]

    def __repr__(self) -> str:
        return f"FixedPrompt({self.text!r})"
