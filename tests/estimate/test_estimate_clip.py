"""End-to-end tests of the CLIP estimator with a tiny random CLIP saved to and loaded from disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")

from tiny_clip import write_char_tokenizer  # noqa: E402

from mordasr.cli import main  # noqa: E402
from mordasr.estimate import DIMENSIONS, TABLE3_PROMPTS, ClipEstimator, load_estimator  # noqa: E402
from mordasr.estimate.clip import clip_preprocess  # noqa: E402


def _write_tiny_clip(directory: Path) -> None:
    """Save a randomly initialised 2-layer CLIP and a character-level CLIP BPE tokenizer."""
    tokenizer = write_char_tokenizer(directory)
    vocab = tokenizer.get_vocab()
    common = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    config = transformers.CLIPConfig(
        text_config={
            **common,
            "num_attention_heads": 4,
            "vocab_size": len(vocab),
            "max_position_embeddings": 32,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={**common, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny_clip")
    _write_tiny_clip(directory)
    return directory


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(1))


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a / a.norm(dim=-1, keepdim=True)) @ (b / b.norm(dim=-1, keepdim=True)).T


def _reference_scores(estimator: ClipEstimator, images: torch.Tensor, scale: float) -> torch.Tensor:
    """Eq. 7-8 computed by hand from the model's own image and text features."""
    model, tokenizer = estimator.clip.model, estimator.clip.tokenizer
    pixels = clip_preprocess(images, 32)
    image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    columns = []
    for name in DIMENSIONS:
        positive, negative = TABLE3_PROMPTS[name]
        tokens = tokenizer([positive, negative], padding=True, return_tensors="pt")
        text = model.text_projection(model.text_model(**tokens).pooler_output)
        cos = _cosines(image, text)
        e_p, e_n = torch.exp(scale * cos[:, 0]), torch.exp(scale * cos[:, 1])
        columns.append(e_n / (e_p + e_n))
    return torch.stack(columns, dim=1)


def test_scores_have_one_column_per_dimension_in_unit_range(clip_dir, images):
    scores = ClipEstimator.from_pretrained(str(clip_dir))(images)
    assert scores.shape == (3, len(DIMENSIONS))
    assert torch.all((scores >= 0) & (scores <= 1))


def test_scores_follow_eq_7_and_8_with_plain_exponentials(clip_dir, images):
    estimator = ClipEstimator.from_pretrained(str(clip_dir))
    with torch.no_grad():
        expected = _reference_scores(estimator, images, scale=1.0)
        actual = estimator(images)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)


def test_clip_logit_scale_option_multiplies_cosines_by_the_learnt_scale(clip_dir, images):
    estimator = ClipEstimator.from_pretrained(str(clip_dir), logit_scale="clip")
    scale = float(estimator.clip.model.logit_scale.exp())
    with torch.no_grad():
        expected = _reference_scores(estimator, images, scale=scale)
        actual = estimator(images)
    assert scale > 1.0
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_text_embeddings_are_computed_once_and_reused(clip_dir, images):
    estimator = ClipEstimator.from_pretrained(str(clip_dir))
    calls = []
    estimator.clip.model.text_model.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        estimator(images)
        estimator(images[:1])
    assert len(calls) == 1


def test_overriding_one_prompt_changes_only_its_dimension(clip_dir, images):
    base = ClipEstimator.from_pretrained(str(clip_dir))
    custom = ClipEstimator.from_pretrained(
        str(clip_dir), prompts={"noise": ("clean photo", "grainy photo")}
    )
    with torch.no_grad():
        changed = (base(images) - custom(images)).abs().amax(dim=0)
    noise = DIMENSIONS.index("noise")
    assert changed[noise] > 1e-6
    assert torch.all(torch.cat([changed[:noise], changed[noise + 1 :]]) == 0)


def test_unknown_prompt_dimension_is_rejected(clip_dir):
    with pytest.raises(ValueError, match="unknown dimension"):
        ClipEstimator.from_pretrained(str(clip_dir), prompts={"sharpness": ("a", "b")})


def test_factory_loads_clip_estimator_from_local_directory(clip_dir, images):
    estimator = load_estimator("clip", clip_model=str(clip_dir))
    assert isinstance(estimator, ClipEstimator)
    assert estimator(images).shape == (3, 7)


def test_factory_requires_a_model_for_clip():
    with pytest.raises(ValueError, match="clip_model"):
        load_estimator("clip")


def test_preprocess_resizes_shortest_side_and_center_crops():
    image = torch.zeros(1, 3, 20, 60)
    image[..., 25:35] = 1.0
    pixels = clip_preprocess(image, 10, mean=(0, 0, 0), std=(1, 1, 1))
    assert pixels.shape == (1, 3, 10, 10)
    assert pixels[..., 4:6].min() > 0.9
    assert pixels[..., :2].max() < 0.1


def test_cli_scores_with_the_clip_estimator_from_a_local_directory(clip_dir, tmp_path, capsys):
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 48, 3), 90, dtype=np.uint8)).save(path)
    args = ["estimate", str(path), "--estimator", "clip", "--clip-model", str(clip_dir), "--json"]
    assert main(args) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert list(row["scores"]) == list(DIMENSIONS)


def test_normalisation_follows_the_model_preprocessor_config(clip_dir, tmp_path):
    copy = shutil.copytree(clip_dir, tmp_path / "clip")
    stats = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}
    (copy / "preprocessor_config.json").write_text(json.dumps(stats))
    estimator = ClipEstimator.from_pretrained(str(copy))
    assert estimator.clip.mean == (0.5, 0.5, 0.5)
    assert estimator.clip.std == (0.25, 0.25, 0.25)
