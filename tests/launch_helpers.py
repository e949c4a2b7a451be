"""Start ``mordasr`` under several CPU processes, as ``accelerate launch`` or torchrun would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_environment() -> dict[str, str]:
    """This environment with the checkout importable, one thread and no visible GPU."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }


def accelerate_launch(cli_args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``accelerate launch`` of ``python -m mordasr.cli CLI_ARGS`` in two CPU processes
    (``--multi_gpu`` with no visible GPU is how accelerate starts several CPU processes)."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "mordasr.cli",
        *cli_args,
    ]
    return subprocess.run(
        command, env=cpu_environment(), capture_output=True, text=True, timeout=timeout
    )
