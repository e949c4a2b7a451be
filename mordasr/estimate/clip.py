"""The paper's CLIP degradation-estimation module (eq. 5-8), on transformers or open_clip.

Each image is embedded by CLIP's image encoder (eq. 5), every Table 3 prompt by its text encoder
(eq. 6); the score of a dimension is the softmax probability of the negative prompt over the
(positive, negative) pair of cosine similarities (eq. 7-8, :func:`prompt_pair_scores`). The 14
text embeddings depend only on the prompts, so they are computed once and cached per device.

Image preprocessing is plain torch (no torchvision): bicubic resize of the shortest side to the
model's input size, center crop, CLIP mean/std standardisation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from mordasr.estimate.base import (
    DIMENSIONS,
    TABLE3_PROMPTS,
    DegradationEstimator,
    check_images,
    prompt_pair_scores,
)

if TYPE_CHECKING:
    from transformers import CLIPModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Backend = Literal["transformers", "open_clip"]


def clip_preprocess(
    images: torch.Tensor,
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """Resize the shortest side to ``size`` (bicubic, antialiased), center-crop ``size`` square,
    then standardise with CLIP's mean/std: the torch equivalent of CLIP's image transform."""
    height, width = images.shape[-2:]
    ratio = size / min(height, width)
    new_h, new_w = max(size, round(height * ratio)), max(size, round(width * ratio))
    resized = nn.functional.interpolate(
        images.float(), size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
    ).clamp(0.0, 1.0)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    cropped = resized[..., top : top + size, left : left + size]
    mean_t = cropped.new_tensor(mean).view(1, 3, 1, 1)
    std_t = cropped.new_tensor(std).view(1, 3, 1, 1)
    return (cropped - mean_t) / std_t


def resolve_prompts(
    overrides: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, tuple[str, str]]:
    """Table 3's prompts, any dimension's (positive, negative) pair taken from ``overrides``."""
    prompts = dict(TABLE3_PROMPTS)
    for name, pair in (overrides or {}).items():
        if name not in prompts:
            raise ValueError(f"unknown dimension {name!r}; choose from {list(DIMENSIONS)}")
        if len(pair) != 2:
            raise ValueError(f"dimension {name!r} needs a (positive, negative) pair, got {pair!r}")
        prompts[name] = (str(pair[0]), str(pair[1]))
    return prompts


class TransformersClip(nn.Module):
    """``transformers`` ``CLIPModel`` + tokenizer exposing embed-image / embed-text."""

    def __init__(
        self, model: CLIPModel, tokenizer: Any, mean: Sequence[float], std: Sequence[float]
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        # transformers types config fields as constructor inputs (a dict, None, list sizes);
        # once built, the vision config is a CLIPVisionConfig with an int image size
        self.image_size = int(model.config.vision_config.image_size)  # type: ignore[union-attr, arg-type]
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def from_pretrained(cls, id_or_path: str) -> TransformersClip:
        """Load model and tokenizer from a local directory or a hub id already in the local
        Hugging Face cache; nothing is ever downloaded (``local_files_only``)."""
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as error:
            raise ImportError(
                "the transformers CLIP backend needs `pip install 'mordasr[clip]'`"
            ) from error
        model = CLIPModel.from_pretrained(id_or_path, local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(id_or_path, local_files_only=True)
        mean, std = _preprocessor_stats(id_or_path)
        return cls(model, tokenizer, mean, std)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return self.model.visual_projection(pooled)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        device = self.model.logit_scale.device
        tokens = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        pooled = self.model.text_model(
            input_ids=tokens["input_ids"].to(device),
            attention_mask=tokens["attention_mask"].to(device),
        ).pooler_output
        return self.model.text_projection(pooled)


def _preprocessor_stats(id_or_path: str) -> tuple[Sequence[float], Sequence[float]]:
    """Mean/std of the model's ``preprocessor_config.json`` (local directory or cached hub id)
    when it has one, else CLIP's defaults."""
    from transformers.utils import cached_file

    config = Path(id_or_path) / "preprocessor_config.json"
    if not config.is_file():
        found = cached_file(
            id_or_path,
            "preprocessor_config.json",
            local_files_only=True,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        config = Path(found) if found else config
    if config.is_file():
        data = json.loads(config.read_text())
        return data.get("image_mean", CLIP_MEAN), data.get("image_std", CLIP_STD)
    return CLIP_MEAN, CLIP_STD


class OpenClip(nn.Module):
    """``open_clip`` model + tokenizer exposing embed-image / embed-text (needs open_clip_torch)."""

    model: Any
    """The open_clip model (``CLIP`` or ``CustomTextCLIP``); open_clip ships no type hints."""

    def __init__(self, model: nn.Module, tokenizer: Any):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        size = self.model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        config = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        self.mean = tuple(config.get("mean", CLIP_MEAN))
        self.std = tuple(config.get("std", CLIP_STD))

    @classmethod
    def from_pretrained(cls, model_name: str, pretrained: str | None = None) -> OpenClip:
        """``open_clip.create_model_and_transforms(model_name, pretrained=...)`` minus transforms.

        ``model_name`` is an open_clip architecture (``"ViT-B-32"``) or an ``hf-hub:``/
        ``local-dir:`` reference; ``pretrained`` a tag or a checkpoint file.
        """
        try:
            import open_clip
        except ImportError as error:
            raise ImportError(
                "the open_clip backend needs the `open_clip_torch` package (which itself requires "
                "torchvision); use backend='transformers' otherwise"
            ) from error
        model = open_clip.create_model(model_name, pretrained=pretrained).eval()
        return cls(model, open_clip.get_tokenizer(model_name))

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        device = self.model.logit_scale.device
        return self.model.encode_text(self.tokenizer(list(texts)).to(device))


class ClipEstimator(DegradationEstimator):
    """CLIP zero-shot degradation scores with the paper's Table 3 prompt pairs (eq. 5-8).

    ``clip`` is a backend (:class:`TransformersClip` or :class:`OpenClip`); ``prompts`` replaces
    any dimension's (positive, negative) pair; ``logit_scale`` is the softmax temperature of
    eq. 8: ``1.0`` (default) is the paper's plain ``exp`` of cosines, ``"clip"`` uses the model's
    learnt logit scale.
    """

    def __init__(
        self,
        clip: TransformersClip | OpenClip,
        prompts: Mapping[str, tuple[str, str]] | None = None,
        logit_scale: float | Literal["clip"] = 1.0,
    ):
        super().__init__()
        self.clip = clip.requires_grad_(False).eval()
        self.prompts = resolve_prompts(prompts)
        self.logit_scale = clip.logit_scale if logit_scale == "clip" else float(logit_scale)
        self._text_cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str,
        backend: Backend = "transformers",
        prompts: Mapping[str, tuple[str, str]] | None = None,
        logit_scale: float | Literal["clip"] = 1.0,
        pretrained: str | None = None,
    ) -> ClipEstimator:
        """Build from a hub id (resolved from the local cache) or a local directory.

        With ``backend="open_clip"``, ``id_or_path`` is the open_clip model name and ``pretrained``
        its weights (tag or file).
        """
        if backend == "transformers":
            clip: TransformersClip | OpenClip = TransformersClip.from_pretrained(id_or_path)
        elif backend == "open_clip":
            clip = OpenClip.from_pretrained(id_or_path, pretrained)
        else:
            raise ValueError(f"backend must be 'transformers' or 'open_clip', got {backend!r}")
        return cls(clip, prompts=prompts, logit_scale=logit_scale)

    def text_embeddings(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(2, 7, D)`` positive/negative prompt embeddings; computed once per device/dtype."""
        key = (torch.device(device), dtype)
        if key not in self._text_cache:
            texts = [self.prompts[name][0] for name in DIMENSIONS]
            texts += [self.prompts[name][1] for name in DIMENSIONS]
            with torch.no_grad():
                embeds = self.clip.embed_texts(texts)
            self._text_cache[key] = embeds.view(2, len(DIMENSIONS), -1).to(device, dtype)
        return self._text_cache[key]

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` CLIP image embeddings of ``[0, 1]`` images (eq. 5)."""
        check_images(images)
        parameter = next(self.clip.parameters())
        pixels = clip_preprocess(images, self.clip.image_size, self.clip.mean, self.clip.std)
        return self.clip.embed_images(pixels.to(parameter.device, parameter.dtype))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image_embeds = self.image_embeddings(images)
        text = self.text_embeddings(image_embeds.device, image_embeds.dtype)
        scores = prompt_pair_scores(image_embeds, text[0], text[1], self.logit_scale)
        return scores.to(images.dtype)
