"""Latent GAN (eq. 12): frozen UNet encoder features, time-aware heads, hinge losses."""

from __future__ import annotations

import pytest
import torch

from mordasr.losses.latent_gan import (
    LatentDiscriminator,
    LatentGAN,
    LatentGANConfig,
    encoder_features,
    feature_channels,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from mordasr.sr.sd import SDComponents


def _embeds() -> torch.Tensor:
    return torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1))


def _latents(seed: int) -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _heads(sd: SDComponents) -> LatentDiscriminator:
    torch.manual_seed(0)
    return LatentDiscriminator.for_unet(sd.unet, hidden=16)


def test_features_come_from_every_down_block_and_the_mid_block_only(
    tiny_sd: SDComponents,
) -> None:
    calls = []
    hook = tiny_sd.unet.up_blocks[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        features, emb = encoder_features(
            tiny_sd.unet, _latents(0), torch.tensor([3, 700]), _embeds()
        )
    finally:
        hook.remove()
    assert [f.shape[1] for f in features] == feature_channels(tiny_sd.unet) == [32, 64, 64]
    assert emb.shape == (2, 128)
    assert calls == []


def test_heads_are_conditioned_on_the_timestep(tiny_sd: SDComponents) -> None:
    heads = _heads(tiny_sd)
    features, _ = encoder_features(tiny_sd.unet, _latents(0), torch.tensor([3, 3]), _embeds())
    _, early = encoder_features(tiny_sd.unet, _latents(0), torch.tensor([3, 3]), _embeds())
    _, late = encoder_features(tiny_sd.unet, _latents(0), torch.tensor([900, 900]), _embeds())
    assert not torch.allclose(heads(features, early)[0], heads(features, late)[0])


def test_hinge_losses_match_their_definition() -> None:
    confident = hinge_discriminator_loss(
        [torch.full((2, 1, 4, 4), 2.0)], [torch.full((2, 1, 4, 4), -2.0)]
    )
    undecided = hinge_discriminator_loss([torch.zeros(2, 1, 4, 4)], [torch.zeros(2, 1, 4, 4)])
    assert float(confident) == 0.0
    assert float(undecided) == 2.0
    assert (
        float(hinge_generator_loss([torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 1, 1), 1.5)]))
        == -1.0
    )


def test_discriminator_loss_is_finite_and_decreases_on_a_fixed_batch(tiny_sd: SDComponents) -> None:
    gan = LatentGAN(tiny_sd.unet, tiny_sd.scheduler, LatentGANConfig())
    heads = _heads(tiny_sd)
    optimizer = torch.optim.Adam(heads.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        g = torch.Generator().manual_seed(5)
        loss = gan.discriminator_loss(heads, _latents(0), _latents(1), _embeds(), g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[2] < losses[1] < losses[0]


def test_generator_loss_decreases_and_reaches_the_latents_only(
    tiny_sd: SDComponents,
) -> None:
    gan = LatentGAN(tiny_sd.unet, tiny_sd.scheduler, LatentGANConfig())
    heads = _heads(tiny_sd)
    fake = torch.nn.Parameter(_latents(1))
    optimizer = torch.optim.Adam([fake], lr=5e-2)
    losses = []
    for _ in range(3):
        loss = gan.generator_loss(heads, fake, _embeds(), torch.Generator().manual_seed(6))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[2] < losses[1] < losses[0]
    assert all(p.grad is None for p in tiny_sd.unet.parameters())
    assert all(p.grad is None for p in heads.parameters())


def test_an_empty_step_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_step_ratio"):
        LatentGANConfig(min_step_ratio=0.9, max_step_ratio=0.1)


def test_real_and_fake_in_one_call_equal_two_separate_calls(tiny_sd: SDComponents) -> None:
    gan = LatentGAN(tiny_sd.unet, tiny_sd.scheduler, LatentGANConfig())
    heads = _heads(tiny_sd)
    real, fake, embeds = _latents(0), _latents(1), _embeds()
    joint = gan.discriminator_loss(heads, real, fake, embeds, torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(8)
    real_logits = heads(*gan.noisy_features(real, embeds, g))
    fake_logits = heads(*gan.noisy_features(fake, embeds, g))
    assert torch.allclose(joint, hinge_discriminator_loss(real_logits, fake_logits), atol=1e-6)
