"""Variational score distillation (paper eq. 4), as OSEDiff applies it to one-step SR.

The generator's x0 latents are re-noised at a random timestep and denoised by two UNets:

* the frozen pretrained UNet, the "real" score, with classifier-free guidance between the
  positive and the negative prompt;
* the variational score network, a copy of the same UNet with a trainable LoRA that is fitted to
  the generator's own outputs by the ordinary diffusion loss (:meth:`VSDLoss.diffusion_loss`).

The generator is pushed along the difference of the two x0 estimates, normalised per image by the
mean absolute distance between its latents and the real estimate (OSEDiff's weighting ``w(t)``,
which makes the step size independent of the noise level). The surrogate
``mse(x0, stopgrad(x0 - grad))`` has exactly ``2 grad / numel`` as its gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SchedulerConfig(Protocol):
    """The fields of a diffusers scheduler's config that the SD losses read."""

    @property
    def prediction_type(self) -> str: ...

    @property
    def num_train_timesteps(self) -> int: ...


class NoiseScheduler(Protocol):
    """What the SD losses need of a diffusers DDPM-style scheduler (e.g. ``DDPMScheduler``)."""

    alphas_cumprod: Tensor

    @property
    def config(self) -> SchedulerConfig: ...


@dataclass
class RenoiseRange:
    """The timestep range an SD loss re-noises latents at (the VSD loss and the latent GAN)."""

    min_step_ratio: float = 0.02
    """Re-noising timesteps are drawn uniformly from [min, max) x ``num_train_timesteps``."""
    max_step_ratio: float = 0.98

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_step_ratio < self.max_step_ratio <= 1.0:
            raise ValueError("need 0 <= min_step_ratio < max_step_ratio <= 1")

    def step_bounds(self, num_train_timesteps: int) -> tuple[int, int]:
        """The integer timesteps ``[low, high)`` of the range (at least one)."""
        low = int(self.min_step_ratio * num_train_timesteps)
        return low, max(low + 1, int(self.max_step_ratio * num_train_timesteps))


@dataclass
class VSDConfig(RenoiseRange):
    """How the VSD loss samples timesteps and guides the real score."""

    guidance_scale: float = 7.5
    """Classifier-free guidance of the frozen UNet (OSEDiff's ``cfg_vsd``)."""
    lora_rank: int = 4
    """Rank of the variational score network's LoRA (paper 4.1: 4)."""


def _alpha_bar(scheduler: NoiseScheduler, timesteps: Tensor, like: Tensor) -> Tensor:
    """``alphas_cumprod[t]`` shaped to broadcast over (B, C, H, W) latents, in float32."""
    table = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)
    return table[timesteps].view(-1, *([1] * (like.ndim - 1)))


