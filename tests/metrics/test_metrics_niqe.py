"""NIQE checked live against iqa-torch's port of BasicSR's MATLAB-compatible NIQE.

iqa-torch cannot be imported as a package here (its ``__init__`` needs torchvision and einops),
so its ``niqe`` sub-folder, which needs only numpy, torch and scipy, is loaded on its own.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from mordasr.metrics.color import rgb_to_y
from mordasr.metrics.niqe import imresize, imresize_matrix, niqe, niqe_from_luma
from mordasr.nets.pretrained import package_dir


@pytest.fixture(scope="module")
def iqa_niqe() -> Iterator[types.ModuleType]:
    pytest.importorskip("scipy")
    name = "_iqa_niqe_reference"
    package = types.ModuleType(name)
    package.__path__ = [str(package_dir("iqa", "iqa-torch") / "niqe")]  # type: ignore[attr-defined]
    sys.modules[name] = package
    try:
        core = importlib.import_module(f"{name}.niqe_core")
        utils = importlib.import_module(f"{name}.utils")
        params = dict(core.NIQE_PRIS_PARAMS)
        params["mu_pris_param"] = params["mu_pris_param"][0]  # numpy>=2 needs a scalar result
        core.NIQE_PRIS_PARAMS = params
        yield types.SimpleNamespace(core=core, utils=utils)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def _natural_like(seed: int, height: int = 192, width: int = 288) -> torch.Tensor:
    """A smooth random (1, 3, H, W) image with edges, quantised to 8-bit levels."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 16, width // 16, generator=generator, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic")
    edges = (torch.arange(width, dtype=torch.float64) // 37 % 2).view(1, 1, 1, width)
    fine = torch.rand(1, 3, height, width, generator=generator, dtype=torch.float64)
    image = 0.6 * smooth + 0.25 * edges + 0.15 * fine
    return (image.clamp(0, 1) * 255).round() / 255


def test_niqe_matches_the_basicsr_port_in_iqa_torch(iqa_niqe: types.SimpleNamespace) -> None:
    image = _natural_like(0)
    luma = rgb_to_y(image)[0, 0].round()
    expected = iqa_niqe.core._apply_niqe(luma.clone())
    assert niqe(image.float()).item() == pytest.approx(expected, rel=1e-5)
    assert niqe_from_luma(luma) == pytest.approx(expected, rel=1e-10)


def test_matlab_imresize_matches_the_basicsr_port(iqa_niqe: types.SimpleNamespace) -> None:
    image = _natural_like(1, 96, 120)[0, 0]
    expected = iqa_niqe.utils.imresize(image[None], scale=0.5, antialiasing=True)[0]
    torch.testing.assert_close(imresize(image, 0.5), expected, atol=1e-10, rtol=0)


def test_imresize_rows_are_partitions_of_unity() -> None:
    for scale in (0.5, 0.25, 2.0, 4.0):
        matrix = imresize_matrix(37, scale)
        torch.testing.assert_close(
            matrix.sum(dim=1), torch.ones(matrix.shape[0], dtype=torch.float64)
        )


def test_imresize_keeps_a_constant_image_constant() -> None:
    resized = imresize(torch.full((20, 30), 7.0, dtype=torch.float64), 0.5)
    assert resized.shape == (10, 15)
    torch.testing.assert_close(resized, torch.full((10, 15), 7.0, dtype=torch.float64))


def test_niqe_rises_when_noise_is_added() -> None:
    clean = _natural_like(2)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(3), dtype=clean.dtype)
    noisy = (clean + 0.15 * noise).clamp(0, 1)
    assert niqe(noisy.float()).item() > niqe(clean.float()).item() + 1.0


def test_niqe_handles_images_with_a_single_block() -> None:
    value = niqe(_natural_like(4, 128, 150).float())
    assert np.isfinite(value.item())


def test_niqe_rejects_images_smaller_than_a_block() -> None:
    with pytest.raises(ValueError, match="at least 96x96"):
        niqe(torch.rand(1, 3, 64, 200))
