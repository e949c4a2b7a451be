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
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mordasr.estimate import DegradationEstimator
from mordasr.losses.gan import UNetDiscriminatorSN, gan_loss
from mordasr.losses.perceptual import PerceptualLoss
from mordasr.metrics.lpips import LPIPS
from mordasr.mor import (
    MoRConfig,
    allocate_ranks,
    degradation_aware_balance,
    inject_mor,
    mor_layers,
    mor_named_parameters,
    mor_state_dict,
    params_per_rank,
    variant_config,
)
from mordasr.mor.allocate import allocated_ranks, importance_stability, layer_importance
from mordasr.mor.model import load_mor_state_dict
from mordasr.sr.baselines import PlainSR
from mordasr.sr.mor_sr import MoRSuperResolver, SRModelSpec
from mordasr.sr.router_input import router_input, router_input_dim
from mordasr.train.config import AllocateSection, SRModelSection, TrainConfig
from mordasr.train.data import step_generator
from mordasr.train.task import register_task
from mordasr.train.tasks.base import MoRTask, named_optimizers


def adapter_layout(model: SRModelSection) -> tuple[MoRConfig, bool]:
    """The MoR layout that the ``model`` section asks for and whether the balance loss is
    degradation-aware.

    ``model.mor`` is the template, ``model.variant`` one of the paper's Table 2 rows
    (:mod:`mordasr.mor.variants`) and ``model.expert_rank`` the rank of each ``lora-moe``
    expert. The routers' ``score_dim`` is set later from ``model.router_input``.
    """
    layout = variant_config(model.mor, model.variant, model.expert_rank)
    return layout, degradation_aware_balance(model.variant)


