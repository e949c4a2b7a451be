"""Routing by region (`Upscaler(routing="region")`, `mordasr upscale --routing region`) on tiny
MoR models whose adapters visibly change the output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mor_helpers import randomise
from PIL import Image
from tiny_models import photo, tiny_mor_model
from torch import Tensor

from mordasr.cli import main
from mordasr.estimate.base import DegradationEstimator
from mordasr.infer.pipeline import Upscaler
from mordasr.mor import mor_config, mor_layers
from mordasr.sr import MoRSuperResolver
from mordasr.sr.mor_sr import SRModelSpec

ONE_LEVEL = 1.0 / 255.0
HEIGHT, WIDTH = 64, 384
"""The half-and-half test image (LR): 12 windows of 64 px across, 6 per half."""
TILES = {"tile": 64, "tile_overlap": 16, "backend": "torch"}
COMPARED = 64
"""LR columns at each side compared with per-image routing: tiles there cover only regions
(smoothing included) of their own half."""


class Brightness(DegradationEstimator):
    """A stand-in estimator: every score is the image's mean brightness (bright = severe)."""

    def forward(self, images: Tensor) -> Tensor:
        return images.mean(dim=(1, 2, 3))[:, None].expand(-1, 7).contiguous()


class Fixed(DegradationEstimator):
    """A stand-in estimator giving every image the same scores."""

    def __init__(self, scores: Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, images: Tensor) -> Tensor:
        return self.scores.expand(images.shape[0], -1)


def visible(model: MoRSuperResolver) -> MoRSuperResolver:
    """``model`` with large adapters and outputs around mid gray, so routing shows in [0, 1]."""
    randomise(model.backbone, seed=3, std=0.5)
    with torch.no_grad():
        model.backbone.conv_last.base_layer.bias += 0.5
    return model


def severity_router(model: MoRSuperResolver) -> MoRSuperResolver:
    """Routers set by hand: scores above 0.5 keep real experts, scores below keep zero experts."""
    with torch.no_grad():
        for _, layer in mor_layers(model.backbone):
            router = layer.router
            assert router is not None and router.gate.bias is not None
            real = torch.arange(router.gate.out_features) < router.num_real
            sign = torch.where(real, 1.0, -1.0)
            router.gate.weight.copy_(sign[:, None].expand_as(router.gate.weight) * 20 / 7)
            offsets = 0.01 * torch.arange(router.gate.out_features)
            router.gate.bias.copy_(-10 * sign + offsets)
    return model


def with_estimator(model: MoRSuperResolver, estimator: DegradationEstimator) -> MoRSuperResolver:
    return MoRSuperResolver(model.backbone, estimator, SRModelSpec(**vars(model.spec)))


@pytest.fixture(scope="module")
def biased_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_mor_model(tmp_path_factory.mktemp("biased"), router_bias=True)


