"""The one-step SD super-resolution generator (OSEDiff paradigm, paper eq. 3).

``sr = D(x0(UNet_MoR(E_LoRA(up(lr)), t, c)))``: the LR image is enlarged bicubically, encoded by
the VAE encoder (with a trainable plain LoRA) into a latent, the UNet (with MoR adapters routed by
the degradation scores) predicts the noise of that latent at the fixed timestep ``t`` as if it
were a noisy sample, the one-step estimate ``x0`` is taken from that prediction, and the frozen
VAE decoder turns it into the SR image. The text encoder and the decoder stay frozen.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mordasr.mor import (
    RoutingPlan,
    inject_mor,
    load_mor_state_dict,
    mor_layers,
    mor_named_parameters,
    mor_state_dict,
    route,
)
from mordasr.sr.sd.components import SDComponents, load_sd_components
from mordasr.sr.sd.config import OneStepConfig

CONFIG_NAME = "onestep_config.json"
ADAPTERS_NAME = "adapters.safetensors"


class OneStepGenerator(nn.Module):
    """VAE encoder (+LoRA) -> UNet (+MoR) at one timestep -> x0 -> frozen VAE decoder.

    The adapters are injected into ``components`` in place (fresh B factors are zero, so the
    generator starts as the plain one-step pipeline). The UNet, VAE and text encoder are
    registered as submodules, so adapter names in :meth:`adapter_state_dict` start with
    ``unet.`` or ``vae.encoder.``.
    """

    def __init__(self, components: SDComponents, config: OneStepConfig) -> None:
        super().__init__()
        self.config = config
        self._components = components
        self.unet = components.unet
        self.vae = components.vae
        self.text_encoder = components.text_encoder
        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False)
        inject_mor(self.vae.encoder, config.vae_lora)
        inject_mor(self.unet, config.unet_mor)
        alpha = float(components.scheduler.alphas_cumprod[config.timestep])
        self._sqrt_alpha = alpha**0.5
        self._sqrt_one_minus_alpha = (1.0 - alpha) ** 0.5
        self._prompt_cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    # Properties --------------------------------------------------------------------------------
    @property
    def components(self) -> SDComponents:
        """The Stable Diffusion parts (the UNet and VAE encoder carry the adapters)."""
        return self._components

    @property
    def scale(self) -> int:
        """Upscaling factor of the generator."""
        return self.config.scale

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell."""
        return self._components.vae_scale_factor

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts: ``epsilon`` or ``v_prediction`` (from the scheduler)."""
        return self._components.scheduler.config.prediction_type

    # Text ------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """(B, T, D) text-encoder hidden states, computed once per distinct text and cached
        (the text encoder is frozen, so the cache is exact)."""
        param = next(self.text_encoder.parameters())
        rows = []
        for text in prompts:
            key = (text, param.device, param.dtype)
            if key not in self._prompt_cache:
                self._prompt_cache[key] = self._encode_text(text, param.device)
            rows.append(self._prompt_cache[key])
        return torch.cat(rows)

    def _encode_text(self, text: str, device: torch.device) -> Tensor:
        tokenizer = self._components.tokenizer
        length = min(tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        ids = tokenizer(
            [text],
            padding="max_length",
            max_length=length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(device))[0]

    # Pipeline stages ---------------------------------------------------------------------------
    def upsample(self, lr: Tensor) -> Tensor:
        """(B, 3, h, w) in [0, 1] -> bicubic x``scale``, clamped to [0, 1]."""
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up.clamp(0.0, 1.0)

    def encode(self, image: Tensor) -> Tensor:
        """An image (B, 3, H, W) in [0, 1] -> scaled latent (mode of the posterior), through
        the VAE encoder and its LoRA."""
        x = (image * 2.0 - 1.0).to(self.vae.dtype)
        latent = self.vae.encode(x).latent_dist.mode()
        return latent * self.vae.config.scaling_factor

    def encode_lr(self, lr: Tensor) -> Tensor:
        """LR (B, 3, h, w) in [0, 1] -> latent (B, 4, scale*h/f, scale*w/f), f the VAE factor."""
        return self.encode(self.upsample(lr))

    def route(self, scores: Tensor, *, fold: bool = False) -> RoutingPlan:
        """The UNet's routing plan for (B, score_dim) ``scores`` (``fold``: with the folded
        weights, cast to the UNet's dtype, for any number of latent tiles)."""
        plan = route(self.unet, scores.float(), fold=fold)
        return plan.to(self.unet.dtype) if fold else plan

    def denoise(self, latents: Tensor, prompt_embeds: Tensor, plan: RoutingPlan) -> Tensor:
        """One UNet step at ``timestep`` running ``plan`` (see :meth:`route`): x0 latents."""
        timestep = torch.full(
            (latents.shape[0],), self.config.timestep, device=latents.device, dtype=torch.long
        )
        embeds = prompt_embeds.to(device=latents.device, dtype=latents.dtype)
        if embeds.shape[0] == 1 and latents.shape[0] > 1:
            embeds = embeds.expand(latents.shape[0], -1, -1)
        with plan.applied(self.unet):
            pred = self.unet(latents, timestep, encoder_hidden_states=embeds).sample
        return self.x0_from_prediction(latents, pred)

    def x0_from_prediction(self, latents: Tensor, pred: Tensor) -> Tensor:
        """The one-step clean-latent estimate from the UNet's output at ``timestep``."""
        a, s = self._sqrt_alpha, self._sqrt_one_minus_alpha
        if self.prediction_type == "epsilon":
            return (latents - s * pred) / a
        if self.prediction_type == "v_prediction":
            return a * latents - s * pred
        raise ValueError(f"unsupported prediction type {self.prediction_type!r}")

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents -> image in [-1, 1] through the frozen decoder (differentiable)."""
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(z).sample.clamp(-1.0, 1.0)

    def forward(self, lr: Tensor, scores: Tensor, prompt_embeds: Tensor | None = None) -> Tensor:
        """LR (B, 3, h, w) in [0, 1] -> SR (B, 3, scale*h, scale*w) in [0, 1].

        ``prompt_embeds`` default to the config's fixed prompt for every image.
        """
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt([self.config.prompt] * lr.shape[0])
        x0 = self.denoise(self.encode_lr(lr), prompt_embeds, self.route(scores))
        return (self.decode(x0) + 1.0) / 2.0

    # Adapters ----------------------------------------------------------------------------------
    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The VAE-encoder LoRA and UNet MoR tensors (factors and routers), by name."""
        return mor_named_parameters(self)

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """Detached copies of :meth:`trainable_parameters`."""
        return mor_state_dict(self)

    def load_adapter_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load :meth:`adapter_state_dict` output (the key sets must match)."""
        load_mor_state_dict(self, state)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``onestep_config.json`` and ``adapters.safetensors`` (adapters only: the SD
        weights are named by ``config.base_model``)."""
        if any(layer.shared_merged for _, layer in mor_layers(self)):
            raise RuntimeError("adapters are merged into the base weights; save before merging")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        tensors = {k: v.contiguous().cpu() for k, v in self.adapter_state_dict().items()}
        save_file(tensors, str(directory / ADAPTERS_NAME), metadata={"format": "mordasr-onestep"})
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        base_model: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> OneStepGenerator:
        """Load a folder written by :meth:`save_pretrained` onto its base model (or
        ``base_model``, a hub id or diffusers folder, when the weights live elsewhere)."""
        config = read_config(directory)
        if base_model is not None:
            config.base_model = str(base_model)
        components = load_sd_components(config.base_model, dtype=dtype, device=device)
        generator = cls(components, config)
        generator.load_adapter_state_dict(load_file(str(Path(directory) / ADAPTERS_NAME)))
        return generator.to(device=device, dtype=dtype).eval()


def read_config(directory: str | Path) -> OneStepConfig:
    """The :class:`OneStepConfig` saved in a generator folder (one-line error if absent)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a one-step SD checkpoint (no {CONFIG_NAME})")
    return OneStepConfig.from_dict(json.loads(path.read_text()))
