"""Task ``sd21-mor``: one-step diffusion MoR-DASR on Stable Diffusion (paper sections 3.5, 4.1).

Each step cuts HR patches, synthesises LR inputs on the fly, scores them with the frozen
degradation estimator and runs three alternating updates, each with its own optimiser:

1. **generator** (VAE-encoder LoRA + UNet MoR): ``l2`` + ``lpips`` on the decoded image,
   ``vsd`` (eq. 4) against the frozen UNet with classifier-free guidance, ``gan`` (eq. 12) through
   the frozen UNet's encoder features, and the degradation-aware ``balance`` loss (eq. 16-17);
2. **variational** score network (a LoRA'd copy of the UNet): the diffusion loss on the detached
   x0 latents of step 1, so it keeps tracking the generator's output distribution;
3. **discriminator** heads: hinge loss, HR latents vs the detached x0 latents of step 1.

A step is one update of each network; ``gradient_accumulation_steps`` micro-batches are summed
per update (DDP gradients are synchronised on the last one only). Randomness (timesteps, noise,
and the in-memory sampler's crops and degradations) comes from the step's generator, the
streaming pipeline's from (seed, batch, process), so resuming is exact.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mordasr.losses.latent_gan import LatentDiscriminator, LatentGAN
from mordasr.losses.vsd import VSDLoss
from mordasr.metrics.lpips import LPIPS
from mordasr.mor import (
    MoRConfig,
    applied_plan,
    inject_mor,
    load_mor_state_dict,
    mor_named_parameters,
    mor_state_dict,
)
from mordasr.sr.mor_sr import estimate_scores
from mordasr.sr.sd import UNET_TARGETS, OneStepGenerator, load_sd_components
from mordasr.sr.sd.sr_model import OneStepSR, estimator_for
from mordasr.train.config import SDModelSection, TrainConfig
from mordasr.train.task import register_task
from mordasr.train.tasks.base import MoRTask, named_optimizers


class GeneratorStep(nn.Module):
    """The generator's differentiable path as one module call (what DDP wraps).

    It runs the UNet itself rather than :meth:`OneStepGenerator.denoise`, so the routing the
    caller sets stays in place through the backward pass (gradient checkpointing re-runs the MoR
    layers there). The balance loss is an output too: when an image keeps only zero experts in
    some layer, that router reaches the loss through the balance term alone, and DDP must see it
    in the forward's outputs to account for its gradient.
    """

    def __init__(self, generator: OneStepGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, lr: Tensor, prompt_embeds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """LR (B, 3, h, w) in [0, 1] -> x0 latents, the decoded image in [-1, 1] and the
        degradation-aware balance loss of this pass (with ``alpha = 1``)."""
        g = self.generator
        latents = g.encode_lr(lr)
        timestep = torch.full(
            (latents.shape[0],), g.config.timestep, device=latents.device, dtype=torch.long
        )
        prediction = g.unet(latents, timestep, encoder_hidden_states=prompt_embeds).sample
        x0 = g.x0_from_prediction(latents, prediction)
        plan = applied_plan(g.unet)
        balance = torch.zeros(()) if plan is None else plan.balance_loss()
        return x0, g.decode(x0), balance.to(x0.device)


@register_task("sd21-mor")
class OneStepSDTask(MoRTask):
    """Fine-tune SD 2.1 into a one-step, degradation-routed MoR super-resolver."""

    def __init__(self, config: TrainConfig, accelerator: Any) -> None:
        super().__init__(config, accelerator)
        options: SDModelSection = config.model
        self.model_config = options.generator
        scale = config.degradation.scale or self.model_config.scale
        self.require(
            scale == self.model_config.scale,
            f"degradation.scale: {scale} differs from model.scale {self.model_config.scale}",
        )
        self.setup_data(scale)

        components = load_sd_components(self.model_config.base_model, device=self.device)
        self.scheduler = components.scheduler
        uses_vsd, uses_gan = "vsd" in self.weights, "gan" in self.weights
        teacher = copy.deepcopy(components.unet) if uses_vsd or uses_gan else None
        hr_vae = copy.deepcopy(components.vae) if uses_gan else None
        variational = copy.deepcopy(components.unet) if uses_vsd else None
        torch.manual_seed(config.seed)  # adapter initialisation independent of what loaded before
        generator = OneStepGenerator(components, self.model_config)
        if variational is not None:
            lora = MoRConfig.lora(options.vsd.lora_rank, target_modules=list(UNET_TARGETS))
            inject_mor(variational, lora)
        if options.gradient_checkpointing:
            for module in (generator.unet, generator.vae, teacher, variational):
                if module is not None:
                    module.enable_gradient_checkpointing()
        self.generator = generator
        self.hr_vae = hr_vae
        self.estimator = estimator_for(self.model_config).to(self.device).eval()
        with torch.no_grad():
            self.positive = generator.encode_prompt([self.model_config.prompt])
            self.negative = generator.encode_prompt([self.model_config.negative_prompt])

        self.generator_params = generator.trainable_parameters()
        self.net_g, self.optimizer_g = accelerator.prepare(
            GeneratorStep(generator), self.generator_adam()
        )
        self.ema = self.make_ema(self.generator_params)

        self.vsd: VSDLoss | None = None
        self.optimizer_v: torch.optim.Optimizer | None = None
        if variational is not None:
            assert teacher is not None  # copied whenever the VSD loss is on
            params = mor_named_parameters(variational).values()
            variational, self.optimizer_v = accelerator.prepare(
                variational, self.adam(params, config.optim.lr)
            )
            self.vsd = VSDLoss(teacher, variational, self.scheduler, options.vsd)

        self.gan: LatentGAN | None = None
        if uses_gan:
            assert teacher is not None  # copied whenever the GAN loss is on
            torch.manual_seed(config.seed + 1)
            heads = LatentDiscriminator.for_unet(teacher, options.discriminator.hidden)
            heads = heads.to(self.device)
            self.net_d, self.optimizer_d = accelerator.prepare(
                heads, self.adam(heads.parameters(), config.optim.lr_discriminator)
            )
            self.gan = LatentGAN(teacher, self.scheduler, options.discriminator)

        self.lpips = LPIPS("vgg").to(self.device) if "lpips" in self.weights else None
        self.setup_pool()

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return named_optimizers(
            generator=self.optimizer_g,
            variational=self.optimizer_v,
            discriminator=self.optimizer_d,
        )

    @property
    def routed_model(self) -> nn.Module:
        return self.generator.unet

    @torch.no_grad()
    def _scored(self, lr: Tensor, gt: Tensor) -> dict[str, Tensor]:
        return {"lr": lr, "gt": gt, "scores": estimate_scores(self.estimator, lr)}

    def _prompts(self, batch: int) -> tuple[Tensor, Tensor]:
        return (
            self.positive.expand(batch, -1, -1),
            self.negative.expand(batch, -1, -1),
        )

    # The three updates --------------------------------------------------------------------------
    def _updates(
        self, batches: list[dict[str, Tensor]], generator: torch.Generator, logs: dict[str, float]
    ) -> None:
        def generator_losses(batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
            positive, _ = self._prompts(batch["lr"].shape[0])
            x0, image, balance = self.net_g(batch["lr"], positive)
            losses = self._generator_losses(x0, image, batch["gt"], generator)
            if "balance" in self.weights:
                losses["balance"] = self.weights["balance"] * balance
            return losses, x0.detach()

        fakes = self.update_generator(batches, generator_losses, logs)
        if self.vsd is not None:
            assert self.optimizer_v is not None
            self.update(
                self.optimizer_v,
                self.vsd.fake_unet,
                fakes,
                lambda x0: self._variational_losses(x0, generator),
                logs,
            )
        if self.gan is not None:
            assert self.net_d is not None and self.optimizer_d is not None
            self.update(
                self.optimizer_d,
                self.net_d,
                list(zip(fakes, batches, strict=True)),
                lambda pair: self._discriminator_losses(*pair, generator),
                logs,
            )

    def _generator_losses(
        self, x0: Tensor, image: Tensor, gt: Tensor, generator: torch.Generator
    ) -> dict[str, Tensor]:
        w = self.weights
        losses: dict[str, Tensor] = {}
        if "l2" in w:
            losses["l2"] = w["l2"] * F.mse_loss(image.float(), gt * 2.0 - 1.0)
        if self.lpips is not None:
            sr = (image.float() + 1.0) / 2.0
            losses["lpips"] = w["lpips"] * self.lpips(sr, gt).mean()
        positive, negative = self._prompts(x0.shape[0])
        if self.vsd is not None:
            losses["vsd"] = w["vsd"] * self.vsd.generator_loss(x0, positive, negative, generator)
        if self.gan is not None:
            heads = self.accelerator.unwrap_model(self.net_d)
            losses["gan_g"] = w["gan"] * self.gan.generator_loss(heads, x0, positive, generator)
        return losses

    def _variational_losses(
        self, x0: Tensor, generator: torch.Generator
    ) -> tuple[dict[str, Tensor], None]:
        """The variational score network's diffusion loss on the generator's detached x0."""
        assert self.vsd is not None
        positive, _ = self._prompts(x0.shape[0])
        return {"variational": self.vsd.diffusion_loss(x0, positive, generator)}, None

    @torch.no_grad()
    def _hr_latents(self, gt: Tensor) -> Tensor:
        """HR images through the pretrained (LoRA-free) VAE encoder: the GAN's real samples."""
        assert self.hr_vae is not None
        x = (gt * 2.0 - 1.0).to(self.hr_vae.dtype)
        return self.hr_vae.encode(x).latent_dist.mode() * self.hr_vae.config.scaling_factor

    def _discriminator_losses(
        self, x0: Tensor, batch: dict[str, Tensor], generator: torch.Generator
    ) -> tuple[dict[str, Tensor], None]:
        """The heads' hinge loss: HR latents vs the generator's detached x0 latents."""
        assert self.gan is not None and self.net_d is not None
        real = self._hr_latents(batch["gt"])
        positive, _ = self._prompts(x0.shape[0])
        loss = self.gan.discriminator_loss(self.net_d, real, x0, positive, generator)
        return {"gan_d": loss}, None

    # State ------------------------------------------------------------------------------------
    def model_state(self) -> dict[str, dict[str, Tensor]]:
        state = {"adapter": self.generator.adapter_state_dict()}
        if self.vsd is not None:
            state["variational"] = mor_state_dict(self.accelerator.unwrap_model(self.vsd.fake_unet))
        return state

    def load_model_state(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        self.generator.load_adapter_state_dict(tensors["adapter"])
        if self.vsd is not None:
            variational = self.accelerator.unwrap_model(self.vsd.fake_unet)
            load_mor_state_dict(variational, tensors["variational"])

    def save_model(self, directory: Path) -> Path:
        """The inference checkpoint (:meth:`OneStepSR.save_pretrained`)."""
        return OneStepSR(self.generator, self.estimator).save_pretrained(directory)
