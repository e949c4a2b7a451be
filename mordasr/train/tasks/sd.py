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
per update (DDP gradients are synchronised on the last one only). Randomness (crops,
degradations, timesteps, noise) comes from the step's generator, so resuming is exact.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from mordasr.degrade import degrade, resolve_config
from mordasr.losses.latent_gan import LatentDiscriminator, LatentGAN, LatentGANConfig
from mordasr.losses.vsd import VSDConfig, VSDLoss
from mordasr.metrics.lpips import LPIPS
from mordasr.mor import (
    MoRConfig,
    balance_loss,
    inject_mor,
    load_mor_state_dict,
    mor_layers,
    mor_named_parameters,
    mor_state_dict,
    routing,
)
from mordasr.sr.mor_sr import estimate_scores
from mordasr.sr.sd import (
    UNET_TARGETS,
    OneStepConfig,
    OneStepGenerator,
    load_sd_components,
)
from mordasr.sr.sd.sr_model import OneStepSR, estimator_for
from mordasr.train.config import TrainConfig
from mordasr.train.data import PatchSampler, find_images, step_generator
from mordasr.train.ema import EMA
from mordasr.train.task import TrainTask, loss_weights, register_task

KNOWN_LOSSES = {"l2", "lpips", "vsd", "gan", "balance"}


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
        return x0, g.decode(x0), balance_loss(g.unet).to(x0.device)


