"""DISTS checked live against the authors' reference code shipped in DISTS_pytorch.

``DISTS_pt.py`` imports torchvision only to obtain ImageNet VGG16; the test runs the authors'
module with a stand-in ``torchvision`` that hands it our converted VGG16 (verified separately in
tests/models/test_pretrained_backbones.py), so the DISTS computation itself (L2 pooling, stage
split, texture and structure terms, alpha/beta weighting) is compared independently of ours.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from mordasr.metrics.dists import DISTS, L2Pool
from mordasr.nets.pretrained import dists_alpha_beta, package_file
from mordasr.nets.vgg import VGG16Features


@pytest.fixture(scope="module")
def ours() -> DISTS:
    return DISTS()


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(  # type: ignore[attr-defined]
        vgg16=lambda pretrained=True: VGG16Features.from_pretrained()
    )
    fake.transforms = types.SimpleNamespace()  # type: ignore[attr-defined]
    path = package_file("DISTS_pytorch", "DISTS_pytorch", "DISTS_pt.py")
    spec = importlib.util.spec_from_file_location("_dists_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("torchvision")
    sys.modules["torchvision"] = fake
    try:
        spec.loader.exec_module(module)
        model = module.DISTS(load_weights=False)
    finally:
        if saved is None:
            del sys.modules["torchvision"]
        else:
            sys.modules["torchvision"] = saved
    alpha, beta = dists_alpha_beta()
    model.alpha.data, model.beta.data = alpha, beta
    return model.eval()


def _images(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 64, 64, generator=generator)
    noise = torch.randn(x.shape, generator=generator)
    return x, (x + 0.1 * noise).clamp(0, 1)


def test_dists_matches_the_authors_reference_code(ours: DISTS, reference: torch.nn.Module) -> None:
    x, y = _images(0)
    expected = reference(x, y, batch_average=False)
    torch.testing.assert_close(ours(x, y), expected, atol=1e-5, rtol=1e-5)


def test_dists_of_identical_images_is_zero(ours: DISTS) -> None:
    x, _ = _images(1)
    assert ours(x, x).abs().max() < 1e-6


def test_dists_grows_with_the_noise_level(ours: DISTS) -> None:
    x, _ = _images(2)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    values = [ours(x, (x + s * noise).clamp(0, 1)).mean().item() for s in (0.02, 0.1, 0.3)]
    assert values[0] < values[1] < values[2]


def test_l2_pool_of_a_constant_map_keeps_its_magnitude_inside() -> None:
    pooled = L2Pool(channels=2)(torch.full((1, 2, 8, 8), -3.0))
    assert pooled.shape == (1, 2, 4, 4)
    torch.testing.assert_close(pooled[..., 1:, 1:], torch.full((1, 2, 3, 3), 3.0))
