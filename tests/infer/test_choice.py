"""The backend and precision a model runs in: the measured automatic rule, exact float32 and
explicit choices, on CPUs described by their feature flags."""

from __future__ import annotations

import sys

import pytest
import torch
from tiny_models import tiny_mor_model

from mordasr.infer.backends import BackendUnavailableError, choose_configuration
from mordasr.infer.cpu import CpuFeatures
from mordasr.sr.protocol import SRModel
from mordasr.sr.zoo import load_sr_model

pytest.importorskip("openvino")

CPU = torch.device("cpu")
AMX = CpuFeatures("x86_64", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
AVX2 = CpuFeatures("x86_64", frozenset({"avx2", "fma"}))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SRModel:
    return load_sr_model(tiny_mor_model(tmp_path_factory.mktemp("model")))


def test_auto_takes_openvino_bfloat16_on_a_cpu_with_amx(model: SRModel) -> None:
    chosen = choose_configuration(model, CPU, cpu=AMX)
    assert (chosen.backend, chosen.dtype) == ("openvino", torch.bfloat16)
    assert chosen.describe() == "openvino bfloat16 (auto: AMX)"


def test_auto_keeps_float32_on_a_cpu_without_bfloat16_hardware(model: SRModel) -> None:
    chosen = choose_configuration(model, CPU, cpu=AVX2)
    assert (chosen.backend, chosen.dtype) == ("openvino", torch.float32)
    assert "AVX2" in chosen.describe()


def test_exact_is_float32_on_any_cpu(model: SRModel) -> None:
    chosen = choose_configuration(model, CPU, precision="exact", cpu=AMX)
    assert chosen.dtype == torch.float32


def test_the_graph_backends_keep_a_float32_network(model: SRModel) -> None:
    assert choose_configuration(model, CPU, cpu=AMX).network_dtype == torch.float32


def test_an_explicit_dtype_overrides_the_precision(model: SRModel) -> None:
    chosen = choose_configuration(model, CPU, "torch", dtype=torch.bfloat16, cpu=AVX2)
    assert (chosen.backend, chosen.network_dtype) == ("torch", torch.bfloat16)


def test_torch_auto_stays_float32_on_the_cpu(model: SRModel) -> None:
    assert choose_configuration(model, CPU, "torch", cpu=AMX).dtype == torch.float32


def test_bicubic_runs_on_torch() -> None:
    chosen = choose_configuration(load_sr_model("bicubic"), CPU, cpu=AMX)
    assert chosen.backend == "torch"


def test_without_openvino_auto_falls_back_to_onnxruntime_float32(
    model: SRModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    chosen = choose_configuration(model, CPU, cpu=AMX)
    assert (chosen.backend, chosen.dtype) == ("onnxruntime", torch.float32)


def test_without_openvino_its_backend_names_the_install(
    model: SRModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailableError, match="pip install openvino"):
        choose_configuration(model, CPU, "openvino")


def test_an_unknown_precision_is_refused(model: SRModel) -> None:
    with pytest.raises(ValueError, match="unknown precision"):
        choose_configuration(model, CPU, precision="fast")


def test_the_graph_backends_refuse_a_non_cpu_device(model: SRModel) -> None:
    with pytest.raises(ValueError, match="on the CPU"):
        choose_configuration(model, torch.device("meta"), "openvino")


@pytest.mark.parametrize(("bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_runs_half_precision_on_torch(
    model: SRModel, monkeypatch: pytest.MonkeyPatch, bf16: bool, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    chosen = choose_configuration(model, torch.device("cuda"))
    assert (chosen.backend, chosen.dtype) == ("torch", dtype)
