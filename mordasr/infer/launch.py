"""Which share of a batch this process takes, and on which device.

Big batches split: ``--shard K/N`` takes one of N disjoint shares (machines, job arrays), and
under ``accelerate launch``/``torchrun`` each process takes its own share (and GPU) from the
launcher's environment; the shares never wait for each other and never write the same file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) -> ``(K, N)``: this job's share of the inputs out of N jobs."""
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"--shard wants K/N with 1 <= K <= N, got {text!r}")
    return int(k), int(n)


def shard_files(files: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    """Files ``K, K + N, K + 2N, ...`` (1-based) of ``files`` for shard ``(K, N)``: the N shards
    of one input list are disjoint and together cover it (machines, job-array tasks)."""
    if shard is None:
        return files
    k, n = shard
    return files[k - 1 :: n]


def launch_process(environ: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """``(rank, world size)`` of this process when a launcher (``accelerate launch``,
    ``torchrun``) started several (``RANK``, or ``LOCAL_RANK``, and ``WORLD_SIZE``), else None.

    A malformed value raises :class:`ValueError` with a one-line reason."""
    world_text = environ.get("WORLD_SIZE")
    rank_text = environ.get("RANK", environ.get("LOCAL_RANK"))
    if world_text is None or rank_text is None:
        return None
    if not (world_text.isdigit() and rank_text.isdigit()):
        raise ValueError(f"RANK {rank_text!r} and WORLD_SIZE {world_text!r} are not counts")
    rank, world = int(rank_text), int(world_text)
    if world <= 1:
        return None
    if rank >= world:
        raise ValueError(f"RANK {rank} is not below WORLD_SIZE {world}")
    return rank, world


def process_shard(
    shard: tuple[int, int] | None, process: tuple[int, int] | None
) -> tuple[int, int] | None:
    """This process's share: the job's ``--shard K/N`` (None: all inputs) split between the
    launch's processes, process ``r`` of ``W`` taking share ``K + N r`` of ``N W`` (the
    processes' shares of one job are disjoint and cover the job's share)."""
    if process is None:
        return shard
    k, n = shard or (1, 1)
    rank, world = process
    return k + n * rank, n * world


def launch_device(environ: Mapping[str, str], cuda_count: int) -> str | None:
    """The GPU of this process under a multi-process launch (``cuda:LOCAL_RANK``, modulo the
    visible GPUs), or None (no launch, no GPU: the default device)."""
    local = environ.get("LOCAL_RANK", environ.get("RANK"))
    if cuda_count == 0 or local is None or not local.isdigit():
        return None
    return f"cuda:{int(local) % cuda_count}"
