"""The manifest of a model folder and one-line errors for everything a folder may get wrong.

Every model folder holds ``mordasr_model.json``: ``{"type": ..., "format_version": ...}``. The
type names the class that reads the rest of the folder (see :mod:`mordasr.sr.registry`); the
format version lets a later mordasr refuse, in one line, a folder newer than it reads.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from safetensors import SafetensorError

from mordasr.schema import from_mapping

MANIFEST_FILE = "mordasr_model.json"
FORMAT_VERSION = 1
"""The newest folder format this version reads and the one it writes."""

Spec = TypeVar("Spec")


class ModelLoadError(ValueError):
    """A model folder or weight file cannot be loaded; the message is one line naming the file
    and the problem."""


@dataclass(frozen=True)
class Manifest:
    """What ``mordasr_model.json`` holds."""

    type: str
    """The model type (a key of :data:`mordasr.sr.registry.MODEL_TYPES`)."""
    format_version: int = FORMAT_VERSION
    """Version of the folder layout of that type."""


def write_manifest(directory: str | Path, model_type: str) -> Path:
    """Write ``mordasr_model.json`` naming ``model_type`` (the current format version)."""
    path = Path(directory) / MANIFEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"type": model_type, "format_version": FORMAT_VERSION}
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def read_manifest(directory: str | Path) -> Manifest | None:
    """The folder's manifest, or None when it has none (a folder of an earlier version)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest = read_json_dataclass(path, Manifest)
    if manifest.format_version > FORMAT_VERSION:
        raise ModelLoadError(
            f"{path}: format_version {manifest.format_version} is newer than this mordasr reads "
            f"({FORMAT_VERSION}); upgrade mordasr"
        )
    return manifest


def read_json_dataclass(path: Path, cls: type[Spec]) -> Spec:
    """Build the dataclass ``cls`` from the JSON object in ``path``: unknown keys, missing
    required keys and values of the wrong type are one-line :class:`ModelLoadError` s
    (:func:`mordasr.schema.from_mapping`)."""
    with loading(path):
        data = json.loads(path.read_text())
    return from_mapping(cls, data, source=path, error=ModelLoadError)


@contextmanager
def loading(path: str | Path) -> Iterator[None]:
    """Turn any failure of reading ``path`` inside the block into a one-line
    :class:`ModelLoadError` naming it (a pickle that carries code is refused by name)."""
    try:
        yield
    except ModelLoadError:
        raise
    except pickle.UnpicklingError as error:
        found = re.search(r"unsupported GLOBAL (\S+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise ModelLoadError(
            f"{path}: refused: the checkpoint carries code or objects other than tensors{what}; "
            "only plain tensors are loaded (convert it to .safetensors)"
        ) from None
    except SafetensorError as error:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({error})") from None
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path}: not valid JSON ({error})") from None
    except OSError as error:
        raise ModelLoadError(f"{path}: {_one_line(error.strerror or str(error))}") from None
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise ModelLoadError(f"{path}: {_one_line(str(message))}") from None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) if len(lines) <= 3 else lines[0]
