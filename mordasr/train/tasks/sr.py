"""Task ``realesrgan-mor``: MoR adapters on a pretrained RRDBNet, routed by degradation scores.

Each step cuts HR patches, synthesises LR inputs on the fly (Real-ESRGAN second-order pipeline,
every parameter drawn per image), scores them with the frozen estimator, and trains the adapters
with L1 + perceptual + LPIPS + GAN (U-Net discriminator with spectral norm) + the
degradation-aware balance loss. Only the adapters and the discriminator are trained; an EMA of
the adapters is what gets exported. ``model.variant`` and ``model.router_input`` select the
paper's ablations (Tables 2 and 8-12; see the README's "Ablations").
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from mordasr.degrade import degrade, resolve_config
from mordasr.losses.gan import UNetDiscriminatorSN, gan_loss
from mordasr.losses.perceptual import PerceptualLoss
from mordasr.metrics.lpips import LPIPS
from mordasr.mor import (
    MoRConfig,
    allocate_ranks,
    balance_loss,
    degradation_aware_balance,
    gradient_importance,
    inject_mor,
    mor_layers,
    mor_named_parameters,
    mor_state_dict,
    params_per_rank,
    routing,
    variant_config,
)
from mordasr.mor.model import load_mor_state_dict
from mordasr.sr.mor_sr import MoRSuperResolver, SRModelSpec
from mordasr.sr.router_input import router_input, router_input_dim
from mordasr.train.config import TrainConfig
from mordasr.train.data import PatchSampler, find_images, step_generator
from mordasr.train.ema import EMA
from mordasr.train.task import TrainTask, loss_weights, register_task

KNOWN_LOSSES = {"l1", "perceptual", "lpips", "gan", "balance"}


ADAPTER_KEYS = ("mor", "variant", "expert_rank")
"""``model`` options that shape the adapters (read by :func:`adapter_layout`)."""


def adapter_layout(model: dict[str, Any]) -> tuple[MoRConfig, bool]:
    """The MoR layout that ``model`` options ask for and whether the balance loss is
    degradation-aware.

    ``model.mor`` is the template (:class:`MoRConfig` fields), ``model.variant`` one of the
    paper's Table 2 rows (:mod:`mordasr.mor.variants`, default ``mor``) and ``model.expert_rank``
    the rank of each ``lora-moe`` expert (default 4). The routers' ``score_dim`` is set later
    from ``model.router_input``.
    """
    variant = model.get("variant", "mor")
    template = MoRConfig(**model.get("mor", {}))
    layout = variant_config(template, variant, int(model.get("expert_rank", 4)))
    return layout, degradation_aware_balance(variant)


@register_task("realesrgan-mor")
class RealESRGANMoRTask(TrainTask):
    """Adapt a Real-ESRGAN backbone to synthetic real-world degradations with MoR."""

    def __init__(self, config: TrainConfig, accelerator: Any) -> None:
        super().__init__(config, accelerator)
        self.weights = loss_weights(config, KNOWN_LOSSES)
        options = dict(config.model)
        mor, self.degradation_aware = adapter_layout(options)
        for key in ADAPTER_KEYS:
            options.pop(key, None)
        allocation = options.pop("allocate", None)
        disc_feat = int(options.pop("discriminator_feat", 64))
        cache_trunk = bool(options.pop("cache_trunk", False))
        self.spec = SRModelSpec(**options)
        self.device = accelerator.device
        presets = config.degradation.get("preset", "realesrgan")
        names = [presets] if isinstance(presets, str) else list(presets)
        self.degradations = [resolve_config(name) for name in names]
        self.scale = int(config.degradation.get("scale", self.spec.scale))
        files = find_images(config.data.hr_dirs, config.data.max_images)
        self.sampler = PatchSampler(files, config.data.patch_size, config.data.augment)

        model = MoRSuperResolver.build(self.spec, mor=None)
        self.estimator = model.estimator.to(self.device).eval()
        mor = replace(mor, score_dim=router_input_dim(self.spec.router_input, self.estimator))
        net_g = model.backbone.to(self.device)
        if allocation is not None:
            mor = self._allocate(net_g, mor, dict(allocation))
        torch.manual_seed(config.seed)  # adapter init must not depend on what loaded before
        inject_mor(net_g, mor)
        self.adapter_params = mor_named_parameters(net_g)
        self.optimizer_g = torch.optim.AdamW(
            self.adapter_params.values(),
            lr=config.optim.lr,
            betas=config.optim.betas,
            weight_decay=config.optim.weight_decay,
        )
        self.net_d: nn.Module | None = None
        self.optimizer_d: torch.optim.Optimizer | None = None
        if "gan" in self.weights:
            torch.manual_seed(config.seed + 1)
            net_d = UNetDiscriminatorSN(3, disc_feat).to(self.device)
            self.optimizer_d = torch.optim.AdamW(
                net_d.parameters(), lr=config.optim.lr_discriminator, betas=config.optim.betas
            )
            self.net_d, self.optimizer_d = accelerator.prepare(net_d, self.optimizer_d)
        self.net_g, self.optimizer_g = accelerator.prepare(net_g, self.optimizer_g)
        self.ema = EMA(self.adapter_params, config.ema_decay) if config.ema_decay > 0 else None

        self.trunk_start = _first_adapted_block(net_g) if cache_trunk else None
        if cache_trunk and not config.data.pool_size:
            raise ValueError("model.cache_trunk needs data.pool_size > 0 (a fixed pool)")
        self.pool = self._make_pool(config.data.pool_size) if config.data.pool_size else None

        self.perceptual = PerceptualLoss().to(self.device) if "perceptual" in self.weights else None
        self.lpips = LPIPS("vgg").to(self.device) if "lpips" in self.weights else None

    def _allocate(self, net: nn.Module, template: MoRConfig, options: dict[str, Any]) -> MoRConfig:
        """AdaptSR allocation: rank the template's target layers by ``||dL1/dW||`` on a few
        batches and spend ``budget`` adapter parameters on the most important ones.

        The result is written to ``allocated_mor.json`` in the run folder and reused on resume,
        so a resumed run always rebuilds the same adapter shapes.
        """
        saved = Path(self.config.output_dir) / "allocated_mor.json"
        if saved.is_file():
            return MoRConfig.from_dict(json.loads(saved.read_text()))
        batches = int(options.pop("batches", 2))
        budget = int(options.pop("budget"))
        samples = [
            self._batch(step_generator(self.config.seed, 0, 10_000 + i)) for i in range(batches)
        ]

        def loss(model: nn.Module) -> Tensor:
            return sum(F.l1_loss(model(lr), gt) for lr, gt in samples)

        importance = gradient_importance(net, loss, template)
        cost = {
            name: params_per_rank(net.get_submodule(name), template.conv_variant)
            for name in importance
        }
        allocated = allocate_ranks(importance, cost, budget, template, **options)
        if self.accelerator.is_main_process:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(allocated.to_dict(), indent=2))
        return allocated

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"generator": self.optimizer_g}
        if self.optimizer_d is not None:
            optimizers["discriminator"] = self.optimizer_d
        return optimizers

    def _batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """HR patches degraded on the fly; with several presets the batch is split evenly
        between them (e.g. the paper's mild and severe degradations side by side)."""
        hr = self.sampler.sample(self.config.data.batch_size, generator).to(self.device)
        lrs, gts = [], []
        for chunk, preset in zip(
            hr.tensor_split(len(self.degradations)), self.degradations, strict=True
        ):
            seed = int(torch.randint(2**62, (1,), generator=generator))
            if chunk.shape[0]:
                result = degrade(chunk, preset, scale=self.scale, seed=seed)
                lrs.append(result.lr)
                gts.append(result.gt)
        return torch.cat(lrs), torch.cat(gts)

    @torch.no_grad()
    def _make_pool(self, size: int) -> dict[str, Tensor]:
        """Synthesise ``size`` pairs once, with their scores and (if asked) the output of the
        frozen RRDB blocks that precede the first adapter."""
        generator = step_generator(self.config.seed, 0, 20_000)
        backbone = self.accelerator.unwrap_model(self.net_g)
        parts: dict[str, list[Tensor]] = {}
        with tqdm(total=size, desc="synthesising pool", unit="pair", leave=False) as bar:
            while bar.n < size:
                lr, gt = self._batch(generator)
                items = self._scored(lr, gt)
                if self.trunk_start is not None:
                    feat = backbone.head(lr)
                    items["feat"] = feat
                    items["hidden"] = backbone.run_body(feat, 0, self.trunk_start)
                for key, value in items.items():
                    parts.setdefault(key, []).append(value)
                bar.update(lr.shape[0])
        return {key: torch.cat(values)[:size] for key, values in parts.items()}

    @torch.no_grad()
    def _scored(self, lr: Tensor, gt: Tensor) -> dict[str, Tensor]:
        """A pair with its degradation scores and, when the routers see something else
        (``model.router_input``), their input under ``route``."""
        scores = self.estimator(lr)
        items = {"lr": lr, "gt": gt, "scores": scores}
        if self.spec.router_input != "scores":
            items["route"] = router_input(self.spec.router_input, self.estimator, lr, scores)
        return items

    def _draw(self, generator: torch.Generator) -> dict[str, Tensor]:
        """One batch: from the pool when there is one, freshly synthesised otherwise."""
        if self.pool is None:
            return self._scored(*self._batch(generator))
        size = self.pool["lr"].shape[0]
        picks = torch.randint(size, (self.config.data.batch_size,), generator=generator)
        return {key: value[picks.to(value.device)] for key, value in self.pool.items()}

    def _generate(self, batch: dict[str, Tensor]) -> Tensor:
        """The adapted backbone's output for a batch (from cached trunk features if present)."""
        if "hidden" not in batch:
            return self.net_g(batch["lr"])
        backbone = self.accelerator.unwrap_model(self.net_g)
        body_out = backbone.run_body(batch["hidden"], self.trunk_start)
        return backbone.reconstruct(batch["feat"], body_out)

    def _set_lr(self, step: int) -> float:
        warmup = self.config.optim.warmup_steps
        factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        lr = self.config.optim.lr * factor
        for group in self.optimizer_g.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        lr_rate = self._set_lr(step)
        accumulate = self.config.gradient_accumulation_steps
        logs: dict[str, float] = {}
        batches = [self._draw(generator) for _ in range(accumulate)]

        self.optimizer_g.zero_grad(set_to_none=True)
        fakes = []
        for batch in batches:
            gt = batch["gt"]
            route = batch.get("route", batch["scores"])
            with self.accelerator.autocast(), routing(self.net_g, route):
                sr = self._generate(batch)
                losses = self._generator_losses(sr, gt, batch["scores"])
            total = sum(losses.values())
            self.accelerator.backward(total / accumulate)
            fakes.append((sr.detach(), gt))
            for name, value in losses.items():
                logs[name] = logs.get(name, 0.0) + float(value.detach()) / accumulate
        if self.config.optim.grad_clip:
            self.accelerator.clip_grad_norm_(
                list(self.adapter_params.values()), self.config.optim.grad_clip
            )
        self.optimizer_g.step()
        if self.ema is not None:
            self.ema.update()

        if self.net_d is not None:
            logs.update(self._discriminator_step(fakes))
        logs["zero_experts"] = self._mean_zero_experts()
        logs["lr"] = lr_rate
        return logs

    def _generator_losses(self, sr: Tensor, gt: Tensor, scores: Tensor) -> dict[str, Tensor]:
        """Weighted generator losses; ``scores`` give the balance loss its severities."""
        w = self.weights
        losses: dict[str, Tensor] = {}
        if "l1" in w:
            losses["l1"] = w["l1"] * F.l1_loss(sr, gt)
        if self.perceptual is not None:
            losses["perceptual"] = w["perceptual"] * self.perceptual(sr, gt)
        if self.lpips is not None:
            losses["lpips"] = w["lpips"] * self.lpips(sr.clamp(0, 1), gt).mean()
        if self.net_d is not None:
            with _frozen(self.net_d):
                losses["gan_g"] = w["gan"] * gan_loss(self.net_d(sr), True, for_discriminator=False)
        if "balance" in w:
            balance = balance_loss(
                self.net_g,
                alpha=w["balance"],
                degradation_aware=self.degradation_aware,
                severity_scores=scores,
            )
            losses["balance"] = balance.to(sr.device)
        return losses

    def _discriminator_step(self, fakes: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
        assert self.net_d is not None and self.optimizer_d is not None
        self.optimizer_d.zero_grad(set_to_none=True)
        real_total = fake_total = 0.0
        for fake, gt in fakes:
            with self.accelerator.autocast():
                real = gan_loss(self.net_d(gt), True)
                fake_loss = gan_loss(self.net_d(fake), False)
            self.accelerator.backward((real + fake_loss) / len(fakes))
            real_total += float(real.detach()) / len(fakes)
            fake_total += float(fake_loss.detach()) / len(fakes)
        self.optimizer_d.step()
        return {"d_real": real_total, "d_fake": fake_total}

    def _mean_zero_experts(self) -> float:
        counts = [
            layer.last_routing.num_zero_active.float().mean()
            for _, layer in mor_layers(self.net_g)
            if layer.last_routing is not None
        ]
        return float(torch.stack(counts).mean()) if counts else 0.0

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        state = {"adapter": mor_state_dict(self.net_g)}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.net_d is not None:
            state["discriminator"] = self.accelerator.unwrap_model(self.net_d).state_dict()
        return state

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        load_mor_state_dict(self.net_g, tensors["adapter"])
        if self.ema is not None:
            self.ema.load_state_dict(tensors["ema"])
        if self.net_d is not None:
            self.accelerator.unwrap_model(self.net_d).load_state_dict(tensors["discriminator"])

    def export(self, directory: Path) -> Path:
        backbone = self.accelerator.unwrap_model(self.net_g)
        with _swapped_in(self.adapter_params, self.ema):
            model = MoRSuperResolver(backbone, self.estimator, self.spec)
            return model.save_pretrained(directory)


def _first_adapted_block(backbone: nn.Module) -> int:
    """Index of the first RRDB block holding an adapter (everything before it is frozen)."""
    names = [name for name, _ in mor_layers(backbone)]
    if any(
        not name.startswith(("body.", "conv_body", "conv_up", "conv_hr", "conv_last"))
        for name in names
    ):
        raise ValueError("cache_trunk needs conv_first to stay frozen (no adapter on it)")
    blocks = [int(name.split(".")[1]) for name in names if name.startswith("body.")]
    return min(blocks) if blocks else len(backbone.body)


@contextmanager
def _frozen(module: nn.Module):
    """Stop gradients into ``module``'s parameters for the block (the generator's GAN term)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


@contextmanager
def _swapped_in(params: dict[str, nn.Parameter], ema: EMA | None):
    """Temporarily replace the parameters by their EMA (no-op without EMA)."""
    if ema is None:
        yield
        return
    backup = {name: p.detach().clone() for name, p in params.items()}
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(ema.shadow[name])
    try:
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(backup[name])
