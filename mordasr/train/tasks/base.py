"""What the built-in tasks share: degraded training pairs, warm-up, accumulation, EMA export.

Both tasks train MoR adapters on LR/HR pairs synthesised on the fly from clean HR patches and
scored by a frozen degradation estimator. :class:`MoRTask` owns that data path (the in-memory
sampler or the streaming pipeline, ``data.streaming``; optionally a fixed, seeded pool), the
learning-rate warm-up of every optimiser, the one gradient-accumulation rule, zero-expert
logging, the checkpointed state common to both (EMA, discriminator) and the export with the EMA
weights swapped in. A task adds its networks and its updates.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from mordasr.degrade import degrade, resolve_config
from mordasr.mor import RoutingPlan, route
from mordasr.train.config import ConfigError, TrainConfig
from mordasr.train.data import PatchSampler, find_images, step_generator
from mordasr.train.dataset import (
    DegradeCollate,
    HRCropDataset,
    PairStream,
    find_training_images,
    preset_chunks,
)
from mordasr.train.ema import EMA
from mordasr.train.task import TrainTask

Item = TypeVar("Item")
Losses = dict[str, Tensor]

POOL_STREAM = 20_000
"""Process index of the random stream the pool is drawn from (no step ever uses it)."""


class MoRTask(TrainTask):
    """A task that trains MoR adapters on synthetic degradations routed by estimator scores.

    Subclasses call :meth:`setup_data` first in ``__init__``, then build their networks, set
    ``net_g``, ``optimizer_g``, ``generator_params``, ``ema`` (:meth:`make_ema`) and, where they
    have a discriminator, ``net_d``/``optimizer_d``, and call :meth:`setup_pool` last.
    """

    net_g: nn.Module
    """The generator as prepared by accelerate (what DDP wraps)."""
    optimizer_g: torch.optim.Optimizer
    generator_params: dict[str, nn.Parameter]
    """The generator's trainable tensors (its EMA covers these)."""
    ema: EMA | None = None
    net_d: nn.Module | None = None
    optimizer_d: torch.optim.Optimizer | None = None
    last_plan: RoutingPlan | None = None
    """The routing plan of the last generator micro-batch (for the balance loss and logs)."""

    def __init__(self, config: TrainConfig, accelerator: Any) -> None:
        super().__init__(config, accelerator)
        self.device = accelerator.device
        self.weights = {k: float(v) for k, v in asdict(config.losses).items() if float(v) != 0.0}
        """The non-zero loss weights by name."""
        self.pool: dict[str, Tensor] | None = None
        self.sampler: PatchSampler | None = None
        """The in-memory HR patch sampler (without ``data.streaming``)."""
        self.stream: PairStream | None = None
        """The streaming pairs (with ``data.streaming``)."""

    # Data -------------------------------------------------------------------------------------
    def setup_data(self, scale: int) -> None:
        """The degradation presets (synthesised at ``scale``) and the HR patch sampler or, with
        ``data.streaming``, this process's stream of pairs (nothing is read yet)."""
        self.scale = scale
        self.degradations = [resolve_config(name) for name in self.config.degradation.presets]
        data = self.config.data
        try:
            files = training_files(data.hr_dirs, data.max_images)
        except FileNotFoundError as error:
            raise ConfigError(f"data.hr_dirs: {error}") from None
        if not data.streaming:
            self.sampler = PatchSampler(files, data.patch_size, data.augment)
            return
        process, processes = self.accelerator.process_index, self.accelerator.num_processes
        self.require(
            len(files) >= processes,
            f"data.hr_dirs: {len(files)} image(s) cannot feed {processes} processes",
        )
        seed = self.config.seed
        dataset = HRCropDataset(
            files, data.patch_size, data.batch_size, data.augment, seed, process, processes
        )
        synthesis = DegradeCollate(self.config.degradation.presets, scale, seed, process)
        self.stream = PairStream(
            dataset, synthesis, self.device, data.num_workers, data.prefetch_factor
        )

    def setup_pool(self) -> None:
        """Synthesise the fixed pool when ``data.pool_size`` asks for one, or load it from
        ``data.pool_cache`` when a run with the same settings has saved it there."""
        data = self.config.data
        if not data.pool_size:
            return
        path = None
        if data.pool_cache is not None:
            path = Path(data.pool_cache) / f"pool-{self.pool_key()}.safetensors"
            if path.is_file():
                self.close()
                self.pool = {k: v.to(self.device) for k, v in load_file(path).items()}
                return
        self.pool = self._make_pool(data.pool_size)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            save_file({k: v.contiguous().cpu() for k, v in self.pool.items()}, str(partial))
            os.replace(partial, path)

    def pool_key_parts(self) -> dict[str, Any]:
        """What the pool depends on besides seed, data and degradation: the model settings
        other than the adapters, and the files they name (size and time, so a changed file
        makes a new pool). A task that caches more adds it."""
        model = asdict(self.config.model)
        for name in ("mor", "allocate", "variant", "discriminator_feat", "full_finetune"):
            model.pop(name, None)
        if model.get("router_scores_from") == "image":  # the default keeps earlier pools' keys
            model.pop("router_scores_from")
        files = {
            value: [Path(value).stat().st_size, Path(value).stat().st_mtime_ns]
            for value in model.values()
            if isinstance(value, str) and Path(value).is_file()
        }
        return {"model": model, "files": files}

    def pool_key(self) -> str:
        """A short hash of everything the pool's contents depend on."""
        config = self.config
        data = asdict(config.data)
        for name in ("pool_cache", "num_workers", "prefetch_factor"):
            data.pop(name)
        parts = {
            "task": config.task,
            "seed": config.seed,
            "data": data,
            "degradation": asdict(config.degradation),
            **self.pool_key_parts(),
        }
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _pair(self, generator: torch.Generator, index: int) -> tuple[Tensor, Tensor]:
        """LR inputs and ground truths of one batch: batch ``index`` of the stream when
        streaming, drawn with ``generator`` from the in-memory sampler otherwise."""
        if self.stream is not None:
            return self.stream.pair(index)
        return self._batch(generator, index)

    def _batch(self, generator: torch.Generator, index: int = 0) -> tuple[Tensor, Tensor]:
        """HR patches of the in-memory sampler degraded on the fly; with several presets batch
        ``index`` is split between them by :func:`preset_chunks` (e.g. the paper's mild and
        severe degradations side by side; over the batches every preset gets its share)."""
        assert self.sampler is not None
        hr = self.sampler.sample(self.config.data.batch_size, generator).to(self.device)
        lrs, gts = [], []
        for preset, chunk in preset_chunks(hr, len(self.degradations), index):
            seed = int(torch.randint(2**62, (1,), generator=generator))
            if chunk.shape[0]:
                result = degrade(chunk, self.degradations[preset], scale=self.scale, seed=seed)
                lrs.append(result.lr)
                gts.append(result.gt)
        return torch.cat(lrs), torch.cat(gts)

    @abstractmethod
    def _scored(self, lr: Tensor, gt: Tensor) -> dict[str, Tensor]:
        """A pair as a batch dict: ``lr``, ``gt``, ``scores`` and whatever routing needs."""

    def _pool_items(self, lr: Tensor, gt: Tensor) -> dict[str, Tensor]:
        """What the pool keeps of a pair (the scored pair; a task may cache more)."""
        return self._scored(lr, gt)

    @torch.no_grad()
    def _make_pool(self, size: int) -> dict[str, Tensor]:
        """Synthesise ``size`` pairs once (seeded; when streaming, the stream's first batches),
        to draw batches from."""
        generator = step_generator(self.config.seed, 0, POOL_STREAM)
        parts: dict[str, list[Tensor]] = {}
        with tqdm(total=size, desc="synthesising pool", unit="pair", leave=False) as bar:
            index = 0
            while bar.n < size:
                items = self._pool_items(*self._pair(generator, index))
                index += 1
                for key, value in items.items():
                    parts.setdefault(key, []).append(value)
                bar.update(items["lr"].shape[0])
        self.close()  # training draws from the pool only
        return {key: torch.cat(values)[:size] for key, values in parts.items()}

    def _draw(self, generator: torch.Generator, index: int = 0) -> dict[str, Tensor]:
        """Batch ``index`` of the run (``step * gradient_accumulation_steps + micro-batch``):
        from the pool when there is one, freshly synthesised otherwise."""
        if self.pool is None:
            return self._scored(*self._pair(generator, index))
        size = self.pool["lr"].shape[0]
        picks = torch.randint(size, (self.config.data.batch_size,), generator=generator)
        return {key: value[picks.to(value.device)] for key, value in self.pool.items()}

    # Optimisation -----------------------------------------------------------------------------
    def adam(self, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """AdamW with the config's betas and weight decay."""
        optim = self.config.optim
        return torch.optim.AdamW(params, lr=lr, betas=optim.betas, weight_decay=optim.weight_decay)

    def generator_adam(self) -> torch.optim.Optimizer:
        """AdamW over ``generator_params`` at ``optim.lr``, with the routers and the routed
        experts' factors in groups of their own scaled by ``router_lr_scale`` and
        ``routed_lr_scale``."""
        optim = self.config.optim
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in self.generator_params.items():
            leaf = name.rsplit(".", 1)[-1]
            if ".router." in f".{name}":
                scale = optim.router_lr_scale
            elif leaf in ("routed_A", "routed_B"):
                scale = optim.routed_lr_scale
            else:
                scale = 1.0
            groups.setdefault(scale, []).append(param)
        return torch.optim.AdamW(
            [
                {"params": params, "lr": optim.lr * scale, "lr_scale": scale}
                for scale, params in groups.items()
            ],
            lr=optim.lr,
            betas=optim.betas,
            weight_decay=optim.weight_decay,
        )

    def make_ema(self, params: dict[str, nn.Parameter]) -> EMA | None:
        """An EMA of ``params`` (None when ``ema_decay`` is 0)."""
        return EMA(params, self.config.ema_decay) if self.config.ema_decay > 0 else None

    def _set_lr(self, step: int) -> float:
        """Warm every optimiser up linearly to its rate (the discriminator's is
        ``lr_discriminator``, a group's times its ``lr_scale``), times ``gamma`` for every
        milestone passed; returns the generator's."""
        optim = self.config.optim
        factor = min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps > 0 else 1.0
        factor *= optim.gamma ** sum(step >= milestone for milestone in optim.milestones)
        for name, optimizer in self.optimizers.items():
            rate = optim.lr_discriminator if name == "discriminator" else optim.lr
            for group in optimizer.param_groups:
                group["lr"] = rate * factor * group.get("lr_scale", 1.0)
        return optim.lr * factor

    def update(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        items: Sequence[Item],
        losses_of: Callable[[Item], tuple[Losses, Any]],
        logs: dict[str, float],
        scope: Callable[[Item], AbstractContextManager[Any]] | None = None,
        clip: list[nn.Parameter] | None = None,
    ) -> list[Any]:
        """One optimiser step on the sum of ``items``' micro-batch losses (the one accumulation
        rule of every update).

        ``losses_of(item)`` runs under autocast and returns the weighted losses and what the
        caller wants back from that micro-batch; their sum, divided by the number of
        micro-batches, is back-propagated inside ``scope(item)`` (e.g. the routing, so that
        gradient checkpointing re-runs the layers routed). DDP gradients are synchronised on
        the last micro-batch only (``no_sync`` on the others). The mean of each loss is added to
        ``logs``; ``clip`` are the parameters whose gradient norm ``optim.grad_clip`` limits.
        """
        optimizer.zero_grad(set_to_none=True)
        count = len(items)
        kept = []
        for i, item in enumerate(items):
            sync = nullcontext() if i == count - 1 else self.accelerator.no_sync(model)
            with sync, scope(item) if scope is not None else nullcontext():
                with self.accelerator.autocast():
                    losses, keep = losses_of(item)
                self.accelerator.backward(sum(losses.values()) / count)
            kept.append(keep)
            for name, value in losses.items():
                logs[name] = logs.get(name, 0.0) + float(value.detach()) / count
        if clip is not None and self.config.optim.grad_clip:
            self.accelerator.clip_grad_norm_(clip, self.config.optim.grad_clip)
        optimizer.step()
        return kept

    def update_generator(
        self,
        batches: list[dict[str, Tensor]],
        losses_of: Callable[[dict[str, Tensor]], tuple[Losses, Any]],
        logs: dict[str, float],
    ) -> list[Any]:
        """The generator's :meth:`update`, each micro-batch routed by its ``route`` input (or
        its ``scores``) through the backward pass, gradients clipped, then the EMA moved."""
        kept = self.update(
            self.optimizer_g,
            self.net_g,
            batches,
            losses_of,
            logs,
            scope=self._routed,
            clip=list(self.generator_params.values()),
        )
        if self.ema is not None:
            self.ema.update()
        return kept

    def _routed(self, batch: dict[str, Tensor]) -> AbstractContextManager[nn.Module]:
        """The routed model running the plan of ``batch``'s ``route`` input (or its
        ``scores``), kept as :attr:`last_plan` for the logs."""
        self.last_plan = route(self.routed_model, batch.get("route", batch["scores"]))
        return self.last_plan.applied(self.routed_model)

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        rate = self._set_lr(step)
        count = self.config.gradient_accumulation_steps
        batches = [self._draw(generator, step * count + micro) for micro in range(count)]
        logs: dict[str, float] = {}
        self._updates(batches, generator, logs)
        logs["zero_experts"] = 0.0 if self.last_plan is None else self.last_plan.mean_zero_experts()
        logs["lr"] = rate
        logs["processes"] = float(self.accelerator.num_processes)
        if self.stream is not None:
            logs["skipped_files"] = float(len(self.stream.skipped_files))
        return logs

    def close(self) -> None:
        """Stop the stream's loader workers, if any."""
        if self.stream is not None:
            self.stream.close()

    @abstractmethod
    def _updates(
        self, batches: list[dict[str, Tensor]], generator: torch.Generator, logs: dict[str, float]
    ) -> None:
        """Every network's update of one step on these micro-batches; log into ``logs``."""

    @property
    @abstractmethod
    def routed_model(self) -> nn.Module:
        """The network whose MoR layers the degradation scores route."""

    def require(self, condition: bool, message: str) -> None:
        """Refuse a config whose sections contradict each other (one line, like a typo)."""
        if not condition:
            raise ConfigError(message)

    # State ------------------------------------------------------------------------------------
    @abstractmethod
    def model_state(self) -> dict[str, dict[str, Tensor]]:
        """The task's own tensor groups (adapters, ...), beside the EMA and discriminator."""

    @abstractmethod
    def load_model_state(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        """Restore what :meth:`model_state` returned."""

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        state = self.model_state()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.net_d is not None:
            state["discriminator"] = self.accelerator.unwrap_model(self.net_d).state_dict()
        return state

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        self.load_model_state(tensors)
        if self.ema is not None:
            self.ema.load_state_dict(tensors["ema"])
        if self.net_d is not None:
            self.accelerator.unwrap_model(self.net_d).load_state_dict(tensors["discriminator"])

    @abstractmethod
    def save_model(self, directory: Path) -> Path:
        """Write the current weights in their loadable form; return the folder."""

    def export(self, directory: Path) -> Path:
        """The loadable model with the EMA weights (if kept) in place of the last iterate."""
        with self.ema.swapped_in() if self.ema is not None else nullcontext():
            return self.save_model(directory)


def training_files(sources: Sequence[str], max_images: int | None = None) -> list[Path]:
    """The images of ``data.hr_dirs``, optionally the first ``max_images``: folders alone are
    searched together and sorted (:func:`~mordasr.train.data.find_images`); with a file list
    among them, each source in turn (:func:`~mordasr.train.dataset.find_training_images`)."""
    if all(Path(source).is_dir() for source in sources):
        return find_images(sources, max_images)
    files = find_training_images(sources)
    return files[:max_images] if max_images else files


def named_optimizers(
    **optimizers: torch.optim.Optimizer | None,
) -> dict[str, torch.optim.Optimizer]:
    """The optimisers that exist, by name (for :attr:`TrainTask.optimizers`)."""
    return {name: opt for name, opt in optimizers.items() if opt is not None}