@register_task("sd21-mor")
class OneStepSDTask(TrainTask):
    """Fine-tune SD 2.1 into a one-step, degradation-routed MoR super-resolver."""

    def __init__(self, config: TrainConfig, accelerator: Any) -> None:
        super().__init__(config, accelerator)
        self.weights = loss_weights(config, KNOWN_LOSSES)
        options = dict(config.model)
        checkpointing = bool(options.pop("gradient_checkpointing", False))
        vsd_config = VSDConfig(**options.pop("vsd", {}))
        gan_config = LatentGANConfig(**options.pop("discriminator", {}))
        self.model_config = OneStepConfig.from_dict(options)
        self.device = accelerator.device
        scale = int(config.degradation.get("scale", self.model_config.scale))
        if scale != self.model_config.scale:
            raise ValueError(f"degradation.scale {scale} != model.scale {self.model_config.scale}")
        presets = config.degradation.get("preset", "realesrgan")
        names = [presets] if isinstance(presets, str) else list(presets)
        self.degradations = [resolve_config(name) for name in names]
        files = find_images(config.data.hr_dirs, config.data.max_images)
        self.sampler = PatchSampler(files, config.data.patch_size, config.data.augment)

        components = load_sd_components(self.model_config.base_model, device=self.device)
        self.scheduler = components.scheduler
        uses_vsd, uses_gan = "vsd" in self.weights, "gan" in self.weights
        teacher = copy.deepcopy(components.unet) if uses_vsd or uses_gan else None
        hr_vae = copy.deepcopy(components.vae) if uses_gan else None
        variational = copy.deepcopy(components.unet) if uses_vsd else None
        torch.manual_seed(config.seed)  # adapter initialisation independent of what loaded before
        generator = OneStepGenerator(components, self.model_config)
        if variational is not None:
            lora = MoRConfig.lora(vsd_config.lora_rank, target_modules=list(UNET_TARGETS))
            inject_mor(variational, lora)
        if checkpointing:
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
            GeneratorStep(generator), self._adam(self.generator_params.values(), config.optim.lr)
        )
        self.ema = EMA(self.generator_params, config.ema_decay) if config.ema_decay > 0 else None

        self.vsd: VSDLoss | None = None
        self.optimizer_v: torch.optim.Optimizer | None = None
        if variational is not None:
            params = mor_named_parameters(variational).values()
            variational, self.optimizer_v = accelerator.prepare(
                variational, self._adam(params, config.optim.lr)
            )
            self.vsd = VSDLoss(teacher, variational, self.scheduler, vsd_config)

        self.gan: LatentGAN | None = None
        self.net_d: nn.Module | None = None
        self.optimizer_d: torch.optim.Optimizer | None = None
        if uses_gan:
            torch.manual_seed(config.seed + 1)
            heads = LatentDiscriminator.for_unet(teacher, gan_config.hidden).to(self.device)
            self.net_d, self.optimizer_d = accelerator.prepare(
                heads, self._adam(heads.parameters(), config.optim.lr_discriminator)
            )
            self.gan = LatentGAN(teacher, self.scheduler, gan_config)

        self.lpips = LPIPS("vgg").to(self.device) if "lpips" in self.weights else None
        self.pool = self._make_pool(config.data.pool_size) if config.data.pool_size else None

    def _adam(self, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        optim = self.config.optim
        return torch.optim.AdamW(params, lr=lr, betas=optim.betas, weight_decay=optim.weight_decay)

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"generator": self.optimizer_g}
        if self.optimizer_v is not None:
            optimizers["variational"] = self.optimizer_v
        if self.optimizer_d is not None:
            optimizers["discriminator"] = self.optimizer_d
        return optimizers

    # Data -------------------------------------------------------------------------------------
    def _batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """HR patches degraded on the fly, the batch split evenly between the presets."""
        hr = self.sampler.sample(self.config.data.batch_size, generator).to(self.device)
        lrs, gts = [], []
        for chunk, preset in zip(
            hr.tensor_split(len(self.degradations)), self.degradations, strict=True
        ):
            seed = int(torch.randint(2**62, (1,), generator=generator))
            if chunk.shape[0]:
                result = degrade(chunk, preset, scale=self.model_config.scale, seed=seed)
                lrs.append(result.lr)
                gts.append(result.gt)
        return torch.cat(lrs), torch.cat(gts)

    def _scored(self, lr: Tensor, gt: Tensor) -> dict[str, Tensor]:
        return {"lr": lr, "gt": gt, "scores": estimate_scores(self.estimator, lr)}

    @torch.no_grad()
    def _make_pool(self, size: int) -> dict[str, Tensor]:
        """Synthesise ``size`` scored pairs once (seeded), to draw batches from."""
        generator = step_generator(self.config.seed, 0, 20_000)
        parts: dict[str, list[Tensor]] = {}
        with tqdm(total=size, desc="synthesising pool", unit="pair", leave=False) as bar:
            while bar.n < size:
                for key, value in self._scored(*self._batch(generator)).items():
                    parts.setdefault(key, []).append(value)
                bar.update(parts["lr"][-1].shape[0])
        return {key: torch.cat(values)[:size] for key, values in parts.items()}

    def _draw(self, generator: torch.Generator) -> dict[str, Tensor]:
        """One batch: from the pool when there is one, freshly synthesised otherwise."""
        if self.pool is None:
            return self._scored(*self._batch(generator))
        size = self.pool["lr"].shape[0]
        picks = torch.randint(size, (self.config.data.batch_size,), generator=generator)
        return {key: value[picks.to(value.device)] for key, value in self.pool.items()}

    def _prompts(self, batch: int) -> tuple[Tensor, Tensor]:
        return (
            self.positive.expand(batch, -1, -1),
            self.negative.expand(batch, -1, -1),
        )

    # The three updates --------------------------------------------------------------------------
    def _set_lr(self, step: int) -> float:
        warmup = self.config.optim.warmup_steps
        factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        rates = {"discriminator": self.config.optim.lr_discriminator}
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = rates.get(name, self.config.optim.lr) * factor
        return self.config.optim.lr * factor

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        lr_rate = self._set_lr(step)
        batches = [self._draw(generator) for _ in range(self.config.gradient_accumulation_steps)]
        logs: dict[str, float] = {}
        fakes = self._generator_update(batches, generator, logs)
        if self.vsd is not None:
            self._variational_update(fakes, generator, logs)
        if self.gan is not None:
            self._discriminator_update(fakes, batches, generator, logs)
        logs["zero_experts"] = self._mean_zero_experts()
        logs["lr"] = lr_rate
        logs["processes"] = float(self.accelerator.num_processes)
        return logs

    def _micro_batches(self, model: nn.Module, count: int) -> Iterator[Any]:
        """One context per micro-batch: DDP gradient sync is skipped for all but the last."""
        for i in range(count):
            yield nullcontext() if i == count - 1 else self.accelerator.no_sync(model)

    def _generator_update(
        self, batches: list[dict[str, Tensor]], generator: torch.Generator, logs: dict[str, float]
    ) -> list[Tensor]:
        self.optimizer_g.zero_grad(set_to_none=True)
        fakes = []
        unet = self.generator.unet
        for batch, sync in zip(batches, self._micro_batches(self.net_g, len(batches)), strict=True):
            with sync, routing(unet, batch["scores"]):
                with self.accelerator.autocast():
                    positive, _ = self._prompts(batch["lr"].shape[0])
                    x0, image, balance = self.net_g(batch["lr"], positive)
                    losses = self._generator_losses(x0, image, batch["gt"], generator)
                    if "balance" in self.weights:
                        losses["balance"] = self.weights["balance"] * balance
                self.accelerator.backward(sum(losses.values()) / len(batches))
            fakes.append(x0.detach())
            _accumulate(logs, losses, len(batches))
        if self.config.optim.grad_clip:
            self.accelerator.clip_grad_norm_(
                list(self.generator_params.values()), self.config.optim.grad_clip
            )
        self.optimizer_g.step()
        if self.ema is not None:
            self.ema.update()
        return fakes

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

    def _variational_update(
        self, fakes: list[Tensor], generator: torch.Generator, logs: dict[str, float]
    ) -> None:
        assert self.vsd is not None and self.optimizer_v is not None
        self.optimizer_v.zero_grad(set_to_none=True)
        model = self.vsd.fake_unet
        for x0, sync in zip(fakes, self._micro_batches(model, len(fakes)), strict=True):
            with sync:
                with self.accelerator.autocast():
                    positive, _ = self._prompts(x0.shape[0])
                    loss = self.vsd.diffusion_loss(x0, positive, generator)
                self.accelerator.backward(loss / len(fakes))
            _accumulate(logs, {"variational": loss}, len(fakes))
        self.optimizer_v.step()

    @torch.no_grad()
    def _hr_latents(self, gt: Tensor) -> Tensor:
        """HR images through the pretrained (LoRA-free) VAE encoder: the GAN's real samples."""
        assert self.hr_vae is not None
        x = (gt * 2.0 - 1.0).to(self.hr_vae.dtype)
        return self.hr_vae.encode(x).latent_dist.mode() * self.hr_vae.config.scaling_factor

    def _discriminator_update(
        self,
        fakes: list[Tensor],
        batches: list[dict[str, Tensor]],
        generator: torch.Generator,
        logs: dict[str, float],
    ) -> None:
        assert self.gan is not None and self.net_d is not None and self.optimizer_d is not None
        self.optimizer_d.zero_grad(set_to_none=True)
        syncs = self._micro_batches(self.net_d, len(fakes))
        for x0, batch, sync in zip(fakes, batches, syncs, strict=True):
            with sync:
                with self.accelerator.autocast():
                    real = self._hr_latents(batch["gt"])
                    positive, _ = self._prompts(x0.shape[0])
                    loss = self.gan.discriminator_loss(self.net_d, real, x0, positive, generator)
                self.accelerator.backward(loss / len(fakes))
            _accumulate(logs, {"gan_d": loss}, len(fakes))
        self.optimizer_d.step()

    def _mean_zero_experts(self) -> float:
        counts = [
            layer.last_routing.num_zero_active.float().mean()
            for _, layer in mor_layers(self.generator.unet)
            if layer.last_routing is not None
        ]
        return float(torch.stack(counts).mean()) if counts else 0.0

    # State ------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        state = {"adapter": self.generator.adapter_state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.vsd is not None:
            state["variational"] = mor_state_dict(self.accelerator.unwrap_model(self.vsd.fake_unet))
        if self.net_d is not None:
            state["discriminator"] = self.accelerator.unwrap_model(self.net_d).state_dict()
        return state

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        self.generator.load_adapter_state_dict(tensors["adapter"])
        if self.ema is not None:
            self.ema.load_state_dict(tensors["ema"])
        if self.vsd is not None:
            variational = self.accelerator.unwrap_model(self.vsd.fake_unet)
            load_mor_state_dict(variational, tensors["variational"])
        if self.net_d is not None:
            self.accelerator.unwrap_model(self.net_d).load_state_dict(tensors["discriminator"])

    def export(self, directory: Path) -> Path:
        """The inference checkpoint (:meth:`OneStepSR.save_pretrained`), EMA weights if kept."""
        with self.ema.swapped_in() if self.ema is not None else nullcontext():
            return OneStepSR(self.generator, self.estimator).save_pretrained(directory)


def _accumulate(logs: dict[str, float], losses: dict[str, Tensor], count: int) -> None:
    for name, value in losses.items():
        logs[name] = logs.get(name, 0.0) + float(value.detach()) / count
