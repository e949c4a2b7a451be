"""The ComfyUI nodes, run through a minimal stand-in of how ComfyUI loads and calls nodes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import mordasr.integrations.comfyui_node as node_package
from mordasr.infer import Upscaler

BATCH_SHAPE = (2, 24, 32, 3)


def load_like_comfyui(folder: Path, name: str) -> ModuleType:
    """Import a ``custom_nodes`` folder as ComfyUI does: its ``__init__.py`` as a package named
    after the folder, outside any parent package."""
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, type]:
    """The node classes of the package linked into a stand-in ``custom_nodes`` folder."""
    custom_nodes = tmp_path_factory.mktemp("custom_nodes")
    link = custom_nodes / "mordasr-nodes"
    link.symlink_to(Path(node_package.__file__).parent, target_is_directory=True)
    mappings = load_like_comfyui(link, link.name).NODE_CLASS_MAPPINGS
    assert isinstance(mappings, dict)
    return mappings


def run_node(node_class: type, **inputs: Any) -> tuple[Any, ...]:
    """Call a node as ComfyUI's executor does: every required input by keyword, on the method
    ``FUNCTION`` names, which returns one value per ``RETURN_TYPES`` entry."""
    required = node_class.INPUT_TYPES()["required"]
    assert set(inputs) == set(required)
    outputs = getattr(node_class(), node_class.FUNCTION)(**inputs)
    assert isinstance(outputs, tuple) and len(outputs) == len(node_class.RETURN_TYPES)
    return outputs


@pytest.fixture(scope="module")
def model(nodes: dict[str, type]) -> Any:
    (loaded,) = run_node(nodes["MordasrModelLoader"], model="default", precision="exact")
    return loaded


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """A (B, H, W, C) IMAGE batch of two different images."""
    generator = torch.Generator().manual_seed(0)
    smooth = torch.rand(2, 3, 6, 8, generator=generator)
    image = torch.nn.functional.interpolate(smooth, size=BATCH_SHAPE[1:3], mode="bilinear")
    return (image + 0.05 * torch.rand(image.shape, generator=generator)).clamp(0, 1).movedim(1, -1)


@pytest.fixture(scope="module")
def plain_backbone_output(batch: torch.Tensor) -> torch.Tensor:
    upscaler = Upscaler("realesrgan-x4plus", precision="exact", tile=None)
    return upscaler.upscale_tensor(batch.movedim(-1, 1)).movedim(1, -1)


def upscale(nodes: dict[str, type], model: Any, image: torch.Tensor, **options: Any) -> Any:
    inputs = {"strength": 1.0, "routing": "auto", "tile": 0, **options}
    (out,) = run_node(nodes["MordasrUpscale"], image=image, model=model, **inputs)
    return out


def test_every_node_follows_the_custom_node_interface(nodes: dict[str, type]) -> None:
    for node_class in nodes.values():
        assert isinstance(node_class.INPUT_TYPES()["required"], dict)
        assert callable(getattr(node_class, node_class.FUNCTION))
        assert isinstance(node_class.RETURN_TYPES, tuple)
        assert isinstance(node_class.CATEGORY, str)
    assert set(nodes) == set(node_package.NODE_DISPLAY_NAME_MAPPINGS)


def test_upscale_node_enlarges_an_image_batch_four_times(
    nodes: dict[str, type], model: Any, batch: torch.Tensor
) -> None:
    out = upscale(nodes, model, batch, tile=96)
    assert out.shape == (2, 96, 128, 3)
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_strength_zero_gives_the_plain_backbone(
    nodes: dict[str, type], model: Any, batch: torch.Tensor, plain_backbone_output: torch.Tensor
) -> None:
    out = upscale(nodes, model, batch, strength=0.0)
    torch.testing.assert_close(out, plain_backbone_output, atol=1e-5, rtol=0)


def test_full_strength_is_the_adapted_model(
    nodes: dict[str, type], model: Any, batch: torch.Tensor, plain_backbone_output: torch.Tensor
) -> None:
    out = upscale(nodes, model, batch, strength=1.0)
    assert float((out - plain_backbone_output).abs().max()) > 1e-3


def test_fixed_scores_of_an_image_route_it_as_auto_does(
    nodes: dict[str, type], model: Any, batch: torch.Tensor
) -> None:
    first = batch[:1]
    scores = model.upscaler.model.route_input(first.movedim(-1, 1))[0].tolist()
    fixed = upscale(nodes, model, first, routing=", ".join(f"{s!r}" for s in scores))
    torch.testing.assert_close(fixed, upscale(nodes, model, first), atol=2e-4, rtol=0)


@pytest.mark.parametrize("routing", ["0.5, 0.5", "blurry"])
def test_fixed_routing_needs_one_number_per_score(
    nodes: dict[str, type], model: Any, batch: torch.Tensor, routing: str
) -> None:
    with pytest.raises(ValueError, match="7"):
        upscale(nodes, model, batch, routing=routing)
