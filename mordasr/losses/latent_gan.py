"""Latent GAN on frozen diffusion features (paper eq. 12).

Real (HR) and generated x0 latents are re-noised at a random timestep and passed through the
frozen pretrained UNet's encoder half (every down block and the mid block). Each of
these feature maps feeds a small time-aware head (conv, group norm, SiLU, then a FiLM modulation
by the UNet's own timestep embedding, then a 1x1 conv to one logit per position), so the
discriminator judges realism at several scales and noise levels while the heavy feature extractor
stays frozen (as in latent adversarial diffusion distillation).

Loss: hinge. Eq. 12 writes the generator's term as ``-E[D(z_t, t)]``, which is the hinge GAN's
generator loss; the heads are trained with ``relu(1 - D(real)) + relu(1 + D(fake))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from mordasr.losses.vsd import (
    NoiseScheduler,
    RenoiseRange,
    add_noise,
    sample_noise,
    sample_timesteps,
)


@dataclass
class LatentGANConfig(RenoiseRange):
    """Size of the heads and the re-noising range."""

    hidden: int = 128
    """Channels of each head's hidden layer."""


def encoder_features(
    unet: nn.Module, sample: Tensor, timesteps: Tensor, embeds: Tensor
) -> tuple[list[Tensor], Tensor]:
    """The outputs of every down block and of the mid block of a diffusers
    ``UNet2DConditionModel`` (the up blocks are never run), and its timestep embedding."""
    # Duck-typed: torch's stubs type a module's config and blocks as Tensor | Module.
    net = cast(Any, unet)
    if getattr(unet, "class_embedding", None) is not None or net.config.addition_embed_type:
        raise ValueError("encoder_features supports text-conditioned UNets only (SD 1.x/2.x)")
    dtype = next(unet.parameters()).dtype
    sample, embeds = sample.to(dtype), embeds.to(dtype)
    emb = net.time_embedding(net.time_proj(timesteps).to(dtype))
    if net.time_embed_act is not None:
        emb = net.time_embed_act(emb)
    hidden = net.conv_in(sample)
    features = []
    for block in net.down_blocks:
        if getattr(block, "has_cross_attention", False):
            hidden, _ = block(hidden_states=hidden, temb=emb, encoder_hidden_states=embeds)
        else:
            hidden, _ = block(hidden_states=hidden, temb=emb)
        features.append(hidden)
    features.append(net.mid_block(hidden, emb, encoder_hidden_states=embeds))
    return features, emb


def feature_channels(unet: nn.Module) -> list[int]:
    """Channels of :func:`encoder_features`' maps: one per down block, then the mid block."""
    channels = list(cast(Any, unet).config.block_out_channels)
    return [*channels, channels[-1]]


def embedding_dim(unet: nn.Module) -> int:
    """Width of the UNet's timestep embedding."""
    return int(cast(Any, unet).time_embedding.linear_2.out_features)


class TimeAwareHead(nn.Module):
    """One feature map and the timestep embedding -> (B, 1, h, w) logits."""

    def __init__(self, channels: int, emb_dim: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.norm = nn.GroupNorm(min(32, hidden), hidden)
        self.film = nn.Linear(emb_dim, 2 * hidden)
        self.out = nn.Conv2d(hidden, 1, 1)

    def forward(self, feature: Tensor, emb: Tensor) -> Tensor:
        h = F.silu(self.norm(self.conv(feature)))
        scale, shift = self.film(F.silu(emb)).chunk(2, dim=1)
        h = h * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]
        return self.out(F.silu(h))


class LatentDiscriminator(nn.Module):
    """The trainable part of the latent GAN: one :class:`TimeAwareHead` per feature scale."""

    def __init__(self, channels: Sequence[int], emb_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.heads = nn.ModuleList(TimeAwareHead(c, emb_dim, hidden) for c in channels)

    @classmethod
    def for_unet(cls, unet: nn.Module, hidden: int = 128) -> LatentDiscriminator:
        """Heads sized for ``unet``'s encoder features."""
        return cls(feature_channels(unet), embedding_dim(unet), hidden)

    def forward(self, features: Sequence[Tensor], emb: Tensor) -> list[Tensor]:
        """Logit maps, one per scale, in float32."""
        if len(features) != len(self.heads):
            raise ValueError(f"expected {len(self.heads)} feature maps, got {len(features)}")
        dtype = next(self.heads.parameters()).dtype
        return [
            head(f.to(dtype), emb.to(dtype)).float()
            for head, f in zip(self.heads, features, strict=True)
        ]


def hinge_discriminator_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """``mean relu(1 - D(real)) + mean relu(1 + D(fake))``, averaged over the scales."""
    terms = [
        F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean() for r, f in zip(real, fake, strict=True)
    ]
    return torch.stack(terms).mean()


def hinge_generator_loss(fake: Sequence[Tensor]) -> Tensor:
    """Eq. 12: ``-mean D(fake)``, averaged over the scales."""
    return torch.stack([-f.mean() for f in fake]).mean()


class LatentGAN:
    """Re-noise latents, extract frozen UNet features and score them with the heads."""

    def __init__(self, unet: nn.Module, scheduler: NoiseScheduler, config: LatentGANConfig) -> None:
        self.unet = unet
        self.scheduler = scheduler
        self.low, self.high = config.step_bounds(int(scheduler.config.num_train_timesteps))

    def noisy_features(
        self, latents: Tensor, embeds: Tensor, generator: torch.Generator
    ) -> tuple[list[Tensor], Tensor]:
        """Features of ``latents`` re-noised at random timesteps; gradients reach ``latents``."""
        timesteps = sample_timesteps(
            latents.shape[0], self.low, self.high, generator, latents.device
        )
        noisy = add_noise(self.scheduler, latents, sample_noise(latents, generator), timesteps)
        return encoder_features(self.unet, noisy, timesteps, embeds)

    def discriminator_loss(
        self,
        heads: nn.Module,
        real: Tensor,
        fake: Tensor,
        embeds: Tensor,
        generator: torch.Generator,
    ) -> Tensor:
        """Hinge loss of ``heads`` on HR latents vs detached generated latents.

        Real and fake features go through the heads in one call (one forward per backward, as
        DistributedDataParallel requires); the heads' group norms are per image, so this equals
        two separate calls.
        """
        with torch.no_grad():
            real_features, real_emb = self.noisy_features(real, embeds, generator)
            fake_features, fake_emb = self.noisy_features(fake.detach(), embeds, generator)
            features = [torch.cat(pair) for pair in zip(real_features, fake_features, strict=True)]
            emb = torch.cat([real_emb, fake_emb])
        logits = heads(features, emb)
        batch = real.shape[0]
        return hinge_discriminator_loss([x[:batch] for x in logits], [x[batch:] for x in logits])

    def generator_loss(
        self, heads: nn.Module, fake: Tensor, embeds: Tensor, generator: torch.Generator
    ) -> Tensor:
        """Eq. 12 on generated latents. The heads run on detached copies of their parameters,
        so gradients reach ``fake`` (through the frozen UNet) and never the heads."""
        features, emb = self.noisy_features(fake, embeds, generator)
        frozen = {name: p.detach() for name, p in heads.named_parameters()}
        return hinge_generator_loss(functional_call(heads, frozen, (features, emb)))
