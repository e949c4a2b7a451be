"""Automatic tile size and the out-of-memory retry of the upscale pipeline."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mordasr.infer import memory, pipeline
from mordasr.infer.memory import auto_tile, bytes_per_pixel, is_out_of_memory
from mordasr.infer.pipeline import Upscaler
from mordasr.infer.progress import ProgressEvent
from mordasr.infer.tiling import balanced_side
from mordasr.nets.rrdbnet import RRDBNet
from mordasr.sr.baselines import BicubicSR, PlainSR


class LimitedSR(nn.Module):
    """A x2 net behind a fake allocator: inputs over ``max_pixels`` raise out-of-memory."""

    scale = 2

    def __init__(self, max_pixels: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.max_pixels = max_pixels
        self.sides: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sides.append((x.shape[-2], x.shape[-1]))
        if self.max_pixels is not None and x.shape[-2] * x.shape[-1] > self.max_pixels:
            raise torch.OutOfMemoryError("fake allocator: out of memory")
        return F.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")


def test_auto_tile_fits_the_memory_share_and_is_a_multiple_of_16() -> None:
    tile = auto_tile(per_pixel=1000, free=2 * 10**8, overlap=8)
    assert tile % 16 == 0
    assert tile**2 * 1000 <= memory.MEMORY_SHARE * 2 * 10**8 < (tile + 16) ** 2 * 1000


def test_auto_tile_is_capped_however_much_memory_is_free() -> None:
    per_pixel = memory.RRDBNET_BYTES_PER_PIXEL
    tile = auto_tile(per_pixel, free=2**40, overlap=32)
    assert tile**2 * per_pixel <= memory.TILE_MEMORY_CAP
    assert tile == auto_tile(per_pixel, free=2 * memory.TILE_MEMORY_CAP, overlap=32)


def test_auto_tile_never_goes_below_the_minimum_or_twice_the_overlap() -> None:
    assert auto_tile(per_pixel=10**6, free=10**6, overlap=8) == memory.MIN_TILE
    assert auto_tile(per_pixel=10**6, free=10**6, overlap=80) > 160


def test_cpu_free_memory_comes_from_meminfo() -> None:
    with open("/proc/meminfo") as file:
        line = next(text for text in file if text.startswith("MemAvailable:"))
    expected = int(line.split()[1]) * 1024
    assert math.isclose(memory.available_memory(torch.device("cpu")), expected, rel_tol=0.2)


def test_memory_per_pixel_follows_the_network_and_the_dtype() -> None:
    default = PlainSR(RRDBNet(num_block=1), 4)
    narrow = PlainSR(RRDBNet(num_feat=32, num_block=1), 4)
    full = bytes_per_pixel(default, torch.float32)
    assert full == memory.RRDBNET_BYTES_PER_PIXEL
    assert bytes_per_pixel(narrow, torch.float32) == full // 2
    assert bytes_per_pixel(default, torch.float16) == full // 2
    assert bytes_per_pixel(BicubicSR(), torch.float32) < full // 10


def _onnxruntime_error(message: str) -> Exception:
    """An error shaped like ONNX Runtime's (a plain ``Exception`` from its pybind module)."""
    kind = type(
        "RuntimeException",
        (Exception,),
        {"__module__": "onnxruntime.capi.onnxruntime_pybind11_state"},
    )
    return kind(message)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate"),
        _onnxruntime_error("Failed to allocate memory for requested buffer of size 2359296"),
    ],
)
def test_allocation_failures_are_recognised(error: BaseException) -> None:
    assert is_out_of_memory(error)


def test_other_runtime_errors_are_not_out_of_memory() -> None:
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(_onnxruntime_error("Invalid input shape"))


def test_out_of_memory_halves_the_tile_and_the_image_still_matches_untiled() -> None:
    image = torch.rand(3, 100, 90)
    expected = Upscaler(LimitedSR(), device="cpu", backend="torch", tile=0).upscale_tensor(image)
    limited = LimitedSR(max_pixels=40 * 40)
    events: list[ProgressEvent] = []
    upscaler = Upscaler(
        limited, device="cpu", backend="torch", tile=64, tile_overlap=4, progress=events.append
    )
    with pytest.warns(UserWarning, match="retrying with 32px tiles"):
        out = upscaler.upscale_tensor(image)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    stages = [e.stage for e in events]
    retry = stages.index("retry")
    assert {e.tile_size for e in events[:retry]} == {64}
    assert {e.tile_size for e in events[retry + 1 :]} == {32} and "retry" not in stages[retry + 1 :]
    assert limited.sides[0] == (64, 64) and max(h * w for h, w in limited.sides[1:]) <= 32 * 32


def test_auto_tile_with_a_forced_out_of_memory_on_its_first_size_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    per_pixel = bytes_per_pixel(LimitedSR(), torch.float32)
    free = int(2 * per_pixel * 128**2 / memory.MEMORY_SHARE)  # room for tiles of 128 and more
    monkeypatch.setattr(pipeline, "available_memory", lambda device: free)
    image = torch.rand(3, 300, 260)
    limited = LimitedSR(max_pixels=100 * 100)
    upscaler = Upscaler(limited, device="cpu", backend="torch", tile_overlap=8)
    first = auto_tile(per_pixel, free, 8)
    assert first > 100
    with pytest.warns(UserWarning, match="out of memory"):
        out = upscaler.upscale_tensor(image)
    assert out.shape == (3, 600, 520)
    assert limited.sides[0] == (balanced_side(300, first, 8), balanced_side(260, first, 8))
    expected = Upscaler(LimitedSR(), device="cpu", backend="torch", tile=0).upscale_tensor(image)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_out_of_memory_at_the_smallest_tile_is_raised() -> None:
    with pytest.raises(torch.OutOfMemoryError):
        Upscaler(
            LimitedSR(max_pixels=4), device="cpu", backend="torch", tile=32, tile_overlap=8
        ).upscale_tensor(torch.rand(3, 40, 40))


def test_other_errors_are_not_retried() -> None:
    class Broken(LimitedSR):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.sides.append((x.shape[-2], x.shape[-1]))
            raise RuntimeError("shape mismatch")

    broken = Broken()
    with pytest.raises(RuntimeError, match="shape mismatch"):
        Upscaler(broken, device="cpu", backend="torch", tile=32, tile_overlap=4).upscale_tensor(
            torch.rand(3, 40, 40)
        )
    assert len(broken.sides) == 1


def test_releasing_freed_memory_works_with_and_without_malloc_trim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory.release_freed_memory()
    monkeypatch.setattr(memory, "_libc_trim", lambda: None)
    memory.release_freed_memory()
