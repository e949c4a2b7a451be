"""VSD (eq. 4): the generator's gradient, the variational network's diffusion loss, schedules.

The generator-side loss is a surrogate whose gradient (not its value) is the VSD update, so it is
specified by its gradient; the variational network's diffusion loss is a true objective and must
decrease.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mordasr.losses.vsd import (
    VSDConfig,
    VSDLoss,
    add_noise,
    diffusion_target,
    predict_x0,
    sample_noise,
    sample_timesteps,
)
from mordasr.mor import MoRConfig, inject_mor, mor_named_parameters
from mordasr.sr.sd import SDComponents


def _vsd(sd: SDComponents, **config: float) -> VSDLoss:
    fake = inject_mor(copy.deepcopy(sd.unet), MoRConfig.lora(4))
    return VSDLoss(sd.unet, fake, sd.scheduler, VSDConfig(**config))


def _prompts(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 8, 32, generator=g), torch.randn(batch, 8, 32, generator=g)


def _latents() -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_x0_is_recovered_from_the_exact_diffusion_target(tiny_sd: SDComponents, kind: str) -> None:
    scheduler = copy.deepcopy(tiny_sd.scheduler)
    scheduler.register_to_config(prediction_type=kind)
    x0, noise = _latents(), torch.randn(2, 4, 8, 8)
    t = torch.tensor([5, 900])
    noisy = add_noise(scheduler, x0, noise, t)
    target = diffusion_target(scheduler, x0, noise, t)
    assert torch.allclose(predict_x0(scheduler, target, noisy, t), x0, atol=1e-4)


def test_generator_gradient_is_the_normalised_score_difference(tiny_sd: SDComponents) -> None:
    vsd = _vsd(tiny_sd)
    with torch.no_grad():
        for p in mor_named_parameters(vsd.fake_unet).values():
            p.normal_(0, 0.1)
    positive, negative = _prompts()
    x0 = _latents().requires_grad_(True)
    loss = vsd.generator_loss(x0, positive, negative, torch.Generator().manual_seed(7))
    loss.backward()

    g = torch.Generator().manual_seed(7)
    t = sample_timesteps(2, vsd.low, vsd.high, g, "cpu")
    noisy = add_noise(tiny_sd.scheduler, x0.detach(), sample_noise(x0, g), t)
    real = vsd.guided_real_x0(noisy, t, positive, negative)
    fake = vsd.fake_x0(noisy, t, positive)
    weight = (x0.detach() - real).abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = 2 * (fake - real) / weight / x0.numel()
    assert torch.isfinite(loss)
    assert torch.allclose(x0.grad, expected, rtol=1e-4, atol=1e-9)
    assert expected.abs().max() > 0


def test_vsd_vanishes_when_the_variational_network_equals_the_unguided_teacher(
    tiny_sd: SDComponents,
) -> None:
    vsd = _vsd(tiny_sd, guidance_scale=1.0)  # a fresh LoRA (B = 0) computes the teacher exactly
    positive, negative = _prompts()
    x0 = _latents().requires_grad_(True)
    loss = vsd.generator_loss(x0, positive, negative, torch.Generator().manual_seed(0))
    loss.backward()
    assert float(loss.detach()) < 1e-10
    assert x0.grad.abs().max() < 1e-8


def test_diffusion_loss_trains_the_variational_lora_only(tiny_sd: SDComponents) -> None:
    vsd = _vsd(tiny_sd)
    teacher = {k: v.clone() for k, v in tiny_sd.unet.state_dict().items()}
    lora = mor_named_parameters(vsd.fake_unet)
    optimizer = torch.optim.Adam(lora.values(), lr=1e-2)
    positive, _ = _prompts()
    x0 = _latents().requires_grad_(True)
    losses = []
    for _ in range(3):
        loss = vsd.diffusion_loss(x0, positive, torch.Generator().manual_seed(4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[2] < losses[1] < losses[0]
    assert x0.grad is None
    assert all(torch.equal(v, teacher[k]) for k, v in tiny_sd.unet.state_dict().items())


def test_timesteps_stay_in_the_configured_range(tiny_sd: SDComponents) -> None:
    vsd = _vsd(tiny_sd, min_step_ratio=0.5, max_step_ratio=0.6)
    t = sample_timesteps(1000, vsd.low, vsd.high, torch.Generator().manual_seed(0), "cpu")
    assert int(t.min()) >= 500 and int(t.max()) < 600


def test_an_empty_step_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_step_ratio"):
        VSDConfig(min_step_ratio=0.5, max_step_ratio=0.5)
