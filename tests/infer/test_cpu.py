"""CPU feature detection: flags read from /proc/cpuinfo text, nothing assumed."""

from __future__ import annotations

from mordasr.infer.cpu import CpuFeatures, cpu_features, parse_cpuinfo

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
LAPTOP = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_amx_is_read_from_cpuinfo() -> None:
    features = parse_cpuinfo(SAPPHIRE_RAPIDS, "x86_64")
    assert features.native_bfloat16
    assert features.isa == "AMX"


def test_an_avx2_laptop_has_no_bfloat16_hardware() -> None:
    features = parse_cpuinfo(LAPTOP, "x86_64")
    assert not features.native_bfloat16
    assert features.isa == "AVX2"


def test_an_arm_cpu_is_named_by_its_architecture() -> None:
    features = parse_cpuinfo(GRAVITON, "aarch64")
    assert not features.native_bfloat16
    assert features.isa == "NEON"


def test_text_without_flags_gives_no_features() -> None:
    assert parse_cpuinfo("model name\t: something\n", "x86_64") == CpuFeatures(
        "x86_64", frozenset()
    )


def test_this_machine_is_detected_once() -> None:
    assert cpu_features() is cpu_features()