def add_noise(scheduler: NoiseScheduler, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """Forward diffusion ``sqrt(a) x0 + sqrt(1 - a) noise`` at ``timesteps`` (B,), float32."""
    a = _alpha_bar(scheduler, timesteps, x0)
    return a.sqrt() * x0.float() + (1.0 - a).sqrt() * noise.float()


def predict_x0(
    scheduler: NoiseScheduler, output: Tensor, noisy: Tensor, timesteps: Tensor
) -> Tensor:
    """The clean-latent estimate implied by a UNet output (epsilon or v prediction)."""
    a = _alpha_bar(scheduler, timesteps, noisy)
    output, noisy = output.float(), noisy.float()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (noisy - (1.0 - a).sqrt() * output) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * noisy - (1.0 - a).sqrt() * output
    raise ValueError(f"unsupported prediction_type {kind!r}")


def diffusion_target(
    scheduler: NoiseScheduler, x0: Tensor, noise: Tensor, timesteps: Tensor
) -> Tensor:
    """What the UNet should output for ``add_noise(x0, noise, t)``: noise or velocity."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise.float()
    if kind == "v_prediction":
        a = _alpha_bar(scheduler, timesteps, x0)
        return a.sqrt() * noise.float() - (1.0 - a).sqrt() * x0.float()
    raise ValueError(f"unsupported prediction_type {kind!r}")


def sample_timesteps(
    batch: int, low: int, high: int, generator: torch.Generator, device: torch.device | str
) -> Tensor:
    """(B,) integer timesteps uniform in [low, high), drawn on the CPU generator."""
    return torch.randint(low, high, (batch,), generator=generator).to(device)


def sample_noise(like: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal noise shaped like ``like``, drawn on the CPU generator (device-independent
    and reproducible), then moved to ``like``'s device in float32."""
    return torch.randn(like.shape, generator=generator).to(like.device)


def _unet(unet: nn.Module, sample: Tensor, timesteps: Tensor, embeds: Tensor) -> Tensor:
    dtype = next(unet.parameters()).dtype
    return unet(
        sample.to(dtype), timesteps, encoder_hidden_states=embeds.to(dtype), return_dict=False
    )[0]


class VSDLoss:
    """Generator-side VSD loss and the variational network's diffusion loss.

    ``real_unet`` is frozen; ``fake_unet`` is the variational score network (its LoRA is the only
    trainable part; the caller owns its optimiser). Both see the same noisy latents.
    """

    def __init__(
        self,
        real_unet: nn.Module,
        fake_unet: nn.Module,
        scheduler: NoiseScheduler,
        config: VSDConfig,
    ) -> None:
        self.real_unet = real_unet
        self.fake_unet = fake_unet
        self.scheduler = scheduler
        self.config = config
        steps = int(scheduler.config.num_train_timesteps)
        self.low, self.high = config.step_bounds(steps)
        self.num_train_timesteps = steps

    def guided_real_x0(
        self, noisy: Tensor, timesteps: Tensor, positive: Tensor, negative: Tensor
    ) -> Tensor:
        """The frozen UNet's x0 estimate with classifier-free guidance (no gradient)."""
        with torch.no_grad():
            both = _unet(
                self.real_unet,
                torch.cat([noisy, noisy]),
                torch.cat([timesteps, timesteps]),
                torch.cat([negative, positive]),
            )
            uncond, cond = both.float().chunk(2)
            guided = uncond + self.config.guidance_scale * (cond - uncond)
            return predict_x0(self.scheduler, guided, noisy, timesteps)

    def fake_x0(self, noisy: Tensor, timesteps: Tensor, positive: Tensor) -> Tensor:
        """The variational network's x0 estimate (no gradient)."""
        with torch.no_grad():
            output = _unet(self.fake_unet, noisy, timesteps, positive)
            return predict_x0(self.scheduler, output, noisy, timesteps)

    def generator_loss(
        self, x0: Tensor, positive: Tensor, negative: Tensor, generator: torch.Generator
    ) -> Tensor:
        """VSD surrogate on the generator's (B, C, h, w) x0 latents; gradients reach ``x0`` only.

        ``positive``/``negative`` are (B, T, D) prompt embeddings (expand a single negative
        prompt to the batch first).
        """
        batch = x0.shape[0]
        timesteps = sample_timesteps(batch, self.low, self.high, generator, x0.device)
        noisy = add_noise(self.scheduler, x0.detach(), sample_noise(x0, generator), timesteps)
        real = self.guided_real_x0(noisy, timesteps, positive, negative)
        fake = self.fake_x0(noisy, timesteps, positive)
        weight = (x0.detach().float() - real).abs().mean(dim=(1, 2, 3), keepdim=True)
        grad = (fake - real) / weight.clamp_min(1e-8)
        x0 = x0.float()
        return F.mse_loss(x0, (x0 - grad).detach())

    def diffusion_loss(self, x0: Tensor, positive: Tensor, generator: torch.Generator) -> Tensor:
        """Denoising loss of the variational network on detached generator latents: it learns
        the score of the generator's current output distribution."""
        x0 = x0.detach()
        batch = x0.shape[0]
        timesteps = sample_timesteps(batch, 0, self.num_train_timesteps, generator, x0.device)
        noise = sample_noise(x0, generator)
        noisy = add_noise(self.scheduler, x0, noise, timesteps)
        output = _unet(self.fake_unet, noisy, timesteps, positive.detach())
        target = diffusion_target(self.scheduler, x0, noise, timesteps)
        return F.mse_loss(output.float(), target)