@register_task("realesrgan-mor")
class RealESRGANMoRTask(MoRTask):
    """Adapt a Real-ESRGAN backbone to synthetic real-world degradations with MoR."""

    def __init__(self, config: TrainConfig, accelerator: Any) -> None:
        super().__init__(config, accelerator)
        options: SRModelSection = config.model
        mor, self.degradation_aware = adapter_layout(options)
        self.spec = options.spec
        self.require(
            not options.cache_trunk or accelerator.num_processes == 1,
            f"model.cache_trunk: runs the adapted blocks outside the DDP wrapper, so "
            f"{accelerator.num_processes} processes would not average their gradients; set "
            f"model.cache_trunk: false (and data.pool_size: 0) or train in one process",
        )
        self.require(
            not options.cache_trunk or config.data.pool_size > 0,
            "model.cache_trunk: needs data.pool_size > 0 (a fixed pool)",
        )
        self.setup_data(config.degradation.scale or self.spec.scale)

        model = MoRSuperResolver.build(self.spec, mor=None)
        self.estimator = model.estimator.to(self.device).eval()
        mor = replace(mor, score_dim=router_input_dim(self.spec.router_input, self.estimator))
        net_g = model.backbone.to(self.device)
        self.full_finetune = options.full_finetune
        if self.full_finetune:
            self.require(
                options.allocate is None and not options.cache_trunk,
                "model.full_finetune: trains every weight, so no model.allocate and no "
                "model.cache_trunk",
            )
            net_g.requires_grad_(True)
            self.generator_params = dict(net_g.named_parameters())
        else:
            if options.allocate is not None:
                mor = self._allocate(net_g, mor, options.allocate)
            torch.manual_seed(config.seed)  # adapter init must not depend on what loaded before
            inject_mor(net_g, mor)
            self.generator_params = mor_named_parameters(net_g)
        self.optimizer_g = self.generator_adam()
        if "gan" in self.weights:
            torch.manual_seed(config.seed + 1)
            net_d = UNetDiscriminatorSN(3, options.discriminator_feat).to(self.device)
            self.net_d, self.optimizer_d = accelerator.prepare(
                net_d, self.adam(net_d.parameters(), config.optim.lr_discriminator)
            )
        self.net_g, self.optimizer_g = accelerator.prepare(net_g, self.optimizer_g)
        self.ema = self.make_ema(self.generator_params)

        self.trunk_start = _first_adapted_block(net_g) if options.cache_trunk else None
        self.perceptual = PerceptualLoss().to(self.device) if "perceptual" in self.weights else None
        self.lpips = LPIPS("vgg").to(self.device) if "lpips" in self.weights else None
        self.setup_pool()

    def _allocate(self, net: nn.Module, template: MoRConfig, options: AllocateSection) -> MoRConfig:
        """AdaptSR allocation: rank the template's target layers by ``options.scorer`` (by
        default ``||dL1/dW||``) on a few batches and spend ``budget`` adapter parameters on the
        most important ones.

        The result is written to ``allocated_mor.json`` in the run folder and reused on resume,
        so a resumed run always rebuilds the same adapter shapes; ``allocation.json`` beside it
        records the importance, cost and rank of every layer and, with
        ``stability_batches``, the Spearman stability of the ranking across batches.
        """
        saved = Path(self.config.output_dir) / "allocated_mor.json"
        if saved.is_file():
            return MoRConfig.from_dict(json.loads(saved.read_text()))
        samples = self._allocation_batches(0, options.batches)
        importance = layer_importance(net, _l1_over(samples), template, options.scorer)
        cost = {
            name: params_per_rank(net.get_submodule(name), template.conv_variant)
            for name in importance
        }
        limits = {k: v for k, v in asdict(options).items() if k in ("min_rank", "max_rank")}
        allocated = allocate_ranks(importance, cost, options.budget, template, **limits)
        ranks = allocated_ranks(allocated, list(importance))
        report: dict[str, Any] = {
            "scorer": options.scorer,
            "budget": options.budget,
            "spent": sum(ranks[name] * cost[name] for name in ranks),
            "layers": {
                name: {"importance": importance[name], "cost_per_rank": cost[name], "rank": r}
                for name, r in ranks.items()
            },
        }
        if options.stability_batches:
            extra = self._allocation_batches(options.batches, options.stability_batches)
            scorings = [
                layer_importance(net, _l1_over([sample]), template, options.scorer)
                for sample in extra
            ]
            report["stability"] = {
                "batches": len(scorings),
                **importance_stability(scorings),
            }
        if self.accelerator.is_main_process:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(allocated.to_dict(), indent=2))
            (saved.parent / "allocation.json").write_text(json.dumps(report, indent=2) + "\n")
        return allocated

    def _allocation_batches(self, first: int, count: int) -> list[tuple[Tensor, Tensor]]:
        """Pairs ``first`` .. ``first + count - 1`` of the allocation's own random stream."""
        return [
            self._pair(step_generator(self.config.seed, 0, 10_000 + i), i)
            for i in range(first, first + count)
        ]

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return named_optimizers(generator=self.optimizer_g, discriminator=self.optimizer_d)

    @property
    def routed_model(self) -> nn.Module:
        return self.net_g

    @torch.no_grad()
    def _scored(self, lr: Tensor, gt: Tensor) -> dict[str, Tensor]:
        """A pair with its degradation scores and, when the routers see something else
        (``model.router_input``), their input under ``route``; both of the whole crop, or with
        ``model.router_scores_from: windows`` of its region windows (:func:`tile_input`)."""
        if self.config.model.router_scores_from == "windows":
            backbone = self.accelerator.unwrap_model(self.net_g)
            scores = tile_input(
                backbone, self.estimator, replace(self.spec, router_input="scores"), lr
            )
            items = {"lr": lr, "gt": gt, "scores": scores}
            if self.spec.router_input != "scores":
                items["route"] = tile_input(backbone, self.estimator, self.spec, lr)
            return items
        scores = self.estimator(lr)
        items = {"lr": lr, "gt": gt, "scores": scores}
        if self.spec.router_input != "scores":
            items["route"] = router_input(self.spec.router_input, self.estimator, lr, scores)
        return items

    def pool_key_parts(self) -> dict[str, Any]:
        """The base key plus where the cached trunk stops (it depends on the adapted layers)."""
        return {**super().pool_key_parts(), "trunk_start": self.trunk_start}

    def _pool_items(self, lr: Tensor, gt: Tensor) -> dict[str, Tensor]:
        """The scored pair and, with ``cache_trunk``, the output of the frozen RRDB blocks that
        precede the first adapter."""
        items = self._scored(lr, gt)
        if self.trunk_start is not None:
            backbone = self.accelerator.unwrap_model(self.net_g)
            items["feat"] = backbone.head(lr)
            items["hidden"] = backbone.run_body(items["feat"], 0, self.trunk_start)
        return items

    def _generate(self, batch: dict[str, Tensor]) -> Tensor:
        """The adapted backbone's output for a batch (from cached trunk features if present)."""
        if "hidden" not in batch:
            return self.net_g(batch["lr"])
        backbone = self.accelerator.unwrap_model(self.net_g)
        body_out = backbone.run_body(batch["hidden"], self.trunk_start)
        return backbone.reconstruct(batch["feat"], body_out)

    def _updates(
        self, batches: list[dict[str, Tensor]], generator: torch.Generator, logs: dict[str, float]
    ) -> None:
        def generator_losses(batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Any]:
            sr = self._generate(batch)
            return self._generator_losses(sr, batch["gt"], batch["scores"]), (sr.detach(), batch)

        fakes = self.update_generator(batches, generator_losses, logs)
        if self.net_d is not None:
            assert self.optimizer_d is not None
            self.update(self.optimizer_d, self.net_d, fakes, self._discriminator_losses, logs)

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
            assert self.last_plan is not None
            balance = self.last_plan.balance_loss(
                alpha=w["balance"],
                degradation_aware=self.degradation_aware,
                severity_scores=scores,
            )
            losses["balance"] = balance.to(sr.device)
        return losses

    def _discriminator_losses(
        self, fake: tuple[Tensor, dict[str, Tensor]]
    ) -> tuple[dict[str, Tensor], None]:
        """The discriminator's losses: real HR patches vs the detached generator output."""
        sr, batch = fake
        assert self.net_d is not None
        real = gan_loss(self.net_d(batch["gt"]), True)
        return {"d_real": real, "d_fake": gan_loss(self.net_d(sr), False)}, None

    def model_state(self) -> dict[str, dict[str, Tensor]]:
        if self.full_finetune:
            return {"backbone": {k: v.detach().clone() for k, v in self.generator_params.items()}}
        return {"adapter": mor_state_dict(self.net_g)}

    def load_model_state(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        if not self.full_finetune:
            load_mor_state_dict(self.net_g, tensors["adapter"])
            return
        with torch.no_grad():
            for name, param in self.generator_params.items():
                param.copy_(tensors["backbone"][name])

    def save_model(self, directory: Path) -> Path:
        """The adapted model folder or, fine-tuned in full, a plain model folder."""
        backbone = self.accelerator.unwrap_model(self.net_g)
        if self.full_finetune:
            multiple_of = int(getattr(backbone, "multiple_of", 1))
            return PlainSR(backbone, self.spec.scale, multiple_of).save_pretrained(directory)
        return MoRSuperResolver(backbone, self.estimator, self.spec).save_pretrained(directory)


def _l1_over(samples: list[tuple[Tensor, Tensor]]) -> Callable[[nn.Module], Tensor]:
    """The summed L1 loss of a model on ``samples`` (LR, GT), as the importance scorers take it."""

    def loss(model: nn.Module) -> Tensor:
        # a tensor: at least one batch (typeshed's sum also allows its int start, 0)
        return cast(Tensor, sum(F.l1_loss(model(lr), gt) for lr, gt in samples))

    return loss


def tile_input(
    backbone: nn.Module, estimator: DegradationEstimator, spec: SRModelSpec, lr: Tensor
) -> Tensor:
    """(B, D) what region routing routes a tile covering all of ``lr`` (B, 3, h, w) by: the
    region scores of ``lr`` (``spec.region_scores``, windows and stride of
    :mod:`mordasr.sr.regions`, smoothed over the crop's grid) weighted by each window's area
    in the crop. A crop under a window's side is one window clipped to the crop, as an image
    under a window's side is under region routing, so its input is that of the whole crop."""
    scorer = MoRSuperResolver(backbone, estimator, spec)
    return scorer.region_scores(lr).for_box((0, 0, *lr.shape[-2:])).to(lr.dtype)


def _first_adapted_block(backbone: nn.Module) -> int:
    """Index of the first RRDB block holding an adapter (everything before it is frozen)."""
    names = [name for name, _ in mor_layers(backbone)]
    if any(
        not name.startswith(("body.", "conv_body", "conv_up", "conv_hr", "conv_last"))
        for name in names
    ):
        raise ValueError("cache_trunk needs conv_first to stay frozen (no adapter on it)")
    blocks = [int(name.split(".")[1]) for name in names if name.startswith("body.")]
    return min(blocks) if blocks else len(cast(nn.Sequential, backbone.body))


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
