"""Comparing training checkpoints in tests of exact resumption."""

from __future__ import annotations

import torch

from mordasr.train.checkpoint import Checkpoint


def assert_same_tensors(a: Checkpoint, b: Checkpoint) -> None:
    """Every tensor of ``a`` (by group and name) equals ``b``'s bit for bit."""
    for group in a.tensors:
        for name, tensor in a.tensors[group].items():
            assert torch.equal(tensor, b.tensors[group][name]), f"{group}/{name}"
