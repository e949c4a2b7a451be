"""The one-step SD generator on a tiny random SD model the test writes in diffusers layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_sd import tiny_onestep_config

from mordasr.mor import mor_layers
from mordasr.sr.sd import OneStepConfig, OneStepGenerator, load_sd_components

SCORE_DIM = 7


def tiny_config(sd_dir: Path) -> OneStepConfig:
    return tiny_onestep_config(sd_dir, prompt="a photo")


def build(sd_dir: Path) -> OneStepGenerator:
    return OneStepGenerator(load_sd_components(sd_dir), tiny_config(sd_dir)).eval()


def randomize_adapters(generator: OneStepGenerator, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in generator.trainable_parameters().values():
            param.copy_(0.05 * torch.randn(param.shape, generator=gen))


def test_sr_is_scale_times_larger_and_in_range(sd_dir: Path) -> None:
    generator = build(sd_dir)
    with torch.no_grad():
        sr = generator(torch.rand(2, 3, 8, 8), torch.rand(2, SCORE_DIM))
    assert sr.shape == (2, 3, 32, 32)
    assert sr.min() >= 0.0 and sr.max() <= 1.0


def test_every_adapter_starts_at_zero_so_the_generator_is_the_plain_one_step_pipeline(
    sd_dir: Path,
) -> None:
    generator = build(sd_dir)
    for _, layer in mor_layers(generator):
        assert not layer.shared_B.any() and not layer.routed_B.any()
    plain = load_sd_components(sd_dir)
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ids = plain.tokenizer(
            ["a photo"], padding="max_length", max_length=77, return_tensors="pt"
        ).input_ids
        text = plain.text_encoder(ids)[0]
        up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
        scale = plain.vae.config.scaling_factor
        z = plain.vae.encode(up * 2 - 1).latent_dist.mode() * scale
        eps = plain.unet(z, torch.tensor([999]), encoder_hidden_states=text).sample
        alpha = plain.scheduler.alphas_cumprod[999]
        x0 = (z - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        expected = (plain.vae.decode(x0 / scale).sample.clamp(-1, 1) + 1) / 2
        actual = generator(lr, torch.rand(1, SCORE_DIM))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_v_prediction_gives_x0_as_alpha_z_minus_sigma_v(sd_dir: Path) -> None:
    generator = build(sd_dir)
    generator.components.scheduler.register_to_config(prediction_type="v_prediction")
    alpha = generator.components.scheduler.alphas_cumprod[999]
    z, v = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    expected = alpha.sqrt() * z - (1 - alpha).sqrt() * v
    torch.testing.assert_close(generator.x0_from_prediction(z, v), expected)


def test_only_the_adapters_are_trainable_and_receive_gradients(sd_dir: Path) -> None:
    generator = build(sd_dir)
    randomize_adapters(generator)
    trainable = generator.trainable_parameters()
    assert trainable and all(n.startswith(("unet.", "vae.encoder.")) for n in trainable)
    frozen = [p for p in generator.parameters() if all(p is not t for t in trainable.values())]
    assert not any(p.requires_grad for p in frozen)
    generator(torch.rand(1, 3, 8, 8), torch.rand(1, SCORE_DIM)).mean().backward()
    assert all(trainable[n].grad is not None for n in trainable if n.endswith("shared_B"))


def test_prompt_embeddings_are_computed_once_per_text(sd_dir: Path) -> None:
    generator = build(sd_dir)
    calls = []
    generator.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    first = generator.encode_prompt(["a photo", "a cat"])
    again = generator.encode_prompt(["a cat", "a photo"])
    assert len(calls) == 2
    assert first.shape[0] == 2 and first.shape[2] == 32
    torch.testing.assert_close(again, first.flip(0))


def test_save_and_load_reproduce_the_trained_generator(sd_dir: Path, tmp_path: Path) -> None:
    generator = build(sd_dir)
    randomize_adapters(generator)
    generator.save_pretrained(tmp_path / "ckpt")
    loaded = OneStepGenerator.from_pretrained(tmp_path / "ckpt")
    lr, scores = torch.rand(1, 3, 8, 8), torch.rand(1, SCORE_DIM)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr, scores), generator(lr, scores))
    assert loaded.config == generator.config


def test_loading_a_folder_without_a_config_is_a_one_line_error(tmp_path: Path) -> None:
    for folder in (tmp_path, tmp_path / "missing"):
        with pytest.raises(FileNotFoundError, match="not a one-step SD checkpoint") as error:
            OneStepGenerator.from_pretrained(folder)
        assert "\n" not in str(error.value)


def test_config_round_trips_through_a_dict() -> None:
    config = OneStepConfig(timestep=500, vae_lora_rank=8, estimator="some/clip")
    assert OneStepConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"^learning_rate: unknown key$"):
        OneStepConfig.from_dict({"learning_rate": 1})