@pytest.fixture(scope="module")
def half_and_half() -> Tensor:
    """Left half bright (scored severe), right half dark (scored clean), both textured."""
    texture = torch.from_numpy(photo(HEIGHT, WIDTH)).permute(2, 0, 1).float() / 255
    image = 0.2 + 0.1 * texture
    image[..., : WIDTH // 2] += 0.6
    return image


@pytest.fixture(scope="module")
def model(biased_dir: Path) -> MoRSuperResolver:
    """Hand-set severity routers, large adapters, brightness as the severity."""
    loaded = MoRSuperResolver.from_pretrained(biased_dir)
    return visible(severity_router(with_estimator(loaded, Brightness())))


def real_experts(model: MoRSuperResolver, lr: Tensor, box: tuple[int, int, int, int]) -> float:
    """Real experts the tile ``box`` keeps per routed layer under region routing."""
    work = model.prepare(lr[None], routing="region")
    return mor_config(model.backbone).top_k - work.for_tile(box).plan.mean_zero_experts()


def test_a_uniform_image_routed_per_region_equals_per_image_routing(
    model: MoRSuperResolver,
) -> None:
    noise = torch.rand(3, 96, 160, generator=torch.Generator().manual_seed(0))
    uniform = 0.7 + 0.05 * noise
    per_image = Upscaler(model, **TILES).upscale_tensor(uniform)
    per_region = Upscaler(model, routing="region", **TILES).upscale_tensor(uniform)
    assert (per_region - per_image).abs().max() <= ONE_LEVEL


def test_severe_regions_keep_more_real_experts_than_clean_ones(
    model: MoRSuperResolver, half_and_half: Tensor
) -> None:
    left = real_experts(model, half_and_half, (0, 0, HEIGHT, COMPARED))
    right = real_experts(model, half_and_half, (0, WIDTH - COMPARED, HEIGHT, WIDTH))
    assert left - right >= 1.0


@pytest.mark.parametrize("side", ["left", "right"])
def test_each_half_away_from_the_border_is_routed_as_that_half_alone(
    model: MoRSuperResolver, half_and_half: Tensor, side: str
) -> None:
    halves = {"left": half_and_half[..., : WIDTH // 2], "right": half_and_half[..., WIDTH // 2 :]}
    columns = slice(0, 4 * COMPARED) if side == "left" else slice(4 * (WIDTH - COMPARED), None)
    per_region = Upscaler(model, routing="region", **TILES).upscale_tensor(half_and_half)
    outputs = {}
    for name, half in halves.items():
        routed_as = Upscaler(with_estimator(model, Fixed(Brightness()(half[None]))), **TILES)
        outputs[name] = routed_as.upscale_tensor(half_and_half)[..., columns]
    other = "right" if side == "left" else "left"
    assert (per_region[..., columns] - outputs[side]).abs().max() <= ONE_LEVEL
    assert (per_region[..., columns] - outputs[other]).abs().max() > ONE_LEVEL  # routing shows


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_finer_region_window_routes_a_narrow_image_by_its_halves(
    model: MoRSuperResolver, half_and_half: Tensor, side: str
) -> None:
    narrow = torch.cat([half_and_half[..., :32, :32], half_and_half[..., :32, -32:]], dim=-1)
    fine = {"tile": 48, "tile_overlap": 16, "backend": "torch", "region_window": 32}
    per_region = Upscaler(model, routing="region", **fine).upscale_tensor(narrow)
    half = narrow[..., :32] if side == "left" else narrow[..., 32:]
    routed_as = Upscaler(with_estimator(model, Fixed(Brightness()(half[None]))), **TILES)
    columns = slice(0, 4 * 24) if side == "left" else slice(4 * 40, None)
    expected = routed_as.upscale_tensor(narrow)[..., columns]
    assert (per_region[..., columns] - expected).abs().max() <= ONE_LEVEL


def test_the_default_region_window_routes_a_narrow_image_as_one_region(
    model: MoRSuperResolver, half_and_half: Tensor
) -> None:
    narrow = torch.cat([half_and_half[..., :32, :32], half_and_half[..., :32, -32:]], dim=-1)
    coarse = {"tile": 48, "tile_overlap": 16, "backend": "torch"}
    per_region = Upscaler(model, routing="region", **coarse).upscale_tensor(narrow)
    per_image = Upscaler(model, **TILES).upscale_tensor(narrow)
    assert (per_region - per_image).abs().max() <= ONE_LEVEL


def test_a_region_window_below_the_estimators_side_is_refused(model: MoRSuperResolver) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Upscaler(model, routing="region", region_window=16, backend="torch")


def test_onnxruntime_runs_each_tiles_own_plan(
    model: MoRSuperResolver, half_and_half: Tensor
) -> None:
    tiles = {**TILES, "backend": "onnxruntime"}
    fed = Upscaler(model, routing="region", **tiles).upscale_tensor(half_and_half)
    eager = Upscaler(model, routing="region", **TILES).upscale_tensor(half_and_half)
    assert (fed - eager).abs().max() <= ONE_LEVEL


def test_region_routing_is_refused_for_a_model_that_routes_nothing() -> None:
    with pytest.raises(ValueError, match="MoR model with routers"):
        Upscaler("bicubic", device="cpu", routing="region")


def test_cli_upscales_with_region_routing(model_dir: Path, tmp_path: Path) -> None:
    Image.fromarray(photo(48, 112)).save(tmp_path / "a.png")
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    assert main([*args, "--model", str(model_dir), "--routing", "region", "-q"]) == 0
    with Image.open(tmp_path / "out" / "a.png") as result:
        assert result.size == (448, 192)


def test_cli_refuses_an_unknown_routing(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["upscale", str(tmp_path), "--model", str(model_dir), "--routing", "pixel"])


def test_cli_refuses_a_region_window_below_the_estimators_side(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["upscale", str(tmp_path), "--model", str(model_dir), "--routing", "region"]
    with pytest.raises(SystemExit):
        main([*args, "--region-window", "16"])
    assert "a region is at least 32 px, got 16" in capsys.readouterr().err


@pytest.mark.parametrize("tile", [96, 160])
def test_a_set_tile_side_is_the_unit_of_region_routing(model: MoRSuperResolver, tile: int) -> None:
    sides = []

    def record(event) -> None:
        if event.stage == "tile" and event.tile_size:
            sides.append(event.tile_size)

    image = torch.rand(3, 96, 320, generator=torch.Generator().manual_seed(1))
    upscaler = Upscaler(model, routing="region", tile=tile, backend="torch", progress=record)
    upscaler.upscale_tensor(image)
    assert sides and max(sides) <= tile and max(sides) > tile - 16
