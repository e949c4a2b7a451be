"""Model-level MoR operations: inject, merge, save/load (routing: :mod:`mordasr.mor.plan`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mordasr.mor.config import MoRConfig
from mordasr.mor.layer import MoRConv2d, MoRLayer, MoRLinear

CONFIG_NAME = "mor_config.json"
WEIGHTS_NAME = "mor_adapter.safetensors"


def inject_mor(model: nn.Module, config: MoRConfig) -> nn.Module:
    """Wrap every targeted ``nn.Linear``/``nn.Conv2d`` of ``model`` in a MoR layer, in place.

    The base weights are frozen; only the adapter factors and routers are trainable (everything
    else in the model is left as it was, so freeze it yourself if you fine-tune adapters only).
    Because every B starts at zero, the model computes exactly what it did before injection.
    Returns ``model``.
    """
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if name
        and isinstance(module, nn.Linear | nn.Conv2d)
        and not _inside_mor_layer(model, name)
        and config.matches(name)
    ]
    if not targets:
        raise ValueError(f"no nn.Linear/nn.Conv2d module matches {config.target_modules!r}")
    for name, module in targets:
        wrapper: MoRLayer
        layer_config = config.for_layer(name)
        if isinstance(module, nn.Linear):
            wrapper = MoRLinear(module, layer_config)
        else:
            wrapper = MoRConv2d(module, layer_config)
        wrapper.source_config = config
        _set_submodule(model, name, wrapper)
    return model


def mor_layers(model: nn.Module) -> Iterator[tuple[str, MoRLayer]]:
    """Every MoR layer of ``model`` with its qualified name."""
    for name, module in model.named_modules():
        if isinstance(module, MoRLayer):
            yield name, module


def cast_network(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` in ``dtype`` except its MoR layers (frozen layer, adapters, routers), which stay
    float32: routing and folding are always computed in float32 and each folded weight is
    rounded once, to the dtype of the activations it meets. Returns ``model``."""
    kept = {
        id(t) for _, layer in mor_layers(model) for t in (*layer.parameters(), *layer.buffers())
    }
    for _, layer in mor_layers(model):
        layer.float()
    return model._apply(lambda t: t if id(t) in kept or not t.is_floating_point() else t.to(dtype))


def mor_config(model: nn.Module) -> MoRConfig:
    """The config the model's MoR layers were injected with (before per-layer overrides)."""
    for _, layer in mor_layers(model):
        return layer.source_config
    raise ValueError("model has no MoR layers")


def set_strength(model: nn.Module, strength: float) -> None:
    """Scale every MoR layer's adapter delta by ``strength`` (0: the frozen model exactly,
    1: as trained); see :meth:`MoRLayer.set_strength`."""
    for _, layer in mor_layers(model):
        layer.set_strength(strength)


def merge_shared(model: nn.Module) -> None:
    """Fold every layer's always-on ranks into its frozen weight (for plain LoRA: all ranks).

    Each merge is computed in float32 and rounded once to the weight's dtype. If a layer's
    merged weight would hold NaN or inf, nothing stays merged: the layers merged before it are
    unmerged and ValueError names the layer.
    """
    merged: list[MoRLayer] = []
    for name, layer in mor_layers(model):
        if layer.shared_merged:
            continue
        try:
            layer.merge_shared()
        except ValueError as error:
            for done in reversed(merged):
                done.unmerge_shared()
            raise ValueError(f"{name}: {error}") from None
        merged.append(layer)


def unmerge_shared(model: nn.Module) -> None:
    """Undo :func:`merge_shared`."""
    for _, layer in mor_layers(model):
        layer.unmerge_shared()


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every plain LoRA layer of ``model`` into its frozen weight for good and put the
    frozen layer back in its place: the network without adapters, computing what it computed
    with them at no extra cost (AdaptSR's merge). Every merged weight is computed in float32
    (:meth:`MoRLayer.fold`, at the layer's strength) and rounded once to the weight's dtype;
    if any would hold NaN or inf, nothing changes and ValueError names the layer. A routed layer
    cannot be merged for good (ValueError). Returns ``model``."""
    layers = list(mor_layers(model))
    routed = [name for name, layer in layers if layer.router is not None]
    if routed:
        raise ValueError(f"{routed[0]} is routed: only plain LoRA layers merge for good")
    merged = {}
    for name, layer in layers:
        weight = layer.fold(None)[0].to(layer.base_layer.weight.dtype)
        if not torch.isfinite(weight).all():
            raise ValueError(
                f"{name}: merging gives non-finite weights (NaN or inf in the adapter, or an "
                "overflow of the weight dtype); nothing was merged"
            )
        merged[name] = weight
    with torch.no_grad():
        for name, layer in layers:
            layer.base_layer.weight.copy_(merged[name])
            _set_submodule(model, name, layer.base_layer)
    return model


def mor_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable adapter tensors (A, B and router ``W_g``) of every MoR layer."""
    return [p for _, layer in mor_layers(model) for p in layer.adapter_parameters]


def mark_only_mor_trainable(model: nn.Module) -> nn.Module:
    """Freeze everything in ``model`` except the MoR adapter tensors; returns ``model``."""
    model.requires_grad_(False)
    for param in mor_parameters(model):
        param.requires_grad_(True)
    return model


def mor_named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter tensors keyed by their names in ``model.state_dict()``."""
    ids = {id(p) for p in mor_parameters(model)}
    return {name: p for name, p in model.named_parameters() if id(p) in ids}


def mor_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Adapter tensors only (detached copies), keyed by their names in ``model.state_dict()``."""
    return {name: p.detach().clone() for name, p in mor_named_parameters(model).items()}


def load_mor_state_dict(model: nn.Module, state: dict[str, Tensor], strict: bool = True) -> None:
    """Load tensors from :func:`mor_state_dict`; with ``strict`` the key sets must match."""
    params = mor_named_parameters(model)
    expected = set(params)
    missing, unexpected = expected - set(state), set(state) - expected
    if strict and (missing or unexpected):
        raise KeyError(f"missing adapter keys {sorted(missing)}, unexpected {sorted(unexpected)}")
    with torch.no_grad():
        for name in expected & set(state):
            target = params[name]
            if target.shape != state[name].shape:
                raise ValueError(f"{name}: shape {tuple(state[name].shape)} != {target.shape}")
            target.copy_(state[name])


def save_mor_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write ``mor_config.json`` and ``mor_adapter.safetensors`` into ``directory``."""
    if any(layer.shared_merged for _, layer in mor_layers(model)):
        raise RuntimeError("unmerge_shared(model) before saving: merged ranks live in base weights")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = mor_config(model)
    (directory / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    tensors = {k: v.contiguous().cpu() for k, v in mor_state_dict(model).items()}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "mordasr-mor"})
    return directory


def load_mor_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Inject the saved config into a fresh ``model`` and load the saved adapter weights."""
    directory = Path(directory)
    config = MoRConfig.from_dict(json.loads((directory / CONFIG_NAME).read_text()))
    inject_mor(model, config)
    load_mor_state_dict(model, load_file(str(directory / WEIGHTS_NAME)))
    return model


def _inside_mor_layer(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(
        isinstance(model.get_submodule(".".join(parts[:i])), MoRLayer) for i in range(1, len(parts))
    )


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
