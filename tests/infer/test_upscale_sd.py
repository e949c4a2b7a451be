"""Upscaling with a one-step SD checkpoint (a tiny random SD model the test writes)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import photo
from tiny_sd import tiny_onestep_config

from mordasr.cli import main
from mordasr.estimate import load_estimator
from mordasr.infer.latent_tiling import tile_spans
from mordasr.infer.pipeline import Upscaler
from mordasr.io.image import read_image
from mordasr.mor import MoRLayer, mor_layers
from mordasr.sr.manifest import ModelLoadError
from mordasr.sr.sd import FixedPrompt, OneStepGenerator, load_sd_components
from mordasr.sr.sd.sr_model import OneStepSR
from mordasr.sr.zoo import load_sr_model

UNTILED = {"latent_tile": 0, "vae_tile": 0, "color_fix": "none"}


def tiny_checkpoint(root: Path, sd_dir: Path) -> Path:
    """A OneStepSR folder on the tiny SD model ``sd_dir``, with non-zero adapters and the
    learned estimator."""
    config = tiny_onestep_config(sd_dir)
    generator = OneStepGenerator(load_sd_components(config.base_model), config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in generator.trainable_parameters().values():
            param.copy_(0.05 * torch.randn(param.shape, generator=gen))
    model = OneStepSR(generator, load_estimator("learned"))
    return model.save_pretrained(root / "ckpt")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, sd_dir: Path) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("onestep"), sd_dir)


@pytest.fixture(scope="module")
def untiled(checkpoint: Path) -> Upscaler:
    return Upscaler(checkpoint, device="cpu", **UNTILED)


def with_settings(upscaler: Upscaler, **settings: object) -> Upscaler:
    """The same loaded model with other tiling or colour settings."""
    changed = copy.copy(upscaler)
    vars(changed).update(settings)
    return changed


def lr_image(height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(photo(height, width, seed)).permute(2, 0, 1).float() / 255


def test_the_zoo_recognises_a_one_step_checkpoint_and_names_it(checkpoint: Path) -> None:
    model = load_sr_model(checkpoint)
    assert isinstance(model, OneStepSR) and model.scale == 4
    assert model.describe().startswith("one-step MoR on ")


def test_a_checkpoint_of_an_earlier_version_without_manifest_still_loads(
    checkpoint: Path, tmp_path: Path
) -> None:
    legacy = shutil.copytree(checkpoint, tmp_path / "legacy")
    (legacy / "mordasr_model.json").unlink()
    model = load_sr_model(legacy)
    assert isinstance(model, OneStepSR) and model.scale == 4


def test_a_truncated_adapter_file_is_refused_in_one_line(checkpoint: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(checkpoint, tmp_path / "broken")
    data = (broken / "adapters.safetensors").read_bytes()
    (broken / "adapters.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"adapters\.safetensors: not a readable") as caught:
        load_sr_model(broken)
    assert "\n" not in str(caught.value)


def test_checkpoint_holds_the_generator_and_the_estimator_heads(checkpoint: Path) -> None:
    names = {p.name for p in checkpoint.iterdir()}
    assert names == {
        "mordasr_model.json",
        "onestep_config.json",
        "adapters.safetensors",
        "estimator.safetensors",
    }


def test_untiled_upscale_is_the_model_routed_by_the_whole_image(
    checkpoint: Path, untiled: Upscaler
) -> None:
    lr = lr_image()[None]
    with torch.no_grad():
        expected = OneStepSR.from_pretrained(checkpoint)(lr).clamp(0, 1)
    torch.testing.assert_close(untiled.upscale_tensor(lr), expected, atol=1e-5, rtol=0)


def test_odd_sizes_are_padded_and_cropped_back(untiled: Upscaler) -> None:
    out = with_settings(untiled, color_fix="wavelet").upscale_tensor(lr_image(13, 10))
    assert out.shape == (3, 52, 40)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_vae_tiles_match_the_untiled_vae(untiled: Upscaler) -> None:
    lr = lr_image(32, 32)
    tiled = with_settings(untiled, vae_tile=96).upscale_tensor(lr)
    assert (tiled - untiled.upscale_tensor(lr)).abs().mean() < 0.025


def test_latent_and_vae_tiles_stay_close_to_untiled(untiled: Upscaler) -> None:
    """The UNet's attention and GroupNorm see one tile only, and at t=999 x0 amplifies the
    noise prediction's change ~15 times, so tiles are close, not equal: well under the
    difference between two images' outputs."""
    lr, other = lr_image(32, 32), lr_image(32, 32, seed=3)
    whole = untiled.upscale_tensor(lr)
    tiled = with_settings(untiled, latent_tile=48, latent_overlap=24, vae_tile=96)
    between_images = (untiled.upscale_tensor(other) - whole).abs().mean()
    assert (tiled.upscale_tensor(lr) - whole).abs().mean() < 0.4 * between_images


