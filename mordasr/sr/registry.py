"""Model types by manifest name: a model folder is loaded by the class its manifest names.

A class registers itself with :func:`register_model_type`. Folders written before manifests
existed are recognised by the file that only their type writes (``legacy_marker``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mordasr.sr.manifest import MANIFEST_FILE, ModelLoadError, read_manifest
from mordasr.sr.protocol import SRModel

Model = TypeVar("Model", bound=type[SRModel])

MODEL_TYPES: dict[str, type[SRModel]] = {}
"""Every registered model class by its manifest ``type``."""
LEGACY_MARKERS: dict[str, str] = {}
"""Manifest type by the file that marks a folder of that type written without a manifest."""


def register_model_type(legacy_marker: str | None = None) -> Callable[[Model], Model]:
    """Class decorator: register a model class under its ``model_type``; ``legacy_marker`` is
    the file that identifies its folders of earlier versions (which have no manifest)."""

    def register(cls: Model) -> Model:
        if cls.model_type in MODEL_TYPES:
            raise ValueError(f"model type {cls.model_type!r} is already registered")
        MODEL_TYPES[cls.model_type] = cls
        if legacy_marker is not None:
            LEGACY_MARKERS[legacy_marker] = cls.model_type
        return cls

    return register


def model_type_of(directory: str | Path) -> str:
    """The model type of a folder: its manifest's, else the legacy marker's it holds."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is not None:
        if manifest.type not in MODEL_TYPES:
            raise ModelLoadError(
                f"{directory / MANIFEST_FILE}: unknown model type {manifest.type!r} "
                f"(known: {', '.join(sorted(MODEL_TYPES))})"
            )
        return manifest.type
    for marker, model_type in LEGACY_MARKERS.items():
        if (directory / marker).is_file():
            return model_type
    raise ModelLoadError(f"{directory} is not a mordasr model folder (no {MANIFEST_FILE})")


def check_model_type(directory: str | Path, model_type: str) -> None:
    """Refuse, in one line, a folder whose type is not ``model_type``."""
    found = model_type_of(directory)
    if found != model_type:
        raise ModelLoadError(
            f"{directory} holds a {found!r} model, not {model_type!r}; "
            "load it with mordasr.sr.load_sr_model"
        )


def load_model_folder(directory: str | Path) -> SRModel:
    """Load a model folder with the class its manifest (or legacy marker) names."""
    return MODEL_TYPES[model_type_of(directory)].from_pretrained(directory)
