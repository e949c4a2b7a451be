"""What this CPU can compute fast: the instruction-set features the automatic precision uses.

Read from ``/proc/cpuinfo`` on Linux; elsewhere (macOS, Windows) from PyTorch's own CPU
capability and, where OpenVINO is installed, its list of native precisions. Nothing is assumed:
an unknown CPU has no reduced-precision features.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
ARM = ("arm64", "aarch64")
TORCH_CAPABILITIES = {"AVX512": frozenset({"avx512f", "avx2"}), "AVX2": frozenset({"avx2"})}
"""``torch.backends.cpu.get_cpu_capability()`` names and the flags they imply."""


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's architecture (``platform.machine()``) and its lower-case feature flags."""

    machine: str
    flags: frozenset[str]

    @property
    def native_bfloat16(self) -> bool:
        """bfloat16 products with float32 sums in hardware (AMX or AVX512-BF16)."""
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    @property
    def isa(self) -> str:
        """The best instruction set for this work, as the summary line names it."""
        for flag, name in (
            ("amx_bf16", "AMX"),
            ("avx512_bf16", "AVX512-BF16"),
            ("avx512f", "AVX-512"),
            ("avx2", "AVX2"),
        ):
            if flag in self.flags:
                return name
        return "NEON" if self.machine.lower() in ARM else "baseline"


def parse_cpuinfo(text: str, machine: str) -> CpuFeatures:
    """The features listed in a ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return CpuFeatures(machine, frozenset(value.lower().split()))
    return CpuFeatures(machine, frozenset())


@cache
def cpu_features() -> CpuFeatures:
    """This machine's CPU features (computed once per process)."""
    machine = platform.machine()
    if CPUINFO.is_file():
        features = parse_cpuinfo(CPUINFO.read_text(errors="replace"), machine)
        if features.flags:
            return features
    flags = set(TORCH_CAPABILITIES.get(torch.backends.cpu.get_cpu_capability(), ()))
    if "BF16" in _openvino_precisions() and machine.lower() not in ARM:
        flags.add("avx512_bf16")
    return CpuFeatures(machine, frozenset(flags))


def _openvino_precisions() -> list[str]:
    """The CPU plugin's native precisions (empty without OpenVINO)."""
    try:
        import openvino

        return list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # a missing or broken OpenVINO: nothing is known
        return []