def test_routed_ranks_are_folded_once_per_image_and_the_unet_runs_once_per_tile(
    untiled: Upscaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    upscaler = with_settings(untiled, latent_tile=32, latent_overlap=16)
    folds: list[MoRLayer] = []
    original = MoRLayer.fold

    def counting(self: MoRLayer, *args: object) -> torch.Tensor:
        folds.append(self)
        return original(self, *args)

    monkeypatch.setattr(MoRLayer, "fold", counting)
    unfolded = []
    monkeypatch.setattr(MoRLayer, "_path", lambda *args: unfolded.append(1))
    unet_calls = []
    hook = upscaler.model.generator.unet.register_forward_hook(lambda *_: unet_calls.append(1))
    upscaler.upscale_tensor(lr_image(32, 24))
    hook.remove()
    layers = [layer for _, layer in mor_layers(upscaler.model.generator.unet)]
    latent_h, latent_w = 32 * 4 // 2, 24 * 4 // 2
    tiles = len(tile_spans(latent_h, 32, 16)) * len(tile_spans(latent_w, 32, 16))
    assert tiles > 1 and len(unet_calls) == tiles
    assert sorted(map(id, folds)) == sorted(map(id, layers))
    assert unfolded == []


def test_bfloat16_upscale_is_close_to_float32(checkpoint: Path, untiled: Upscaler) -> None:
    lr = lr_image()
    full = untiled.upscale_tensor(lr)
    half = Upscaler(checkpoint, device="cpu", dtype=torch.bfloat16, **UNTILED).upscale_tensor(lr)
    assert half.dtype == torch.float32
    assert (half - full).abs().mean() < 0.02


def test_a_fixed_prompt_replaces_the_models(checkpoint: Path) -> None:
    upscaler = Upscaler(checkpoint, device="cpu", prompt="a cat", **UNTILED)
    assert upscaler.model.prompt_source(torch.zeros(2, 3, 8, 8)) == ["a cat", "a cat"]


def test_unknown_color_fix_is_an_error(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="unknown color_fix"):
        Upscaler(checkpoint, device="cpu", color_fix="sepia")


def test_cli_upscales_a_png_with_every_sd_flag(checkpoint: Path, tmp_path: Path) -> None:
    Image.fromarray(photo(24, 20)).save(tmp_path / "a.png")
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    flags = ["--latent-tile", "16", "--latent-overlap", "8", "--vae-tile", "32"]
    flags += ["--color-fix", "adain", "--prompt", "a photo", "--dtype", "bfloat16"]
    assert main([*args, "--model", str(checkpoint), *flags]) == 0
    assert read_image(tmp_path / "out" / "a.png").tensor.shape == (3, 96, 80)


def test_cli_refuses_a_prompt_for_a_model_without_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(photo(16, 16)).save(tmp_path / "a.png")
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "bicubic"]
    assert main([*args, "--prompt", "a cat"]) == 2
    assert "one-step SD models only" in capsys.readouterr().err


def test_a_fixed_prompt_is_saved_with_the_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    model = OneStepSR.from_pretrained(checkpoint)
    model.prompt_source = FixedPrompt("an old photo")
    model.save_pretrained(tmp_path / "again")
    reloaded = OneStepSR.from_pretrained(tmp_path / "again")
    assert reloaded.prompt_source(torch.zeros(1, 3, 8, 8)) == ["an old photo"]


def test_outscale_enlarges_to_the_target_before_the_vae(untiled: Upscaler) -> None:
    assert untiled.upscale_tensor(lr_image(32, 32), size=(80, 72)).shape == (3, 80, 72)


def test_alpha_is_bicubic_by_default_for_the_one_step_model(untiled: Upscaler) -> None:
    assert untiled.alpha == "bicubic"


def test_strength_zero_leaves_the_unet_unadapted(checkpoint: Path) -> None:
    lr = lr_image(32, 32)
    plain = Upscaler(checkpoint, device="cpu", strength=0.0, **UNTILED)
    half = Upscaler(checkpoint, device="cpu", strength=0.5, **UNTILED)
    assert all(layer.strength == 0.0 for _, layer in mor_layers(plain.model.generator))
    assert not torch.equal(plain.upscale_tensor(lr), half.upscale_tensor(lr))
